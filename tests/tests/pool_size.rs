//! The instance pool's size: 1,000 by default, 10,000 by configuration, and
//! a clear error at start-up when the pool cannot fit in the address space.

use chimera_host::{Host, HostConfig, HostError, Policy};
use chimera_tests::{artifacts, component};

#[tokio::test(flavor = "multi_thread")]
async fn a_host_of_ten_thousand_instances_starts_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(HostConfig::default().max_instances, 1_000);
    let host = Host::new(HostConfig { data_dir: dir.path().into(), max_instances: 10_000, ..HostConfig::default() })
        .expect("10,000 instance slots fit");
    let agent = host.load("word-count", &component(artifacts::WORD_COUNT), Policy::default()).unwrap();
    assert_eq!(host.run(&agent, r#"{"text":"a b a"}"#).await.outcome.map(|o| o.contains(r#""words":3"#)), Ok(true));
}

#[test]
fn a_pool_that_cannot_fit_is_refused_at_start_with_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let err = Host::new(HostConfig {
        data_dir: dir.path().into(),
        max_instances: 100_000_000,
        max_memory_mib: 16 * 1024,
        ..HostConfig::default()
    })
    .err()
    .expect("a pool of 100 million 16 GiB slots does not fit");
    let HostError::Engine(message) = &err else { panic!("expected an engine error, got {err}") };
    assert!(
        message.contains("100000000 instances") && message.contains("lower HostConfig::max_instances"),
        "{message}"
    );
}
