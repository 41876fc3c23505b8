//! The scheduler embedded: two agents with concurrency caps, tasks at
//! several priorities, each answered once durable, then read back.

use chimera_examples::{artifacts, repo_file};
use chimera_host::scheduler::AgentEntry;
use chimera_host::{Host, HostConfig, Policy, Priority, Scheduler, SchedulerConfig, Submission, TaskStatus};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let data = std::env::temp_dir().join(format!("chimera-example-scheduler-{}", std::process::id()));
    let host = Arc::new(Host::new(HostConfig { data_dir: data.clone(), max_instances: 16, ..HostConfig::default() })?);
    let mut entries = Vec::new();
    for (name, path) in [("echo", artifacts::ECHO), ("word-count", artifacts::WORD_COUNT)] {
        let policy = Policy::from_file(&repo_file(&format!("sample-agents/{name}/policy.toml")))?;
        let agent = host.load(name, &std::fs::read(path)?, policy)?;
        entries.push(AgentEntry { agent: Arc::new(agent), max_concurrency: 2 });
    }
    let config = SchedulerConfig { workers: 4, ..SchedulerConfig::default() };
    let scheduler = Scheduler::start(host.clone(), entries, config)?;
    let mut ids = Vec::new();
    for (i, priority) in [Priority::Low, Priority::Normal, Priority::High, Priority::Critical].into_iter().enumerate() {
        let text = format!("task number {i}");
        for (agent, input) in [
            ("echo", format!(r#"{{"text":"{text}","op":"upper"}}"#)),
            ("word-count", format!(r#"{{"text":"{text}"}}"#)),
        ] {
            let submission = Submission { agent: agent.into(), input, priority, ..Submission::default() };
            ids.push(scheduler.submit(submission).await?);
        }
    }
    for id in ids {
        let record = scheduler.wait(id).await.ok_or_else(|| anyhow::anyhow!("task {id} vanished"))?;
        let state = &record.state;
        println!("task {id} {} ({:?}): {}", state.agent, state.priority, record.output.as_deref().unwrap_or("-"));
        anyhow::ensure!(state.status == TaskStatus::Completed, "task {id}: {:?}", state.error);
    }
    scheduler.shutdown(std::time::Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(data);
    Ok(())
}
