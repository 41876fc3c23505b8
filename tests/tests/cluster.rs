//! Several `chimera serve` nodes sharing one queue on a real `redis-server`
//! on loopback: a node killed with SIGKILL mid-run loses no task, an
//! idempotency key names one task whichever node it reaches, a
//! cancellation reaches the node running the task, a node with another
//! component under an agent's name refuses its tasks, and a Redis outage
//! (a kill and a restart from its append-only file) loses no accepted task.

use chimera_tests::{agent_entry, artifacts, policy_file, Api, DaemonProcess, RedisServer};
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// A node's config: `sleeper` (and `echo`) on the shared Redis queue.
fn node_config(dir: &Path, redis: &RedisServer, node: &str, extra: &str, sleeper_wasm: &str) -> String {
    let sleeper = policy_file(dir, "sleeper", "[capabilities.logging]\n[limits]\ntimeout_ms = 120000\n");
    let echo = policy_file(dir, "echo", "[capabilities.logging]\n");
    format!(
        "data_dir = \"data\"\nmax_instances = 64\n[scheduler]\nnode = \"{node}\"\nlease_ms = 1500\nmax_queued = 20000\n\
         max_attempts = 1\n{extra}\n\n[storage]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"cluster:\"\n\
         response_timeout_ms = 1000\n\n{}{}",
        redis.url(),
        agent_entry("sleeper", sleeper_wasm, &sleeper, 48),
        agent_entry("echo", artifacts::ECHO, &echo, 8),
    )
}

fn start_nodes(redis: &RedisServer, n: usize, extra: &str) -> (Vec<tempfile::TempDir>, Vec<DaemonProcess>) {
    start_edited_nodes(redis, n, extra, |config| config)
}

/// [`start_nodes`], each node's config passed through `edit` first.
fn start_edited_nodes(
    redis: &RedisServer,
    n: usize,
    extra: &str,
    edit: impl Fn(String) -> String,
) -> (Vec<tempfile::TempDir>, Vec<DaemonProcess>) {
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let config = edit(node_config(d.path(), redis, &format!("node-{i}"), extra, artifacts::SLEEPER));
            DaemonProcess::start(d.path(), &config)
        })
        .collect();
    (dirs, nodes)
}

/// Submits `bodies` spread round robin over `apis`, 64 at a time; the ids in order.
async fn submit_all(apis: &[&Api], bodies: Vec<Value>) -> Vec<String> {
    let submitted = futures::stream::iter(bodies.into_iter().enumerate())
        .map(|(i, body)| async move { apis[i % apis.len()].submit_ok(body).await })
        .buffered(64)
        .collect::<Vec<_>>()
        .await;
    submitted
}

/// Waits for every task to be final; their records.
async fn finals(api: &Api, ids: &[String]) -> Vec<Value> {
    futures::stream::iter(ids).map(|id| api.wait_final(id)).buffered(32).collect().await
}

fn nodes_of(task: &Value) -> Vec<(String, bool)> {
    task["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["node"].as_str().unwrap_or("?").to_string(), a["interrupted"] == true))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_tasks_on_three_nodes_survive_a_node_killed_mid_run() {
    let redis = RedisServer::start();
    let (_dirs, mut nodes) = start_nodes(&redis, 3, "workers = 24");
    let apis: Vec<Api> = nodes.iter().map(Api::new).collect();
    let body = || json!({"agent": "sleeper", "input": "2x10"});

    // Half the tasks round robin over the three nodes, then node-2 dies
    // while it runs some of them.
    let mut ids = submit_all(&[&apis[0], &apis[1], &apis[2]], (0..2500).map(|_| body()).collect()).await;
    let mut running_there = 0;
    for _ in 0..500 {
        let (_, metrics) = apis[2].get("/metrics").await;
        running_there = metrics
            .lines()
            .find_map(|l| l.strip_prefix("chimera_scheduler_node_held "))
            .map_or(0, |v| v.trim().parse::<f64>().unwrap() as usize);
        if running_there > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running_there > 0, "tasks are running when the node is killed");
    nodes[2].kill();
    // The other half round robin over the two left.
    ids.extend(submit_all(&[&apis[0], &apis[1]], (0..2500).map(|_| body()).collect()).await);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 5000, "5,000 distinct tasks accepted");

    let tasks = finals(&apis[0], &ids).await;
    let mut interrupted = 0;
    for task in &tasks {
        assert_eq!(task["status"], "completed", "every task completes once: {task}");
        assert_eq!(task["output"], "slept 2 x 10 ms");
        let attempts = nodes_of(task);
        let (last, earlier) = attempts.split_last().expect("a completed task has an attempt");
        assert!(!last.1, "the last attempt ran to its end: {task}");
        // Re-runs only of tasks node-2 had started, each marked interrupted.
        for (node, cut) in earlier {
            assert!(*cut && node == "node-2", "only the killed node's attempts were cut off: {task}");
            interrupted += 1;
        }
        if !earlier.is_empty() {
            assert_ne!(last.0, "node-2", "a re-run ran on a node that lives: {task}");
        }
    }
    assert!(interrupted > 0, "the kill cut off attempts in progress");
    assert!(interrupted <= 24, "no more attempts cut off than node-2 had workers: {interrupted}");

    // Nothing is left held or queued, and both nodes see the whole queue.
    for api in &apis[..2] {
        let (_, metrics) = api.get("/metrics").await;
        for series in ["chimera_scheduler_cluster_running ", "chimera_scheduler_queue_depth{priority=\"normal\"} "] {
            let mut value = None;
            for _ in 0..50 {
                let (_, metrics) = api.get("/metrics").await;
                value = metrics.lines().find_map(|l| l.strip_prefix(series)).map(|v| v.trim().to_string());
                if value.as_deref() == Some("0") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(value.as_deref(), Some("0"), "{series} on a node: {metrics}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_used_on_two_nodes_names_one_task() {
    let redis = RedisServer::start();
    let (_dirs, nodes) = start_nodes(&redis, 2, "");
    let apis: Vec<Api> = nodes.iter().map(Api::new).collect();
    let body = json!({"agent": "echo", "input": "{\"text\":\"once\"}", "idempotency_key": "order-7"});
    let answers = futures::future::join_all((0..8).map(|i| apis[i % 2].submit(body.clone()))).await;
    let ids: HashSet<String> = answers
        .iter()
        .map(|(code, answer)| {
            assert_eq!(*code, 202, "{answer}");
            answer["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one task for one key: {answers:?}");
    let id = ids.into_iter().next().unwrap();
    let task = apis[1].wait_final(&id).await;
    assert_eq!((task["status"].as_str(), task["attempts"].as_array().unwrap().len()), (Some("completed"), 1));
    // The same key with another input, on either node: refused, naming the first task.
    let other = json!({"agent": "echo", "input": "{\"text\":\"twice\"}", "idempotency_key": "order-7"});
    for api in &apis {
        let (code, answer) = api.submit(other.clone()).await;
        assert_eq!(code, 409, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(&id), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_sent_to_one_node_stops_the_task_on_another() {
    let redis = RedisServer::start();
    let (_dirs, nodes) = start_nodes(&redis, 2, "");
    let apis: Vec<Api> = nodes.iter().map(Api::new).collect();
    let id = apis[0].submit_ok(json!({"agent": "sleeper", "input": "600x100"})).await;
    let mut task = apis[1].task(&id).await;
    for _ in 0..500 {
        if task["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        task = apis[1].task(&id).await;
    }
    assert_eq!(task["status"], "running", "{task}");
    let runner = task["attempts"][0]["node"].as_str().unwrap().to_string();
    let other = if runner == "node-0" { &apis[1] } else { &apis[0] };
    assert_eq!(other.cancel(&id).await, (200, json!({"id": id, "status": "running"})));
    let done = other.wait_final(&id).await;
    assert_eq!((done["status"].as_str(), &done["error"]), (Some("cancelled"), &json!({"kind": "cancelled"})));
    assert_eq!(nodes_of(&done), vec![(runner, false)], "stopped where it ran, not run again");
    // A queued one is cancelled before any node takes it.
    let (code, answer) = other.cancel(&id).await;
    assert_eq!(
        (code, answer["error"].as_str()),
        (409, Some(format!("task {id} already finished (cancelled)").as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_component_under_an_agents_name_refuses_its_tasks() {
    let redis = RedisServer::start();
    let (_dirs, nodes) = start_nodes(&redis, 1, "");
    let api = Api::new(&nodes[0]);
    let first = api.submit_ok(json!({"agent": "sleeper", "input": "1x1"})).await;
    assert_eq!(api.wait_final(&first).await["status"], "completed");

    // A second node whose `sleeper` is another component (echo's).
    let dir = tempfile::tempdir().unwrap();
    let odd = DaemonProcess::start(dir.path(), &node_config(dir.path(), &redis, "odd", "", artifacts::ECHO));
    let odd_api = Api::new(&odd);
    let (code, answer) = odd_api.submit(json!({"agent": "sleeper", "input": "1x1"})).await;
    assert_eq!(code, 409, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("agent `sleeper` on this node is component sha256:")
            && error.contains("but the cluster on Redis runs sha256:")
            && error.contains("registered by node node-0"),
        "{error}"
    );
    // Tasks submitted on the first node never run on the odd one, though it is idle.
    let ids = submit_all(&[&api], (0..40).map(|_| json!({"agent": "sleeper", "input": "1x5"})).collect()).await;
    for task in finals(&odd_api, &ids).await {
        assert_eq!(task["status"], "completed");
        assert_eq!(nodes_of(&task), vec![("node-0".to_string(), false)], "{task}");
    }
    // Its other agents run as ever.
    let echo = odd_api.submit_ok(json!({"agent": "echo", "input": "{\"text\":\"hi\"}"})).await;
    assert_eq!(odd_api.wait_final(&echo).await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_refuses_submissions_with_503_and_its_restart_loses_no_accepted_task() {
    let mut redis = RedisServer::start_persistent();
    let (_dirs, nodes) = start_nodes(&redis, 2, "workers = 8");
    let apis: Vec<Api> = nodes.iter().map(Api::new).collect();
    let ids =
        submit_all(&[&apis[0], &apis[1]], (0..300).map(|_| json!({"agent": "sleeper", "input": "5x10"})).collect())
            .await;

    // Redis dies (SIGKILL) with tasks running and queued.
    redis.kill();
    let (code, answer) = apis[0].submit(json!({"agent": "echo", "input": "{}"})).await;
    assert_eq!(code, 503, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains(&format!("Redis at {}/0", redis.addr())) && error.contains("did not answer"), "{error}");
    // The other node finds out at its next call to Redis (it makes one every few ms).
    let mut health = apis[1].get("/healthz").await;
    for _ in 0..100 {
        if health.1.contains("degraded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        health = apis[1].get("/healthz").await;
    }
    assert!(health.1.contains("degraded") && health.1.contains("did not answer"), "{health:?}");

    // Back from its append-only file: every accepted task completes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    for task in finals(&apis[1], &ids).await {
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(task["output"], "slept 5 x 10 ms");
    }
    let after = apis[0].submit_ok(json!({"agent": "echo", "input": "{\"text\":\"back\"}"})).await;
    assert_eq!(apis[0].wait_final(&after).await["status"], "completed");
    assert_eq!(apis[0].get("/healthz").await.0, 200);
}

/// The start and end of each task's attempts, by node.
fn spans(tasks: &[Value]) -> Vec<(u64, u64)> {
    tasks
        .iter()
        .flat_map(|t| t["attempts"].as_array().unwrap().clone())
        .map(|a| (a["started_ms"].as_u64().unwrap(), a["finished_ms"].as_u64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_max_concurrency_holds_across_nodes() {
    let redis = RedisServer::start();
    // Three nodes of one worker each: three tasks could run at once, and
    // two at once needs two nodes.
    let (_dirs, nodes) =
        start_edited_nodes(&redis, 3, "workers = 1", |c| c.replace("max_concurrency = 48", "max_concurrency = 2"));
    let apis: Vec<Api> = nodes.iter().map(Api::new).collect();
    let apis: Vec<&Api> = apis.iter().collect();
    let ids = submit_all(&apis, (0..24).map(|_| json!({"agent": "sleeper", "input": "4x25"})).collect()).await;
    let tasks = finals(apis[0], &ids).await;
    assert!(tasks.iter().all(|t| t["status"] == "completed"));
    // The most attempts running at once, over the nodes: exactly the cap.
    let spans = spans(&tasks);
    let most = spans.iter().map(|(start, _)| spans.iter().filter(|(s, e)| s <= start && start < e).count()).max();
    assert_eq!(most, Some(2), "two at once at most, and the cap was reached: {spans:?}");
    let ran_on: HashSet<String> = tasks.iter().flat_map(|t| nodes_of(t).into_iter().map(|(n, _)| n)).collect();
    assert!(ran_on.len() >= 2, "two nodes at least took tasks: {ran_on:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_queue_runs_priorities_first_and_agents_in_turn() {
    let redis = RedisServer::start();
    let (_dirs, nodes) = start_nodes(&redis, 1, "workers = 1\naging_ms = 3600000");
    let api = Api::new(&nodes[0]);
    // A task that holds the only worker until it is cancelled.
    let blocker = api.submit_ok(json!({"agent": "sleeper", "input": "600x100"})).await;
    api.wait_running(&blocker).await;
    let submit = |agent: &str, priority: &str| {
        let input = if agent == "echo" { "{\"text\":\"e\"}" } else { "1x1" };
        json!({"agent": agent, "input": input, "priority": priority})
    };
    let order = [
        ("sleeper", "normal"),
        ("sleeper", "normal"),
        ("sleeper", "normal"),
        ("echo", "normal"),
        ("sleeper", "background"),
        ("echo", "critical"),
        ("sleeper", "high"),
    ];
    let mut ids = Vec::new();
    for (agent, priority) in order {
        ids.push(api.submit_ok(submit(agent, priority)).await);
    }
    assert_eq!(api.cancel(&blocker).await.0, 200);
    let tasks = finals(&api, &ids).await;
    let mut by_start: Vec<usize> = (0..ids.len()).collect();
    // One at a time: a task that took under a millisecond may share its start with the next one's.
    let attempt = |i: usize| &tasks[i]["attempts"][0];
    by_start
        .sort_by_key(|&i| (attempt(i)["started_ms"].as_u64().unwrap(), attempt(i)["finished_ms"].as_u64().unwrap()));
    // critical, high, then normal with the two agents in turn, then background.
    assert_eq!(by_start, vec![5, 6, 0, 3, 1, 2, 4], "{tasks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_work_on_the_shared_queue_ages_past_fresher_higher_priorities() {
    let redis = RedisServer::start();
    let (_dirs, nodes) = start_nodes(&redis, 1, "workers = 1\naging_ms = 100");
    let api = Api::new(&nodes[0]);
    let blocker = api.submit_ok(json!({"agent": "sleeper", "input": "600x100"})).await;
    api.wait_running(&blocker).await;
    let task = |priority: &str| json!({"agent": "sleeper", "input": "1x1", "priority": priority});
    // Background work waits 1.2 s: twelve levels gained, more than the four
    // between background and critical.
    let old = api.submit_ok(task("background")).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut ids = vec![old];
    for _ in 0..3 {
        ids.push(api.submit_ok(task("critical")).await);
    }
    // Fresh background work has gained nothing on the critical tasks.
    ids.push(api.submit_ok(task("background")).await);
    assert_eq!(api.cancel(&blocker).await.0, 200);
    let tasks = finals(&api, &ids).await;
    assert!(tasks.iter().all(|t| t["status"] == "completed"), "{tasks:?}");
    let started = |i: usize| tasks[i]["attempts"][0]["started_ms"].as_u64().unwrap();
    let mut by_start: Vec<usize> = (0..ids.len()).collect();
    by_start.sort_by_key(|&i| (started(i), tasks[i]["attempts"][0]["finished_ms"].as_u64().unwrap()));
    // Without aging the old background task would run fourth, with the fresh one.
    assert_eq!(by_start[0], 0, "the aged background task ran first: {tasks:?}");
    assert_eq!(by_start[4], 4, "the fresh background task ran last: {tasks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_queue_refuses_past_max_queued_counting_every_nodes_tasks() {
    let redis = RedisServer::start();
    let (_dirs, nodes) =
        start_edited_nodes(&redis, 2, "workers = 1", |c| c.replace("max_queued = 20000", "max_queued = 4"));
    let apis: Vec<Api> = nodes.iter().map(Api::new).collect();
    // One long task on each node holds its only worker.
    let long = json!({"agent": "sleeper", "input": "600x100"});
    let blockers = [apis[0].submit_ok(long.clone()).await, apis[1].submit_ok(long.clone()).await];
    for id in &blockers {
        apis[0].wait_running(id).await;
    }
    // Four waiting tasks, two through each node, fill the shared queue.
    let short = json!({"agent": "sleeper", "input": "1x1"});
    let waiting = submit_all(&[&apis[0], &apis[1]], vec![short.clone(); 4]).await;
    for api in &apis {
        let (code, answer) = api.submit(short.clone()).await;
        assert_eq!((code, answer["error"].as_str()), (429, Some("the queue is full (4 tasks waiting); retry later")));
    }
    // A cancelled waiting task frees its place, on whichever node asks.
    assert_eq!(apis[1].cancel(&waiting[0]).await.0, 200);
    let last = apis[0].submit_ok(short.clone()).await;
    assert_eq!(apis[1].submit(short.clone()).await.0, 429);
    for id in &blockers {
        assert_eq!(apis[0].cancel(id).await.0, 200);
    }
    let tasks = finals(&apis[0], &[&waiting[1..], &[last]].concat()).await;
    assert!(tasks.iter().all(|t| t["status"] == "completed"), "{tasks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_nodes_wait_for_the_queues_wake_ups_and_a_task_reaches_the_one_with_a_free_worker() {
    let redis = RedisServer::start();
    let (_dirs, nodes) = start_nodes(&redis, 2, "workers = 1");
    let apis: Vec<Api> = nodes.iter().map(Api::new).collect();
    // Both nodes up and subscribed (each has looked at the queue).
    for api in &apis {
        let id = api.submit_ok(json!({"agent": "echo", "input": "{\"text\":\"up\"}"})).await;
        assert_eq!(api.wait_final(&id).await["status"], "completed");
    }
    // Two idle nodes for three seconds: their housekeeping and lease
    // renewals, no look at the queue every 20 ms (that alone would be 300).
    let reads = redis.info("total_reads_processed");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = redis.info("total_reads_processed") - reads - 1;
    assert!(idle < 100, "two idle nodes made {idle} calls to Redis in 3 s");
    // node-0's worker is busy: a task submitted to it wakes node-1, which runs it.
    let blocker = apis[0].submit_ok(json!({"agent": "sleeper", "input": "600x100"})).await;
    let on = |t: &Value| nodes_of(t).first().map(|(n, _)| n.clone());
    apis[0].wait_running(&blocker).await;
    let running_on = on(&apis[0].task(&blocker).await).unwrap();
    let (busy, free) = if running_on == "node-0" { (0, 1) } else { (1, 0) };
    let id = apis[busy].submit_ok(json!({"agent": "echo", "input": "{\"text\":\"x\"}"})).await;
    let t = apis[busy].wait_final(&id).await;
    assert_eq!((t["status"].as_str(), on(&t)), (Some("completed"), Some(format!("node-{free}"))));
    assert_eq!(apis[0].cancel(&blocker).await.0, 200);
}

/// The sum of one counter over the nodes' `/metrics`.
async fn counter_sum(apis: &[Api], series: &str) -> u64 {
    let mut sum = 0;
    for api in apis {
        let (_, metrics) = api.get("/metrics").await;
        sum += metrics
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse::<u64>().ok()))
            .unwrap_or(0);
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_dead_letters_and_deadlines_hold_on_the_shared_queue() {
    let redis = RedisServer::start();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<DaemonProcess> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let flaky = policy_file(d.path(), "flaky", "[capabilities.kv]\n");
            let sleeper = policy_file(d.path(), "sleeper", "[capabilities.logging]\n[limits]\ntimeout_ms = 120000\n");
            let config = format!(
                "data_dir = \"data\"\nmax_instances = 16\n[scheduler]\nnode = \"node-{i}\"\nlease_ms = 1500\n\
                 retry_base_ms = 40\nmax_attempts = 3\n\n[storage]\nbackend = \"redis\"\nredis_url = \"{}\"\n\n{}{}",
                redis.url(),
                agent_entry("flaky", artifacts::FLAKY, &flaky, 2),
                agent_entry("sleeper", artifacts::SLEEPER, &sleeper, 1),
            );
            DaemonProcess::start(d.path(), &config)
        })
        .collect();
    let apis: Vec<Api> = nodes.iter().map(Api::new).collect();

    // Fails twice (its count of failures is in the shared KV store), then
    // succeeds; each retry waits in the delayed set for its backoff.
    let id = apis[0].submit_ok(json!({"agent": "flaky", "input": r#"{"key":"c1","fail_times":2}"#})).await;
    let t = apis[1].wait_final(&id).await;
    assert_eq!((t["status"].as_str(), t["output"].as_str()), (Some("completed"), Some(r#"{"key":"c1","attempt":3}"#)));
    let attempts = t["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{t}");
    let started: Vec<u64> = attempts.iter().map(|a| a["started_ms"].as_u64().unwrap()).collect();
    let finished: Vec<u64> = attempts.iter().map(|a| a["finished_ms"].as_u64().unwrap()).collect();
    // Exponential backoff with ±50% jitter: at least 20 ms, then at least 40 ms.
    assert!(started[1] >= finished[0] + 20 && started[2] >= finished[1] + 40, "{started:?} {finished:?}");

    // Out of attempts: dead-lettered, with the last attempt's error.
    let id = apis[1].submit_ok(json!({"agent": "flaky", "input": r#"{"key":"c2","fail_times":9}"#})).await;
    let t = apis[0].wait_final(&id).await;
    assert_eq!((t["status"].as_str(), t["attempts"].as_array().unwrap().len()), (Some("dead-lettered"), 3));
    assert_eq!(t["error"]["message"], "transient failure 3 of 9");
    assert_eq!(counter_sum(&apis, "chimera_scheduler_retries_total{agent=\"flaky\"} ").await, 4);
    assert_eq!(counter_sum(&apis, "chimera_scheduler_dead_letters_total{agent=\"flaky\"} ").await, 1);

    // A deadline that passes while the task runs stops it; one that passes
    // while it waits (sleeper's cap is one, cluster-wide) means it never runs.
    let running = apis[0].submit_ok(json!({"agent": "sleeper", "input": "100x100", "deadline_ms": 1500})).await;
    apis[1].wait_running(&running).await;
    let waiting = apis[1].submit_ok(json!({"agent": "sleeper", "input": "1x1", "deadline_ms": 200})).await;
    for (id, attempts) in [(&running, 1), (&waiting, 0)] {
        let t = apis[0].wait_final(id).await;
        assert_eq!(
            (t["status"].as_str(), &t["error"]),
            (Some("timed-out"), &json!({"kind": "deadline-exceeded"})),
            "{t}"
        );
        assert_eq!(t["attempts"].as_array().unwrap().len(), attempts, "{t}");
    }
}
