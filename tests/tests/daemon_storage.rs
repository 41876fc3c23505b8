//! The daemon's storage as an operator meets it: a full disk (a file-size
//! limit, raised again later), damaged files, retention of finished tasks,
//! memory held by big inputs, a SIGTERM under load, and a config refused
//! whole before the port is taken or any task runs.

use chimera_tests::{agent_entry, artifacts, policy_file, serve_refused, Api, DaemonProcess};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

fn config(dir: &Path, scheduler: &str) -> String {
    let sleeper = policy_file(dir, "sleeper", "[limits]\ntimeout_ms = 60000\n");
    let pass = policy_file(dir, "pass", "");
    let count = policy_file(dir, "count", "[capabilities.logging]\n[capabilities.kv]\n");
    format!(
        "data_dir = \"data\"\nmax_instances = 16\n[scheduler]\n{scheduler}\n\n{}{}{}",
        agent_entry("sleeper", artifacts::SLEEPER, &sleeper, 2),
        agent_entry("pass", artifacts::PASSTHROUGH, &pass, 1),
        agent_entry("count", artifacts::KV_COUNTER, &count, 1),
    )
}

/// Sets the daemon's file-size limit (what a full disk looks like to it:
/// writes past `bytes` fail with EFBIG).
fn limit_file_size(daemon: &DaemonProcess, bytes: u64) {
    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: prlimit reads `limit` and writes nothing (old limit: null).
    let r = unsafe { libc::prlimit(daemon.pid() as i32, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
}

async fn health(api: &Api) -> (u16, Value) {
    let (code, body) = api.get("/healthz").await;
    (code, serde_json::from_str(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_submissions_until_space_returns_and_health_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonProcess::start(dir.path(), &config(dir.path(), "workers = 4"));
    let api = Api::new(&daemon);
    // A task runs through the fault.
    let sleeper = api.submit_ok(json!({"agent": "sleeper", "input": "2"})).await;
    api.wait_running(&sleeper).await;
    let journal = dir.path().join("data/journal.redb");
    limit_file_size(&daemon, std::fs::metadata(&journal).unwrap().len());

    let big = "x".repeat(900 << 10);
    let mut accepted = Vec::new();
    let refusal = loop {
        let (code, body) = api.submit(json!({"agent": "pass", "input": big})).await;
        match code {
            202 => accepted.push(body["id"].as_str().unwrap().to_string()),
            503 => break body,
            _ => panic!("{code} {body}"),
        }
        assert!(accepted.len() < 64, "64 MiB written past a file-size limit of the journal's size");
    };
    let message = refusal["error"].as_str().unwrap();
    assert!(message.starts_with(&format!("task journal: cannot write {}: ", journal.display())), "{message}");
    assert!(message.contains("File too large"), "{message}");
    let (code, h) = health(&api).await;
    assert_eq!((code, h["status"].as_str()), (503, Some("degraded")), "{h}");
    assert!(h["storage"].as_str().unwrap().contains("File too large"), "{h}");
    // Still refused while the cause stays.
    assert_eq!(api.submit(json!({"agent": "pass", "input": big})).await.0, 503);

    limit_file_size(&daemon, libc::RLIM_INFINITY);
    // The journal is tried again every second: health comes back by itself.
    let mut recovered = false;
    for _ in 0..600 {
        if health(&api).await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(recovered, "health did not come back once the limit was lifted: {}", health(&api).await.1);
    let after = api.submit_ok(json!({"agent": "pass", "input": big})).await;
    accepted.push(after);
    for id in &accepted {
        let t = api.wait_final(id).await;
        assert_eq!((t["status"].as_str(), t["output"].as_str().map(str::len)), (Some("completed"), Some(big.len())));
    }
    let t = api.wait_final(&sleeper).await;
    assert_eq!((t["status"].as_str(), t["attempts"].as_array().unwrap().len()), (Some("completed"), 1), "{t}");
    let (code, h) = health(&api).await;
    assert_eq!((code, h["status"].as_str()), (200, Some("ok")), "{h}");
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_store_files_are_refused_by_name_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "workers = 2");
    let mut daemon = DaemonProcess::start(dir.path(), &config);
    let api = Api::new(&daemon);
    for i in 0..20 {
        let id = api.submit_ok(json!({"agent": "count", "input": format!(r#"{{"key":"k{i}"}}"#)})).await;
        assert_eq!(api.wait_final(&id).await["status"], "completed");
    }
    daemon.terminate();
    let data = dir.path().join("data");
    let pristine = tempfile::tempdir().unwrap();
    for file in ["journal.redb", "kv.redb"] {
        std::fs::copy(data.join(file), pristine.path().join(file)).unwrap();
    }
    for (file, what) in [("journal.redb", "task journal: file"), ("kv.redb", "the KV store")] {
        let len = std::fs::metadata(pristine.path().join(file)).unwrap().len();
        // Emptied, or cut to its first page (everything past the header gone).
        for cut in [0, 4096.min(len - 1)] {
            for f in ["journal.redb", "kv.redb"] {
                std::fs::copy(pristine.path().join(f), data.join(f)).unwrap();
            }
            std::fs::OpenOptions::new().write(true).open(data.join(file)).unwrap().set_len(cut).unwrap();
            let (code, stderr) = serve_refused(dir.path(), &config, "127.0.0.1:0");
            let path = data.join(file);
            assert_eq!(code, Some(2), "{file} cut to {cut}: {stderr}");
            assert!(stderr.contains(&format!("{what} {} is damaged (", path.display())), "{stderr}");
            assert!(stderr.contains("restore it from a backup, or move it away"), "{stderr}");
            assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
            if cut == 0 {
                assert!(stderr.contains("the file is empty"), "{stderr}");
            }
        }
    }
    // Put back whole, the files open and every task is there, finished.
    for f in ["journal.redb", "kv.redb"] {
        std::fs::copy(pristine.path().join(f), data.join(f)).unwrap();
    }
    daemon.restart();
    let (code, h) = health(&Api::new(&daemon)).await;
    assert_eq!((code, &h["queued"], &h["in_memory"]), (200, &json!(0), &json!(0)), "{h}");
}

#[tokio::test(flavor = "multi_thread")]
async fn big_inputs_are_not_held_in_memory_and_finished_tasks_are_kept_as_retention_says() {
    const TASKS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = DaemonProcess::start(
        dir.path(),
        &config(dir.path(), "workers = 1\nmax_queued = 1000\n[scheduler.retain_finished]\nmax_count = 20"),
    );
    let api = Api::new(&daemon);
    let rss_before = daemon.rss_kib();
    // The one worker sleeps while 300 MiB of inputs queue up behind it.
    let blocker = api.submit_ok(json!({"agent": "sleeper", "input": "2"})).await;
    api.wait_running(&blocker).await;
    let input = "y".repeat(1 << 20);
    let mut ids = Vec::new();
    for _ in 0..TASKS {
        ids.push(api.submit_ok(json!({"agent": "pass", "input": input})).await);
    }
    let (_, h) = health(&api).await;
    let queued = h["queued"].as_u64().unwrap();
    let rss_queued = daemon.rss_kib();
    println!("{queued} tasks of 1 MiB queued: RSS {rss_before} KiB before, {rss_queued} KiB with them queued");
    assert!(queued >= 100, "only {queued} tasks were queued at once: the measure is not of queued inputs");
    // Kept, each would be 1 MiB: less than a third of them in all.
    assert!(rss_queued < rss_before + (queued << 10) / 3, "RSS {rss_before} → {rss_queued} KiB");

    let last = api.wait_final(ids.last().unwrap()).await;
    assert_eq!(last["output"].as_str().map(str::len), Some(1 << 20));
    // Retention runs every second: the 20 latest stay, the rest (and the blocker) go.
    let mut gone = 0;
    for _ in 0..600 {
        gone = 0;
        for id in &ids {
            if api.get(&format!("/v1/tasks/{id}")).await.0 == 404 {
                gone += 1;
            }
        }
        if gone >= TASKS - 20 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(gone, TASKS - 20);
    let (code, body) = api.get(&format!("/v1/tasks/{}", ids[0])).await;
    assert_eq!(code, 404);
    assert!(body.contains("[scheduler.retain_finished]"), "{body}");
    assert_eq!(api.get(&format!("/v1/tasks/{blocker}")).await.0, 404);
    for id in &ids[TASKS - 20..] {
        assert_eq!(api.task(id).await["status"], "completed");
    }
    let (_, h) = health(&api).await;
    assert_eq!((&h["queued"], &h["in_memory"]), (&json!(0), &json!(0)), "{h}");
    let rss_after = daemon.rss_kib();
    println!("after: RSS {rss_after} KiB");
    assert!(rss_after < rss_before + ((TASKS as u64) << 10) / 3, "RSS {rss_before} → {rss_after} KiB");

    // What retention freed is given back to the filesystem at the next start.
    let journal = dir.path().join("data/journal.redb");
    let before = std::fs::metadata(&journal).unwrap().len();
    daemon.terminate();
    daemon.restart();
    let after = std::fs::metadata(&journal).unwrap().len();
    println!("journal: {before} bytes before the restart, {after} after");
    assert!(after < before / 4, "the journal kept {after} of {before} bytes for 20 tasks");
    assert_eq!(Api::new(&daemon).task(ids.last().unwrap()).await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_once_running_tasks_end_with_no_phantom_attempts() {
    let dir = tempfile::tempdir().unwrap();
    // A long grace: the daemon must not wait it out.
    let cfg = format!(
        "{}\n[http]\nrequest_timeout_ms = 2000\n",
        config(dir.path(), "workers = 2\nshutdown_grace_ms = 120000")
    );
    let mut daemon = DaemonProcess::start(dir.path(), &cfg);
    let api = Api::new(&daemon);
    let running = [
        api.submit_ok(json!({"agent": "sleeper", "input": "1"})).await,
        api.submit_ok(json!({"agent": "sleeper", "input": "1"})).await,
    ];
    for id in &running {
        api.wait_running(id).await;
    }
    let mut queued = Vec::new();
    for _ in 0..5 {
        queued.push(api.submit_ok(json!({"agent": "sleeper", "input": "1"})).await);
    }
    // A client holding a half-sent request, and one holding an idle connection.
    let addr = daemon.url.trim_start_matches("http://").to_string();
    let mut half = std::net::TcpStream::connect(&addr).unwrap();
    half.write_all(
        b"POST /v1/tasks HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
    )
    .unwrap();
    let _idle = std::net::TcpStream::connect(&addr).unwrap();

    let started = std::time::Instant::now();
    let status = daemon.terminate();
    let took = started.elapsed();
    println!("SIGTERM to exit: {took:?}");
    assert!(status.success(), "{status:?}");
    assert!(took < std::time::Duration::from_secs(60), "the daemon waited {took:?} (grace 120 s)");

    daemon.restart();
    let api = Api::new(&daemon);
    for id in running.iter().chain(&queued) {
        let t = api.wait_final(id).await;
        let attempts = t["attempts"].as_array().unwrap();
        assert_eq!((t["status"].as_str(), attempts.len()), (Some("completed"), 1), "{t}");
        assert_eq!(attempts[0]["interrupted"], false, "{t}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_config_is_refused_whole_and_the_port_is_taken_before_any_task_runs() {
    let dir = tempfile::tempdir().unwrap();
    let base = config(dir.path(), "workers = 1");
    let pass = policy_file(dir.path(), "pass", "");
    let cases = [
        (
            format!("{base}{}", agent_entry("pass", artifacts::PASSTHROUGH, &pass, 1)),
            "agent `pass` is configured twice; give each [[agents]] entry its own name",
        ),
        (config(dir.path(), "max_attempts = 0"), "[scheduler] max_attempts must be between 1 and 100, not 0"),
        (config(dir.path(), "workers = 0"), "[scheduler] workers must be at least 1"),
    ];
    for (config, message) in cases {
        let (code, stderr) = serve_refused(dir.path(), &config, "127.0.0.1:0");
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(message), "{stderr}");
        assert!(!dir.path().join("data").exists(), "a refused config created the data directory");
    }

    // Tasks left queued by one run...
    let mut daemon = DaemonProcess::start(dir.path(), &config(dir.path(), "workers = 1\nshutdown_grace_ms = 100"));
    let api = Api::new(&daemon);
    let blocker = api.submit_ok(json!({"agent": "sleeper", "input": "3"})).await;
    api.wait_running(&blocker).await;
    let mut queued = Vec::new();
    for i in 0..5 {
        queued.push(api.submit_ok(json!({"agent": "pass", "input": format!("q{i}")})).await);
    }
    daemon.kill();
    // ...are not started by a run that cannot take its port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = serve_refused(dir.path(), &config(dir.path(), "workers = 1"), &addr);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
    daemon.restart();
    let api = Api::new(&daemon);
    for id in &queued {
        let t = api.wait_final(id).await;
        let attempts = t["attempts"].as_array().unwrap();
        assert_eq!((t["status"].as_str(), attempts.len()), (Some("completed"), 1), "{t}");
        assert_eq!(attempts[0]["interrupted"], false, "a task was started by the run that failed to listen: {t}");
    }
}
