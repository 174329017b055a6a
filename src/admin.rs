//! The admin listener: `/healthz` (the process is alive), `/readyz` (it should get traffic:
//! discovery loaded, the store reachable and, when configured, the upstream answering its
//! `upstream_ready_path`) and `/metrics` (Prometheus text). It never shares a port with the
//! public listener, so it cannot shadow the backend's own `/metrics` or `/health_check`.

use crate::metrics::Metrics;
use crate::proxy::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What `/readyz` reports: not draining, OIDC discovery loaded, session store reachable.
#[derive(Default)]
pub struct Readiness {
    draining: AtomicBool,
    pub provider: Option<Arc<crate::auth::oidc::Provider>>,
    pub store: Option<Arc<crate::store::Store>>,
    pub upstream: Option<UpstreamCheck>,
    /// The reasons the latest check found (none: ready), and when it began, so that a change
    /// is logged once, with its cause, rather than at every probe or never.
    last: std::sync::Mutex<Option<(u64, Vec<&'static str>)>>,
    /// Numbers the checks in the order they begin: concurrent probes finish in any order, and
    /// one that began earlier must not log its older finding over a newer one.
    checks: std::sync::atomic::AtomicU64,
    /// The latest finding of the store and upstream checks, and when it was made. Probes wait
    /// for the check in progress and share a finding for [`FINDING_LIFE`]: `/readyz` is not
    /// authenticated, and a flood of probes must not become a flood of Redis `PING`s and
    /// upstream requests.
    finding: tokio::sync::Mutex<Option<(tokio::time::Instant, Finding)>>,
}

/// What the dependencies' check found: its number ([`Readiness::checks`]), the reasons and
/// their causes.
type Finding = (u64, Vec<&'static str>, Vec<String>);

/// How long a readiness finding answers other probes (kubelet probes every few seconds).
const FINDING_LIFE: std::time::Duration = std::time::Duration::from_secs(1);

impl Readiness {
    /// Called at shutdown so load balancers stop sending new requests during the drain.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// `Ok` when ready, else the reasons.
    pub async fn check(&self) -> Result<(), Vec<&'static str>> {
        let mut reasons = Vec::new();
        if self.draining.load(Ordering::SeqCst) {
            reasons.push("shutting down");
        }
        if self.provider.as_ref().is_some_and(|p| !p.is_loaded()) {
            reasons.push("OIDC discovery has not loaded");
        }
        let (begun, more, causes) = self.dependencies().await;
        reasons.extend(more);
        self.log_change(begun, &reasons, &causes);
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// What the store and the upstream say, asked at most once per [`FINDING_LIFE`] and by
    /// one probe at a time (the others wait for its finding).
    async fn dependencies(&self) -> Finding {
        let mut finding = self.finding.lock().await;
        if let Some((at, found)) = &*finding {
            if at.elapsed() < FINDING_LIFE {
                return found.clone();
            }
        }
        let begun = self.checks.fetch_add(1, Ordering::Relaxed);
        // Both at once: the probe's own timeout (a second by default) must cover the slower
        // of the two, not their sum.
        let store = async {
            match &self.store {
                Some(store) => store
                    .ping()
                    .await
                    .map_err(|e| format!("session store: {e}")),
                None => Ok(()),
            }
        };
        let upstream = async {
            match &self.upstream {
                Some(upstream) => upstream.ask().await,
                None => Ok(()),
            }
        };
        let (store, upstream) = tokio::join!(store, upstream);
        let (mut reasons, mut causes) = (Vec::new(), Vec::new());
        if let Err(e) = store {
            reasons.push("session store unreachable");
            causes.push(e);
        }
        if let Err(e) = upstream {
            reasons.push("upstream not ready");
            causes.push(e);
        }
        let found = (begun, reasons, causes);
        *finding = Some((tokio::time::Instant::now(), found.clone()));
        found
    }

    fn log_change(&self, begun: u64, reasons: &[&'static str], causes: &[String]) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some((newer, _)) if *newer > begun => return,
            Some((_, same)) if same == reasons => return,
            _ => {}
        }
        *last = Some((begun, reasons.to_vec()));
        if reasons.is_empty() {
            tracing::info!("ready");
        } else {
            tracing::warn!(?reasons, ?causes, "not ready");
        }
    }
}

/// `/readyz`'s question to the upstream: a `GET` of `upstream_ready_path`, ready on any 2xx or
/// 3xx within its deadline (the backend may be up long after the sidecar: OpenRag takes
/// minutes to load its models).
pub struct UpstreamCheck {
    client: crate::http_json::JsonClient,
    url: String,
}

impl UpstreamCheck {
    pub fn new(
        upstream: &url::Url,
        path: &str,
        tls: rustls::ClientConfig,
        timeout: std::time::Duration,
    ) -> Self {
        UpstreamCheck {
            client: crate::http_json::JsonClient::new("the upstream", tls, timeout, 64 * 1024),
            url: format!("{}{path}", upstream.as_str().trim_end_matches('/')),
        }
    }

    async fn ask(&self) -> Result<(), String> {
        let req = Request::get(&self.url)
            .body(http_body_util::Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        match self.client.send(req).await {
            Ok(r) if r.status().is_success() || r.status().is_redirection() => Ok(()),
            Ok(r) => Err(format!(
                "the upstream answered {} at its ready path",
                r.status()
            )),
            Err(e) => Err(crate::http_json::error_chain(&e)),
        }
    }
}

pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed\n".into(),
            );
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => match self.readiness.check().await {
                Ok(()) => text(
                    StatusCode::OK,
                    "application/json",
                    r#"{"status":"ready"}"#.into(),
                ),
                Err(reasons) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    serde_json::json!({ "status": "not ready", "reasons": reasons }).to_string(),
                ),
            },
            "/metrics" => text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.encode(),
            ),
            _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(crate::proxy::full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
