//! Validation of the raw [`Settings`] into typed values ([`Validated`]): every problem found is
//! reported, not only the first. No I/O beyond checking that files exist.

use super::connections::ConnectionLimits;
use super::settings::{IdentityMode, LogFormat, Settings};
use super::AuthSettings;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// What the proxy needs to know; nothing here is about authentication.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub upstream: url::Url,
    pub upstream_ca_file: Option<PathBuf>,
    pub trusted_proxies: Vec<IpNet>,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub upstream_body_timeout: Duration,
    pub idle_timeout: Duration,
    pub preserve_host: bool,
    pub max_request_header_bytes: usize,
    /// What `/readyz` asks the upstream, and within how long.
    pub ready_check: Option<(String, Duration)>,
}

/// Settings after validation.
pub struct Validated {
    pub auth: AuthSettings,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub proxy: ProxySettings,
    pub identity: IdentityMode,
    pub log_format: LogFormat,
    pub log_level: String,
    pub shutdown_timeout: Duration,
    pub workers: usize,
    pub connections: ConnectionLimits,
}

impl Settings {
    /// Checks every setting, pushing one message per problem; `None` if any was found.
    pub fn validate(self, problems: &mut Vec<String>) -> Option<Validated> {
        let before = problems.len();
        let auth = self.validate_auth(problems);
        let listen = socket_addr("listen", &self.listen, problems);
        let admin_listen = socket_addr("admin_listen", &self.admin_listen, problems);
        let upstream = upstream_url(&self.upstream, problems);
        clashes(listen, admin_listen, upstream.as_ref(), problems);
        let connections = self.connections.validate(problems);
        let identity = super::types::one_of("identity", &self.identity, problems);
        let log_format = super::types::one_of("log_format", &self.log_format, problems);
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log_level) {
            problems.push(format!(
                "log_level '{}' is not a valid filter: {e}",
                self.log_level
            ));
        }
        let trusted_proxies = networks("trusted_proxies", &self.trusted_proxies, problems);
        let tls = match (&self.tls.cert_file, &self.tls.key_file) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                existing_file("tls.cert_file", c, problems);
                existing_file("tls.key_file", k, problems);
                Some(TlsFiles {
                    cert_file: c.into(),
                    key_file: k.into(),
                })
            }
            _ => {
                problems.push("tls.cert_file and tls.key_file must be set together".to_string());
                None
            }
        };
        let upstream_ca_file = self.upstream_ca_file.as_ref().map(|f| {
            existing_file("upstream_ca_file", f, problems);
            PathBuf::from(f)
        });
        for (name, v) in [
            (
                "upstream_connect_timeout_secs",
                self.upstream_connect_timeout_secs,
            ),
            ("upstream_timeout_secs", self.upstream_timeout_secs),
            (
                "upstream_body_timeout_secs",
                self.upstream_body_timeout_secs,
            ),
        ] {
            if v == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        }
        let ready_path = &self.upstream_ready_path;
        if !ready_path.is_empty() && (!ready_path.starts_with('/') || ready_path.contains("://")) {
            problems.push("upstream_ready_path must be a path starting with /".to_string());
        }
        if !(50..=60_000).contains(&self.upstream_ready_timeout_ms) {
            problems.push(format!(
                "upstream_ready_timeout_ms must be between 50 and 60000, got {}",
                self.upstream_ready_timeout_ms
            ));
        }
        if self.max_request_header_bytes < 8192 {
            problems.push("max_request_header_bytes must be at least 8192".to_string());
        }
        if problems.len() > before {
            return None;
        }
        Some(Validated {
            auth: auth?,
            listen: listen?,
            admin_listen: admin_listen?,
            tls,
            proxy: ProxySettings {
                upstream: upstream?,
                upstream_ca_file,
                trusted_proxies,
                connect_timeout: Duration::from_secs(self.upstream_connect_timeout_secs),
                upstream_timeout: Duration::from_secs(self.upstream_timeout_secs),
                upstream_body_timeout: Duration::from_secs(self.upstream_body_timeout_secs),
                idle_timeout: Duration::from_secs(self.upstream_idle_timeout_secs),
                preserve_host: self.preserve_host,
                max_request_header_bytes: self.max_request_header_bytes,
                ready_check: (!ready_path.is_empty()).then(|| {
                    (
                        ready_path.clone(),
                        Duration::from_millis(self.upstream_ready_timeout_ms),
                    )
                }),
            },
            identity: identity?,
            log_format: log_format?,
            log_level: self.log_level,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            connections: connections?,
            workers: match self.workers {
                0 => std::thread::available_parallelism()
                    .map(usize::from)
                    .unwrap_or(1),
                n => n,
            },
        })
    }
}

fn socket_addr(name: &str, raw: &str, problems: &mut Vec<String>) -> Option<SocketAddr> {
    raw.trim()
        .parse()
        .map_err(|_| {
            problems.push(format!(
                "{name} must be an address like 0.0.0.0:8000, got '{raw}'"
            ))
        })
        .ok()
}

/// Addresses that cannot work, said by `check` and at start-up as a configuration error: the
/// admin listener on the public one's port (its bind would fail with "address in use" after
/// the public listener is up, as if another process held the port), or an upstream that is
/// the sidecar's own listener (each request forwarded to itself until the connection limits
/// give out). Only what can be told without a DNS lookup: IP literals and `localhost`.
fn clashes(
    listen: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    upstream: Option<&url::Url>,
    problems: &mut Vec<String>,
) {
    let Some(listen) = listen else { return };
    if let Some(admin) = admin.filter(|a| same_socket(listen, *a)) {
        problems.push(format!(
            "listen ({listen}) and admin_listen ({admin}) must not share a port: one \
             address cannot serve both"
        ));
    }
    let Some(u) = upstream else { return };
    // A connection to a wildcard address goes to the loopback address of its family.
    let reached = |ip: IpAddr| match ip.to_canonical() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    let ips: Vec<IpAddr> = match u.host() {
        Some(url::Host::Ipv4(ip)) => vec![reached(ip.into())],
        Some(url::Host::Ipv6(ip)) => vec![reached(ip.into())],
        Some(url::Host::Domain(d)) if is_localhost(d) => {
            vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
        }
        _ => Vec::new(),
    };
    let port = u.port_or_known_default().unwrap_or(0);
    if ips
        .into_iter()
        .any(|ip| same_socket(listen, SocketAddr::new(ip, port)))
    {
        problems.push(format!(
            "upstream ({}) is the sidecar's own listen address ({listen}): every request \
             would be forwarded to the sidecar itself",
            u.as_str().trim_end_matches('/')
        ));
    }
}

/// `localhost`, `localhost.` and names under it, which resolve to the loopback addresses.
fn is_localhost(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Whether two socket addresses meet: the same port (not 0, which the system picks) and
/// addresses that overlap (equal once IPv4-mapped IPv6 is read as IPv4, or one a wildcard of
/// the other's family; `[::]` is dual stack, as `server::listen` binds it).
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    let (x, y) = (a.ip().to_canonical(), b.ip().to_canonical());
    let covers = |w: IpAddr, v: IpAddr| w.is_unspecified() && (w.is_ipv6() || v.is_ipv4());
    a.port() == b.port() && a.port() != 0 && (x == y || covers(x, y) || covers(y, x))
}

fn upstream_url(raw: &str, problems: &mut Vec<String>) -> Option<url::Url> {
    // A value with credentials in it is never echoed: it may be a password.
    let shown = if raw.contains('@') {
        "(not shown: it has an '@')"
    } else {
        raw
    };
    match url::Url::parse(raw.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if !u.username().is_empty() || u.password().is_some() {
                // The connection keeps host and port only: such credentials would be logged at
                // start-up and then silently never sent.
                problems.push(
                    "upstream must not carry a user name or password: the sidecar sends none \
                     upstream"
                        .to_string(),
                );
                return None;
            }
            if u.query().is_some() || u.fragment().is_some() {
                problems.push(format!(
                    "upstream must not have a query or fragment, got '{shown}'"
                ));
                return None;
            }
            Some(u)
        }
        _ => {
            problems.push(format!(
                "upstream must be an http:// or https:// URL, got '{shown}'"
            ));
            None
        }
    }
}

pub(super) fn existing_file(name: &str, path: &str, problems: &mut Vec<String>) {
    if !std::path::Path::new(path).is_file() {
        problems.push(format!("{name}: file {path} does not exist"));
    }
}

/// A list of addresses and CIDRs (`name` for the problems).
pub(super) fn networks(
    name: &str,
    list: &super::settings::StringList,
    problems: &mut Vec<String>,
) -> Vec<IpNet> {
    let mut out = Vec::new();
    for p in &list.0 {
        match p
            .parse::<IpNet>()
            .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from))
        {
            Ok(net) => out.push(net),
            Err(_) => problems.push(format!("{name}: '{p}' is not an IP address or CIDR")),
        }
    }
    out
}
