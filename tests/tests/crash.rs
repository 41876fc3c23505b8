//! Durability: thousands of tasks accepted, the daemon killed with SIGKILL
//! mid-run and restarted. Every accepted task reaches exactly one final
//! state; none is lost; a task recorded as finished never runs again; one
//! that was running at the crash runs again (at-least-once); a result a
//! client has read is durable (it is the same after the crash).

use chimera_tests::{agent_entry, artifacts, policy_file, Api, DaemonProcess};
use serde_json::{json, Value};
use std::sync::Arc;

const TASKS: usize = 2_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_loses_no_accepted_task_and_reruns_none_that_finished() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(dir.path(), "count", "[capabilities.logging]\n[capabilities.kv]\n");
    let config = format!(
        "data_dir = \"data\"\nmax_instances = 16\n[scheduler]\nworkers = 2\nmax_queued = 10000\n\n{}",
        agent_entry("count", artifacts::KV_COUNTER, &policy, 2)
    );
    let mut daemon = DaemonProcess::start(dir.path(), &config);
    let api = Arc::new(Api::new(&daemon));

    // Eight clients submit concurrently; each task counts its own key.
    let mut clients = Vec::new();
    for c in 0..8 {
        let api = api.clone();
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (c..TASKS).step_by(8) {
                let id = api.submit_ok(json!({"agent": "count", "input": format!(r#"{{"key":"t{i}"}}"#)})).await;
                ids.push((i, id));
            }
            ids
        }));
    }
    let mut accepted = Vec::new();
    for c in clients {
        accepted.extend(c.await.unwrap());
    }
    assert_eq!(accepted.len(), TASKS);
    // Let a quarter finish, then crash in the middle of the run.
    let completed = |m: &str| {
        m.lines().find_map(|l| {
            l.strip_prefix("chimera_scheduler_finished_total{agent=\"count\",status=\"completed\"} ")?
                .parse::<f64>()
                .ok()
        })
    };
    // A client follows the run from task to task (in submission order),
    // reading each until it shows its result, and keeps what it read; it
    // stops at the first request the kill cuts off.
    let mut order: Vec<String> = accepted.iter().map(|(_, id)| id.clone()).collect();
    order.sort(); // UUIDv7: submission order
    let follower = {
        let url = daemon.url.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder().no_proxy().build().unwrap();
            let mut shown = Vec::new();
            for id in order {
                loop {
                    let Ok(r) = http.get(format!("{url}/v1/tasks/{id}")).send().await else { return shown };
                    let Ok(t) = r.json::<Value>().await else { return shown };
                    if t["status"] == "completed" {
                        shown.push(t);
                        break;
                    }
                }
            }
            shown
        })
    };
    let started = std::time::Instant::now();
    let finished_before = loop {
        let (_, m) = api.get("/metrics").await;
        let done = completed(&m).unwrap_or(0.0);
        if done >= (TASKS / 4) as f64 || started.elapsed() > std::time::Duration::from_secs(300) {
            break done;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    drop(api);
    let killed_ms = now_ms();
    daemon.crash_and_restart();
    let api = Api::new(&daemon);
    let shown = follower.await.unwrap();
    assert!(shown.len() >= TASKS / 8, "the follower read only {} results before the kill", shown.len());
    for before in &shown {
        let id = before["id"].as_str().unwrap();
        let after = api.task(id).await;
        assert_eq!(after, *before, "task {id} was shown completed before the crash, and changed after it");
    }

    let (mut rerun, mut done_before_kill, mut started_after_kill) = (0, 0, 0);
    for (i, id) in &accepted {
        let t: Value = api.wait_final(id).await;
        assert_eq!(t["status"], "completed", "task {id}: {t}");
        let attempts = t["attempts"].as_array().unwrap();
        // Only an attempt cut off by the crash is ever followed by another.
        for a in &attempts[..attempts.len() - 1] {
            assert_eq!(a["interrupted"], true, "task {id} ran again after finishing: {t}");
        }
        rerun += attempts.len() - 1;
        let last = attempts.last().unwrap();
        if last["finished_ms"].as_u64().unwrap() < killed_ms {
            done_before_kill += 1;
        }
        if last["started_ms"].as_u64().unwrap() >= killed_ms {
            started_after_kill += 1;
        }
        let output: Value = serde_json::from_str(t["output"].as_str().unwrap()).unwrap();
        assert_eq!(output["key"], format!("t{i}"));
        // Each attempt counts at most once; at least the finishing one counted.
        let count = output["count"].as_u64().unwrap() as usize;
        assert!((1..=attempts.len()).contains(&count), "task {id}: count {count}, {} attempts", attempts.len());
    }
    println!(
        "crash test: {TASKS} accepted, {finished_before:?} counted finished just before the SIGKILL, \
         {done_before_kill} done before it, {started_after_kill} started after it, {rerun} re-run; \
         {} results read before it, each the same after it",
        shown.len()
    );
    // The kill landed mid-run: some tasks had finished, and others were
    // still to run when it came.
    // (A finish is counted just before its record commits: with two
    // workers, at most two counted ones may not have reached the disk.)
    assert!(done_before_kill >= TASKS / 4 - 2, "only {done_before_kill} tasks had finished before the kill");
    assert!(started_after_kill > 0, "every task had finished before the kill: it did not land mid-run");
    // With two workers, at most two tasks were running at the crash.
    assert!(rerun <= 2, "{rerun} tasks ran again");
}
