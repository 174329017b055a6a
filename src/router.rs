//! The public listener's request handler: the only module that knows both auth and proxy.
//!
//! `AUTH_MODE=token`: every request goes to the proxy unchanged. `AUTH_MODE=oidc`: `/auth/*`
//! routes go to the login flows, every other request through the gate, and only then to the
//! proxy, with the sidecar's cookies and any client-supplied identity header removed and the
//! user's identity injected. Each request gets a request id (echoed on the response), metrics
//! and exactly one access-log line; an error is logged once here, with its cause chain, and
//! turned into a response by `error.rs`.

use crate::auth::flow::Auth;
use crate::auth::gate::Decision;
use crate::auth::session::Session;
use crate::error::{wants_html, Error};
use crate::identity::headers::HeaderIdentity;
use crate::identity::openrag::inject::{self, Carrier};
use crate::identity::openrag::{BridgeError, OpenRagBridge};
use crate::metrics::Metrics;
use crate::per_worker::PerWorker;
use crate::proxy::headers::{self, Peer};
use crate::proxy::Upstream;
use crate::server::ConnInfo;
use crate::telemetry;
use crate::{Body, RequestBody};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;

/// The OIDC side of the router, present with `AUTH_MODE=oidc`.
pub struct Oidc {
    pub auth: Auth,
    /// The sessions with live tunnels and event streams on this replica.
    pub streams: Arc<crate::auth::streams::LiveStreams>,
    /// Swapped on a configuration reload.
    /// One copy per worker (see `PerWorker`): its header names are cloned on every request.
    pub identity: PerWorker<std::sync::RwLock<Arc<HeaderIdentity>>>,
}

pub struct App {
    upstream: Upstream,
    metrics: Arc<Metrics>,
    oidc: Option<Arc<Oidc>>,
}

/// How a request ended, for the access log.
type Outcome = (Response<Body>, Option<u16>);

/// Who a request is forwarded as.
#[derive(Default, Clone, Copy)]
struct Who<'a> {
    /// The session whose identity headers are injected (headers mode).
    session: Option<&'a Session>,
    /// The backend token injected, and where (openrag mode).
    token: Option<(Carrier, &'a str)>,
    /// The session cookie id whose end closes a tunnel or event stream of this request.
    live: Option<&'a str>,
}

impl App {
    pub fn new(upstream: Upstream, metrics: Arc<Metrics>, oidc: Option<Arc<Oidc>>) -> Self {
        App {
            upstream,
            metrics,
            oidc,
        }
    }

    /// Applies the reloadable part of a new configuration (SIGHUP).
    /// Applies the reloadable settings to this worker's own state (its upstream).
    pub fn reload(&self, r: &crate::config::Reloadable) {
        self.upstream.set_timeout(r.upstream_timeout);
    }
}

impl Oidc {
    /// Applies the reloadable settings to the state every worker shares, once per reload.
    pub fn reload(&self, r: &crate::config::Reloadable) {
        let mut next = (*self.auth.settings()).clone();
        next.paths = r.paths.clone();
        next.allowed_redirect_origins = r.allowed_redirect_origins.clone();
        next.headers = r.headers.clone();
        self.auth.settings.replace(|| next.clone());
        self.identity
            .replace(|| HeaderIdentity::new(r.headers.clone()));
    }
}

impl App {
    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        conn: ConnInfo,
    ) -> Response<Body> {
        let start = Instant::now();
        self.metrics.request_started();
        let method = req.method().clone();
        // A cheap clone (shared bytes), for the access log after the request has moved on.
        let uri = req.uri().clone();
        let html = wants_html(req.headers());
        let request_id = headers::request_id(req.headers());
        // Room for the headers the sidecar adds (forwarding, request id, identity) at once,
        // rather than growing the map step by step.
        req.headers_mut().reserve(12);
        req.headers_mut()
            .insert(headers::X_REQUEST_ID, request_id.clone());
        let peer = self.upstream.peer(conn.peer.ip(), conn.scheme);

        let result = match (refused_early(&req), &self.oidc) {
            (Some(e), _) => Err(e),
            (None, None) => self.proxy(req.map(Either::Left), peer, |_| {}).await,
            (None, Some(oidc)) => self.authenticated(oidc, req, peer).await,
        };
        let (mut resp, upstream_status) = result.unwrap_or_else(|e| {
            self.log_error(&e, request_id.to_str().unwrap_or_default());
            (e.into_response(html), None)
        });
        resp.headers_mut()
            .insert(headers::X_REQUEST_ID, request_id.clone());

        let elapsed = start.elapsed();
        let status = resp.status().as_u16();
        self.metrics.request_finished(&method, status, elapsed);
        telemetry::access(&telemetry::Access {
            method: method.as_str(),
            path: uri.path(),
            status,
            upstream_status,
            latency: elapsed,
            request_id: request_id.to_str().unwrap_or_default(),
        });
        resp
    }

    async fn proxy(
        &self,
        req: Request<RequestBody>,
        peer: Peer,
        prepare: impl FnOnce(&mut http::HeaderMap),
    ) -> Result<Outcome, Error> {
        let r = self.upstream.forward(req, peer, prepare, || None).await?;
        let status = r.status().as_u16();
        Ok((r.map(Either::Left), Some(status)))
    }

    async fn authenticated(
        &self,
        oidc: &Oidc,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Result<Outcome, Error> {
        let (parts, body) = req.into_parts();
        let scheme = headers::public_scheme(&parts.headers, peer);
        let auth = &oidc.auth;
        let own = |r: Response<Body>| Ok((r, None));
        match (&parts.method, parts.uri.path()) {
            // The `/auth/*` flows are boxed: rare, and their state would otherwise enlarge
            // every request's future.
            (&Method::GET, "/auth/login") => {
                return own(Box::pin(auth.login(&parts, scheme)).await?)
            }
            (&Method::GET, "/auth/callback") => {
                return own(Box::pin(auth.callback(&parts, scheme)).await)
            }
            (&Method::GET, "/auth/logout") => {
                return own(Box::pin(auth.logout(&parts, scheme)).await?)
            }
            (&Method::POST, "/auth/logout") => {
                return own(Box::pin(auth.logout_confirmed(&parts, scheme)).await?)
            }
            (&Method::GET, "/auth/me") => return own(Box::pin(auth.me(&parts)).await?),
            (&Method::POST, "/auth/backchannel-logout") => {
                return own(Box::pin(backchannel(auth, body)).await)
            }
            // The backend would put the user's token into a browser cookie: answer it here.
            (&Method::POST | &Method::DELETE, "/auth/chainlit-session")
                if auth.bridge.is_some() =>
            {
                let mut r = Response::new(crate::full(""));
                *r.status_mut() = StatusCode::NO_CONTENT;
                return own(r);
            }
            (
                _,
                "/auth/login"
                | "/auth/callback"
                | "/auth/logout"
                | "/auth/me"
                | "/auth/backchannel-logout",
            ) => {
                return own(crate::error::message_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Method not allowed",
                    false,
                ));
            }
            _ => {}
        }
        let body = Either::Left(body);
        match auth.gate(&parts).await? {
            Decision::Login(location) => {
                let mut r = Response::new(crate::full(""));
                *r.status_mut() = StatusCode::FOUND;
                let v =
                    HeaderValue::from_str(&location).map_err(|e| Error::Internal(e.to_string()))?;
                r.headers_mut().insert(header::LOCATION, v);
                own(r)
            }
            Decision::Authenticated { session, id } => match &auth.bridge {
                Some(bridge) => {
                    Box::pin(self.as_openrag_user(oidc, bridge, parts, body, peer, session, &id))
                        .await
                }
                None => {
                    let who = Who {
                        session: Some(&session),
                        token: None,
                        live: Some(&id),
                    };
                    self.forward_as(oidc, parts, body, peer, who).await
                }
            },
            Decision::Bearer if auth.bridge.is_some() => {
                // As OpenRag in OIDC mode: a refused bearer is "Unauthenticated", not 403.
                let out = self
                    .forward_as(oidc, parts, body, peer, Who::default())
                    .await?;
                let (out, refused) = peek_refusal(out).await;
                if refused {
                    return Err(Error::Unauthenticated);
                }
                Ok(out)
            }
            Decision::Bearer | Decision::Public => {
                self.forward_as(oidc, parts, body, peer, Who::default())
                    .await
            }
        }
    }

    /// Forwards with the sidecar's cookies and client identity headers removed, then `who`'s
    /// identity added: the identity headers of a session (headers mode) or the backend token
    /// (openrag mode).
    async fn forward_as(
        &self,
        oidc: &Oidc,
        mut parts: http::request::Parts,
        body: RequestBody,
        peer: Peer,
        who: Who<'_>,
    ) -> Result<Outcome, Error> {
        if let Some((Carrier::Query, t)) = who.token {
            parts.uri = inject::with_token_query(&parts.uri, t)
                .ok_or(Error::BadRequest("Invalid request target"))?;
        }
        let req = Request::from_parts(parts, body);
        let identity = oidc.identity.current();
        let prepare = |h: &mut http::HeaderMap| {
            oidc.auth.cookies.strip(h);
            identity.strip(h);
            if let Some(s) = who.session {
                identity.inject(h, s);
            }
            if let Some((carrier, t)) = who.token {
                inject::inject_headers(h, carrier, t);
            }
        };
        // A tunnel or event stream of a session ends with the session.
        let abort = || who.live.map(|id| oidc.streams.watch(id));
        let r = self.upstream.forward(req, peer, prepare, abort).await?;
        let status = r.status().as_u16();
        let mut out: Outcome = (r.map(Either::Left), Some(status));
        if let Some((_, t)) = who.token {
            inject::scrub_token(out.0.headers_mut(), t);
        }
        Ok(out)
    }

    /// Forwards as the session's OpenRag user. When the backend refuses the token (regenerated
    /// elsewhere, revoked by an admin), the bridge resolves it again once; a request without a
    /// body is then replayed, others get the backend's answer and the next one works.
    #[allow(clippy::too_many_arguments)]
    async fn as_openrag_user(
        &self,
        oidc: &Oidc,
        bridge: &OpenRagBridge,
        parts: http::request::Parts,
        body: RequestBody,
        peer: Peer,
        session: Arc<Session>,
        id: &str,
    ) -> Result<Outcome, Error> {
        let Some(token) = session.backend_token.clone() else {
            return Err(Error::Identity(BridgeError::NoToken));
        };
        let carrier = inject::carrier(parts.uri.path());
        let replay = bodiless(&parts).then(|| parts.clone());
        let out = self
            .forward_as(
                oidc,
                parts,
                body,
                peer,
                Who {
                    session: None,
                    token: Some((carrier, &token)),
                    live: Some(id),
                },
            )
            .await?;
        let (out, refused) = peek_refusal(out).await;
        if !refused {
            return Ok(out);
        }
        tracing::warn!(sub = %session.sub, "the backend refused the user's token; resolving it again");
        let Some(resolved) = bridge
            .recover(&session.sub, &token)
            .await
            .map_err(Error::Identity)?
        else {
            return Ok(out);
        };
        let mut updated = (*session).clone();
        updated.backend_token = Some(resolved.token.expose().clone());
        if !oidc
            .auth
            .sessions
            .update(id, &updated, crate::clock::now_unix())
            .await?
        {
            return Err(Error::Unauthenticated);
        }
        match replay {
            Some(parts) => {
                let again = self
                    .forward_as(
                        oidc,
                        parts,
                        Either::Right(Full::new(bytes::Bytes::new())),
                        peer,
                        Who {
                            session: None,
                            token: Some((carrier, resolved.token.expose())),
                            live: Some(id),
                        },
                    )
                    .await?;
                Ok(peek_refusal(again).await.0)
            }
            None => Ok(out),
        }
    }

    fn log_error(&self, e: &Error, request_id: &str) {
        match e {
            Error::UpstreamUnavailable(_) | Error::UpstreamTimeout => {
                self.metrics.upstream_error(e.kind());
                tracing::warn!(request_id, kind = e.kind(), error = %error_chain(e), "upstream failed");
            }
            Error::BadRequest(_)
            | Error::MethodNotAllowed
            | Error::Unauthenticated
            | Error::Forbidden(_) => {
                tracing::debug!(request_id, error = %e, "request refused");
            }
            Error::Identity(_) => {
                tracing::warn!(request_id, error = %error_chain(e), "identity bridge")
            }
            Error::IdpUnavailable | Error::Store(_) => {
                tracing::warn!(request_id, error = %error_chain(e), "dependency unavailable");
            }
            Error::Internal(_) => {
                tracing::error!(request_id, error = %error_chain(e), "internal error")
            }
        }
    }
}

/// Requests refused in every mode before any decision: `CONNECT` (a tunnel to wherever the
/// client names, never ours to open), and a request with several `Host` headers or, in
/// HTTP/1.1, none (RFC 9112 §3.2: which one a backend believes is anyone's guess).
fn refused_early(req: &Request<Incoming>) -> Option<Error> {
    if req.method() == Method::CONNECT {
        return Some(Error::MethodNotAllowed);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() || (first.is_none() && req.version() == http::Version::HTTP_11) {
        return Some(Error::BadRequest("Missing or duplicate Host header"));
    }
    None
}

/// True when the request has no body, so it can be sent twice.
fn bodiless(parts: &http::request::Parts) -> bool {
    matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
    ) && !parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v == "0")
}

/// Reads a small 401/403 body to tell a refused token from a permission decision; every other
/// response passes untouched (still streaming).
async fn peek_refusal(out: Outcome) -> (Outcome, bool) {
    use http_body_util::{BodyExt, Limited};
    let (resp, upstream_status) = out;
    let status = resp.status().as_u16();
    let small = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= 8192);
    if !(status == 401 || status == 403) || !small {
        return ((resp, upstream_status), false);
    }
    let (parts, body) = resp.into_parts();
    let bytes = match Limited::new(body, 8192).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => bytes::Bytes::new(),
    };
    let refused = inject::is_token_refusal(status, &bytes);
    (
        (
            Response::from_parts(parts, crate::full(bytes)),
            upstream_status,
        ),
        refused,
    )
}

/// `POST /auth/backchannel-logout`: 200 `no-store` when valid, else 400 with an OAuth-style
/// error body and nothing revoked.
async fn backchannel(auth: &Auth, body: Incoming) -> Response<Body> {
    use http_body_util::{BodyExt, Limited};
    let form = match Limited::new(body, 64 * 1024).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => bytes::Bytes::new(),
    };
    let (status, body) = match auth.backchannel_logout(&form).await {
        Ok(_) => (StatusCode::OK, String::new()),
        Err(crate::auth::backchannel::LogoutError::Store(e)) => {
            tracing::warn!(error = %e, "back-channel logout could not reach the store");
            let b = serde_json::json!({"error": "temporarily_unavailable"});
            (StatusCode::SERVICE_UNAVAILABLE, b.to_string())
        }
        Err(e) => {
            tracing::warn!(error = %e, "back-channel logout refused");
            let b =
                serde_json::json!({"error": "invalid_request", "error_description": e.to_string()});
            (StatusCode::BAD_REQUEST, b.to_string())
        }
    };
    let mut r = Response::new(crate::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status != StatusCode::OK {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    r
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
