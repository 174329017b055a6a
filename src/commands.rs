//! The command line's checks: `check` (the whole configuration, then every dependency it names
//! that can be reached), `healthcheck` (the admin listener's `/healthz`, for container exec
//! probes) and the [`preflight`] that `run` and `check` share before any port is bound.
//!
//! Owns what these print and the exit codes they return; serves nothing, and is not on any
//! request's path.

use crate::config::{AuthMode, Config};
use std::process::ExitCode;

/// Where the admin listener is when the configuration cannot be read whole: its variable, else
/// the default port.
pub fn admin_listen_from_env() -> std::net::SocketAddr {
    std::env::var("SSO_SIDECAR_ADMIN_LISTEN")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 9090)))
}

/// sysexits.h `EX_CONFIG`: the configuration is wrong.
pub const EX_CONFIG: u8 = 78;

/// The async runtime `builder` makes, or the exit code after saying why there is none.
pub fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("sso-sidecar: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

/// What can be checked of the configuration without the network: the certificates and keys it
/// names load, and the Redis settings make clients. `run` and `check` call it before any port
/// is bound, so a certificate that is not one exits 78 like every other configuration problem,
/// not 1 once the ports are taken.
pub fn preflight(config: &Config) -> Vec<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut problems = Vec::new();
    if let Some(t) = &config.tls {
        if let Err(e) = crate::tls::server_config(&t.cert_file, &t.key_file) {
            problems.push(e);
        }
    }
    // The IdP and Redis are only used with OIDC: a stale file of theirs does not stop a
    // pass-through sidecar.
    let oidc = config.auth_mode() == AuthMode::Oidc;
    let redis = config.auth.redis.as_ref().filter(|_| oidc);
    let redis_ca = redis.and_then(|r| r.ca_file.as_deref());
    let idp_ca = config.auth.idp_ca_file.as_deref().filter(|_| oidc);
    for (key, file) in [
        ("upstream_ca_file", config.proxy.upstream_ca_file.as_deref()),
        ("idp_ca_file", idp_ca),
        ("redis_ca_file", redis_ca),
    ] {
        if let Some(Err(e)) = file.map(|f| crate::tls::client_config(Some(f))) {
            problems.push(format!("{key} {e}"));
        }
    }
    // Builds the Redis clients (their URLs parsed, nothing connected), as `run` will.
    if let Some(Err(e)) = redis.map(|r| crate::store::redis::RedisStore::from_config(r, 1)) {
        problems.push(format!("Redis: {e}"));
    }
    problems
}

/// `check`: the configuration is valid, and with `AUTH_MODE=oidc` every dependency it can reach
/// answers: the IdP's discovery, Redis, and (identity `openrag`) the backend's users API with
/// `AUTH_TOKEN`. Any problem exits 78 with its cause.
pub fn check(c: &Config) -> ExitCode {
    for f in [&c.source_file, &c.env_file].into_iter().flatten() {
        println!("read {}", f.display());
    }
    for w in &c.warnings {
        println!("warning: {w}");
    }
    println!("{}", mode_in_words(c));
    // Every problem is listed: the files' and then what the probes find.
    let mut problems = preflight(c);
    if let Some(oidc) = &c.openrag_env.oidc {
        for w in scheme_warnings(c, oidc) {
            println!("warning: {w}");
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
            Ok(r) => r,
            Err(code) => return code,
        };
        problems.extend(runtime.block_on(probe(c, oidc)));
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("sso-sidecar: {p}");
        }
        return ExitCode::from(EX_CONFIG);
    }
    println!(
        "configuration OK: {}, listen {}, upstream {}",
        auth_mode_name(c),
        c.listen,
        c.proxy.upstream
    );
    ExitCode::SUCCESS
}

fn auth_mode_name(c: &Config) -> &'static str {
    match c.auth_mode() {
        crate::config::AuthMode::Token => "AUTH_MODE=token",
        crate::config::AuthMode::Oidc => "AUTH_MODE=oidc",
    }
}

/// What this configuration does, in a sentence.
fn mode_in_words(c: &Config) -> String {
    use crate::config::{AuthMode, IdentityMode};
    match c.auth_mode() {
        AuthMode::Token => "AUTH_MODE=token: pass-through, no single sign-on".to_owned(),
        AuthMode::Oidc => format!(
            "AUTH_MODE=oidc: single sign-on; the upstream is told who the user is by {}; sessions in {}",
            match c.identity {
                IdentityMode::OpenRag => "the user's own OpenRag token (identity openrag)",
                IdentityMode::Headers => "X-Forwarded-* headers (identity headers)",
            },
            if c.auth.redis.is_some() { "Redis" } else { "memory (one replica only)" }
        ),
    }
}

/// The redirect URI's scheme against how the listener is reached.
fn scheme_warnings(c: &Config, oidc: &crate::config::OidcSettings) -> Vec<String> {
    let https = oidc.redirect_uri.scheme() == "https";
    let mut out = Vec::new();
    if https && c.tls.is_none() && c.proxy.trusted_proxies.is_empty() {
        out.push(format!(
            "OIDC_REDIRECT_URI is https ({}) but the listener is plain http and no trusted proxy \
             is configured: terminate TLS in front (an ingress) and list it in trusted_proxies",
            oidc.redirect_uri
        ));
    }
    if !https && c.tls.is_some() {
        out.push(format!(
            "the listener has TLS but OIDC_REDIRECT_URI is http ({}): the IdP will send users to \
             plain http",
            oidc.redirect_uri
        ));
    }
    out
}

/// Every dependency `check` can reach, each problem in words.
async fn probe(c: &Config, oidc: &crate::config::OidcSettings) -> Vec<String> {
    let mut problems = Vec::new();
    match crate::tls::client_config(c.auth.idp_ca_file.as_deref()) {
        // A file the preflight named already; nothing to probe without it.
        Err(e) if c.auth.idp_ca_file.is_none() => problems.push(e),
        Err(_) => {}
        Ok(tls) => {
            let http = crate::auth::idp_http::IdpHttp::new(tls, c.auth.idp_timeout);
            let provider =
                crate::auth::oidc::Provider::new(oidc.clone(), c.auth.token_endpoint_auth, http);
            match provider.discover().await {
                Ok(_) => println!("OIDC discovery OK: {}", provider.discovery_url()),
                Err(e) => problems.push(e.explained()),
            }
        }
    }
    if let Some(r) = &c.auth.redis {
        match crate::store::redis::RedisStore::from_config(r, 1) {
            Err(_) => {} // named by the preflight
            Ok(store) => match tokio::time::timeout(r.timeout * 2, store.ping()).await {
                Ok(Ok(())) => {
                    println!("Redis OK (PING)");
                    // A warning, as `run` gives: the sidecar works, but may lose logouts.
                    let servers = store.eviction().await.unwrap_or_default();
                    for w in servers
                        .iter()
                        .filter_map(crate::store::redis::eviction::Eviction::warning)
                    {
                        println!("warning: {w}");
                    }
                    match store.tracking_allowed().await {
                        Ok(Some(true)) => println!("Redis OK (CLIENT TRACKING allowed: the client-side session cache is on)"),
                        // A warning, as `run` gives: the sidecar works, reading Redis every time.
                        Ok(Some(false)) => println!(
                            "warning: Redis: the ACL refuses CLIENT TRACKING, so the client-side session cache cannot work \
                             (every request will read Redis): grant the user +client|tracking, or set \
                             redis_client_cache = false (SSO_SIDECAR_REDIS_CLIENT_CACHE=false)"
                        ),
                        Ok(None) => {}
                        Err(e) => problems.push(format!(
                            "Redis: CLIENT TRACKING: {}",
                            crate::http_json::error_chain(&e)
                        )),
                    }
                }
                Ok(Err(e)) => {
                    problems.push(format!("Redis: {}", crate::http_json::error_chain(&e)))
                }
                Err(_) => problems.push("Redis: no answer to PING".to_owned()),
            },
        }
    }
    if c.identity == crate::config::IdentityMode::OpenRag {
        if let Some(token) = &c.openrag_env.auth_token {
            match crate::tls::client_config(c.proxy.upstream_ca_file.as_deref()) {
                Err(e) if c.proxy.upstream_ca_file.is_none() => problems.push(e),
                Err(_) => {} // named by the preflight
                Ok(tls) => {
                    let admin = crate::identity::openrag::admin::AdminClient::new(
                        &c.proxy.upstream,
                        token.clone(),
                        tls,
                        c.auth.bridge.admin_timeout,
                    );
                    match admin.list_users().await {
                        Ok(users) => println!(
                            "the backend's users API accepts AUTH_TOKEN ({} users)",
                            users.len()
                        ),
                        Err(e) => problems.push(format!(
                            "the backend's users API with AUTH_TOKEN: {}\n  hint: AUTH_TOKEN must be \
                             the backend's own admin token, and the backend must be up at {}",
                            crate::http_json::error_chain(&e),
                            c.proxy.upstream
                        )),
                    }
                }
            }
        }
    }
    problems
}

/// Where to reach a listener bound to `listen` from this host: its loopback address of the
/// same family when it is bound to every address (`[::]` with `bindv6only` accepts no IPv4).
fn probe_address(listen: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut addr = listen;
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into())
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            addr.set_ip(std::net::Ipv6Addr::LOCALHOST.into())
        }
        _ => {}
    }
    addr
}

/// A minimal HTTP/1.1 GET of the admin listener's /healthz, with a short deadline.
pub fn healthcheck(admin_listen: std::net::SocketAddr) -> ExitCode {
    use std::io::{Read, Write};
    use std::time::Duration;
    let addr = probe_address(admin_listen);
    let probe = || -> std::io::Result<bool> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut buf = [0u8; 32];
        let n = s.read(&mut buf)?;
        Ok(buf[..n].starts_with(b"HTTP/1.1 200"))
    };
    match probe() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("sso-sidecar: {addr}/healthz is not healthy");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sso-sidecar: cannot reach {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// An admin listener on every IPv6 address is probed on `::1`: with `bindv6only` it
    /// accepts no IPv4, and `127.0.0.1` called a serving container unhealthy.
    #[test]
    fn healthcheck_probes_loopback_of_the_listeners_family() {
        let probe = |s: &str| super::probe_address(s.parse().unwrap()).to_string();
        assert_eq!(probe("0.0.0.0:9090"), "127.0.0.1:9090");
        assert_eq!(probe("[::]:9090"), "[::1]:9090");
        assert_eq!(probe("10.1.2.3:9090"), "10.1.2.3:9090");
        assert_eq!(probe("[fd00::1]:9090"), "[fd00::1]:9090");
    }
}
