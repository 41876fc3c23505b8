//! A host with a capability of the integrator's own (`acme:geo/lookup`,
//! see the library): the agent that imports it is refused until its policy
//! grants `[capabilities.geo]`, the audit shows it like a built-in, and its
//! usage counters join the task's report.

use chimera_examples::{artifacts, Geo};
use chimera_host::{Host, HostConfig, LoadError, Policy};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data = std::env::temp_dir().join(format!("chimera-example-geo-{}", std::process::id()));
    let config = HostConfig { data_dir: data.clone(), max_instances: 8, ..HostConfig::default() };
    let host = Host::builder(config).capability(Geo::sample()).build()?;
    let bytes = std::fs::read(artifacts::GEO_LOOKUP)?;

    match host.load("geo", &bytes, Policy::default()) {
        Err(e @ LoadError::Ungranted { .. }) => println!("without a grant: {e}"),
        other => anyhow::bail!("expected a refusal, got {:?}", other.map(|a| a.name().to_string())),
    }

    let policy = host.policy_from_toml("[capabilities.geo]\nmax_lookups = 2\n")?;
    let audit = host.audit("geo", &bytes, &policy)?;
    for d in &audit.imports {
        println!("  {:<28} {:<12} {:?}  {}", d.import, d.capability, d.verdict, d.detail);
    }
    let agent = host.load("geo", &bytes, policy)?;
    let report = host.run(&agent, "Paris\nAtlantis\nTokyo").await;
    let output = report.outcome.clone()?;
    println!("output: {output}");
    println!("geo usage: {:?}", report.usage.capabilities.get("geo"));
    anyhow::ensure!(
        output == r#"{"places":[{"lat":48.8566,"lon":2.3522,"name":"Paris"},null,null]}"#,
        "unexpected output {output}"
    );
    anyhow::ensure!(report.usage.counter("geo", "refused") == 1, "the third lookup is over the quota");
    let _ = std::fs::remove_dir_all(data);
    Ok(())
}
