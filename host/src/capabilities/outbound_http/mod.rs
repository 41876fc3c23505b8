//! `chimera:agent/outbound-http`: real HTTP requests, denied by default.
//!
//! A request goes out only if an allow rule of the policy matches its
//! scheme, host, port, path prefix and method; that rule, and only it,
//! decides the rest. Host names are resolved by the host and every address
//! is vetted: loopback, private, link-local (cloud metadata) and other
//! non-public addresses are refused unless the matching rule says
//! `allow_private = true`. Each rule has its own client, connection pool and
//! resolver, so a connection opened under one rule is never reused by a
//! request that matched another. The connection goes only to the vetted
//! addresses; redirects are returned to the agent, never followed.
//!
//! Every byte the agent sends (URL, header names and values, body) counts
//! against `max_request_bytes`, checked from the sizes of the arguments in
//! guest memory before the host copies or decodes any of them, and is
//! counted in the task's `http_bytes_sent`.
//!
//! A rule may add headers whose values are host secrets
//! (`secret_headers`, see [`crate::secrets`]): they are set on the requests
//! that rule matches, replacing any header of that name the agent set, and
//! never reach the agent. They are not counted against the agent's
//! `max_request_bytes` or in `bytes_sent`, so not even a secret's length is
//! the agent's to learn; and as redirects are never followed, a secret goes
//! to no URL but those its rule names.

mod audit;
#[cfg(test)]
mod fuzz;
mod wasi_http;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use url::{Host, Url};
use wasmtime::component::{ComponentType, Lift, Linker, WasmList};
use wasmtime::StoreContextMut;

use serde::{Deserialize, Serialize};

use crate::bindings::chimera::agent::outbound_http::{HttpError, Method, Response};
use crate::capability::{
    AuditWarning, Capability, Counters, Decision, Interface, LoadContext, TaskContext, TaskHandle,
};
use crate::error::PolicyError;
use crate::guest_args::GuestStr;
use crate::log::escape_capped;
use crate::policy::{check_range, PolicySection};
use crate::secrets::Secrets;
use crate::task_data::TaskData;
use secrecy::ExposeSecret;

/// `[capabilities.outbound_http]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpGrant {
    /// Requests per task.
    pub max_requests: u32,
    /// Largest request, in bytes: URL, header names and values, and body
    /// together (what the agent sends; at most 100 headers).
    pub max_request_bytes: u64,
    /// Largest response body, in bytes; a larger one fails with `too-large`.
    pub max_response_bytes: u64,
    /// Time for one request, connect to last byte, in milliseconds.
    pub timeout_ms: u64,
    /// The allowed URLs; nothing else is reachable.
    pub allow: Vec<HttpAllow>,
}

impl Default for HttpGrant {
    fn default() -> Self {
        HttpGrant {
            max_requests: 16,
            max_request_bytes: 1 << 20,
            max_response_bytes: 1 << 20,
            timeout_ms: 5_000,
            allow: Vec::new(),
        }
    }
}

impl PolicySection for HttpGrant {
    const SECTION: &'static str = "capabilities.outbound_http";
}

/// `[[capabilities.outbound_http.allow]]`: one allowed URL pattern.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpAllow {
    /// `scheme://host[:port]/path-prefix`; the host may be `*.suffix`.
    pub url: String,
    /// Allowed methods; default `["GET"]`.
    #[serde(default = "default_methods")]
    pub methods: Vec<HttpMethod>,
    /// Allow loopback, private and link-local addresses for this URL.
    /// Without it such addresses are refused even when the host name matches.
    #[serde(default)]
    pub allow_private: bool,
    /// Headers the host adds to the requests this rule matches, their
    /// values taken from host secrets the agent never sees.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_headers: Vec<SecretHeader>,
}

/// `secret_headers = [{ name = "Authorization", secret = "api-key", prefix = "Bearer " }]`:
/// a header set host-side to `prefix` followed by the secret's value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretHeader {
    /// The header's name, e.g. `Authorization`.
    pub name: String,
    /// The secret, by its name in the host config's `[secrets]`.
    pub secret: String,
    /// Text before the value, e.g. `Bearer `.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// Most secret headers one rule may add.
const MAX_SECRET_HEADERS: usize = 8;

impl HttpAllow {
    /// A rule allowing `methods` on `url`, public addresses only.
    pub fn new(url: &str, methods: &[HttpMethod]) -> HttpAllow {
        HttpAllow { url: url.to_string(), methods: methods.to_vec(), allow_private: false, secret_headers: Vec::new() }
    }

    /// The same rule adding the header `name: prefix + secret` host-side.
    pub fn secret_header(mut self, name: &str, secret: &str, prefix: &str) -> HttpAllow {
        self.secret_headers.push(SecretHeader { name: name.into(), secret: secret.into(), prefix: prefix.into() });
        self
    }

    /// The same rule with private addresses allowed or not.
    pub fn allow_private(mut self, allow: bool) -> HttpAllow {
        self.allow_private = allow;
        self
    }
}

fn default_methods() -> Vec<HttpMethod> {
    vec![HttpMethod::Get]
}

/// An HTTP method a rule may allow, written in upper case in a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
}

impl HttpMethod {
    /// The method's name.
    pub fn name(self) -> &'static str {
        method_name(self.into())
    }
}

impl From<HttpMethod> for Method {
    fn from(m: HttpMethod) -> Method {
        match m {
            HttpMethod::Get => Method::Get,
            HttpMethod::Head => Method::Head,
            HttpMethod::Post => Method::Post,
            HttpMethod::Put => Method::Put,
            HttpMethod::Patch => Method::Patch,
            HttpMethod::Delete => Method::Delete,
            HttpMethod::Options => Method::Options,
        }
    }
}

const INTERFACES: &[Interface] = &[
    Interface::new("chimera:agent", "outbound-http", "0.1.0"),
    Interface::new("wasi:http", "types", wasi_http::VERSION),
    Interface::new("wasi:http", "outgoing-handler", wasi_http::VERSION),
];

const CALLS: usize = 0;
const REQUESTS: usize = 1;
const BYTES_SENT: usize = 2;
const BYTES_RECEIVED: usize = 3;

/// The `outbound-http` capability.
#[derive(Debug, Default)]
pub struct OutboundHttp {
    /// Names resolved to fixed addresses instead of through DNS (vetted like any other).
    dns_overrides: Arc<HashMap<String, Vec<IpAddr>>>,
    /// What `secret_headers` take their values from.
    secrets: Secrets,
}

impl OutboundHttp {
    /// Outbound HTTP resolving `dns_overrides` to fixed addresses (like
    /// `/etc/hosts`, for this capability only).
    pub fn new(dns_overrides: HashMap<String, Vec<IpAddr>>) -> OutboundHttp {
        OutboundHttp { dns_overrides: Arc::new(dns_overrides), secrets: Secrets::default() }
    }

    /// The same capability with `secrets` for the rules' `secret_headers`.
    pub fn with_secrets(mut self, secrets: Secrets) -> OutboundHttp {
        self.secrets = secrets;
        self
    }
}

/// `outbound-http` (and `wasi:http`) as one task sees it.
pub struct HttpTask {
    core: HttpCore,
    /// `wasi:http`'s own context (its field size limit).
    wasi_ctx: wasmtime_wasi_http::WasiHttpCtx,
    /// The instance memory held for what wasi:http's resources may buffer
    /// (see [`wasi_http::BYTES_PER_HANDLE`]); none for an agent without it.
    _wasi_buffers: Option<HeldBytes>,
}

impl std::ops::Deref for HttpTask {
    type Target = HttpCore;
    fn deref(&self) -> &HttpCore {
        &self.core
    }
}

impl std::ops::DerefMut for HttpTask {
    fn deref_mut(&mut self) -> &mut HttpCore {
        &mut self.core
    }
}

/// What both interfaces share in one task: the rules, the request quota,
/// the task's memory and counters. It is also `wasi:http`'s hooks.
pub struct HttpCore {
    access: Arc<HttpAccess>,
    /// Requests sent by this task, against the grant's quota.
    requests: u32,
    task: TaskHandle,
    counters: Counters,
    /// Whether the memory for wasi:http's buffers could be held (always
    /// true for an agent without wasi:http); without it nothing is sent.
    buffers: bool,
}

impl Capability for OutboundHttp {
    type Grant = HttpGrant;
    type AgentState = Arc<HttpAccess>;
    type TaskState = HttpTask;

    fn name(&self) -> &'static str {
        "outbound-http"
    }

    fn section(&self) -> &'static str {
        HttpGrant::SECTION
    }

    fn interfaces(&self) -> &[Interface] {
        INTERFACES
    }

    fn counters(&self) -> &'static [&'static str] {
        &["calls", "requests", "bytes_sent", "bytes_received"]
    }

    fn validate(&self, g: &HttpGrant) -> Result<(), PolicyError> {
        check_range("capabilities.outbound_http.max_requests", g.max_requests.into(), 1, 100_000)?;
        check_range("capabilities.outbound_http.max_request_bytes", g.max_request_bytes, 0, 1 << 30)?;
        check_range("capabilities.outbound_http.max_response_bytes", g.max_response_bytes, 1, 1 << 30)?;
        check_range("capabilities.outbound_http.timeout_ms", g.timeout_ms, 1, 3_600_000)?;
        for (i, allow) in g.allow.iter().enumerate() {
            UrlPattern::parse(&allow.url).map_err(|reason| PolicyError::Invalid {
                key: format!("capabilities.outbound_http.allow[{i}].url"),
                reason,
            })?;
            if allow.methods.is_empty() {
                return Err(PolicyError::Invalid {
                    key: format!("capabilities.outbound_http.allow[{i}].methods"),
                    reason: "is empty; list at least one method such as \"GET\"".into(),
                });
            }
            validate_secret_headers(&allow.secret_headers, &format!("capabilities.outbound_http.allow[{i}]"))?;
        }
        Ok(())
    }

    fn decide(&self, _: &Interface, grant: Option<&HttpGrant>) -> Decision {
        match grant {
            Some(g) if g.allow.is_empty() => Decision::Granted(
                "linked, but no URL is allowed (add [[capabilities.outbound_http.allow]] rules)".into(),
            ),
            Some(g) => Decision::Granted(g.allow.iter().map(describe_rule).collect::<Vec<_>>().join("; ")),
            None => Decision::Refused(
                "not granted; add a [capabilities.outbound_http] section with allow rules to the policy".into(),
            ),
        }
    }

    fn describe(&self, g: &HttpGrant, _agent: &str) -> Vec<String> {
        let mut lines = vec![format!(
            "outbound http: {} requests/task, {} ms timeout, {} B max request, {} B max response",
            g.max_requests, g.timeout_ms, g.max_request_bytes, g.max_response_bytes
        )];
        lines.extend(g.allow.iter().map(|a| format!("  allow {}", describe_rule(a))));
        lines.push("  everything else: denied".into());
        lines
    }

    fn warnings(&self, g: &HttpGrant) -> Vec<AuditWarning> {
        audit::warnings(g)
    }

    fn diff(&self, old: &HttpGrant, new: &HttpGrant) -> Vec<String> {
        audit::diff(old, new)
    }

    fn audit_name(&self, interface: &Interface) -> &'static str {
        if interface.package == "wasi:http" {
            "wasi-http"
        } else {
            "outbound-http"
        }
    }

    fn link(&self, interface: &Interface, linker: &mut Linker<TaskData>) -> wasmtime::Result<()> {
        match interface.package {
            "wasi:http" => wasi_http::link(interface, linker),
            _ => link_checked(interface, linker),
        }
    }

    fn load(&self, grant: Option<&HttpGrant>, cx: &LoadContext<'_>) -> Result<Arc<HttpAccess>, String> {
        let mut access = HttpAccess::new(&grant.cloned().unwrap_or_default(), &self.dns_overrides, &self.secrets)?;
        access.wasi_http = cx.links("wasi:http", "types");
        if access.wasi_http {
            wasi_http::check_budget(cx.limits())?;
        }
        Ok(Arc::new(access))
    }

    fn instantiate(&self, access: &Arc<HttpAccess>, cx: &TaskContext<'_>) -> HttpTask {
        let mut core = HttpCore {
            access: access.clone(),
            requests: 0,
            task: cx.task().clone(),
            counters: cx.counters(),
            buffers: true,
        };
        let wasi_buffers = access.wasi_http.then(|| {
            let mut held = HeldBytes { task: cx.task().clone(), bytes: 0 };
            core.buffers = held.hold(wasi_http::buffer_bytes(cx.limits()));
            held
        });
        HttpTask { core, wasi_ctx: wasi_http::context(), _wasi_buffers: wasi_buffers }
    }
}

fn describe_rule(a: &HttpAllow) -> String {
    format!(
        "{} {}{}{}",
        a.methods.iter().map(|m| m.name()).collect::<Vec<_>>().join(","),
        a.url,
        if a.allow_private { " (private addresses allowed)" } else { "" },
        describe_secret_headers(&a.secret_headers)
    )
}

/// ` + header Authorization from secret `api-key``, for audit lines (names only).
pub(crate) fn describe_secret_headers(headers: &[SecretHeader]) -> String {
    headers.iter().map(|h| format!(" + header {} from secret `{}`", h.name, h.secret)).collect()
}

/// Checks a rule's `secret_headers`: valid header names an agent could not
/// smuggle a target through, each once, valid secret names and prefixes.
fn validate_secret_headers(headers: &[SecretHeader], rule_key: &str) -> Result<(), PolicyError> {
    let key = format!("{rule_key}.secret_headers");
    let invalid = |reason: String| PolicyError::Invalid { key: key.clone(), reason };
    if headers.len() > MAX_SECRET_HEADERS {
        return Err(invalid(format!("has {} headers; a rule adds at most {MAX_SECRET_HEADERS}", headers.len())));
    }
    let mut seen = Vec::new();
    for h in headers {
        let lower = h.name.to_ascii_lowercase();
        if reqwest::header::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            return Err(invalid(format!("{:?} is not a valid header name", h.name)));
        }
        if FORBIDDEN_HEADERS.contains(&lower.as_str()) {
            return Err(invalid(format!(
                "`{}` is a header the host keeps to itself; it cannot carry a secret",
                h.name
            )));
        }
        if seen.contains(&lower) {
            return Err(invalid(format!("`{}` is listed twice", h.name)));
        }
        seen.push(lower);
        crate::policy::check_name(&format!("{key}.secret"), &h.secret)?;
        if h.prefix.len() > 256 || !h.prefix.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            return Err(invalid(format!(
                "the prefix for `{}` must be at most 256 bytes of visible ASCII, spaces or tabs",
                h.name
            )));
        }
    }
    Ok(())
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

/// One compiled allow rule with the client that sends what it allows.
#[derive(Debug)]
struct Rule {
    pattern: UrlPattern,
    methods: Vec<Method>,
    allow_private: bool,
    /// Headers set host-side on every request this rule sends (secret
    /// values, marked sensitive).
    inject: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    /// This rule's own client: its pool holds only connections made under
    /// this rule, and its resolver knows only this rule's `allow_private`.
    client: reqwest::Client,
}

/// An agent's outbound HTTP: its rules, quotas and clients. Built once per
/// agent when it is loaded.
pub struct HttpAccess {
    rules: Vec<Rule>,
    grant: HttpGrant,
    /// The agent links `wasi:http`.
    wasi_http: bool,
}

impl HttpAccess {
    fn new(
        grant: &HttpGrant,
        overrides: &Arc<HashMap<String, Vec<IpAddr>>>,
        secrets: &Secrets,
    ) -> Result<HttpAccess, String> {
        let rules: Vec<Rule> = grant
            .allow
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .redirect(reqwest::redirect::Policy::none())
                    .dns_resolver(Arc::new(VettingResolver {
                        allow_private: a.allow_private,
                        overrides: overrides.clone(),
                    }))
                    .user_agent(concat!("chimera-agent/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
                Ok(Rule {
                    pattern: UrlPattern::parse(&a.url)?,
                    methods: a.methods.iter().map(|&m| m.into()).collect(),
                    allow_private: a.allow_private,
                    inject: secret_headers(&a.secret_headers, secrets, i)?,
                    client,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(HttpAccess { rules, grant: grant.clone(), wasi_http: false })
    }

    /// Finds the rule allowing `method url` (the first that matches, in
    /// policy order), or says why none does.
    fn authorize(&self, method: Method, url: &Url) -> Result<&Rule, Refusal> {
        // An address is written as the URL parser writes it, as the
        // rule's own was (`[::ffff:7f00:1]`, never `[::ffff:127.0.0.1]`).
        let host = match (url.host(), url.host_str()) {
            (Some(Host::Domain(d)), _) => d.to_ascii_lowercase(),
            (Some(_), Some(literal)) => literal.to_string(),
            _ => return Err(("invalid-request", HttpError::InvalidRequest("the URL has no host".into()))),
        };
        let rule = self.rules.iter().find(|r| r.pattern.matches(url, &host) && r.methods.contains(&method));
        let rule = rule.ok_or_else(|| {
            let msg =
                format!("no allow rule of this agent's policy matches {} {}", method_name(method), quote(url.as_str()));
            ("no-rule", HttpError::Denied(msg))
        })?;
        // An address literal is never resolved, so it is vetted here. The
        // agent wrote it, so the message may say it.
        let literal = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal {
            if let Some(class) = non_public(ip) {
                if !rule.allow_private {
                    let msg = format!("{ip} is {} {class} address; the rule must say allow_private = true", a(class));
                    return Err(("private-address", HttpError::Denied(msg)));
                }
            }
        }
        Ok(rule)
    }
}

/// The headers a rule adds, with their secrets' values. A secret the host
/// does not define refuses the agent at load, by name.
fn secret_headers(
    headers: &[SecretHeader],
    secrets: &Secrets,
    rule: usize,
) -> Result<Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>, String> {
    headers
        .iter()
        .map(|h| {
            let Some(secret) = secrets.get(&h.secret) else {
                return Err(format!(
                    "capabilities.outbound_http.allow[{rule}] adds the `{}` header from secret `{}`, which this \
                     host does not define; define it in the host config ([secrets.{}] with env = \"VARIABLE\" or \
                     file = \"PATH\"; `chimera run --secret {}=env:VARIABLE`)",
                    h.name, h.secret, h.secret, h.secret
                ));
            };
            let name = reqwest::header::HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("{:?} is not a valid header name", h.name))?;
            let mut value = reqwest::header::HeaderValue::from_str(&format!("{}{}", h.prefix, secret.expose_secret()))
                .map_err(|_| format!("secret `{}` cannot be sent in a header", h.secret))?;
            // Kept out of Debug output and of HTTP/2 header compression tables.
            value.set_sensitive(true);
            Ok((name, value))
        })
        .collect()
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

/// The link-local class: 169.254.169.254 is where clouds serve instance
/// metadata and credentials.
const LINK_LOCAL_V4: &str = "link-local (includes cloud metadata)";

/// The IANA IPv4 and IPv6 Special-Purpose Address Registries, plus
/// multicast: each range with the class of its addresses, or `None` for a
/// range IANA lists as globally reachable inside a larger one that is not.
/// An address takes the entry with the longest prefix that contains it.
const SPECIAL_PURPOSE: &[(&str, Option<&str>)] = &[
    // IPv4
    ("0.0.0.0/8", Some("unspecified (this network)")),
    ("10.0.0.0/8", Some("private")),
    ("100.64.0.0/10", Some("shared (carrier-grade NAT)")),
    ("127.0.0.0/8", Some("loopback")),
    ("169.254.0.0/16", Some(LINK_LOCAL_V4)),
    ("172.16.0.0/12", Some("private")),
    ("192.0.0.0/24", Some("IETF protocol assignment")),
    ("192.0.0.9/32", None),  // PCP anycast
    ("192.0.0.10/32", None), // TURN anycast
    ("192.0.2.0/24", Some("documentation")),
    ("192.88.99.0/24", Some("6to4 relay anycast (deprecated)")),
    ("192.168.0.0/16", Some("private")),
    ("198.18.0.0/15", Some("benchmarking")),
    ("198.51.100.0/24", Some("documentation")),
    ("203.0.113.0/24", Some("documentation")),
    ("224.0.0.0/4", Some("multicast")),
    ("240.0.0.0/4", Some("reserved")),
    ("255.255.255.255/32", Some("broadcast")),
    // IPv6 (IPv4-mapped ::ffff:0:0/96 is judged by the IPv4 address it carries)
    ("::/128", Some("unspecified")),
    ("::1/128", Some("loopback")),
    ("::/96", Some("IPv4-compatible (deprecated)")),
    ("::ffff:0:0:0/96", Some("IPv4-translated")),
    ("64:ff9b::/96", Some("NAT64")),
    ("64:ff9b:1::/48", Some("NAT64 (local use)")),
    ("100::/64", Some("discard-only")),
    ("100:0:0:1::/64", Some("dummy prefix")),
    ("2001::/23", Some("IETF protocol assignment")),
    ("2001::/32", Some("Teredo")),
    ("2001:1::1/128", None), // PCP anycast
    ("2001:1::2/128", None), // TURN anycast
    ("2001:1::3/128", None), // DNS-SD service registration anycast
    ("2001:2::/48", Some("benchmarking")),
    ("2001:3::/32", None),     // AMT
    ("2001:4:112::/48", None), // AS112
    ("2001:10::/28", Some("ORCHID (deprecated)")),
    ("2001:20::/28", None), // ORCHIDv2
    ("2001:30::/28", None), // drone remote ID
    ("2001:db8::/32", Some("documentation")),
    ("2002::/16", Some("6to4")),
    ("3fff::/20", Some("documentation")),
    ("5f00::/16", Some("segment routing (SRv6)")),
    ("fc00::/7", Some("private (unique local)")),
    ("fe80::/10", Some("link-local")),
    ("fec0::/10", Some("site-local (deprecated)")),
    ("ff00::/8", Some("multicast")),
];

static RANGES: LazyLock<Vec<(ipnet::IpNet, Option<&'static str>)>> = LazyLock::new(|| {
    SPECIAL_PURPOSE.iter().map(|(net, class)| (net.parse().expect("a valid range"), *class)).collect()
});

/// Why an address is not public (its special-purpose class), or `None`
/// when it is.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    RANGES.iter().filter(|(net, _)| net.contains(&ip)).max_by_key(|(net, _)| net.prefix_len()).and_then(|(_, c)| *c)
}

/// The indefinite article for a class name.
fn a(class: &str) -> &'static str {
    if class.starts_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
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

/// Resolves host names for one rule's client and vets every address, so
/// the connection can only go to an address that rule allows (no
/// DNS-rebinding window between a check and the connect). Its refusals name
/// the class of the address, never the address: what an internal name
/// resolves to is not the agent's to learn.
struct VettingResolver {
    allow_private: bool,
    overrides: Arc<HashMap<String, Vec<IpAddr>>>,
}

impl reqwest::dns::Resolve for VettingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let allow_private = self.allow_private;
        let fixed = self.overrides.get(&host).cloned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match fixed {
                Some(ips) => ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let denied = |msg: String| Box::new(AddressDenied(msg)) as Box<dyn StdError + Send + Sync>;
            if addrs.is_empty() {
                return Err(denied(format!("{} resolves to no address", quote(&host))));
            }
            if !allow_private {
                if let Some(class) = addrs.iter().find_map(|a| non_public(a.ip())) {
                    return Err(denied(format!(
                        "{} resolves to {} {class} address; the rule must say allow_private = true",
                        quote(&host),
                        a(class)
                    )));
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

/// Most headers one request may carry.
const MAX_HEADERS: usize = 100;

/// Most bytes of a guest string quoted in a message.
const QUOTE_BYTES: usize = 256;

/// Guest text for a message: control characters escaped, cut to
/// [`QUOTE_BYTES`].
fn quote(text: &str) -> String {
    let mut budget = QUOTE_BYTES;
    escape_capped(text, &mut budget)
}

/// A failed request with a fixed label for metrics (never guest text).
type Refusal = (&'static str, HttpError);

fn too_large_request(bytes: u64, exact: bool, limit: u64) -> Refusal {
    let at_least = if exact { "" } else { "at least " };
    let msg =
        format!("request is {at_least}{bytes} bytes (URL, headers and body); the limit is {limit} (max_request_bytes)");
    ("too-large", HttpError::TooLarge(msg))
}

/// Refuses a header list by its length alone, before any element is read.
fn check_header_count(n: usize) -> Result<(), Refusal> {
    if n > MAX_HEADERS {
        let msg = format!("request has {n} headers; the limit is {MAX_HEADERS}");
        return Err(("too-large", HttpError::TooLarge(msg)));
    }
    Ok(())
}

/// `request` as the guest passed it: views of guest memory whose sizes are
/// known before anything is copied or decoded.
#[derive(ComponentType, Lift)]
#[component(record)]
struct RawRequest {
    method: Method,
    url: GuestStr,
    headers: WasmList<(GuestStr, GuestStr)>,
    body: Option<WasmList<u8>>,
}

/// A request copied out of guest memory, within `max_request_bytes`.
struct OutboundRequest {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Host bytes held against the instance's memory limit for the copy,
    /// released once the request is done.
    held: u64,
}

/// A request's URL and headers, decoded.
type UrlAndHeaders = (String, Vec<(String, String)>);

/// Links `send` taking the request as views of guest memory: the sizes of
/// its URL, headers and body are checked against `max_request_bytes`
/// before the host copies or decodes any of them.
fn link_checked(interface: &Interface, l: &mut Linker<TaskData>) -> wasmtime::Result<()> {
    let mut i = l.instance(&interface.qualified())?;
    i.func_wrap_async("send", |mut store: StoreContextMut<'_, TaskData>, (raw,): (RawRequest,)| {
        Box::new(async move {
            store.data().state_ref::<HttpTask>().counters.add(CALLS, 1);
            let result = match lift_request(&mut store, &raw)? {
                Ok(request) => {
                    let held = request.held;
                    let http = store.data_mut().state::<HttpTask>();
                    let result = http.send(request).await;
                    http.task.release_memory(held);
                    result
                }
                Err(refusal) => Err(refusal),
            };
            Ok((store.data().state_ref::<HttpTask>().outcome(result),))
        })
    })?;
    Ok(())
}

/// Copies a request out of guest memory if the grant allows a request at
/// all and its URL, headers and body fit in `max_request_bytes` together.
fn lift_request(
    store: &mut StoreContextMut<'_, TaskData>,
    raw: &RawRequest,
) -> wasmtime::Result<Result<OutboundRequest, Refusal>> {
    let limit = match store.data().state_ref::<HttpTask>().access() {
        Ok(access) => access.grant.max_request_bytes,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let n = raw.headers.len();
    if let Err(refusal) = check_header_count(n) {
        return Ok(Err(refusal));
    }
    // From the lengths alone, before any header is read: every header needs
    // a name of at least one byte.
    let body_len = raw.body.as_ref().map_or(0, |b| b.len()) as u64;
    let floor = raw.url.min_len() as u64 + n as u64 + body_len;
    if floor > limit {
        return Ok(Err(too_large_request(floor, n == 0 && raw.url.min_len() == raw.url.max_len(), limit)));
    }
    let mut views = Vec::with_capacity(raw.headers.len());
    for i in 0..raw.headers.len() {
        if let Some(header) = raw.headers.get(&mut *store, i) {
            views.push(header?);
        }
    }
    // What the request is at least and at most once decoded to UTF-8 (the
    // same for a UTF-8 guest).
    let strings = || std::iter::once(&raw.url).chain(views.iter().flat_map(|(k, v)| [k, v]));
    let least = body_len + strings().map(|s| s.min_len() as u64).sum::<u64>();
    let most = body_len + strings().map(|s| s.max_len() as u64).sum::<u64>();
    if least > limit {
        return Ok(Err(too_large_request(least, least == most, limit)));
    }
    // The copy is host memory held for the instance until the request is done.
    let task = &store.data().state_ref::<HttpTask>().task;
    if !task.try_hold_memory(most) {
        let msg = format!(
            "copying the {most}-byte request would take the instance past its memory limit of {} bytes (memory_mib)",
            task.memory_limit()
        );
        return Ok(Err(("memory-limit", HttpError::TooLarge(msg))));
    }
    // Decode each string within what the limit leaves it.
    let mut spare = usize::try_from(limit - least).unwrap_or(usize::MAX);
    let store = &*store;
    let mut decode = |s: &GuestStr| -> wasmtime::Result<Option<String>> {
        let Some(text) = s.decode_within(store, s.min_len().saturating_add(spare))? else {
            return Ok(None);
        };
        spare -= text.len() - s.min_len();
        Ok(Some(text))
    };
    let over = || -> wasmtime::Result<Result<OutboundRequest, Refusal>> {
        let msg = format!(
            "request is more than {limit} bytes (URL, headers and body) once decoded to UTF-8; the limit is {limit} (max_request_bytes)"
        );
        Ok(Err(("too-large", HttpError::TooLarge(msg))))
    };
    let copied = (|| -> wasmtime::Result<Option<UrlAndHeaders>> {
        let Some(url) = decode(&raw.url)? else { return Ok(None) };
        let mut headers = Vec::with_capacity(views.len());
        for (name, value) in &views {
            let (Some(name), Some(value)) = (decode(name)?, decode(value)?) else { return Ok(None) };
            headers.push((name, value));
        }
        Ok(Some((url, headers)))
    })();
    let (url, headers) = match copied {
        Ok(Some(parts)) => parts,
        other => {
            store.data().state_ref::<HttpTask>().task.release_memory(most);
            return other.and_then(|_| over());
        }
    };
    let body = raw.body.as_ref().map(|b| b.as_le_slice(store).to_vec()).unwrap_or_default();
    Ok(Ok(OutboundRequest { method: raw.method, url, headers, body, held: most }))
}

impl HttpCore {
    /// The grant, if this task may send one more request.
    fn access(&self) -> Result<&HttpAccess, Refusal> {
        let access = &self.access;
        if self.requests >= access.grant.max_requests {
            let msg = format!("this task already sent {} requests (max_requests)", access.grant.max_requests);
            return Err(("quota", HttpError::QuotaExceeded(msg)));
        }
        Ok(access)
    }

    /// Counts a refusal under its fixed label and hands the error over.
    fn outcome(&self, result: Result<Response, Refusal>) -> Result<Response, HttpError> {
        result.map_err(|(label, error)| {
            if matches!(error, HttpError::Denied(_) | HttpError::QuotaExceeded(_) | HttpError::TooLarge(_)) {
                self.task.count_denial("outbound-http", label);
            }
            error
        })
    }

    async fn send(&mut self, request: OutboundRequest) -> Result<Response, Refusal> {
        let checked = self.check(request.method, &request.url, &request.headers, request.body.len() as u64)?;
        let answer = checked.exchange(request.body).await?;
        let headers = answer
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        Ok(Response { status: answer.status, headers, body: answer.body })
    }

    /// Checks a request against the rules and the request limit (its body
    /// counted as `body_len` bytes) and counts it against the quota: what
    /// both interfaces do before anything goes out.
    fn check(
        &mut self,
        method: Method,
        raw_url: &str,
        headers: &[(String, String)],
        body_len: u64,
    ) -> Result<Checked, Refusal> {
        let access = self.access.clone();
        self.access()?;
        let limit = access.grant.max_request_bytes;
        let url = Url::parse(raw_url).map_err(|e| {
            ("invalid-request", HttpError::InvalidRequest(format!("bad URL \"{}\": {e}", quote(raw_url))))
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(("credentials", HttpError::Denied("URLs with credentials (user@host) are not allowed".into())));
        }
        let rule = access.authorize(method, &url)?;
        let reqwest_method = reqwest::Method::from_bytes(method_name(method).as_bytes()).expect("known method");
        let mut builder = rule.client.request(reqwest_method, url.clone());
        let mut header_bytes = 0u64;
        for (name, value) in headers {
            if FORBIDDEN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                let msg = format!("agents may not set the `{}` header", quote(name));
                return Err(("forbidden-header", HttpError::Denied(msg)));
            }
            let bad = |what: String| ("invalid-request", HttpError::InvalidRequest(what));
            let header_name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(format!("bad header name \"{}\"", quote(name))))?;
            let header_value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| bad(format!("bad value for header `{}`", quote(name))))?;
            header_bytes += (name.len() + value.len()) as u64;
            builder = builder.header(header_name, header_value);
        }
        // The URL that leaves is the parsed one (normalised, percent-encoded):
        // it is what is counted, and checked again.
        let sent = url.as_str().len() as u64 + header_bytes + body_len;
        if sent > limit {
            return Err(too_large_request(sent, true, limit));
        }
        // The rule's secret headers replace any the agent set under those names.
        let mut request = builder.build().map_err(classify)?;
        for (name, value) in &rule.inject {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        self.requests += 1;
        self.counters.add(REQUESTS, 1);
        self.counters.add(BYTES_SENT, sent);
        Ok(Checked {
            client: rule.client.clone(),
            request,
            spare: limit - sent,
            max_body: access.grant.max_response_bytes,
            timeout: Duration::from_millis(access.grant.timeout_ms),
            counters: self.counters.clone(),
            task: self.task.clone(),
        })
    }
}

/// A request that passed the rules and was counted, waiting for its body.
struct Checked {
    client: reqwest::Client,
    /// Method, URL and headers (the rule's secret headers set), no body yet.
    request: reqwest::Request,
    /// Bytes of `max_request_bytes` the body may still take.
    spare: u64,
    max_body: u64,
    timeout: Duration,
    counters: Counters,
    task: TaskHandle,
}

/// A response read whole within the grant, its body held against the
/// instance's memory limit until `held` is dropped.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
    held: HeldBytes,
}

impl Checked {
    /// Sends the request with `body` (already counted) and reads the response.
    async fn exchange(mut self, body: Vec<u8>) -> Result<Answer, Refusal> {
        *self.request.body_mut() = Some(body.into());
        let Checked { client, request, max_body, timeout, counters, task, .. } = self;
        let mut held = HeldBytes { task, bytes: 0 };
        let exchange = async move {
            let mut response = client.execute(request).await.map_err(classify)?;
            let status = response.status().as_u16();
            let headers = std::mem::take(response.headers_mut());
            // The headers are host memory held for the instance too.
            let header_bytes: u64 = headers.iter().map(|(k, v)| (k.as_str().len() + v.len()) as u64 + 64).sum();
            if !held.hold(header_bytes) {
                let msg = format!(
                    "the response headers would take the instance past its memory limit of {} bytes (memory_mib)",
                    held.task.memory_limit()
                );
                return Err(("memory-limit", HttpError::TooLarge(msg)));
            }
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
                        held.task.memory_limit()
                    );
                    return Err(("memory-limit", HttpError::TooLarge(msg)));
                }
                body.extend_from_slice(&chunk);
                counters.add(BYTES_RECEIVED, chunk.len() as u64);
            }
            Ok(Answer { status, headers, body, held })
        };
        tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(("timeout", HttpError::Timeout)))
    }
}

/// Host bytes reserved against the instance's memory limit, returned on drop.
struct HeldBytes {
    task: TaskHandle,
    bytes: u64,
}

impl HeldBytes {
    fn hold(&mut self, n: u64) -> bool {
        let ok = self.task.try_hold_memory(n);
        if ok {
            self.bytes += n;
        }
        ok
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.task.release_memory(self.bytes);
    }
}

fn too_large(max: u64) -> Refusal {
    ("too-large", HttpError::TooLarge(format!("response body exceeds {max} bytes (max_response_bytes)")))
}

/// Maps a client error to the WIT error, finding a resolver refusal in the
/// error's sources. The URL is left out and the text capped.
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
    let e = e.without_url();
    let mut reason = e.to_string();
    if let Some(inner) = e.source() {
        reason = format!("{reason}: {inner}");
    }
    ("connection-failed", HttpError::ConnectionFailed(quote(&reason)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;

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

    fn resolver(allow_private: bool, names: &[(&str, &str)]) -> VettingResolver {
        let overrides = names.iter().map(|(n, ip)| (n.to_string(), vec![ip.parse().unwrap()])).collect();
        VettingResolver { allow_private, overrides: Arc::new(overrides) }
    }

    #[tokio::test]
    async fn the_resolver_refuses_non_public_addresses_without_saying_which() {
        let cases = [
            ("metadata.test", "169.254.169.254", "a link-local (includes cloud metadata)"),
            ("private.test", "10.0.0.5", "a private"),
            ("ula.test", "fd00::1", "a private (unique local)"),
            ("mapped.test", "::ffff:192.168.1.1", "a private"),
            ("translated.test", "::ffff:0:7f00:1", "an IPv4-translated"),
            ("nat64.test", "64:ff9b::7f00:1", "a NAT64"),
            ("nat64-local.test", "64:ff9b:1::a00:1", "a NAT64 (local use)"),
            ("6to4.test", "2002:7f00:1::1", "a 6to4"),
            ("teredo.test", "2001:0:4136:e378:8000:63bf:80ff:fffe", "a Teredo"),
            ("cgnat.test", "100.64.0.1", "a shared (carrier-grade NAT)"),
            ("zero.test", "0.0.0.0", "an unspecified (this network)"),
        ];
        let vetting = resolver(false, &cases.map(|(n, ip, _)| (n, ip)));
        for (name, ip, class) in cases {
            let err = match vetting.resolve(name.parse().unwrap()).await {
                Ok(_) => panic!("{name} resolved"),
                Err(e) => e.to_string(),
            };
            assert_eq!(err, format!("{name} resolves to {class} address; the rule must say allow_private = true"));
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!err.contains(&ip.to_string()), "{err}");
        }
        // Public addresses resolve, and a rule with allow_private takes the rest.
        let public = resolver(false, &[("ok.test", "93.184.216.34")]);
        let addrs: Vec<SocketAddr> = public.resolve("ok.test".parse().unwrap()).await.unwrap().collect();
        assert_eq!(addrs, ["93.184.216.34:0".parse().unwrap()]);
        let private = resolver(true, &[("svc.test", "127.0.0.1")]);
        let addrs: Vec<SocketAddr> = private.resolve("svc.test".parse().unwrap()).await.unwrap().collect();
        assert_eq!(addrs, ["127.0.0.1:0".parse().unwrap()]);
    }

    #[test]
    fn special_purpose_ranges_are_classified() {
        let class = |s: &str| non_public(s.parse().unwrap());
        for (ip, expected) in [
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.31.255.255", Some("private")),
            ("192.168.0.1", Some("private")),
            ("169.254.169.254", Some(LINK_LOCAL_V4)),
            ("0.1.2.3", Some("unspecified (this network)")),
            ("100.127.255.255", Some("shared (carrier-grade NAT)")),
            ("192.0.0.8", Some("IETF protocol assignment")),
            ("192.0.2.1", Some("documentation")),
            ("198.19.0.1", Some("benchmarking")),
            ("224.0.0.1", Some("multicast")),
            ("240.0.0.1", Some("reserved")),
            ("255.255.255.255", Some("broadcast")),
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("::7f00:1", Some("IPv4-compatible (deprecated)")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:0:a00:1", Some("IPv4-translated")),
            ("64:ff9b::808:808", Some("NAT64")),
            ("64:ff9b:1:2::1", Some("NAT64 (local use)")),
            ("100::1", Some("discard-only")),
            ("2001::1", Some("Teredo")),
            ("2001:2::1", Some("benchmarking")),
            ("2001:db8::1", Some("documentation")),
            ("2002:a00:1::", Some("6to4")),
            ("fc00::1", Some("private (unique local)")),
            ("fe80::1", Some("link-local")),
            ("ff02::1", Some("multicast")),
            // public, including the globally reachable ones inside special ranges
            ("93.184.216.34", None),
            ("8.8.8.8", None),
            ("192.0.0.9", None),
            ("::ffff:8.8.8.8", None),
            ("2606:4700::1111", None),
            ("2001:4860:4860::8888", None),
            ("2001:1::1", None),
            ("2001:20::1", None),
        ] {
            assert_eq!(class(ip), expected, "{ip}");
        }
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
    }

    #[test]
    fn the_matching_rule_alone_decides() {
        let rule = |url: &str, methods: &[HttpMethod], allow_private| {
            HttpAllow::new(url, methods).allow_private(allow_private)
        };
        let grant = HttpGrant {
            allow: vec![
                rule("http://svc.test:8080/open/", &[HttpMethod::Get], true),
                rule("http://svc.test:8080/closed/", &[HttpMethod::Get, HttpMethod::Post], false),
                rule("http://127.0.0.1:8080/open/", &[HttpMethod::Get], true),
                rule("http://127.0.0.1:8080/closed/", &[HttpMethod::Get], false),
            ],
            ..HttpGrant::default()
        };
        let access = HttpAccess::new(&grant, &Arc::default(), &Secrets::default()).unwrap();
        let u = |s: &str| Url::parse(s).unwrap();
        let chosen = |m, s: &str| access.authorize(m, &u(s)).map(|r| r.pattern.path_prefix.clone());
        assert_eq!(chosen(Method::Get, "http://svc.test:8080/open/x").unwrap(), "/open/");
        assert!(access.authorize(Method::Get, &u("http://svc.test:8080/open/x")).unwrap().allow_private);
        assert!(!access.authorize(Method::Get, &u("http://svc.test:8080/closed/x")).unwrap().allow_private);
        assert_eq!(chosen(Method::Post, "http://svc.test:8080/closed/x").unwrap(), "/closed/");
        let denied = |m, s: &str| match access.authorize(m, &u(s)) {
            Err((label, HttpError::Denied(msg))) => (label, msg),
            other => panic!("{s}: {other:?}"),
        };
        // POST is allowed by the closed rule only; the open one does not lend it.
        assert_eq!(denied(Method::Post, "http://svc.test:8080/open/x").0, "no-rule");
        assert_eq!(chosen(Method::Get, "http://127.0.0.1:8080/open/x").unwrap(), "/open/");
        assert_eq!(
            denied(Method::Get, "http://127.0.0.1:8080/closed/x"),
            ("private-address", "127.0.0.1 is a loopback address; the rule must say allow_private = true".into())
        );
        // A long URL is quoted capped in the message.
        let long = format!("http://elsewhere.test/{}", "a".repeat(10_000));
        let (_, msg) = denied(Method::Get, &long);
        assert!(msg.len() < QUOTE_BYTES + 100 && msg.ends_with('…'), "{msg}");
    }

    #[test]
    fn secret_headers_are_checked_named_and_warned_of() {
        let policy = |rule: &str| crate::Policy::from_toml(&format!("[[capabilities.outbound_http.allow]]\n{rule}\n"));
        let rule = |url: &str, headers: &str| format!("url = \"{url}\"\nsecret_headers = [{headers}]");
        let err = |url: &str, headers: &str| policy(&rule(url, headers)).unwrap_err().to_string();
        assert!(err("https://a.test/", r#"{ name = "Host", secret = "k" }"#).contains("the host keeps to itself"));
        assert!(err("https://a.test/", r#"{ name = "bad name", secret = "k" }"#).contains("not a valid header name"));
        assert!(err("https://a.test/", r#"{ name = "A", secret = "k" }, { name = "a", secret = "j" }"#)
            .contains("listed twice"));
        assert!(err("https://a.test/", r#"{ name = "A", secret = "no spaces" }"#).contains("not a valid name"));
        assert!(err("https://a.test/", r#"{ name = "A", secret = "k", prefix = "x\r\ny" }"#).contains("prefix"));
        assert!(err("https://a.test/", r#"{ name = "A", secret = "k", value = "v" }"#).contains("unknown field"));
        let warned = |url: &str| {
            let p = policy(&rule(url, r#"{ name = "Authorization", secret = "k" }"#)).unwrap();
            let grant: HttpGrant = p.grant().unwrap().unwrap();
            audit::warnings(&grant).into_iter().map(|w| w.code).collect::<Vec<_>>()
        };
        assert_eq!(warned("https://api.test/"), Vec::<&str>::new());
        assert_eq!(warned("http://api.test/"), ["secret-in-clear"]);
        assert_eq!(warned("https://*.api.test/"), ["secret-wildcard"]);
        // Loopback does not leave the machine.
        assert!(!warned("http://127.0.0.1:8080/").contains(&"secret-in-clear"));
        // A secret the host does not define refuses the agent at load, by name;
        // a defined one is sent marked sensitive.
        let grant = HttpGrant {
            allow: vec![HttpAllow::new("https://api.test/", &[HttpMethod::Get]).secret_header("X-Key", "k", "Key ")],
            ..HttpGrant::default()
        };
        let refused = HttpAccess::new(&grant, &Arc::default(), &Secrets::default()).err().unwrap();
        assert!(refused.contains("from secret `k`, which this host does not define"), "{refused}");
        let mut secrets = Secrets::default();
        secrets.insert("k", "v4lue").unwrap();
        let access = HttpAccess::new(&grant, &Arc::default(), &secrets).unwrap();
        let (name, value) = &access.rules[0].inject[0];
        assert_eq!((name.as_str(), value.to_str().unwrap(), value.is_sensitive()), ("x-key", "Key v4lue", true));
        assert!(!format!("{value:?}").contains("v4lue"));
    }

    #[test]
    fn header_lists_are_refused_by_their_length() {
        match check_header_count(1_000_000) {
            Err(("too-large", HttpError::TooLarge(m))) => {
                assert_eq!(m, "request has 1000000 headers; the limit is 100")
            }
            other => panic!("{other:?}"),
        }
        assert!(check_header_count(100).is_ok());
    }
}
