//! The public listener's request handler: dispatch only.
//!
//! `AUTH_MODE=token`: every request goes to the proxy unchanged. `AUTH_MODE=oidc`: the
//! sidecar's `/auth/*` routes go to `auth`, the identity mode's own routes to `identity`, every
//! other request through the gate (`auth`) and then to `identity`, which forwards it as its
//! caller. Each request gets a request id (echoed on the response), metrics and exactly one
//! access-log line; an error is logged once here, with its cause chain, and turned into a
//! response by `error.rs`. Knows no backend and no identity mode.

use crate::auth::canonical;
use crate::auth::flow::Auth;
use crate::auth::gate::Decision;
use crate::error::{wants_html, Error};
use crate::http_json::error_chain;
use crate::identity::headers::HeaderIdentity;
use crate::identity::{Caller, Identity, Outbound, Outcome};
use crate::metrics::Metrics;
use crate::proxy::headers::{self, Peer};
use crate::proxy::{Body, RequestBody};
use crate::proxy::{Holder, Upstream};
use crate::ratelimit::{Kind, RateLimiter};
use crate::server::ConnInfo;
use crate::session::LiveStreams;
use crate::telemetry;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use std::sync::Arc;

/// Requests in flight on one worker above which each new request's head is copied out of its
/// connection's read buffer before anything else (`headers::detach_head`). A worker that busy
/// queues its requests, on its run queue or for an upstream connection, and every queued
/// request would hold its connection's 8 KB buffer while hyper reads into a new one. Below
/// it, what the buffers hold is bounded (64 × 8 KB a worker) and the copy would cost more than
/// it saves. (50 connections put 25 on each worker.)
const DETACH_ABOVE: i64 = 64;

/// The OIDC side of the router, present with `AUTH_MODE=oidc`.
pub struct Oidc {
    pub auth: Arc<Auth>,
    pub identity: Arc<Identity>,
    /// The sessions with live tunnels and event streams on this replica.
    pub streams: Arc<LiveStreams>,
    /// OpenRag's rate limits, unless `RATE_LIMIT_ENABLED` is not `true`.
    pub limits: Option<RateLimiter>,
}

impl Oidc {
    /// Applies the reloadable settings to the state every worker shares, once per reload.
    pub fn reload(&self, r: &crate::config::Reloadable) {
        let mut next = (*self.auth.settings()).clone();
        next.paths = r.paths.clone();
        next.allowed_redirect_origins = r.allowed_redirect_origins.clone();
        next.trusted_origins = r.trusted_origins.clone();
        next.headers = r.headers.clone();
        next.authz = r.authz.clone();
        self.auth.settings.replace(|| next.clone());
        self.identity.reload(r);
    }
}

pub struct App {
    upstream: Upstream,
    metrics: Arc<Metrics>,
    oidc: Option<Arc<Oidc>>,
    /// Pass-through (`AUTH_MODE=token`) in front of a backend that trusts identity headers
    /// (`identity = "headers"`): the clients' own copies are removed all the same. The sidecar
    /// authenticates no one then, but must not let anyone name themselves to that backend
    /// (a `.env` not found leaves `AUTH_MODE` at `token`).
    pass_through_strip: Option<std::sync::RwLock<Arc<HeaderIdentity>>>,
}

impl App {
    pub fn new(
        upstream: Upstream,
        metrics: Arc<Metrics>,
        oidc: Option<Arc<Oidc>>,
        pass_through_strip: Option<HeaderIdentity>,
    ) -> Self {
        App {
            upstream,
            metrics,
            oidc,
            pass_through_strip: pass_through_strip.map(|h| std::sync::RwLock::new(Arc::new(h))),
        }
    }

    /// Applies the reloadable settings to this worker's own state (its upstream, and the
    /// identity header names a pass-through removes).
    pub fn reload(&self, r: &crate::config::Reloadable) {
        self.upstream.set_timeout(r.upstream_timeout);
        if let Some(names) = &self.pass_through_strip {
            // A poisoned lock still holds a whole value.
            let mut names = names.write().unwrap_or_else(|p| p.into_inner());
            *names = Arc::new(names.renamed(r.headers.clone()));
        }
    }

    /// Not an `async fn`, for the reason given at `proxy::pool::Pool::send`: every client
    /// connection holds this future, and an `async fn` would hold the request twice.
    #[allow(clippy::manual_async_fn)] // on purpose: see the doc above
    pub fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        conn: ConnInfo,
    ) -> impl std::future::Future<Output = Response<Body>> {
        async move {
            // Before anything keeps a part of the head (the record's target and request id are
            // shared slices of it): the gauge does not count this request yet, hence `>=`.
            if self.metrics.in_flight_here() >= DETACH_ABOVE {
                headers::detach_head(&mut req);
            }
            let record = telemetry::Record::start(
                &self.metrics,
                req.method().clone(),
                req.uri().clone(),
                headers::request_id(req.headers()),
            );
            let html = wants_html(req.headers());
            let request_id = &record.request_id;
            // Room for the headers the sidecar adds, at once rather than step by step: the request
            // id and three X-Forwarded-*, and with OIDC up to five identity headers. No more: the
            // map's entries are ~100 bytes each and live as long as the request (2.5 KB a request
            // with room for twelve, at 2,000 requests in flight 5 MB).
            let added = if self.oidc.is_some() { 9 } else { 4 };
            req.headers_mut().reserve(added);
            req.headers_mut()
                .insert(headers::X_REQUEST_ID, request_id.clone());
            let peer = self.upstream.peer(conn.peer.ip(), conn.scheme);

            // The rate limits, and the client's address when they apply.
            let limits = self.oidc.as_ref().and_then(|o| o.limits.as_ref());
            let client = limits.map(|_| self.upstream.client_ip(req.headers(), peer));
            let mut result = match (refused_early(&req), &self.oidc) {
                (Some(e), _) => Err(e),
                (None, None) => {
                    // Where every caller without a session is one client's share, an ingress
                    // left out of `trusted_proxies` shows (said before the proxy's future is
                    // built: inside it, the check would keep the request twice).
                    if self.upstream.is_tight() {
                        untrusted_forwarder(req.headers(), peer);
                    }
                    self.proxy(req.map(Either::Left), peer).await
                }
                (None, Some(oidc)) => self.authenticated(oidc, req, peer, client).await,
            };
            // The sidecar's own 401s and 403s spend the client's failure budget. (The limiter's
            // futures are boxed: rare paths, kept out of every request's future.)
            if let Some((l, ip)) = limits.zip(client).filter(|_| own_refusal(&result)) {
                if let Err(wait) = Box::pin(l.spend(Kind::Failure, ip)).await {
                    result = Err(self.limited(Kind::Failure, wait));
                }
            }
            let (mut resp, upstream_status) = result.unwrap_or_else(|e| {
                self.log_error(&e, request_id.to_str().unwrap_or_default());
                let id = request_id.to_str().unwrap_or_default();
                (e.into_page(html, &[("Request id", id)]), None)
            });
            resp.headers_mut()
                .insert(headers::X_REQUEST_ID, request_id.clone());
            record.finish(resp.status().as_u16(), upstream_status);
            resp
        }
    }

    async fn proxy(&self, req: Request<RequestBody>, peer: Peer) -> Result<Outcome, Error> {
        let strip = self
            .pass_through_strip
            .as_ref()
            .map(|n| n.read().unwrap_or_else(|p| p.into_inner()).clone());
        let prepare = move |h: &mut http::HeaderMap| {
            if let Some(names) = &strip {
                names.strip(h);
            }
        };
        let r = self
            .upstream
            .forward(req, peer, None, prepare, || None, || None)
            .await?;
        let status = r.status().as_u16();
        Ok((r.map(Either::Left), Some(status)))
    }

    fn limited(&self, kind: Kind, wait: u64) -> Error {
        self.metrics.rate_limited(kind.label());
        Error::RateLimited(wait)
    }

    /// Not an `async fn`, for the reason given at `proxy::pool::Pool::send`: the request is
    /// kept once, as its parts, in the future every authenticated request carries.
    #[allow(clippy::manual_async_fn)] // on purpose: see the doc above
    fn authenticated<'a>(
        &'a self,
        oidc: &'a Oidc,
        req: Request<Incoming>,
        peer: Peer,
        client: Option<std::net::IpAddr>,
    ) -> impl std::future::Future<Output = Result<Outcome, Error>> + 'a {
        let (mut parts, body) = req.into_parts();
        async move {
            // Decisions below compare paths byte for byte: first give the path the one spelling
            // the backend will also see (and forward it so).
            if let Some(uri) = canonical::canonical_uri(&parts.uri)
                .map_err(|_| Error::BadRequest("Invalid request path"))?
            {
                parts.uri = uri;
            }
            // Refused before any decision, the sidecar's own routes and CORS preflights
            // included: a backend may resolve what these paths name differently from us.
            if crate::auth::gate::ambiguous_path(parts.uri.path()) {
                return Err(Error::BadRequest("Invalid request path"));
            }
            let limited = oidc.limits.as_ref().zip(client);
            let auth = &oidc.auth;
            let path = parts.uri.path();
            // Every `/auth/*` request spends the budget, as in OpenRag: the sidecar's routes,
            // the bridge's and any the backend answers (the path is canonical here). Not the
            // IdP's back-channel logouts: it sends one per session it ends (an administrator's
            // "log out everyone" is hundreds a minute from one address), and turning one away
            // leaves a session alive. A refused logout token spends the failure budget instead.
            let backchannel = path == crate::auth::BACKCHANNEL_PATH;
            if let Some((l, ip)) = limited.filter(|_| backchannel) {
                if let Some(wait) = Box::pin(l.exhausted(Kind::Failure, ip)).await {
                    return Err(self.limited(Kind::Failure, wait));
                }
            }
            if let Some((l, ip)) = limited.filter(|_| path.starts_with("/auth/") && !backchannel) {
                // Every login passes here: where a forgotten ingress shows (and no other
                // request pays for looking).
                untrusted_forwarder(&parts.headers, peer);
                Box::pin(l.spend(Kind::Auth, ip))
                    .await
                    .map_err(|wait| self.limited(Kind::Auth, wait))?;
            }
            if Auth::is_route(path) {
                let scheme = headers::public_scheme(&parts.headers, peer);
                let ip = || client.unwrap_or_else(|| self.upstream.client_ip(&parts.headers, peer));
                return Ok((auth.route(&parts, body, scheme, ip).await?, None));
            }
            if let Some(r) = oidc.identity.own_route(&parts) {
                return Ok((r, None));
            }
            let decision = auth.gate(&parts).await;
            // A client over its failure budget gets 429 on every request that has no session to
            // show (public paths and sessions are not what it is guessing at).
            if let (
                Some((l, ip)),
                Ok(Decision::Login(_) | Decision::Bearer) | Err(Error::Unauthenticated),
            ) = (limited, &decision)
            {
                if let Some(wait) = Box::pin(l.exhausted(Kind::Failure, ip)).await {
                    return Err(self.limited(Kind::Failure, wait));
                }
            }
            // A preflight is forwarded without its body, if it came with one (`Preflight`).
            let mut without_body = false;
            let mut judge = None;
            let mut public = false;
            let caller = match decision? {
                Decision::Login(location) => {
                    let mut r = Response::new(crate::proxy::full(""));
                    *r.status_mut() = StatusCode::FOUND;
                    let v = HeaderValue::from_str(&location)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    r.headers_mut().insert(header::LOCATION, v);
                    // Anonymous, but not for a cache to keep: the same URL serves the page
                    // once the browser has its session.
                    r.headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    return Ok((r, None));
                }
                Decision::Authenticated { session, id } => {
                    judge = auth.stream_judge(&parts);
                    Caller::Session { session, id }
                }
                Decision::Bearer => Caller::Bearer,
                Decision::Public => {
                    public = true;
                    Caller::Public
                }
                Decision::PublicWithoutCookies => {
                    parts.headers.remove(header::COOKIE);
                    public = true;
                    Caller::Public
                }
                Decision::PreflightAnswered(headers) => {
                    let mut r = Response::new(crate::proxy::full(""));
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    *r.headers_mut() = headers;
                    return Ok((r, None));
                }
                Decision::Preflight => {
                    crate::auth::cross_site::as_preflight(&mut parts);
                    without_body = true;
                    Caller::Public
                }
            };
            // While a request could have to wait for a place under the upstream cap (every
            // place taken, or a client holding its share), the place first: requests queue
            // here holding their head and session, and build the identity's state (a boxed
            // future of ~2.6 KB) only once they can be sent. Otherwise the send takes one as
            // a pass-through request does (one atomic read more, nothing to hand over).
            let place = if self.upstream.is_tight() {
                untrusted_forwarder(&parts.headers, peer);
                let holder = match &caller {
                    Caller::Session { session, .. } => {
                        Holder::Session(oidc.streams.holder_of(session))
                    }
                    Caller::Bearer | Caller::Public => Holder::Address(
                        client.unwrap_or_else(|| self.upstream.client_ip(&parts.headers, peer)),
                    ),
                };
                let head = || crate::proxy::head_bytes(&parts);
                Some(self.upstream.place(head, holder).await?)
            } else {
                None
            };
            let strip_own = |h: &mut http::HeaderMap| auth.cookies.strip(h);
            let out = Outbound {
                upstream: &self.upstream,
                peer,
                strip_own: &strip_own,
                sessions: &auth.sessions,
                streams: &oidc.streams,
                place: std::sync::Mutex::new(place),
                judge,
                public_judge: public.then(|| auth.public_judge(&parts)).flatten(),
            };
            let body: RequestBody = if without_body {
                Either::Right(http_body_util::Full::default())
            } else {
                Either::Left(body)
            };
            // Boxed: the identity's future is large (4 KB), and kept out of the request future
            // every connection holds while it waits.
            let forward = boxed(|| oidc.identity.forward(out, parts, body, caller));
            let mut outcome = forward.await?;
            auth.cookies.drop_own_set_cookies(outcome.0.headers_mut());
            Ok(outcome)
        }
    }

    fn log_error(&self, e: &Error, request_id: &str) {
        match e {
            Error::UpstreamUnavailable(_) | Error::UpstreamTimeout | Error::UpstreamBusy => {
                self.metrics.upstream_error(e.kind());
                tracing::warn!(request_id, kind = e.kind(), error = %error_chain(e), "upstream failed");
            }
            Error::BadRequest(_)
            | Error::MethodNotAllowed
            | Error::Unauthenticated
            | Error::Forbidden(_)
            | Error::CrossSite
            | Error::RateLimited(_)
            | Error::TooManyTunnels
            | Error::TooManyUploads
            | Error::TooManyStreams => {
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

/// `make()`'s future in a box of its own, allocated before the future is built so that the
/// future can be built in it: boxed after it is built (`Box::pin(fut)`), a future is built on
/// the stack and copied over whole, whichever of its states is live (4 KB for the identity's
/// on every authenticated request, a memcpy that profiled at about 1% of the CPU).
#[inline(always)]
pub fn boxed<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    let slot = Box::<F>::new_uninit();
    Box::into_pin(Box::write(slot, make()))
}

/// Whether the sidecar itself answered 401 or 403 (not the upstream), or refused a credential
/// otherwise (a back-channel logout token, [`crate::auth::RefusedCredential`]): a failed
/// authentication.
/// A cross-site refusal is not one: the visitor's browser sent it for another site's page, and
/// counting it would put everyone behind that visitor's address over the budget.
fn own_refusal(result: &Result<Outcome, Error>) -> bool {
    let status = match result {
        Ok((r, None))
            if r.extensions()
                .get::<crate::auth::RefusedCredential>()
                .is_some() =>
        {
            return true
        }
        Ok((r, None)) => r.status(),
        Ok((_, Some(_))) => return false,
        Err(Error::CrossSite) => return false,
        Err(e) => e.status(),
    };
    matches!(status.as_u16(), 401 | 403)
}

/// Requests refused in every mode before any decision: `CONNECT` (a tunnel to wherever the
/// client names, never ours to open); a target without a path (authority form `host:port`,
/// asterisk form `*`), which no path rule would see as the `/` it would reach; and a request
/// with several `Host` headers or, in HTTP/1.1, none (RFC 9112 §3.2: which one a backend
/// believes is anyone's guess).
fn refused_early(req: &Request<Incoming>) -> Option<Error> {
    // Any case: `trace` is an extension method to hyper, `TRACE` to a backend that upper-cases
    // it. A backend that echoes a `TRACE` would hand the client the credentials the sidecar
    // adds (an OpenRag user's own token); nginx refuses it likewise.
    let method = req.method().as_str();
    if ["CONNECT", "TRACE", "TRACK"]
        .iter()
        .any(|m| method.eq_ignore_ascii_case(m))
    {
        return Some(Error::MethodNotAllowed);
    }
    if !req.uri().path().starts_with('/') {
        return Some(Error::BadRequest("Unsupported request target"));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() || (first.is_none() && req.version() == http::Version::HTTP_11) {
        return Some(Error::BadRequest("Missing or duplicate Host header"));
    }
    None
}

/// Warns, once per process, that a peer outside `trusted_proxies` sends `X-Forwarded-For`: an
/// ingress or load balancer that is not listed makes every client behind it one address, so
/// they all share one rate-limit budget (one user's failures can lock everyone out) and, when
/// they have no session, one share of the upstream connections. Asked where those are spent: at
/// the sidecar's routes, and while requests could have to wait for an upstream connection.
/// Only for peers on internal addresses, where ingresses live: a client on the internet that
/// sends the header is not a proxy to list, and must not spend the one warning.
fn untrusted_forwarder(headers: &http::HeaderMap, peer: headers::Peer) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if peer.trusted
        || SAID.load(std::sync::atomic::Ordering::Relaxed)
        || !internal(peer.ip)
        || !headers.contains_key(headers::X_FORWARDED_FOR)
        || SAID.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        return;
    }
    tracing::warn!(
        peer = %peer.ip,
        "a request from {} carries X-Forwarded-For, but {} is not in trusted_proxies: the rate \
         limits, and the per-client share of upstream connections of callers without a \
         session, count every client behind it as one address. If it is your ingress or load \
         balancer, list it (SSO_SIDECAR_TRUSTED_PROXIES); said once",
        peer.ip,
        peer.ip
    );
}

/// Loopback, private (RFC 1918, RFC 6598 shared, IPv6 unique local) or link-local.
fn internal(ip: std::net::IpAddr) -> bool {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b))
        }
        std::net::IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests;
