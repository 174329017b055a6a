//! The `sso-sidecar` command line: parse arguments, load the configuration, set up logging and
//! call [`sso_sidecar::run`]. No logic of its own. A bad configuration exits with 78
//! (`EX_CONFIG`) before any port is bound.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use sso_sidecar::config::{self, Config, Inputs};
use std::path::PathBuf;
use std::process::ExitCode;

/// sysexits.h `EX_CONFIG`: the configuration is wrong.
const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "sso-sidecar",
    version,
    about = "OpenID Connect authenticating reverse proxy",
    after_help = "Configuration: built-in defaults < the TOML file (--config or SSO_SIDECAR_CONFIG) \
< a .env file (SSO_SIDECAR_ENV_FILE, else ./.env) < the environment.\n\
OpenRag's own variables: AUTH_MODE, AUTH_TOKEN, OIDC_ENDPOINT, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, \
OIDC_REDIRECT_URI, OIDC_TOKEN_ENCRYPTION_KEY, OIDC_SCOPES, OIDC_CLAIM_SOURCE, OIDC_CLAIM_MAPPING, \
OIDC_AUTO_PROVISION_LOGIN, OIDC_POST_LOGOUT_REDIRECT_URI.\n\
The sidecar's own: SSO_SIDECAR_LISTEN, SSO_SIDECAR_UPSTREAM, SSO_SIDECAR_ADMIN_LISTEN, \
SSO_SIDECAR_REDIS_URL, SSO_SIDECAR_IDENTITY, SSO_SIDECAR_LOG_FORMAT and more (nested keys joined \
with __, e.g. SSO_SIDECAR_CONNECTIONS__MAX_PER_IP).\n\
Every setting, its default and its variable: README.md (\"Configuration\") and \
config/sso-sidecar.example.toml."
)]
struct Cli {
    /// TOML configuration file (also SSO_SIDECAR_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the configuration and exit: 0 when valid, else every problem is listed.
    Check,
    /// Print a fresh Fernet key for OIDC_TOKEN_ENCRYPTION_KEY.
    GenKey,
    /// Probe the admin listener's /healthz (for container exec probes); exit 0 when healthy.
    Healthcheck,
}

/// jemalloc rather than glibc's malloc: under a burst of connections both peak alike, but
/// glibc keeps the peak after the burst, where jemalloc's background thread returns it within
/// about a second (its settings: .cargo/config.toml). Measured in docs/benchmark.md.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::GenKey => {
            println!("{}", sso_sidecar::crypto::generate_key());
            ExitCode::SUCCESS
        }
        Command::Check => match load(cli.config) {
            Ok(c) => check(&c),
            Err(code) => code,
        },
        Command::Healthcheck => match load(cli.config) {
            Ok(c) => healthcheck(&c),
            Err(code) => code,
        },
        Command::Run => match load(cli.config) {
            Ok(c) => run(c),
            Err(code) => code,
        },
    }
}

/// `check`: the configuration is valid, and with `AUTH_MODE=oidc` every dependency it can reach
/// answers: the IdP's discovery, Redis, and (identity `openrag`) the backend's users API with
/// `AUTH_TOKEN`. Any problem exits 78 with its cause.
fn check(c: &Config) -> ExitCode {
    for f in [&c.source_file, &c.env_file].into_iter().flatten() {
        println!("read {}", f.display());
    }
    for w in &c.warnings {
        println!("warning: {w}");
    }
    println!("{}", mode_in_words(c));
    // Every problem is listed: the files' and then what the probes find.
    let mut problems = sso_sidecar::preflight(c);
    if let Some(oidc) = &c.openrag_env.oidc {
        for w in scheme_warnings(c, oidc) {
            println!("warning: {w}");
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sso-sidecar: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
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
        sso_sidecar::config::AuthMode::Token => "AUTH_MODE=token",
        sso_sidecar::config::AuthMode::Oidc => "AUTH_MODE=oidc",
    }
}

/// What this configuration does, in a sentence.
fn mode_in_words(c: &Config) -> String {
    use sso_sidecar::config::{AuthMode, IdentityMode};
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
fn scheme_warnings(c: &Config, oidc: &sso_sidecar::config::OidcSettings) -> Vec<String> {
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
async fn probe(c: &Config, oidc: &sso_sidecar::config::OidcSettings) -> Vec<String> {
    let mut problems = Vec::new();
    match sso_sidecar::tls::client_config(c.auth.idp_ca_file.as_deref()) {
        Err(e) => problems.push(e),
        Ok(tls) => {
            let http = sso_sidecar::auth::idp_http::IdpHttp::new(tls, c.auth.idp_timeout);
            let provider = sso_sidecar::auth::oidc::Provider::new(
                oidc.clone(),
                c.auth.token_endpoint_auth,
                http,
            );
            match provider.discover().await {
                Ok(_) => println!("OIDC discovery OK: {}", provider.discovery_url()),
                Err(e) => problems.push(explain_discovery(&e)),
            }
        }
    }
    if let Some(r) = &c.auth.redis {
        match sso_sidecar::store::redis::RedisStore::from_config(r, 1) {
            Err(e) => problems.push(format!("Redis: {e}")),
            Ok(store) => match tokio::time::timeout(r.timeout * 2, store.ping()).await {
                Ok(Ok(())) => {
                    println!("Redis OK (PING)");
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
                            sso_sidecar::http_json::error_chain(&e)
                        )),
                    }
                }
                Ok(Err(e)) => problems.push(format!(
                    "Redis: {}",
                    sso_sidecar::http_json::error_chain(&e)
                )),
                Err(_) => problems.push("Redis: no answer to PING".to_owned()),
            },
        }
    }
    if c.identity == sso_sidecar::config::IdentityMode::OpenRag {
        if let Some(token) = &c.openrag_env.auth_token {
            match sso_sidecar::tls::client_config(c.proxy.upstream_ca_file.as_deref()) {
                Err(e) => problems.push(e),
                Ok(tls) => {
                    let admin = sso_sidecar::identity::openrag::admin::AdminClient::new(
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
                            sso_sidecar::http_json::error_chain(&e),
                            c.proxy.upstream
                        )),
                    }
                }
            }
        }
    }
    problems
}

/// A discovery failure in words an operator can act on.
fn explain_discovery(e: &sso_sidecar::auth::oidc::DiscoveryError) -> String {
    let chain = sso_sidecar::http_json::error_chain(e);
    if chain.contains("InvalidContentType") || chain.contains("corrupt message") {
        format!("{chain}\n  hint: TLS handshake failed: is the IdP plain http? Try OIDC_ENDPOINT=http://…")
    } else if chain.contains("404") {
        format!("{chain}\n  hint: no discovery document there: check OIDC_ENDPOINT (the issuer, without /.well-known/openid-configuration)")
    } else {
        chain
    }
}

fn load(config_file: Option<PathBuf>) -> Result<Config, ExitCode> {
    config::load(Inputs::from_process(config_file)).map_err(|e| {
        eprint!("sso-sidecar: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

fn run(config: Config) -> ExitCode {
    sso_sidecar::telemetry::init(config.log_format, &config.log_level);
    let problems = sso_sidecar::preflight(&config);
    if !problems.is_empty() {
        for p in &problems {
            tracing::error!("{p}");
            eprintln!("sso-sidecar: {p}");
        }
        return ExitCode::from(EX_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sso-sidecar: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listeners = match bind(&config).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("sso-sidecar: {e}");
                return ExitCode::FAILURE;
            }
        };
        match sso_sidecar::run(config, listeners, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("sso-sidecar: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn bind(config: &Config) -> Result<sso_sidecar::Listeners, String> {
    // SO_REUSEPORT so that each worker thread can bind its own socket to the same address.
    let public = (|| {
        let addr = config.listen;
        let s = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        s.set_reuseaddr(true)?;
        s.set_reuseport(true)?;
        s.bind(addr)?;
        s.listen(1024)
    })()
    .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .map_err(|e| format!("cannot listen on {} (admin): {e}", config.admin_listen))?;
    Ok(sso_sidecar::Listeners { public, admin })
}

/// Completes on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A minimal HTTP/1.1 GET of the admin listener's /healthz, with a short deadline.
fn healthcheck(config: &Config) -> ExitCode {
    use std::io::{Read, Write};
    use std::time::Duration;
    let mut addr = config.admin_listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
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
