//! What an auditor is warned of in an outbound-http grant, and how two
//! grants differ in rules a person reads.

use std::net::IpAddr;

use super::{non_public, HostPattern, HttpAllow, HttpGrant, UrlPattern};
use crate::audit::diff_fields;
use crate::capability::{to_json, AuditWarning};

/// Names that are, or usually are, a cloud's instance-metadata service.
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.internal",
];

/// Metadata addresses outside the link-local ranges.
const METADATA_ADDRESSES: &[&str] = &["fd00:ec2::254", "100.100.100.200"];

/// Suffixes under which names are private by convention (RFC 6762, 8375,
/// 6761, and common internal ones).
const PRIVATE_SUFFIXES: &[&str] =
    &["local", "localhost", "internal", "lan", "home.arpa", "corp", "intranet", "private", "localdomain"];

/// The warnings of every allow rule of `grant`.
pub(super) fn warnings(grant: &HttpGrant) -> Vec<AuditWarning> {
    let mut out = Vec::new();
    for (i, rule) in grant.allow.iter().enumerate() {
        let key = format!("capabilities.outbound_http.allow[{i}]");
        // Validated when the policy was read; a rule that does not parse has nothing more to say.
        if let Ok(pattern) = UrlPattern::parse(&rule.url) {
            rule_warnings(rule, &pattern, &key, &mut out);
        }
    }
    out
}

fn rule_warnings(rule: &HttpAllow, pattern: &UrlPattern, key: &str, out: &mut Vec<AuditWarning>) {
    let url = &rule.url;
    let mut warn = |code, message: String| out.push(AuditWarning::new(code, key, message));
    let secrets: Vec<&str> = rule.secret_headers.iter().map(|h| h.secret.as_str()).collect();
    if !secrets.is_empty() {
        // Loopback never leaves the machine; anything else over http crosses a network.
        let loopback = match &pattern.host {
            HostPattern::Exact(h) => {
                h == "localhost"
                    || h.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            HostPattern::Suffix(_) => false,
        };
        if pattern.scheme == "http" && !loopback {
            warn(
                "secret-in-clear",
                format!(
                    "`{url}` is plain http: the secrets this rule adds ({}) cross the network unencrypted; use https",
                    secrets.join(", ")
                ),
            );
        }
        if let HostPattern::Suffix(suffix) = &pattern.host {
            warn(
                "secret-wildcard",
                format!(
                    "`{url}` sends the secrets it adds ({}) to every host under `{suffix}` the agent names: name \
                     the one host that should get them",
                    secrets.join(", ")
                ),
            );
        }
    }
    if rule.allow_private {
        warn(
            "allow-private",
            format!(
                "`{url}` may reach loopback, private and link-local addresses (allow_private = true): any name it \
                 matches that resolves inside this network is reachable; keep it to one host you run"
            ),
        );
    }
    match &pattern.host {
        HostPattern::Exact(host) => {
            let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
            let metadata = METADATA_NAMES.contains(&host.as_str())
                || METADATA_ADDRESSES.iter().any(|m| ip.is_some_and(|ip| m.parse() == Ok(ip)))
                || ip.is_some_and(|ip| non_public(ip).is_some_and(|class| class.starts_with("link-local")));
            if metadata {
                warn(
                    "metadata-address",
                    format!(
                        "`{url}` names a cloud metadata or link-local address, where instance credentials are \
                         served; no agent should reach it"
                    ),
                );
            } else if let (Some(ip), false) = (ip, rule.allow_private) {
                if let Some(class) = non_public(ip) {
                    warn(
                        "never-matches",
                        format!(
                            "`{url}` names {ip}, a {class} address, which the host refuses unless the rule says \
                             allow_private = true: this rule lets nothing through"
                        ),
                    );
                }
            }
            if let Some(ip) = ip {
                let path = pattern.path_prefix.trim_end_matches('/');
                let bits = path.strip_prefix('/').and_then(|b| b.parse::<u8>().ok());
                if bits.is_some_and(|b| b <= 128) {
                    warn(
                        "network-range",
                        format!(
                            "`{url}` is the one host {ip} with the path prefix `{path}`, not a network range: \
                             rules name hosts; list each host (or a `*.` name) instead"
                        ),
                    );
                }
            }
        }
        HostPattern::Suffix(suffix) => {
            let bare = suffix.trim_start_matches('.');
            let private_suffix = PRIVATE_SUFFIXES.iter().any(|p| bare == *p || bare.ends_with(&format!(".{p}")));
            if private_suffix {
                warn(
                    "private-wildcard",
                    format!(
                        "`{url}` matches every name under `.{bare}`, a suffix used for internal hosts: an agent \
                         can reach any internal service named so"
                    ),
                );
            } else if !bare.contains('.') {
                warn(
                    "broad-wildcard",
                    format!("`{url}` matches every host under the top-level domain `.{bare}`: name the hosts meant"),
                );
            }
            if rule.allow_private && !private_suffix {
                warn(
                    "private-wildcard",
                    format!(
                        "`{url}` matches every name under `.{bare}` on any private address (allow_private with a \
                         wildcard): one name resolving inside this network exposes it"
                    ),
                );
            }
        }
    }
}

/// Rules gained and lost (by URL and its private-address setting), methods
/// gained and lost on a rule kept, and every other field as it changed.
pub(super) fn diff(old: &HttpGrant, new: &HttpGrant) -> Vec<String> {
    let mut out = Vec::new();
    let same_rule = |a: &HttpAllow, b: &HttpAllow| a.url == b.url && a.allow_private == b.allow_private;
    for rule in &new.allow {
        match old.allow.iter().find(|o| same_rule(o, rule)) {
            None => out.push(format!("gains outbound-http to {}", terms(rule))),
            Some(was) => {
                let gained: Vec<&str> =
                    rule.methods.iter().filter(|m| !was.methods.contains(m)).map(|m| m.name()).collect();
                let lost: Vec<&str> =
                    was.methods.iter().filter(|m| !rule.methods.contains(m)).map(|m| m.name()).collect();
                if !gained.is_empty() {
                    out.push(format!("outbound-http to {}: gains {}", rule.url, gained.join(",")));
                }
                if !lost.is_empty() {
                    out.push(format!("outbound-http to {}: loses {}", rule.url, lost.join(",")));
                }
                for h in rule.secret_headers.iter().filter(|h| !was.secret_headers.contains(h)) {
                    out.push(format!(
                        "outbound-http to {}: gains header {} from secret `{}`",
                        rule.url, h.name, h.secret
                    ));
                }
                for h in was.secret_headers.iter().filter(|h| !rule.secret_headers.contains(h)) {
                    out.push(format!(
                        "outbound-http to {}: loses header {} from secret `{}`",
                        rule.url, h.name, h.secret
                    ));
                }
            }
        }
    }
    for rule in old.allow.iter().filter(|o| !new.allow.iter().any(|n| same_rule(o, n))) {
        out.push(format!("loses outbound-http to {}", terms(rule)));
    }
    let without_rules = |g: &HttpGrant| {
        let mut v = to_json(g);
        if let Some(map) = v.as_object_mut() {
            map.remove("allow");
        }
        v
    };
    out.extend(diff_fields("outbound-http", &without_rules(old), &without_rules(new)));
    out
}

/// A rule as the diff names it: `https://api.x/ GET,POST`.
fn terms(rule: &HttpAllow) -> String {
    let methods: Vec<&str> = rule.methods.iter().map(|m| m.name()).collect();
    let private = if rule.allow_private { " (private addresses allowed)" } else { "" };
    let secrets = super::describe_secret_headers(&rule.secret_headers);
    format!("{} {}{private}{secrets}", rule.url, methods.join(","))
}
