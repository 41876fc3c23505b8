//! A policy built in code rather than read from a file: the KV counter in
//! a namespace of its own, with a quota and tighter limits.

use chimera_examples::artifacts;
use chimera_host::capabilities::kv::KvGrant;
use chimera_host::capabilities::logging::LoggingGrant;
use chimera_host::{Host, HostConfig, Policy};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data = std::env::temp_dir().join(format!("chimera-example-policy-{}", std::process::id()));
    let host = Host::new(HostConfig { data_dir: data.clone(), max_instances: 8, ..HostConfig::default() })?;
    let policy = Policy::builder()
        .name("counter")
        .limits(|l| {
            l.memory_mib = 16;
            l.cpu_ms = 500;
        })
        .grant(&KvGrant { namespace: Some("visits".into()), max_keys: 100, ..KvGrant::default() })
        .grant(&LoggingGrant::default())
        .build()?;
    println!("policy:\n{}", chimera_host::toml::to_string(&policy)?);
    let agent = host.load("counter", &std::fs::read(artifacts::KV_COUNTER)?, policy)?;
    for expected in 1..=3 {
        let output = host.run(&agent, r#"{"key":"home"}"#).await.outcome?;
        println!("run {expected}: {output}");
        anyhow::ensure!(output == format!(r#"{{"key":"home","count":{expected}}}"#), "unexpected output {output}");
    }
    let _ = std::fs::remove_dir_all(data);
    Ok(())
}
