//! The policy parser: any text, well-formed or not, is either a policy or
//! an error that names the problem — never a panic, never a backtrace, never
//! an unbounded message.

use super::{corpus, run};
use crate::Policy;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const SECTIONS: &[&str] = &[
    "[agent]",
    "[limits]",
    "[wasi]",
    "[capabilities.logging]",
    "[capabilities.kv]",
    "[capabilities.outbound_http]",
    "[[capabilities.outbound_http.allow]]",
    "[capabilities.tasks]",
    "[capabilities.no_such_thing]",
    "[capabilities]",
    "[[limits]]",
    "[capabilities.kv.deeper]",
];

const KEYS: &[&str] = &[
    "name",
    "memory_mib",
    "cpu_ms",
    "timeout_ms",
    "stack_kib",
    "instances",
    "memories",
    "tables",
    "table_elements",
    "max_input_bytes",
    "max_output_bytes",
    "stdio_bytes",
    "resource_handles",
    "cli",
    "clocks",
    "random",
    "clock_resolution_ms",
    "filesystem",
    "sockets",
    "max_line_bytes",
    "max_bytes_per_task",
    "namespace",
    "read_only",
    "max_key_bytes",
    "max_value_bytes",
    "max_page_keys",
    "max_batch_keys",
    "max_keys",
    "max_bytes",
    "max_requests",
    "max_request_bytes",
    "max_response_bytes",
    "allow",
    "url",
    "methods",
    "allow_private",
    "max_fan_out",
    "max_depth",
    "rate_per_second",
    "bogus",
    "\"\"",
    "\"capabilities.kv\"",
];

const VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "64",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551616",
    "-9223372036854775808",
    "1e3",
    "nan",
    "inf",
    "0.5",
    "true",
    "false",
    "\"\"",
    "\"x\"",
    "\"inert\"",
    "\"refused\"",
    "\"http://a.test/\"",
    "\"https://*.a.test/v1/\"",
    "\"http://127.0.0.1:8080/\"",
    "\"ftp://a.test/\"",
    "\"http://u:p@a.test/\"",
    "\"*\"",
    "\"\\u0000\"",
    "[]",
    "[1, \"a\"]",
    "[\"GET\", \"POST\"]",
    "[\"get\", \"BOGUS\"]",
    "[\"echo\", \"word-count\"]",
    "{}",
    "{ url = \"http://a.test/\" }",
    "[{ url = \"http://a.test/\", methods = [\"GET\"] }]",
    "1979-05-27T07:32:00Z",
];

/// A TOML-ish text from the policy's own vocabulary, with stray bytes.
fn policy_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        4 => prop::sample::select(SECTIONS).prop_map(str::to_string),
        8 => (prop::sample::select(KEYS), prop::sample::select(VALUES)).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "[ -~]{0,40}",
        1 => any::<String>(),
    ];
    prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n"))
}

/// A sample policy from the repository with a few characters changed.
fn mutated_sample(samples: Vec<String>) -> impl Strategy<Value = String> {
    let edit = (
        any::<prop::sample::Index>(),
        prop::sample::select(vec!["", "\"", "[", "]", "=", "\n", "0", "-", "x", "\u{0}", "é"]),
    );
    (prop::sample::select(samples), prop::collection::vec(edit, 1..6)).prop_map(|(text, edits)| {
        let mut chars: Vec<char> = text.chars().collect();
        for (at, with) in edits {
            let i = at.index(chars.len() + 1);
            if i < chars.len() {
                chars.remove(i);
            }
            for (k, c) in with.chars().enumerate() {
                chars.insert((i + k).min(chars.len()), c);
            }
        }
        chars.into_iter().collect()
    })
}

fn check(text: String) -> Result<(), TestCaseError> {
    let parsed = std::panic::catch_unwind(|| Policy::from_toml(&text));
    let parsed = parsed.map_err(|_| TestCaseError::fail("the policy parser panicked"))?;
    match parsed {
        Ok(policy) => {
            // What `chimera audit` and the API show of it.
            serde_json::to_string(&policy).map_err(|e| TestCaseError::fail(format!("cannot show it: {e}")))?;
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(!message.trim().is_empty(), "an empty error");
            prop_assert!(!message.contains("panicked") && !message.contains("backtrace"), "{message}");
            prop_assert!(message.len() <= 2048, "an error of {} bytes", message.len());
        }
    }
    Ok(())
}

#[test]
fn fuzz_policy_parser() {
    let samples: Vec<String> = ["echo", "flaky", "http-fetch", "kv-counter", "word-count", "text-report"]
        .iter()
        .map(|agent| {
            let path = format!("{}/../sample-agents/{agent}/policy.toml", env!("CARGO_MANIFEST_DIR"));
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
        })
        .collect();
    let seeds = corpus("policies.txt").into_iter().map(|l| l.replace("\\n", "\n"));
    let inputs = samples.clone().into_iter().chain(seeds);
    run("policy-parser", inputs, prop_oneof![policy_text(), mutated_sample(samples)], check);
}
