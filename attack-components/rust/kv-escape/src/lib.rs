//! Tries to reach another agent's KV data by spelling keys: `../`, path
//! separators, NUL, a namespace-looking prefix, a huge key, an empty key,
//! and prefix listing. Reports what each attempt returned.

use chimera_agent::{agent, kv, Error};
use serde_json::{json, Value};

fn show<T: std::fmt::Debug>(r: Result<T, kv::KvError>) -> Value {
    match r {
        Ok(v) => json!({ "ok": format!("{v:?}") }),
        Err(e) => json!({ "err": format!("{e:?}") }),
    }
}

fn run(input: String) -> Result<String, Error> {
    // The victim's key, as the attacker guesses it.
    let target = input.trim();
    let huge = "k".repeat(1 << 20);
    let attempts = json!({
        "plain": show(kv::get(target)),
        "dotdot": show(kv::get(&format!("../victim/{target}"))),
        "separator": show(kv::get(&format!("victim/{target}"))),
        "nul": show(kv::get(&format!("victim\0{target}"))),
        "colon": show(kv::get(&format!("victim:{target}"))),
        "overwrite": show(kv::set(&format!("../victim/{target}"), "pwned")),
        "huge": show(kv::get(&huge)),
        "empty": show(kv::get("")),
        "list_all": show(kv::list_keys("")),
        "list_dotdot": show(kv::list_keys("../")),
    });
    Ok(attempts.to_string())
}

agent!(run);
