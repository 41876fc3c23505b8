//! Embedding the host: load an agent under its policy file, run tasks, read
//! the report; and see a refusal and a limit hit.

use chimera_examples::{artifacts, repo_file};
use chimera_host::{Host, HostConfig, LoadError, Policy, TaskError};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data = std::env::temp_dir().join(format!("chimera-example-embed-{}", std::process::id()));
    let host = Host::new(HostConfig { data_dir: data.clone(), max_instances: 8, ..HostConfig::default() })?;

    let policy = Policy::from_file(&repo_file("sample-agents/echo/policy.toml"))?;
    let echo = host.load_file(artifacts::ECHO.as_ref(), policy)?;
    let report = host.run(&echo, r#"{"text":"hello, host","op":"upper"}"#).await;
    let output = report.outcome.clone()?;
    println!("echo: {output}");
    println!(
        "  used {} µs, {} B peak memory, {} log line(s)",
        report.usage.wall_time_us,
        report.usage.peak_memory_bytes,
        report.logs.len()
    );
    anyhow::ensure!(output == r#"{"text":"HELLO, HOST","op":"upper"}"#, "unexpected output {output}");

    // No policy grants outbound HTTP: the agent is refused before it runs.
    match host.load_file(artifacts::HTTP_FETCH.as_ref(), Policy::default()) {
        Err(LoadError::Ungranted { ungranted, .. }) => {
            println!(
                "http-fetch refused: {}",
                ungranted.iter().map(|u| u.import.as_str()).collect::<Vec<_>>().join(", ")
            )
        }
        other => anyhow::bail!("expected a refusal, got {:?}", other.map(|a| a.name().to_string())),
    }

    // A task past its wall-clock limit ends with a typed error.
    let sleeper =
        host.load("sleeper", &std::fs::read(artifacts::SLEEPER)?, Policy::from_toml("[limits]\ntimeout_ms = 200\n")?)?;
    let report = host.run(&sleeper, "60").await;
    println!("sleeper: {}", report.outcome.as_ref().unwrap_err());
    anyhow::ensure!(report.outcome == Err(TaskError::Timeout { limit_ms: 200 }), "{:?}", report.outcome);
    let _ = std::fs::remove_dir_all(data);
    Ok(())
}
