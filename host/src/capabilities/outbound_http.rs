//! `chimera:agent/outbound-http`: real HTTP requests, denied by default.
//!
//! A request goes out only if an allow rule of the policy matches its
//! scheme, host, port, path prefix and method. Host names are resolved by
//! the host and every address is vetted: loopback, private, link-local
//! (cloud metadata) and other non-public addresses are refused unless the
//! matching rule says `allow_private = true`. The connection goes only to
//! the vetted addresses; redirects are returned to the agent, never followed.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use url::{Host, Url};
use wasmtime::component::{HasSelf, Linker};

use super::{CapabilityDecision, Grant};
use crate::bindings::chimera::agent::outbound_http::{self as wit, HttpError, Method, Request, Response};
use crate::policy::{HttpGrant, Policy};
use crate::state::TaskState;
use crate::usage::{Call, UsageCounters};

pub(crate) fn decide(policy: &Policy) -> CapabilityDecision {
    CapabilityDecision {
        capability: "outbound-http",
        section: "[capabilities.outbound_http]",
        grant: match &policy.capabilities.outbound_http {
            Some(g) if g.allow.is_empty() => {
                Grant::Granted("linked, but no URL is allowed (add [[capabilities.outbound_http.allow]] rules)".into())
            }
            Some(g) => Grant::Granted(
                g.allow
                    .iter()
                    .map(|a| {
                        format!(
                            "{} {}{}",
                            a.methods.join(","),
                            a.url,
                            if a.allow_private { " (private addresses allowed)" } else { "" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            None => Grant::Refused(
                "not granted; add a [capabilities.outbound_http] section with allow rules to the policy".into(),
            ),
        },
        link: |l: &mut Linker<TaskState>| wit::add_to_linker::<TaskState, HasSelf<TaskState>>(l, |s| s),
    }
}

/// A host pattern: exact, or `*.suffix` (which matches subdomains only).
#[derive(Debug, Clone, PartialEq)]
enum HostPattern {
    Exact(String),
    Suffix(String),
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            // `.example.com` must be preceded by at least one label.
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

/// One allow rule, parsed: `scheme://host[:port]/path-prefix`.
#[derive(Debug, Clone, PartialEq)]
pub struct UrlPattern {
    scheme: String,
    host: HostPattern,
    port: u16,
    path_prefix: String,
}

impl UrlPattern {
    /// Parses a rule's `url`, or says what is wrong with it.
    pub fn parse(pattern: &str) -> Result<UrlPattern, String> {
        let url = Url::parse(pattern)
            .map_err(|e| format!("{pattern:?} is not a URL ({e}); write e.g. \"https://api.example.com/v1/\""))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!("{pattern:?} uses scheme `{}`; only http and https are supported", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{pattern:?} must not contain credentials, a query or a fragment"));
        }
        let host = url.host_str().ok_or_else(|| format!("{pattern:?} has no host"))?.to_ascii_lowercase();
        let host = match host.strip_prefix("*.") {
            Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => HostPattern::Suffix(format!(".{suffix}")),
            _ if host.contains('*') => {
                return Err(format!("{pattern:?}: a wildcard is allowed only as a leading `*.`"))
            }
            _ => HostPattern::Exact(host),
        };
        let port = url.port_or_known_default().ok_or_else(|| format!("{pattern:?} has no port"))?;
        Ok(UrlPattern { scheme: url.scheme().to_string(), host, port, path_prefix: url.path().to_string() })
    }

    fn matches(&self, url: &Url, host: &str) -> bool {
        url.scheme() == self.scheme
            && self.host.matches(host)
            && url.port_or_known_default() == Some(self.port)
            && url.path().starts_with(&self.path_prefix)
    }
}

/// Parses a method name as written in a policy.
pub fn parse_method(m: &str) -> Result<Method, String> {
    Ok(match m {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        other => {
            return Err(format!("has unknown method {other:?}; use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS"))
        }
    })
}

/// The compiled allow rules of one agent.
#[derive(Debug)]
struct Rule {
    pattern: UrlPattern,
    methods: Vec<Method>,
    allow_private: bool,
}

/// An agent's outbound HTTP: its rules, quotas and client. Built once per
/// agent when it is loaded.
pub(crate) struct HttpAccess {
    rules: Arc<Vec<Rule>>,
    grant: HttpGrant,
    client: reqwest::Client,
}

impl HttpAccess {
    pub fn new(grant: &HttpGrant, dns_overrides: &HashMap<String, Vec<IpAddr>>) -> Result<HttpAccess, String> {
        let rules: Vec<Rule> = grant
            .allow
            .iter()
            .map(|a| {
                Ok(Rule {
                    pattern: UrlPattern::parse(&a.url)?,
                    methods: a.methods.iter().map(|m| parse_method(m)).collect::<Result<_, _>>()?,
                    allow_private: a.allow_private,
                })
            })
            .collect::<Result<_, String>>()?;
        let rules = Arc::new(rules);
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(VettingResolver {
                rules: rules.clone(),
                overrides: Arc::new(dns_overrides.clone()),
            }))
            .user_agent(concat!("chimera-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(HttpAccess { rules, grant: grant.clone(), client })
    }

    /// Finds the rule allowing `method url`, or says why none does.
    fn authorize(&self, method: Method, url: &Url) -> Result<&Rule, Refusal> {
        let host = match url.host() {
            Some(Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => format!("[{ip}]"),
            None => return Err(("invalid-request", HttpError::InvalidRequest("the URL has no host".into()))),
        };
        let rule = self.rules.iter().find(|r| r.pattern.matches(url, &host) && r.methods.contains(&method));
        let rule = rule.ok_or_else(|| {
            let msg = format!("no allow rule of this agent's policy matches {} {url}", method_name(method));
            ("no-rule", HttpError::Denied(msg))
        })?;
        // An address literal is never resolved, so it is vetted here.
        let literal = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal {
            if let Some(class) = non_public(ip) {
                if !rule.allow_private {
                    let msg = format!("{ip} is a {class} address; the rule must say allow_private = true");
                    return Err(("private-address", HttpError::Denied(msg)));
                }
            }
        }
        Ok(rule)
    }
}

pub(crate) fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
        Method::Options => "OPTIONS",
    }
}

/// Why an address is not public, or `None` when it is.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public_v4(v4);
            }
            let seg = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if seg[0] & 0xffc0 == 0xfe80 || seg[0] & 0xffc0 == 0xfec0 {
                Some("link-local")
            } else if seg[0] & 0xff00 == 0xff00 {
                Some("multicast")
            } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
                Some("documentation")
            } else if seg[0] == 0x64 && seg[1] == 0xff9b {
                // NAT64: judge the IPv4 address it carries.
                non_public_v4(Ipv4Addr::new((seg[6] >> 8) as u8, seg[6] as u8, (seg[7] >> 8) as u8, seg[7] as u8))
            } else if seg[..6] == [0, 0, 0, 0, 0, 0] {
                Some("IPv4-compatible (deprecated)")
            } else {
                None
            }
        }
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local (includes cloud metadata)")
    } else if o[0] == 0 {
        Some("unspecified")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_broadcast() || ip.is_multicast() || o[0] >= 240 {
        Some("multicast or reserved")
    } else if ip.is_documentation() || (o[0] == 198 && (o[1] & 0xfe) == 18) || (o[0] == 192 && o[1] == 0 && o[2] == 0) {
        Some("reserved")
    } else {
        None
    }
}

/// A refusal raised inside name resolution, recognised on the way out.
#[derive(Debug)]
struct AddressDenied(String);

impl std::fmt::Display for AddressDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for AddressDenied {}

/// Resolves host names for the client and vets every address, so the
/// connection can only go to an address the policy allows (no DNS-rebinding
/// window between a check and the connect).
struct VettingResolver {
    rules: Arc<Vec<Rule>>,
    overrides: Arc<HashMap<String, Vec<IpAddr>>>,
}

impl reqwest::dns::Resolve for VettingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let allow_private = self.rules.iter().any(|r| r.allow_private && r.pattern.host.matches(&host));
        let fixed = self.overrides.get(&host).cloned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match fixed {
                Some(ips) => ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            if addrs.is_empty() {
                return Err(Box::new(AddressDenied(format!("{host} resolves to no address")))
                    as Box<dyn StdError + Send + Sync>);
            }
            if !allow_private {
                if let Some((ip, class)) = addrs.iter().find_map(|a| non_public(a.ip()).map(|c| (a.ip(), c))) {
                    return Err(Box::new(AddressDenied(format!(
                        "{host} resolves to {ip}, a {class} address; the rule must say allow_private = true"
                    ))) as Box<dyn StdError + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Request headers an agent may not set: they would let it smuggle a
/// different target or framing past the checks.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
];

/// A failed request with a fixed label for metrics (never guest text).
type Refusal = (&'static str, HttpError);

impl TaskState {
    async fn http_send(&mut self, request: Request) -> Result<Response, Refusal> {
        let usage = self.usage.clone();
        let Some(access) = &self.http else {
            return Err(("not-granted", HttpError::Denied("outbound-http is not granted".into())));
        };
        if self.http_requests >= access.grant.max_requests {
            let msg = format!("this task already sent {} requests (max_requests)", access.grant.max_requests);
            return Err(("quota", HttpError::QuotaExceeded(msg)));
        }
        let url = Url::parse(&request.url)
            .map_err(|e| ("invalid-request", HttpError::InvalidRequest(format!("bad URL {:?}: {e}", request.url))))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(("credentials", HttpError::Denied("URLs with credentials (user@host) are not allowed".into())));
        }
        access.authorize(request.method, &url)?;
        let body = request.body.unwrap_or_default();
        if body.len() as u64 > access.grant.max_request_bytes {
            let msg = format!(
                "request body is {} bytes; the limit is {} (max_request_bytes)",
                body.len(),
                access.grant.max_request_bytes
            );
            return Err(("too-large", HttpError::TooLarge(msg)));
        }
        let method = reqwest::Method::from_bytes(method_name(request.method).as_bytes()).expect("known method");
        let mut builder = access.client.request(method, url.clone());
        for (name, value) in &request.headers {
            if FORBIDDEN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(("forbidden-header", HttpError::Denied(format!("agents may not set the `{name}` header"))));
            }
            let bad = |what: String| ("invalid-request", HttpError::InvalidRequest(what));
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(format!("bad header name {name:?}")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| bad(format!("bad value for header `{name}`")))?;
            builder = builder.header(name, value);
        }
        self.http_requests += 1;
        UsageCounters::add(&usage.http_requests, 1);
        UsageCounters::add(&usage.http_bytes_sent, body.len() as u64);
        let max_body = access.grant.max_response_bytes;
        let mut held = HeldBytes { usage, bytes: 0 };
        let exchange = async move {
            let mut response = builder.body(body).send().await.map_err(classify)?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            if response.content_length().is_some_and(|n| n > max_body) {
                return Err(too_large(max_body));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(classify)? {
                if (body.len() + chunk.len()) as u64 > max_body {
                    return Err(too_large(max_body));
                }
                // The body is host memory held for the instance until it is
                // handed over: it counts against the instance's memory limit.
                if !held.hold(chunk.len() as u64) {
                    let msg = format!(
                        "the response body would take the instance past its memory limit of {} bytes (memory_mib)",
                        held.usage.memory_limit
                    );
                    return Err(("memory-limit", HttpError::TooLarge(msg)));
                }
                body.extend_from_slice(&chunk);
                UsageCounters::add(&held.usage.http_bytes_received, chunk.len() as u64);
            }
            Ok(Response { status, headers, body })
        };
        tokio::time::timeout(Duration::from_millis(access.grant.timeout_ms), exchange)
            .await
            .unwrap_or(Err(("timeout", HttpError::Timeout)))
    }
}

/// Host bytes reserved against the instance's memory limit, returned on drop.
struct HeldBytes {
    usage: Arc<UsageCounters>,
    bytes: u64,
}

impl HeldBytes {
    fn hold(&mut self, n: u64) -> bool {
        let ok = self.usage.try_hold_host(n);
        if ok {
            self.bytes += n;
        }
        ok
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.usage.release_host(self.bytes);
    }
}

fn too_large(max: u64) -> Refusal {
    ("too-large", HttpError::TooLarge(format!("response body exceeds {max} bytes (max_response_bytes)")))
}

/// Maps a client error to the WIT error, finding a resolver refusal in the
/// error's sources.
fn classify(e: reqwest::Error) -> Refusal {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(denied) = s.downcast_ref::<AddressDenied>() {
            return ("private-address", HttpError::Denied(denied.0.clone()));
        }
        source = s.source();
    }
    if e.is_timeout() {
        return ("timeout", HttpError::Timeout);
    }
    let mut reason = e.to_string();
    if let Some(inner) = e.source() {
        reason = format!("{reason}: {inner}");
    }
    ("connection-failed", HttpError::ConnectionFailed(reason))
}

impl wit::Host for TaskState {
    async fn send(&mut self, request: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        self.usage.count_call(Call::Http);
        Ok(self.http_send(request).await.map_err(|(label, error)| {
            if matches!(error, HttpError::Denied(_) | HttpError::QuotaExceeded(_) | HttpError::TooLarge(_)) {
                self.metrics.denied(&self.log.agent, "outbound-http", label);
            }
            error
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exactly() {
        let p = UrlPattern::parse("https://*.example.com/v1/").unwrap();
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(p.matches(&u("https://api.example.com/v1/x"), "api.example.com"));
        assert!(!p.matches(&u("https://example.com/v1/x"), "example.com"));
        assert!(!p.matches(&u("https://api.example.com.evil.test/v1/"), "api.example.com.evil.test"));
        assert!(!p.matches(&u("http://api.example.com/v1/x"), "api.example.com"));
        assert!(!p.matches(&u("https://api.example.com:8443/v1/x"), "api.example.com"));
        assert!(!p.matches(&u("https://api.example.com/v2/x"), "api.example.com"));
        // `..` is resolved by the URL parser before the prefix check.
        assert!(!p.matches(&u("https://api.example.com/v1/../admin"), "api.example.com"));
    }

    #[tokio::test]
    async fn the_resolver_refuses_non_public_addresses_without_connecting() {
        use reqwest::dns::Resolve;
        let grant = HttpGrant {
            allow: vec![crate::policy::HttpAllow {
                url: "http://*.test/".into(),
                methods: vec!["GET".into()],
                allow_private: false,
            }],
            ..HttpGrant::default()
        };
        let cases = [
            ("metadata.test", "169.254.169.254", "link-local (includes cloud metadata)"),
            ("private.test", "10.0.0.5", "private"),
            ("ula.test", "fd00::1", "private (unique local)"),
            ("mapped.test", "::ffff:192.168.1.1", "private"),
            ("nat64.test", "64:ff9b::7f00:1", "loopback"),
            ("cgnat.test", "100.64.0.1", "shared (carrier-grade NAT)"),
        ];
        let overrides: HashMap<String, Vec<IpAddr>> =
            cases.iter().map(|(n, ip, _)| (n.to_string(), vec![ip.parse().unwrap()])).collect();
        let resolver = VettingResolver {
            rules: HttpAccess::new(&grant, &overrides).unwrap().rules,
            overrides: Arc::new(overrides),
        };
        for (name, ip, class) in cases {
            let err = match resolver.resolve(name.parse().unwrap()).await {
                Ok(_) => panic!("{name} resolved"),
                Err(e) => e.to_string(),
            };
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(
                err,
                format!("{name} resolves to {ip}, a {class} address; the rule must say allow_private = true")
            );
        }
        let public: HashMap<String, Vec<IpAddr>> =
            [("ok.test".to_string(), vec!["93.184.216.34".parse().unwrap()])].into();
        let resolver =
            VettingResolver { rules: HttpAccess::new(&grant, &public).unwrap().rules, overrides: Arc::new(public) };
        let addrs: Vec<SocketAddr> = resolver.resolve("ok.test".parse().unwrap()).await.unwrap().collect();
        assert_eq!(addrs, ["93.184.216.34:0".parse().unwrap()]);
    }

    #[test]
    fn odd_ip_spellings_are_normalised_then_vetted() {
        for s in [
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            let url = Url::parse(s).unwrap();
            let ip: IpAddr = match url.host().unwrap() {
                Host::Ipv4(ip) => ip.into(),
                Host::Ipv6(ip) => ip.into(),
                Host::Domain(d) => panic!("{s} parsed as domain {d}"),
            };
            assert_eq!(non_public(ip), Some("loopback"), "{s}");
        }
        assert!(non_public("169.254.169.254".parse().unwrap()).unwrap().contains("metadata"));
        assert_eq!(non_public("93.184.216.34".parse().unwrap()), None);
        assert_eq!(non_public("2606:4700::1111".parse().unwrap()), None);
        assert!(non_public(std::net::Ipv6Addr::LOCALHOST.into()).is_some());
    }
}
