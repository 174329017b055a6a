//! The public listener's request handler: the only module that knows both auth and proxy.
//!
//! Today every request goes to the proxy (`AUTH_MODE=token`, pure pass-through). Each request
//! gets a request id (kept from the client when sane, echoed on the response), metrics, and
//! exactly one access-log line; an error is logged once here, with its cause chain, and turned
//! into a response by `error.rs`.

use crate::error::{wants_html, Error};
use crate::metrics::Metrics;
use crate::proxy::{headers, Upstream};
use crate::server::ConnInfo;
use crate::telemetry;
use crate::Body;
use http::{Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;

pub struct App {
    upstream: Upstream,
    metrics: Arc<Metrics>,
}

impl App {
    pub fn new(upstream: Upstream, metrics: Arc<Metrics>) -> Self {
        App { upstream, metrics }
    }

    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        conn: ConnInfo,
    ) -> Response<Body> {
        let start = Instant::now();
        self.metrics.request_started();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let html = wants_html(req.headers());
        let request_id = headers::request_id(req.headers());
        req.headers_mut()
            .insert(headers::X_REQUEST_ID, request_id.clone());

        let peer = self.upstream.peer(conn.peer.ip(), conn.scheme);
        let (mut resp, upstream_status) = match self.upstream.forward(req, peer).await {
            Ok(r) => {
                let status = r.status().as_u16();
                (r.map(Either::Left), Some(status))
            }
            Err(e) => {
                self.log_error(&e, request_id.to_str().unwrap_or_default());
                (e.into_response(html), None)
            }
        };
        resp.headers_mut()
            .insert(headers::X_REQUEST_ID, request_id.clone());

        let elapsed = start.elapsed();
        let status = resp.status().as_u16();
        self.metrics.request_finished(&method, status, elapsed);
        telemetry::access(&telemetry::Access {
            method: method.as_str(),
            path: &path,
            status,
            upstream_status,
            latency: elapsed,
            request_id: request_id.to_str().unwrap_or_default(),
        });
        resp
    }

    fn log_error(&self, e: &Error, request_id: &str) {
        match e {
            Error::UpstreamUnavailable(_) | Error::UpstreamTimeout => {
                self.metrics.upstream_error(e.kind());
                tracing::warn!(request_id, kind = e.kind(), error = %error_chain(e), "upstream failed");
            }
            Error::BadRequest(_) => tracing::debug!(request_id, error = %e, "bad request"),
            Error::Internal(_) => {
                tracing::error!(request_id, error = %error_chain(e), "internal error")
            }
        }
    }
}

/// `error: cause: cause…`, for logs only.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
