//! Fuzz targets of outbound HTTP's two gates. The rule matcher: a request
//! goes out only under one single rule that allows its scheme, host, port,
//! path and method, and — for an address literal — the address; the rule is
//! the first such in policy order, and a request no rule allows is refused.
//! The resolver: a name goes to a non-public address only under a rule with
//! `allow_private`, and a refusal never says which address it was.

use super::*;
use crate::fuzzing::{corpus, run};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use reqwest::dns::Resolve;
use std::net::{Ipv4Addr, Ipv6Addr};

const METHODS: [Method; 7] =
    [Method::Get, Method::Head, Method::Post, Method::Put, Method::Patch, Method::Delete, Method::Options];

const RULE_HOSTS: &[&str] = &[
    "a.test",
    "b.a.test",
    "xn--bcher-kva.test",
    "localhost",
    "127.0.0.1",
    "10.1.2.3",
    "8.8.8.8",
    "169.254.169.254",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[2001:4860::8888]",
];
const RULE_PATHS: &[&str] = &["/", "/v1/", "/v1", "/v1/x/", "/%76%31/", "/V1/"];
const PORTS: &[&str] = &["", ":80", ":443", ":8080"];

/// One generated allow rule: its URL text and what else it says.
#[derive(Debug, Clone)]
struct GenRule {
    url: String,
    methods: Vec<Method>,
    allow_private: bool,
}

fn rule() -> impl Strategy<Value = GenRule> {
    (
        prop::sample::select(&["http", "https"][..]),
        any::<bool>(),
        prop::sample::select(RULE_HOSTS),
        prop::sample::select(PORTS),
        prop::sample::select(RULE_PATHS),
        prop::sample::subsequence(METHODS.to_vec(), 1..=3),
        any::<bool>(),
    )
        .prop_map(|(scheme, wild, host, port, path, methods, allow_private)| GenRule {
            url: format!("{scheme}://{}{host}{port}{path}", if wild { "*." } else { "" }),
            methods,
            allow_private,
        })
}

const SCHEMES: &[&str] = &["http", "https", "HTTP", "HtTpS", "ftp", "file", "ws"];
const SEPARATORS: &[&str] = &["://", ":/", ":\\\\", ":///", "://\t"];
const USERINFO: &[&str] = &["", "", "", "u@", "u:p@", "a.test@", "@"];
const HOSTS: &[&str] = &[
    "a.test",
    "A.TEST",
    "a.test.",
    "b.a.test",
    "c.b.a.test",
    "evil.a.test",
    "a.test.evil",
    "xa.test",
    "bücher.test",
    "xn--bcher-kva.test",
    "%61.test",
    "a%2etest",
    "localhost",
    "LOCALHOST",
    "127.0.0.1",
    "127.1",
    "0x7f.0.0.1",
    "2130706433",
    "0177.0.0.1",
    "10.1.2.3",
    "8.8.8.8",
    "169.254.169.254",
    "0.0.0.0",
    "0",
    "[::1]",
    "[::]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[2001:4860::8888]",
    "[fe80::1]",
];
const REQUEST_PORTS: &[&str] = &["", ":80", ":443", ":8080", ":0080", ":65535", ":"];
const SEGMENTS: &[&str] = &["v1", "V1", "x", "..", ".", "%2e%2e", "%2E", "%76%31", "", "v1%2f..", ";", "%00", "v1x"];
const TAILS: &[&str] = &["", "", "?q=1", "#f", "?a/../b", "?/v1/"];

fn request_url() -> impl Strategy<Value = String> {
    (
        prop::sample::select(SCHEMES),
        prop::sample::select(SEPARATORS),
        prop::sample::select(USERINFO),
        prop::sample::select(HOSTS),
        prop::sample::select(REQUEST_PORTS),
        prop::collection::vec((prop::sample::select(SEGMENTS), any::<bool>()), 0..5),
        prop::sample::select(TAILS),
    )
        .prop_map(|(scheme, sep, user, host, port, segments, tail)| {
            let path: String =
                segments.iter().map(|(s, backslash)| format!("{}{s}", if *backslash { "\\" } else { "/" })).collect();
            format!("{scheme}{sep}{user}{host}{port}{path}{tail}")
        })
}

/// Whether `ip` is special by the standard library's own predicates: an
/// oracle independent of the range table (which is a superset of it).
fn special_by_std(ip: IpAddr) -> bool {
    let v4 = |v4: Ipv4Addr| {
        v4.is_private()
            || v4.is_loopback()
            || v4.is_link_local()
            || v4.is_unspecified()
            || v4.is_broadcast()
            || v4.is_documentation()
            || v4.is_multicast()
            || v4.octets()[0] == 0
    };
    match ip {
        IpAddr::V4(ip) => v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => v4(mapped),
            None => {
                let first = ip.segments()[0];
                ip.is_loopback()
                    || ip.is_unspecified()
                    || ip.is_multicast()
                    || first & 0xfe00 == 0xfc00
                    || first & 0xffc0 == 0xfe80
            }
        },
    }
}

/// The host of a parsed URL as the rules compare it: a domain by its
/// labels (lower case), an address by its value.
#[derive(PartialEq, Debug)]
enum Target {
    Labels(Vec<String>),
    Ip(IpAddr),
}

fn target(url: &Url) -> Option<Target> {
    Some(match url.host()? {
        Host::Domain(d) => Target::Labels(d.to_ascii_lowercase().split('.').map(str::to_string).collect()),
        Host::Ipv4(ip) => Target::Ip(ip.into()),
        Host::Ipv6(ip) => Target::Ip(ip.into()),
    })
}

/// Whether `rule` (its URL parsed on its own) lets `method url` through on
/// scheme, host, port, path and method: the specification, label by label.
fn rule_covers(rule_url: &Url, rule: &GenRule, method: Method, url: &Url) -> bool {
    let (Some(wanted), Some(got)) = (target(rule_url), target(url)) else { return false };
    let host_ok = match (wanted, got) {
        (Target::Labels(w), Target::Labels(g)) if w.first().is_some_and(|l| l == "*") => {
            let suffix = &w[1..];
            g.len() > suffix.len() && g[g.len() - suffix.len()..] == *suffix
        }
        (w, g) => w == g,
    };
    url.scheme() == rule_url.scheme()
        && host_ok
        && url.port_or_known_default() == rule_url.port_or_known_default()
        && url.path().starts_with(rule_url.path())
        && rule.methods.contains(&method)
}

fn shared_client() -> reqwest::Client {
    static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| reqwest::Client::builder().build().unwrap());
    CLIENT.clone()
}

fn check_request((rules, method, text): (Vec<GenRule>, usize, String)) -> Result<(), TestCaseError> {
    let method = METHODS[method % METHODS.len()];
    // A rule whose URL the policy parser refuses never makes it into a policy.
    let kept: Vec<(GenRule, UrlPattern)> =
        rules.into_iter().filter_map(|r| UrlPattern::parse(&r.url).ok().map(|p| (r, p))).collect();
    let access = HttpAccess {
        rules: kept
            .iter()
            .map(|(r, pattern)| Rule {
                pattern: pattern.clone(),
                methods: r.methods.clone(),
                allow_private: r.allow_private,
                inject: Vec::new(),
                client: shared_client(),
            })
            .collect(),
        grant: HttpGrant::default(),
        wasi_http: false,
    };
    // What `send` does before anything goes out.
    let Ok(url) = Url::parse(&text) else { return Ok(()) };
    if !url.username().is_empty() || url.password().is_some() {
        return Ok(());
    }
    let decision = access.authorize(method, &url);
    // The specification: the first rule covering the request decides.
    let first = kept.iter().position(|(r, _)| {
        // The URL parser keeps `*` as a label; `rule_covers` reads it.
        let rule_url = Url::parse(&r.url).expect("the pattern parsed");
        rule_covers(&rule_url, r, method, &url)
    });
    let literal = match target(&url) {
        Some(Target::Ip(ip)) => Some(ip),
        _ => None,
    };
    match (first, decision) {
        (None, Err(("no-rule", HttpError::Denied(_)))) => {}
        // Nowhere to send it (`file:///x`).
        (None, Err(("invalid-request", HttpError::InvalidRequest(_)))) if url.host().is_none() => {}
        (Some(i), Ok(chosen)) => {
            prop_assert_eq!(&chosen.pattern, &kept[i].1, "{} {} went out under another rule", method_name(method), url);
            if let Some(ip) = literal {
                prop_assert!(
                    chosen.allow_private || (non_public(ip).is_none() && !special_by_std(ip)),
                    "{ip} went out without allow_private"
                );
            }
        }
        (Some(i), Err(("private-address", _))) => {
            let ip = literal.expect("only an address literal is refused as one");
            prop_assert!(!kept[i].0.allow_private && non_public(ip).is_some(), "{ip} refused as private");
        }
        (first, decision) => {
            return Err(TestCaseError::fail(format!(
                "{} {url}: the first covering rule is {first:?}, the matcher said {:?}",
                method_name(method),
                decision.map(|r| r.pattern.clone())
            )))
        }
    }
    Ok(())
}

#[test]
fn fuzz_rule_matcher() {
    let seeds = corpus("urls.txt").into_iter().map(|line| {
        let (method, url) = line.split_once(' ').expect("a corpus line is METHOD URL");
        let method = METHODS.iter().position(|m| method_name(*m) == method).expect("a known method");
        let rules = ["http://a.test/v1/", "https://*.a.test/", "http://127.0.0.1:8080/"]
            .iter()
            .map(|u| GenRule { url: u.to_string(), methods: METHODS.to_vec(), allow_private: false })
            .collect();
        (rules, method, url.to_string())
    });
    let cases = (prop::collection::vec(rule(), 0..5), 0..METHODS.len(), request_url());
    run("url-rule-matcher", seeds, cases, check_request);
}

/// An address from anywhere, or (more often) from inside one of the
/// special-purpose ranges, with random host bits.
fn address() -> impl Strategy<Value = IpAddr> {
    let ranged = (prop::sample::select(SPECIAL_PURPOSE), any::<u128>()).prop_map(|((net, _), bits)| {
        let net: ipnet::IpNet = net.parse().expect("a valid range");
        match net {
            ipnet::IpNet::V4(n) => {
                let host = (bits as u32) & !u32::from(n.netmask());
                IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | host))
            }
            ipnet::IpNet::V6(n) => {
                let host = bits & !u128::from(n.netmask());
                IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | host))
            }
        }
    });
    let mapped = any::<u32>().prop_map(|v4| IpAddr::V6(Ipv4Addr::from(v4).to_ipv6_mapped()));
    prop_oneof![
        3 => ranged,
        1 => any::<u32>().prop_map(|v4| IpAddr::V4(v4.into())),
        1 => any::<u128>().prop_map(|v6| IpAddr::V6(v6.into())),
        1 => mapped,
    ]
}

fn check_resolution((ips, allow_private): (Vec<IpAddr>, bool)) -> Result<(), TestCaseError> {
    static RUNTIME: LazyLock<tokio::runtime::Runtime> =
        LazyLock::new(|| tokio::runtime::Builder::new_current_thread().build().unwrap());
    let overrides = Arc::new(HashMap::from([("name.test".to_string(), ips.clone())]));
    let resolver = VettingResolver { allow_private, overrides };
    let answer = RUNTIME.block_on(resolver.resolve("name.test".parse().unwrap()));
    let refused = !allow_private && ips.iter().any(|ip| non_public(*ip).is_some());
    for ip in &ips {
        // The table holds at least every address the standard library calls special.
        prop_assert!(!special_by_std(*ip) || non_public(*ip).is_some(), "{ip} is special but not in the table");
    }
    match answer {
        Ok(addrs) => {
            prop_assert!(!refused, "{ips:?} resolved without allow_private");
            let got: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            prop_assert_eq!(got, ips);
        }
        Err(e) => {
            prop_assert!(refused, "{ips:?} refused: {e}");
            let message = e.to_string();
            for ip in &ips {
                let forms = [ip.to_string(), format!("{ip:?}")];
                let mapped = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map(|v4| v4.to_string()),
                    IpAddr::V4(_) => None,
                };
                for form in forms.iter().chain(mapped.iter()) {
                    prop_assert!(!message.contains(form.as_str()), "the refusal says the address {form}: {message}");
                }
            }
        }
    }
    Ok(())
}

#[test]
fn fuzz_resolver() {
    let seeds = ["169.254.169.254", "::ffff:10.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::", "fd00::1", "100.64.0.1"]
        .map(|ip| (vec![ip.parse::<IpAddr>().unwrap()], false));
    let cases = (prop::collection::vec(address(), 1..4), any::<bool>());
    run("resolver", seeds, cases, check_resolution);
}

/// Found by `fuzz_rule_matcher`: a rule for an IPv4-mapped IPv6 literal
/// never matched, as the request's address was written another way.
#[test]
fn a_rule_for_a_mapped_address_matches_it_however_written() {
    let grant = HttpGrant {
        allow: vec![HttpAllow::new("http://[::ffff:127.0.0.1]:8080/", &[HttpMethod::Get]).allow_private(true)],
        ..HttpGrant::default()
    };
    let access = HttpAccess::new(&grant, &Arc::default(), &crate::secrets::Secrets::default()).unwrap();
    for url in
        ["http://[::ffff:127.0.0.1]:8080/x", "http://[::ffff:7f00:1]:8080/x", "http://[0:0:0:0:0:ffff:7f00:1]:8080/"]
    {
        assert!(access.authorize(Method::Get, &Url::parse(url).unwrap()).is_ok(), "{url}");
    }
}
