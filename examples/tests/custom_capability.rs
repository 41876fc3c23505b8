//! The example's custom capability, `acme:geo/lookup`, behaves like a
//! built-in: refused unless granted, parsed and validated by its own
//! section, shown by the audit (the library's and `chimera-geo audit`'s),
//! linked only when granted, and counted in the task's usage.

use chimera_examples::{artifacts, Geo};
use chimera_host::{Host, HostConfig, LoadError, Policy, Verdict};
use std::process::Command;

fn host(dir: &std::path::Path, with_geo: bool) -> Host {
    let config = HostConfig { data_dir: dir.into(), max_instances: 8, ..HostConfig::default() };
    let builder = Host::builder(config);
    let builder = if with_geo { builder.capability(Geo::sample()) } else { builder };
    builder.build().unwrap()
}

fn geo() -> Vec<u8> {
    std::fs::read(artifacts::GEO_LOOKUP).unwrap()
}

#[test]
fn a_host_without_the_capability_cannot_grant_it() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), false);
    match host.load("geo", &geo(), Policy::default()) {
        Err(LoadError::Ungranted { ungranted, .. }) => {
            let u: Vec<_> = ungranted.iter().map(|u| (u.import.as_str(), u.reason.as_str())).collect();
            assert_eq!(
                u,
                [(
                    "acme:geo/lookup@0.1.0",
                    "no capability of this host provides `acme:geo/lookup`, so no policy can grant it"
                )]
            );
        }
        other => panic!("expected a refusal, got {:?}", other.map(|a| a.name().to_string())),
    }
    // Its section means nothing to the built-ins: an error naming it.
    let err = Policy::from_toml("[capabilities.geo]\n").unwrap_err().to_string();
    assert!(err.starts_with("policy key `capabilities.geo` is not a section of any capability of this host"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_capability_is_refused_until_granted_then_runs_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), true);
    match host.load("geo", &geo(), Policy::default()) {
        Err(LoadError::Ungranted { ungranted, .. }) => {
            assert_eq!(ungranted.len(), 1);
            assert_eq!(ungranted[0].import, "acme:geo/lookup@0.1.0");
            assert_eq!(ungranted[0].reason, "not granted; add a [capabilities.geo] section to the policy");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|a| a.name().to_string())),
    }
    // Its own section, with its own keys and ranges.
    let err = host.policy_from_toml("[capabilities.geo]\nmax_lookupz = 1\n").unwrap_err().to_string();
    assert!(err.starts_with("policy section [capabilities.geo] (line 1): unknown field `max_lookupz`"), "{err}");
    let err = host.policy_from_toml("[capabilities.geo]\nmax_lookups = 0\n").unwrap_err().to_string();
    assert_eq!(err, "policy key `capabilities.geo.max_lookups` is 0; it must be between 1 and 1000");

    let policy = host.policy_from_toml("[capabilities.geo]\nmax_lookups = 2\n").unwrap();
    let audit = host.audit("geo", &geo(), &policy).unwrap();
    let d = audit.imports.iter().find(|d| d.import == "acme:geo/lookup@0.1.0").unwrap();
    assert_eq!((d.capability, d.verdict), ("geo", Verdict::Granted));
    assert_eq!(d.detail, "2 lookups per task in a gazetteer of 3 places");
    assert!(audit.runnable, "{:?}", audit.problems);
    assert_eq!(audit.grant("geo").unwrap().summary, ["geo: 2 lookups per task"]);

    let agent = host.load("geo", &geo(), policy).unwrap();
    let r = host.run(&agent, "Rome\nAtlantis\nParis").await;
    assert_eq!(r.outcome.as_deref(), Ok(r#"{"places":[{"lat":41.9028,"lon":12.4964,"name":"Rome"},null,null]}"#));
    // Three lookups: two within the quota (one found nothing), the third refused.
    assert_eq!((r.usage.counter("geo", "lookups"), r.usage.counter("geo", "refused")), (3, 1));
    // A fresh task has a fresh quota.
    let r = host.run(&agent, "Tokyo").await;
    assert_eq!(r.outcome.as_deref(), Ok(r#"{"places":[{"lat":35.6762,"lon":139.6503,"name":"Tokyo"}]}"#));
    assert_eq!((r.usage.counter("geo", "lookups"), r.usage.counter("geo", "refused")), (1, 0));
}

#[test]
fn chimera_geo_audits_the_capability_like_a_built_in() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("geo.toml");
    std::fs::write(&policy, "[capabilities.geo]\nmax_lookups = 3\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_chimera-geo");
    let audit = |args: &[&str]| {
        let out = Command::new(bin).args(args).env("CHIMERA_DATA_DIR", dir.path()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = audit(&["audit", artifacts::GEO_LOOKUP, "--policy", policy.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let line = stdout.lines().find(|l| l.starts_with("acme:geo/lookup@0.1.0")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains(" geo ") && line.contains("granted") && line.contains("3 lookups per task"), "{line}");
    assert!(stdout.contains("geo: 3 lookups per task"), "{stdout}");

    let (code, stdout, _) = audit(&["audit", artifacts::GEO_LOOKUP]);
    assert_eq!(code, Some(1));
    let line = stdout.lines().find(|l| l.starts_with("acme:geo/lookup@0.1.0")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("REFUSED") && line.contains("add a [capabilities.geo] section"), "{line}");

    // `run` parses the same section and runs the agent with the capability.
    let out = Command::new(bin)
        .args(["run", artifacts::GEO_LOOKUP, "--policy", policy.to_str().unwrap(), "--input", "Paris"])
        .env("CHIMERA_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"places":[{"lat":48.8566,"lon":2.3522,"name":"Paris"}]}"#
    );
}
