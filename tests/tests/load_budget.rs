//! Loading is budgeted: a component too large, too slow or too hungry to
//! compile is refused with the limit it hit, the compile runs in a child
//! process so the host itself never spends that memory or time, and the
//! host keeps serving other agents while a hostile load runs.

use chimera_host::compile::LoadBudget;
use chimera_host::{Host, HostConfig, LoadError, Policy};
use chimera_tests::{artifacts, compile_bombs, component, metric, peak_rss_kib, policy, reset_peak_rss};

fn host_with_budget(dir: &std::path::Path, budget: LoadBudget) -> Host {
    Host::new(HostConfig { data_dir: dir.into(), max_instances: 16, load_budget: budget, ..HostConfig::default() })
        .expect("host starts")
}

fn budget_error(result: Result<chimera_host::Agent, LoadError>) -> (&'static str, String) {
    match result {
        Err(LoadError::Budget { key, detail, .. }) => (key, detail),
        Err(other) => panic!("expected a load-budget error, got: {other}"),
        Ok(_) => panic!("the hostile component loaded"),
    }
}

#[test]
fn a_component_over_the_size_limit_is_refused_before_it_is_compiled() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_budget(dir.path(), LoadBudget { max_component_bytes: 50_000, ..LoadBudget::default() });
    let bytes = component(artifacts::ECHO);
    assert!(bytes.len() > 50_000);
    let err = host.load("echo", &bytes, Policy::default()).err().expect("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "echo exceeds the load budget: the component is {} bytes; at most 50000 are accepted (limit \
             `max_component_bytes`; raise it in HostConfig::load_budget or the `[load]` section of chimera.toml if \
             the component is trusted)",
            bytes.len()
        )
    );
    assert_eq!(metric(&host, r#"chimera_compile_cache_total{result="miss"}"#), None, "nothing was compiled");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_that_compiles_too_long_is_stopped_at_the_time_budget_while_other_agents_run() {
    let dir = tempfile::tempdir().unwrap();
    // The bystander is compiled (and cached) under the default budget first:
    // with other tests' compiles on the same cores, even echo may need more
    // than the one second the hostile load gets.
    host_with_budget(dir.path(), LoadBudget::default())
        .load("echo", &component(artifacts::ECHO), policy("[capabilities.logging]"))
        .unwrap();
    let host = host_with_budget(dir.path(), LoadBudget { compile_timeout_ms: 1_000, ..LoadBudget::default() });
    let echo = host.load("echo", &component(artifacts::ECHO), policy("[capabilities.logging]")).unwrap();
    let bomb = compile_bombs::many_functions(1_000_000);
    reset_peak_rss();
    let loading = {
        let host = host.clone();
        tokio::task::spawn_blocking(move || host.load("bomb", &bomb, Policy::default()))
    };
    // The host keeps serving while the hostile compile runs in its child.
    let mut served = 0;
    while !loading.is_finished() {
        let report = host.run(&echo, r#"{"text":"still here","op":"upper"}"#).await;
        assert_eq!(report.outcome, Ok(r#"{"text":"STILL HERE","op":"upper"}"#.to_string()));
        served += 1;
    }
    let (key, detail) = budget_error(loading.await.unwrap());
    assert_eq!(key, "compile_timeout_ms");
    assert_eq!(detail, "compiling took longer than 1000 ms");
    assert!(served > 0, "no task ran while the load was in progress");
    // The compile's memory was the child's: the host grew by far less than
    // the gigabytes compiling a million functions takes.
    assert!(peak_rss_kib() < 1 << 20, "the host's peak RSS reached {} KiB", peak_rss_kib());
    assert_eq!(metric(&host, r#"chimera_load_refusals_total{capability="load-budget"}"#), Some(1.0));
    // And the host still loads (from its cache) and runs agents.
    let again = host.load("echo-again", &component(artifacts::ECHO), policy("[capabilities.logging]")).unwrap();
    assert!(host.run(&again, r#"{"text":"a","op":"upper"}"#).await.outcome.is_ok());
}

#[test]
fn a_component_that_needs_too_much_memory_to_compile_is_stopped_at_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_budget(
        dir.path(),
        LoadBudget { compile_memory_mib: 128, compile_timeout_ms: 120_000, ..LoadBudget::default() },
    );
    let (key, detail) = budget_error(host.load("bomb", &compile_bombs::many_functions(400_000), Policy::default()));
    assert_eq!((key, detail.as_str()), ("compile_memory_mib", "compiling needed more than 128 MiB of memory"));
    let (key, _) = budget_error(host.load("bomb2", &compile_bombs::optimizer_bomb(20_000, 20_000), Policy::default()));
    assert_eq!(key, "compile_memory_mib");
    // A normal agent still compiles under the same budget.
    host.load("echo", &component(artifacts::ECHO), policy("[capabilities.logging]")).expect("echo fits the budget");
}

#[test]
fn audit_is_budgeted_too() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_budget(dir.path(), LoadBudget { compile_timeout_ms: 500, ..LoadBudget::default() });
    match host.audit("bomb", &compile_bombs::many_functions(1_000_000), &Policy::default()) {
        Err(LoadError::Budget { key, .. }) => assert_eq!(key, "compile_timeout_ms"),
        other => panic!("expected a load-budget error, got {:?}", other.map(|r| r.runnable)),
    }
}

#[test]
fn invalid_bytes_still_get_the_compilers_reason() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_budget(dir.path(), LoadBudget::default());
    let mut bytes = component(artifacts::ECHO);
    let n = bytes.len();
    bytes.truncate(n / 2);
    match host.load("cut", &bytes, Policy::default()) {
        Err(LoadError::InvalidComponent { reason, .. }) => {
            assert!(reason.starts_with("failed to parse WebAssembly module: "), "{reason}")
        }
        Err(other) => panic!("expected InvalidComponent, got {other}"),
        Ok(_) => panic!("half a component loaded"),
    }
}

#[test]
fn the_engine_accepts_exactly_the_pinned_wasm_proposals() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with_budget(dir.path(), LoadBudget::default());
    assert_eq!(
        host.wasm_features(),
        [
            "floats",
            "mutable-global",
            "saturating-float-to-int",
            "sign-extension",
            "multi-value",
            "bulk-memory",
            "reference-types",
            "simd",
            "relaxed-simd (deterministic)",
            "tail-call",
            "extended-const",
            "multi-memory",
            "component-model",
        ]
    );
    for (what, module, says) in [
        ("memory64", "(memory i64 1)", "memory64 must be enabled"),
        ("threads", "(memory 1 1 shared)", "threads must be enabled"),
        ("exceptions", "(tag) (func (throw 0))", "exceptions proposal not enabled"),
        ("gc", "(type (struct))", "not supported without the gc feature"),
    ] {
        let bytes = wat::parse_str(format!("(component (core module {module}))")).unwrap();
        match host.load(what, &bytes, Policy::default()) {
            Err(LoadError::InvalidComponent { reason, .. }) => assert!(reason.contains(says), "{what}: {reason}"),
            Err(other) => panic!("{what}: expected InvalidComponent, got {other}"),
            Ok(_) => panic!("{what} was accepted"),
        }
    }
}
