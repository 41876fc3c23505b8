//! Components shaped to make compiling them expensive: the load-budget
//! attacks. Generated at test time rather than kept as files (the largest
//! is several megabytes of text); `tests/tests/load_budget.rs` loads them.

/// A component whose one core module has `n` empty functions: about 4 MB
/// at a million, and tens of seconds and gigabytes to compile.
pub fn many_functions(n: usize) -> Vec<u8> {
    let mut text = String::with_capacity(n * 7 + 64);
    text.push_str("(component (core module");
    for _ in 0..n {
        text.push_str(" (func)");
    }
    text.push_str("))");
    wat::parse_str(&text).expect("valid text")
}

/// A component whose one function has `locals` live i64 locals and
/// `merges` blocks joining them: register allocation and the optimizer
/// grow far faster than the bytes do.
pub fn optimizer_bomb(locals: usize, merges: usize) -> Vec<u8> {
    let mut body = String::new();
    for m in 0..merges {
        let (a, b) = (m % locals, (m * 7 + 3) % locals);
        body.push_str(&format!(
            "(block (br_if 0 (i64.eqz (local.get {a}))) (local.set {b} (i64.add (local.get {b}) (local.get {a}))))"
        ));
    }
    for l in 0..locals {
        body.push_str(&format!("(drop (local.get {l}))"));
    }
    let text =
        format!("(component (core module (func (export \"f\") (param i64) (local {}) {body})))", "i64 ".repeat(locals));
    wat::parse_str(&text).expect("valid text")
}
