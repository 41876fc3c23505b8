//! Probes `wasi:random`: reports two `insecure-seed` readings and 32 random
//! bytes (input `probe`), or asks for more random bytes in one call than the
//! host allows (input `huge`, 2 MiB).

use chimera_agent::{agent, Error};
use wasip2::random::{insecure, insecure_seed, random};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run(input: String) -> Result<String, Error> {
    match input.as_str() {
        "huge" => Ok(random::get_random_bytes(2 << 20).len().to_string()),
        _ => Ok(serde_json::json!({
            "seed": [insecure_seed::insecure_seed(), insecure_seed::insecure_seed()],
            "bytes": hex(&random::get_random_bytes(32)),
            "u64": random::get_random_u64(),
            "insecure_bytes": hex(&insecure::get_insecure_random_bytes(16)),
        })
        .to_string()),
    }
}

agent!(run);
