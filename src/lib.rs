//! sso-sidecar: an authenticating reverse proxy that adds OpenID Connect single sign-on in front
//! of an unmodified OpenRag backend (or any HTTP backend).
//!
//! # Layout
//! - [`config`]: layering (defaults < TOML < .env < environment) and validation → [`config::Config`].
//! - [`server`]: accept loops (HTTP/1.1, HTTP/2, upgrades, TLS) and graceful drain.
//! - [`router`]: the public handler; the only module that knows both auth and proxy.
//! - [`proxy`]: the streaming forwarder; knows nothing of OIDC.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics` on their own listener.
//! - [`error`]: the one place errors become responses.
//! - [`telemetry`], [`metrics`]: logs and Prometheus instruments.
//! - [`crypto`], [`secret`]: Fernet key ring, random ids, and values that never print.
//!
//! [`run`] is the single entry point that `main` and the tests call.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod claims;
pub mod clock;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod http_json;
pub mod identity;
pub mod metrics;
pub mod per_worker;
pub mod proxy;
pub mod ratelimit;
mod reload;
pub mod router;
pub mod secret;
pub mod server;
pub mod session;
pub mod store;
pub mod telemetry;
pub mod tls;

use config::{AuthMode, Config, IdentityMode};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The listeners, bound by the caller (port 0 in tests) before `run` is called; with
/// [`server::listen`], so that client connections carry TCP keepalive.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
}

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Tls(String),
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("identity: {0}")]
    Identity(String),
    #[error("session store: {0}")]
    Store(String),
    #[error("public listener: {0}")]
    Listen(std::io::Error),
}

/// Builds the OIDC side: provider (discovery starts in the background), store, sessions.
fn build_oidc(
    config: &Config,
    readiness: &mut admin::Readiness,
    metrics: Arc<metrics::Metrics>,
) -> Result<router::Oidc, StartError> {
    let Some(settings) = config.openrag_env.oidc.clone() else {
        return Err(StartError::Unsupported(
            "AUTH_MODE=oidc without OIDC settings",
        ));
    };
    let a = &config.auth;
    let idp_tls = tls::client_config(a.idp_ca_file.as_deref()).map_err(StartError::Tls)?;
    let http = auth::idp_http::IdpHttp::new(idp_tls, a.idp_timeout);
    let provider = Arc::new(
        auth::oidc::Provider::new(settings.clone(), a.token_endpoint_auth, http)
            .with_prompt(a.prompt.clone())
            .with_max_age(a.max_age)
            .with_email_verified_required(a.email_verified_required),
    );
    provider.clone().spawn_discovery(a.discovery_refresh);

    let store = Arc::new(match &a.redis {
        None => store::Store::Memory(store::memory::MemoryStore::with_workers(config.workers)),
        Some(r) => store::Store::Redis(
            store::redis::RedisStore::from_config(r, config.workers).map_err(StartError::Store)?,
        ),
    });
    store.start_housekeeping();
    let stats = Arc::downgrade(&store);
    let keys = settings.keys.clone();
    metrics.set_store_source(Box::new(move || {
        let store = stats.upgrade()?;
        Some(metrics::StoreCounts {
            cache: store.cache_stats(),
            short_settles: store.short_settles(),
            undecryptable: keys.undecryptable(),
        })
    }));
    tracing::info!(
        issuer = %settings.issuer,
        session_store = store.kind(),
        identity = ?config.identity,
        "OIDC authentication mode enabled"
    );
    readiness.provider = Some(provider.clone());
    readiness.store = Some(store.clone());
    let identity = Arc::new(
        identity::Identity::from_config(config, store.clone(), settings.keys.clone())
            .map_err(StartError::Identity)?,
    );
    let limits = config
        .openrag_env
        .rate_limits
        .map(|l| ratelimit::RateLimiter::new(l, store.clone()));
    let sessions = Arc::new(
        session::Sessions::new(store, settings.keys.clone(), config.workers)
            .with_idle_timeout(config.auth.session_idle_timeout)
            .with_login_timeout(config.auth.login_timeout)
            .with_max_per_user(config.auth.max_sessions_per_user),
    );
    let streams = Arc::new(session::LiveStreams::default());
    // With an idle timeout, the streams' checks also carry their clients' messages as use:
    // they run at least every eighth of it, as often as requests may push a deadline back.
    let check = match config.auth.session_idle_timeout {
        Some(idle) => config.connections.revocation_check.min(idle / 8),
        None => config.connections.revocation_check,
    };
    tokio::spawn(streams.clone().check_forever(
        sessions.clone(),
        metrics.clone(),
        check,
        config.connections.revocation_outage,
    ));
    let backchannel = auth::backchannel_limits::BackchannelLimits::new(
        a.backchannel_logout_from.clone(),
        metrics.holder_refused_counter("max_backchannel"),
    );
    Ok(router::Oidc {
        streams,
        limits,
        auth: Arc::new(auth::flow::Auth {
            provider,
            sessions,
            // `__Host-` needs `Secure`, which every cookie has when the redirect URI is https.
            cookies: auth::cookies::CookieJar::new(
                &a.session_cookie_name,
                a.cookie_host_prefix && settings.redirect_uri.scheme() == "https",
            )
            .with_persistent_session(a.session_cookie_persistent),
            settings: per_worker::PerWorker::new(config.workers, || {
                std::sync::RwLock::new(Arc::new(a.clone()))
            }),
            metrics,
            inflight: auth::refresh::InFlight::default(),
            identity: identity.clone(),
            backchannel,
        }),
        identity,
    })
}

/// HTTP/2 streams one admin connection may have open at once.
const ADMIN_HTTP2_STREAMS: u32 = 8;

/// Runs the sidecar until `shutdown` completes, then drains in-flight requests for at most
/// `shutdown_timeout` and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    // Several crates could enable different rustls providers; pick ring explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let (tls, certificate) = match &config.tls {
        Some(t) => {
            let (server, cert) =
                tls::server_config(&t.cert_file, &t.key_file).map_err(StartError::Tls)?;
            (Some(Arc::new(server)), Some(cert))
        }
        None => (None, None),
    };
    let client_tls = tls::client_config(config.proxy.upstream_ca_file.as_deref())
        .map_err(StartError::Upstream)?;
    let metrics = Arc::new(metrics::Metrics::new(config.workers));
    let mut readiness = admin::Readiness::default();
    if let Some((path, timeout)) = &config.proxy.ready_check {
        readiness.upstream = Some(admin::UpstreamCheck::new(
            &config.proxy.upstream,
            path,
            client_tls.clone(),
            *timeout,
        ));
    }
    let oidc = match config.auth_mode() {
        AuthMode::Token => None,
        AuthMode::Oidc => Some(Arc::new(build_oidc(
            &config,
            &mut readiness,
            metrics.clone(),
        )?)),
    };
    let readiness = Arc::new(readiness);
    // One app per worker thread: each has its own upstream connection pool.
    let workers = config.workers;
    let mut apps = Vec::with_capacity(workers);
    let (refused, idled) = metrics.tunnel_counters();
    let tunnels = proxy::Tunnels::new(
        config.connections.tunnel_idle_timeout,
        [
            config.connections.max_tunnels_per_session,
            config.connections.max_tunnels_per_address,
        ],
        refused,
        idled,
    );
    let c = &config.connections;
    let uploads = proxy::Held::new(
        [c.max_uploads_per_session, c.max_uploads_per_address],
        metrics.holder_refused_counter("max_uploads"),
    );
    let streams = proxy::Held::new(
        [c.max_streams_per_session, c.max_streams_per_address],
        metrics.holder_refused_counter("max_streams"),
    );
    // Refusals are not counted (a response over the cap is cut only under pressure): cuts are.
    let slow_reads = proxy::Held::new([None, c.max_slow_reads_per_address], Default::default());
    for _ in 0..workers {
        let upstream = proxy::Upstream::new(
            &config.proxy,
            client_tls.clone(),
            (
                config.connections.upstream_max_per_worker,
                config.connections.upstream_client_share,
            ),
            metrics.upstream_queued_counter(),
            proxy::PerClient {
                tunnels: tunnels.clone(),
                uploads: uploads.clone(),
                streams: streams.clone(),
                slow_reads: proxy::SlowReads::new(
                    slow_reads.clone(),
                    c.max_slow_reads_per_address.map(|_| c.slow_read_after),
                    metrics.closed_counter("slow_read"),
                ),
            },
            c.upstream_queue,
        )
        .map_err(StartError::Upstream)?;
        let pass_through_strip = (oidc.is_none() && config.identity == IdentityMode::Headers)
            .then(|| identity::headers::HeaderIdentity::new(config.auth.headers.clone()));
        apps.push(Arc::new(router::App::new(
            upstream,
            metrics.clone(),
            oidc.clone(),
            pass_through_strip,
        )));
    }
    let admin = Arc::new(admin::Admin {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    });

    let limits = &config.connections;
    let nofile = server::limits::raise_nofile_limit();
    let by_files = server::limits::cap_for_nofile(limits.max, nofile);
    if by_files < limits.max {
        tracing::warn!(
            open_file_limit = nofile,
            max_connections = by_files,
            configured = limits.max,
            "the open-file limit caps client connections below connections.max; raise the \
             limit (ulimit -n, or the container runtime's nofile) to hold more"
        );
    }
    let memory = server::limits::memory_limit();
    let head_bytes = config.proxy.max_request_header_bytes;
    let max_connections = server::limits::cap_for_memory(by_files, memory, head_bytes);
    if max_connections < by_files {
        // Said as a warning when the operator asked for more; the default cap following the
        // container's limit is the design, said once at INFO (every pod would warn otherwise).
        let asked = limits.max != config::connections::ConnectionSettings::default().max;
        macro_rules! say {
            ($level:ident) => {
                tracing::$level!(
                    memory_limit_bytes = memory,
                    max_connections,
                    configured = limits.max,
                    max_request_header_bytes = head_bytes,
                    "the memory limit caps client connections below connections.max: that many, \
                     each holding a request head as large as allowed, fit in it; raise the \
                     container's memory limit to hold more"
                )
            };
        }
        if asked {
            say!(warn);
        } else {
            say!(info);
        }
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(
        listen = %listeners.public.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %listeners.admin.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        upstream = %config.proxy.upstream,
        tls = config.tls.is_some(),
        auth_mode = ?config.auth_mode(),
        workers,
        max_connections,
        open_file_limit = nofile,
        "sso-sidecar started"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let public_opts = server::ServeOptions {
        max_header_bytes: config.proxy.max_request_header_bytes,
        drain_timeout: config.shutdown_timeout,
        tls,
        name: "public",
        first_byte_timeout: limits.first_byte_timeout,
        header_read_timeout: limits.header_read_timeout,
        idle_timeout: limits.idle_timeout,
        send_timeout: limits.send_timeout,
        http2_max_streams: limits.http2_max_streams,
        http2_window: limits.http2_window,
        http2_ping_interval: limits.http2_ping_interval,
        limiter: Some(server::limits::ConnLimiter::new(
            max_connections,
            limits.max_per_ip,
            config.proxy.trusted_proxies.clone(),
            metrics.clone(),
        )),
        metrics: Some(metrics.clone()),
        detached: Some(tunnels.tasks()),
    };
    let admin_opts = server::ServeOptions {
        tls: None,
        name: "admin",
        // It stops once the public listener has drained: what is left is probes and scrapes,
        // answered at once, so shutdown takes at most a second beyond `shutdown_timeout`.
        drain_timeout: config
            .shutdown_timeout
            .min(std::time::Duration::from_secs(1)),
        limiter: Some(server::limits::ConnLimiter::admin(
            limits.admin_max,
            metrics.clone(),
        )),
        metrics: None,
        // Probes and scrapes: one request at a time. 128 streams a connection would let a
        // client multiply each admin connection into as many readiness checks in flight.
        http2_max_streams: ADMIN_HTTP2_STREAMS,
        detached: None,
        ..public_opts.clone()
    };
    let public_std = listeners.public.into_std().map_err(StartError::Listen)?;
    let mut public = Vec::new();
    let mut inboxes = match limits.balance {
        config::Balance::Exact if workers > 1 => server::balance::Balancer::inboxes(workers),
        _ => Vec::new(),
    }
    .into_iter();
    for (i, (listener, app)) in server::workers::siblings(public_std, workers)
        .map_err(StartError::Listen)?
        .into_iter()
        .zip(apps.iter().cloned())
        .enumerate()
    {
        // Boxed: the request future is several KB, and hyper moves it more than once.
        let handler = move |req, conn| router::boxed(|| app.clone().handle(req, conn));
        public.push(
            server::workers::spawn(
                i,
                listener,
                inboxes.next(),
                handler,
                public_opts.clone(),
                stop_rx.clone(),
            )
            .map_err(StartError::Listen)?,
        );
    }
    // The admin listener stops last, once the public one has drained: meanwhile `/readyz`
    // answers 503 (so a load balancer that still probes takes the pod out) and `/metrics`
    // shows the drain.
    let (admin_stop_tx, admin_stop_rx) = tokio::sync::watch::channel(false);
    let admin_task = tokio::spawn(server::serve(
        listeners.admin,
        move |req, _conn| admin.clone().handle(req),
        admin_opts,
        admin_stop_rx,
    ));

    let reload = reload::run(apps, oidc, certificate, config.clone(), metrics.clone());
    tokio::spawn(reload);
    shutdown.await;
    tracing::info!(
        deadline_secs = config.shutdown_timeout.as_secs(),
        "shutdown requested; finishing in-flight requests"
    );
    readiness.set_draining();
    let _ = stop_tx.send(true);
    for worker in public {
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    }
    let _ = admin_stop_tx.send(true);
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}
