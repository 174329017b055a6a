//! The streaming forwarder: pooled HTTP/1.1 connections to the upstream (`pool`), bodies
//! streamed both ways, HTTP upgrades (WebSocket) tunnelled.
//!
//! Knows nothing of OIDC, sessions or cookies: callers hand it a request that is already
//! authorised and carrying whatever identity it should carry. It owns URI rewriting, `Host`,
//! hop-by-hop removal, `X-Forwarded-*`, the upstream timeouts and error classification.
//! Bodies are never buffered: the client's body becomes the upstream request body as is, and the
//! upstream's `Incoming` body becomes the response body.

pub mod body;
mod error;
pub mod headers;
mod holders;
mod pool;
mod queue;
mod tunnel;

pub use error::ProxyError;
pub use holders::{Held, Holder, PerClient, Share};
pub use pool::slow::SlowReads;
pub use pool::STREAMS_PER_PLACE;
pub use queue::head_bytes;
use queue::Queue;
pub use tunnel::Tunnels;

use crate::config::ProxySettings;
pub use body::{full, Body, RequestBody};
use headers::Peer;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use ipnet::IpNet;
pub use pool::{SendError, UpstreamBody};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// A signal that ends a long-lived stream (a WebSocket tunnel, an event stream) before its
/// natural end. What it means is the caller's business (a session that ended).
pub type Abort = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What watches a long-lived stream: the signal that ends it, and a flag the stream raises
/// whenever its client sends something (a WebSocket tunnel's client messages; an event
/// stream's client sends nothing after its request). What either means is the caller's
/// business (a session that ended; a session in use).
pub struct Watch {
    pub end: Abort,
    pub client_sent: Arc<std::sync::atomic::AtomicBool>,
}

/// A request's place under the worker's cap on upstream requests in flight
/// (`upstream_max_per_worker`), taken before the request is ready ([`Upstream::place`]) and
/// handed to [`Upstream::forward`]. While every place is taken, requests wait for one; a
/// caller that builds a large state per request (an identity's) waits here first, so the
/// requests queued behind a busy upstream hold no more than their head.
pub struct Place {
    permit: pool::CapPermit,
    /// When the upstream timeout, counted from the start of the wait, ends.
    deadline: tokio::time::Instant,
}

/// Idle connections a worker keeps to the upstream at most.
const MAX_IDLE: usize = 256;

/// The upstream and one worker's pool of connections to it.
pub struct Upstream {
    pool: Arc<pool::Pool>,
    /// `Host` value sent upstream unless `preserve_host` is set.
    host: HeaderValue,
    /// Path prefix of the upstream base URL, without trailing slash ("" for none).
    prefix: String,
    /// Milliseconds to the response head; atomic so a configuration reload can change it.
    timeout_ms: std::sync::atomic::AtomicU64,
    /// The most a streamed request body may take, in all, before the response head.
    body_timeout: Duration,
    preserve_host: bool,
    trusted_proxies: Vec<IpNet>,
    /// The replica's WebSocket tunnels (shared by the workers).
    tunnels: Arc<Tunnels>,
    /// The replica's requests whose body is still on its way upstream, by holder (shared by
    /// the workers): each holds an upstream place for as long as its client takes to send it.
    uploads: Arc<Held>,
    /// The replica's event streams, by holder (shared by the workers): each holds an upstream
    /// connection for as long as its client wants it.
    streams: Arc<Held>,
    /// Bytes of request heads waiting on this worker for a place under the cap, and the most
    /// they may be: an HTTP/2 connection queues up to 128 heads of up to 32 KiB each.
    queued: Queue,
}

impl Upstream {
    pub fn new(
        settings: &ProxySettings,
        tls: rustls::ClientConfig,
        (max_busy, share_percent): (usize, u8),
        queued: prometheus_client::metrics::counter::Counter,
        per_client: PerClient,
        queue_bytes: usize,
    ) -> Result<Self, String> {
        let PerClient {
            tunnels,
            uploads,
            streams,
            slow_reads,
        } = per_client;
        let u = &settings.upstream;
        let scheme: Scheme = u.scheme().parse().map_err(|_| "bad upstream scheme")?;
        let host = u.host_str().ok_or("upstream has no host")?;
        let authority_str = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let authority: Authority = authority_str
            .parse()
            .map_err(|_| format!("bad upstream authority {authority_str}"))?;
        let connector = crate::tls::connector(tls, settings.connect_timeout);
        let target = Uri::builder()
            .scheme(scheme)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Upstream {
            pool: pool::Pool::new(
                connector,
                target,
                settings.idle_timeout,
                MAX_IDLE,
                (max_busy, share_percent),
                queued,
                slow_reads,
            ),
            host: HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
            prefix: u.path().trim_end_matches('/').to_owned(),
            timeout_ms: std::sync::atomic::AtomicU64::new(
                settings.upstream_timeout.as_millis() as u64
            ),
            body_timeout: settings.upstream_body_timeout,
            preserve_host: settings.preserve_host,
            trusted_proxies: settings.trusted_proxies.clone(),
            tunnels,
            uploads,
            streams,
            queued: Queue::new(queue_bytes, share_percent),
        })
    }

    pub fn set_timeout(&self, t: Duration) {
        self.timeout_ms
            .store(t.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Describes the peer of a connection: its address and whether it is a trusted proxy.
    pub fn peer(&self, ip: IpAddr, scheme: headers::Scheme) -> Peer {
        let ip = ip.to_canonical();
        Peer {
            ip,
            trusted: self.trusted_proxies.iter().any(|n| n.contains(&ip)),
            scheme,
        }
    }

    /// The client's address ([`headers::client_ip`]).
    pub fn client_ip(&self, headers: &http::HeaderMap, peer: Peer) -> IpAddr {
        headers::client_ip(headers, peer, &self.trusted_proxies)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Whether a request could have to wait for a place now: every place taken, or a client
    /// holding its share of them.
    pub fn is_tight(&self) -> bool {
        self.pool.is_tight()
    }

    /// Waits for a place under the cap for `holder` (at once if it may take one: a place is
    /// free and it holds less than its share), for a request whose head takes `head()` bytes
    /// ([`head_bytes`], counted only if it must wait). The upstream timeout runs from here: a
    /// request that waits its whole length is answered 504. While requests wait, their heads
    /// on this worker are held to their budget, and each client's to its share of it: a
    /// request beyond is refused at once (503), or queued clients could hold any amount of
    /// memory, or one client the whole budget.
    pub async fn place(
        &self,
        head: impl FnOnce() -> usize,
        holder: Holder,
    ) -> Result<Place, ProxyError> {
        let deadline = tokio::time::Instant::now() + self.timeout();
        let holder = holder.as_client();
        if let Some(permit) = self.pool.try_permit(holder) {
            return Ok(Place { permit, deadline });
        }
        let _waiting = self.queued.join(head(), holder).ok_or(ProxyError::Busy)?;
        match tokio::time::timeout_at(deadline, self.pool.permit(holder)).await {
            Err(_) => Err(ProxyError::Timeout),
            Ok(Err(e)) => Err(ProxyError::Unavailable(e)),
            Ok(Ok(permit)) => Ok(Place { permit, deadline }),
        }
    }

    /// Forwards `req` and returns the upstream's response head with its body still streaming.
    ///
    /// `place` is the request's place under the cap if the caller took it ([`Upstream::place`]),
    /// and with it the deadline of the upstream timeout; without one, the request waits for a
    /// place here, and the timeout runs from now.
    ///
    /// `prepare` runs after hop-by-hop removal and `X-Forwarded-*`, so headers it writes (the
    /// caller's identity) cannot be removed by a client naming them in `Connection`. `watch` is
    /// asked, only for a long-lived response (a WebSocket tunnel, `text/event-stream`), for the
    /// signal that ends it early and the flag that notes the client's messages; for a WebSocket
    /// handshake, before it is forwarded. `holder` is asked, once, for the user the request holds
    /// its places as (an opaque number; none: the client's address holds them): for its place
    /// under the cap, unless `place` is given, where a client holds at most its share; for a
    /// WebSocket handshake, a request whose body streams or an event stream's answer, as each
    /// holder has a cap of tunnels, of bodies on their way upstream and of event streams (over
    /// it: 429; for the first two before the upstream sees anything, for an event stream with
    /// its upstream connection closed).
    ///
    /// Not an `async fn`, for the reason given at [`pool::Pool::send`]: `req` is kept once.
    #[allow(clippy::manual_async_fn)] // on purpose: see the doc above
    pub fn forward<'a>(
        &'a self,
        mut req: Request<crate::proxy::RequestBody>,
        peer: Peer,
        place: Option<Place>,
        prepare: impl FnOnce(&mut http::HeaderMap) + 'a,
        watch: impl FnOnce() -> Option<Watch> + 'a,
        holder: impl FnOnce() -> Option<u64> + 'a,
    ) -> impl std::future::Future<Output = Result<Response<UpstreamBody>, ProxyError>> + 'a {
        async move {
            let websocket =
                headers::is_websocket_handshake(req.method(), req.version(), req.headers());
            let streams_body = !http_body::Body::is_end_stream(req.body());
            // Who holds this request's places, found when first needed: its session, else its
            // address (behind a trusted proxy read from `X-Forwarded-For` before it is
            // rewritten below: a few address parses on requests from such a proxy).
            let address = self.client_ip(req.headers(), peer);
            let mut holder = Some(holder);
            let mut found = None;
            let mut who = || {
                *found.get_or_insert_with(|| match holder.take().and_then(|h| h()) {
                    Some(session) => holders::Holder::Session(session),
                    None => holders::Holder::Address(address),
                })
            };
            let mut watch = Some(watch);
            let mut take_watch = || watch.take().and_then(|w| w());
            let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));

            let host = req.headers().get(header::HOST).cloned().or_else(|| {
                req.uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
            *req.uri_mut() = self.upstream_uri(req.uri())?;
            // The upstream connection is HTTP/1.1 whatever the client spoke.
            *req.version_mut() = http::Version::HTTP_11;

            let h = req.headers_mut();
            headers::remove_hop_by_hop(h);
            headers::join_cookies(h);
            headers::one_content_length(h);
            headers::set_forwarded(h, peer, address, host.clone());
            prepare(h);
            match (self.preserve_host, host) {
                (true, Some(client_host)) => h.insert(header::HOST, client_host),
                _ => h.insert(header::HOST, self.host.clone()),
            };
            // Any other upgrade request goes on as plain HTTP: hop-by-hop removal has taken its
            // `Upgrade`, `HTTP2-Settings` and `Connection` away.
            if websocket {
                h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            }

            let (parts, body) = req.into_parts();
            let Place {
                permit,
                mut deadline,
            } = match place {
                Some(p) => p,
                None => self.place(|| head_bytes(&parts), who()).await?,
            };
            // A body's place under its holder's cap, held until the body is through (or the
            // exchange ends): taken once the request has its upstream place (a request waiting
            // behind a busy upstream is not trickling), before the upstream sees anything.
            let upload = match streams_body {
                true => Some(
                    self.uploads
                        .admit(who())
                        .ok_or(ProxyError::TooManyUploads)?,
                ),
                false => None,
            };
            // A tunnel's place under its holder's cap, likewise; the watch asked for it serves
            // whatever long-lived answer comes.
            let mut early_watch = None;
            let tunnel = match websocket {
                true => {
                    early_watch = take_watch();
                    Some(
                        self.tunnels
                            .admit(who())
                            .ok_or(ProxyError::TooManyTunnels)?,
                    )
                }
                false => None,
            };
            let (body, progress) = body::Outgoing::new(body, self.timeout(), self.body_timeout);
            if let (Some(p), Some(share)) = (&progress, upload) {
                p.keep_until_sent(share);
            }
            let mut send = std::pin::pin!(self.pool.send(Request::from_parts(parts, body), permit));
            let mut resp = loop {
                match tokio::time::timeout_at(deadline, send.as_mut()).await {
                    Ok(Err(e)) => return Err(ProxyError::Unavailable(e)),
                    Ok(Ok(r)) => break r,
                    // While the body moves, and for a timeout after its end, the upstream may
                    // still be reading it: the timeout runs from its last move, within the
                    // body's own bound.
                    Err(_) => match progress.as_ref().map(|p| p.deadline()) {
                        Some(later) if later > tokio::time::Instant::now() => deadline = later,
                        _ => return Err(ProxyError::Timeout),
                    },
                }
            };

            let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            let to_websocket = resp
                .headers()
                .get(header::UPGRADE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
            if switching && !(websocket && to_websocket) {
                // A switch nobody asked for (or to another protocol): relaying it would tunnel.
                resp.body_mut().detach();
                return Err(ProxyError::Unavailable(pool::SendError::Protocol(
                    "the upstream switched protocols unasked",
                )));
            }
            if resp.headers().contains_key(header::TRANSFER_ENCODING) {
                // Framed by its transfer coding, which overrides `Content-Length` (RFC 9112
                // §6.3; a proxy must drop that header): hyper read it as chunked, and a length
                // left in would have the client cut it short. A coding besides `chunked` is
                // this hop's and taken off with it: passed on, the bytes would be garbage.
                if !only_chunked(resp.headers()) {
                    return Err(ProxyError::Unavailable(pool::SendError::Protocol(
                        "the upstream sent a transfer coding other than chunked",
                    )));
                }
                resp.headers_mut().remove(header::CONTENT_LENGTH);
            }
            headers::remove_hop_by_hop(resp.headers_mut());
            if let (true, Some(client_upgrade), Some(permit)) = (switching, client_upgrade, tunnel)
            {
                let h = resp.headers_mut();
                h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                // The connection now belongs to the tunnel.
                resp.body_mut().detach();
                self.tunnels.spawn(tunnel::run(
                    client_upgrade,
                    upstream_upgrade,
                    early_watch,
                    self.tunnels.clone(),
                    permit,
                ));
            } else if is_event_stream(resp.headers()) {
                // It leaves the cap for as long as its client wants it: one holder's streams
                // are capped, or one client could hold every place.
                let Some(share) = self.streams.admit(who()) else {
                    // Dropped unread: its upstream connection is closed.
                    return Err(ProxyError::TooManyStreams);
                };
                resp.body_mut().leave_cap(share);
                if let Some(w) = early_watch.or_else(take_watch) {
                    resp.body_mut().abort_on(w.end);
                }
            } else {
                resp.body_mut().read_by(address);
            }
            Ok(resp)
        }
    }

    fn upstream_uri(&self, original: &Uri) -> Result<Uri, ProxyError> {
        let pq = original.path_and_query().map_or("", PathAndQuery::as_str);
        if !pq.starts_with('/') {
            // Authority-form (`CONNECT`-style) and asterisk-form targets are not ours to forward
            // (the router refuses them first; this keeps the proxy safe on its own).
            return Err(ProxyError::BadRequest("Unsupported request target"));
        }
        // Origin form (`/path?query`): the connection already knows where it goes.
        let path_and_query: PathAndQuery = if self.prefix.is_empty() {
            original
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))
        } else {
            format!("{}{pq}", self.prefix)
                .parse()
                .map_err(|_| ProxyError::BadRequest("Invalid request target"))?
        };
        Ok(Uri::from(path_and_query))
    }
}

/// A response that streams events for as long as it lives (server-sent events).
fn is_event_stream(h: &http::HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .get(..17)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"text/event-stream"))
    })
}

/// Whether the `Transfer-Encoding` lines name `chunked` and nothing else.
fn only_chunked(h: &http::HeaderMap) -> bool {
    let mut codings = h
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    codings
        .next()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none()
}
