//! The admin listener: `/healthz` (the process is alive), `/readyz` (it should get traffic) and
//! `/metrics` (Prometheus text). It never shares a port with the public listener, so it cannot
//! shadow the backend's own `/metrics` or `/health_check`.

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
    /// The reasons the last check found (none: ready), so that a change is logged once, with
    /// its cause, rather than at every probe or never.
    last: std::sync::Mutex<Option<Vec<&'static str>>>,
}

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
        let mut store_error = None;
        if let Some(store) = &self.store {
            if let Err(e) = store.ping().await {
                reasons.push("session store unreachable");
                store_error = Some(e.to_string());
            }
        }
        self.log_change(&reasons, store_error);
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

impl Readiness {
    fn log_change(&self, reasons: &[&'static str], store_error: Option<String>) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_deref() == Some(reasons) {
            return;
        }
        *last = Some(reasons.to_vec());
        if reasons.is_empty() {
            tracing::info!("ready");
        } else {
            tracing::warn!(?reasons, store_error, "not ready");
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
