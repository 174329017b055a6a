//! One client connection, from its first byte to its close: the first-bytes deadline (and the
//! TLS handshake under the same deadline), HTTP/1.1 or HTTP/2 served by hyper, and a watchdog
//! that closes the connection once no request has been in flight for the idle timeout — on
//! HTTP/2 as on HTTP/1.1, where a client answering pings would otherwise be held forever — or
//! once its responses have waited on a client that takes none of them for the send timeout
//! (a reader that stops reading would otherwise hold the upstream connections behind them);
//! on HTTP/2 that deadline is each stream's own (`streams`).
//!
//! Knows the handler it is given, not what it does. What the watchdog reads (requests in
//! flight, response bodies waiting on the client) is counted in `activity`; no clock is read
//! per request.

use super::activity::{Activity, InFlight, Tracked};
use super::limits::ConnPermit;
use super::streams::{self, StreamExec};
use super::{ConnInfo, ServeOptions};
use crate::proxy::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How long a connection closed for idleness gets to say goodbye (HTTP/2 GOAWAY and its ping)
/// before it is dropped.
const GOODBYE: Duration = Duration::from_secs(1);

/// Serves one accepted connection until it closes, times out, or the server shuts down.
pub(super) async fn serve_conn<H, F>(
    stream: TcpStream,
    info: ConnInfo,
    place: Place,
    builders: Arc<Builders>,
    handler: H,
    opts: ServeOptions,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    // A connection that never sends a byte must not hold a descriptor: hyper's own
    // protocol detection would wait for it forever.
    let mut first = [0u8; 2];
    let arrived = tokio::select! {
        r = tokio::time::timeout(opts.first_byte_timeout, stream.peek(&mut first)) => r,
        _ = shutdown.changed() => return,
    };
    // HTTP/2 by prior knowledge opens with "PRI * HTTP/2.0"; no HTTP/1.1 method starts "PR".
    // When in doubt (one byte so far), hyper-util's detection decides.
    let maybe_h2 = match arrived {
        Ok(Ok(n)) if n > 0 => first[0] == b'P' && (n < 2 || first[1] == b'R'),
        Ok(_) => return,
        Err(_) => {
            if let Some(m) = &opts.metrics {
                m.connection_timed_out("first_byte");
            }
            return;
        }
    };
    let activity = Arc::new(Activity::default());
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |req| {
        let guard = InFlight::new(&tracked);
        let fut = handler(req, info);
        async move {
            // An HTTP/2 stream has a watchdog of its own (`streams`); HTTP/1.1 has none.
            let stream = streams::current();
            let resp = fut.await;
            Ok::<_, Infallible>(resp.map(|inner| Tracked::new(inner, guard, stream)))
        }
    });
    let io = Counted {
        inner: stream,
        _place: place,
        activity: activity.clone(),
    };
    let result = match &opts.tls {
        // HTTP/1.1 straight to hyper's own connection. hyper-util's version detection reads the
        // first bytes itself and hands them back, so hyper's first read is short and its 8 KB
        // read buffer grows to 16 KB for the connection's life; its connection type is also
        // sized for HTTP/2 (1.5 KB against 0.6 KB).
        None if !maybe_h2 => {
            let conn = builders.http1.serve_connection(TokioIo::new(io), service);
            let conn = pin!(conn.with_upgrades());
            drive(conn, |c| c.graceful_shutdown(), &activity, &opts, shutdown).await
        }
        // Boxed, as rare: h2c by prior knowledge.
        None => {
            let h2 = Box::pin(async {
                let io = TokioIo::new(io);
                let conn = pin!(builders.auto.serve_connection_with_upgrades(io, service));
                drive(conn, |c| c.graceful_shutdown(), &activity, &opts, shutdown).await
            });
            h2.await
        }
        // Boxed: the handshake's state and the TLS stream take several kilobytes, which every
        // cleartext connection (a sidecar behind the pod's own TLS) would otherwise carry inline
        // in its task (6.4 KB, against 2.2 KB with this box).
        Some(config) => {
            let tls = Box::pin(async {
                let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                let accept = tokio::time::timeout(opts.first_byte_timeout, acceptor.accept(io));
                let tls = match accept.await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %info.peer, error = %e, "TLS handshake failed");
                        return None;
                    }
                    Err(_) => {
                        if let Some(m) = &opts.metrics {
                            m.connection_timed_out("first_byte");
                        }
                        return None;
                    }
                };
                let tls = TokioIo::new(tls);
                let conn = pin!(builders.auto.serve_connection_with_upgrades(tls, service));
                Some(drive(conn, |c| c.graceful_shutdown(), &activity, &opts, shutdown).await)
            });
            match tls.await {
                Some(r) => r,
                None => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %info.peer, error = %e, "connection ended with an error");
    }
}

/// The connection builders of one listener, configured alike (`super::serve`).
pub(super) struct Builders {
    /// HTTP/1.1 on cleartext connections.
    pub http1: hyper::server::conn::http1::Builder,
    /// HTTP/1.1 or HTTP/2, detected: TLS (ALPN) and h2c by prior knowledge.
    pub auto: auto::Builder<StreamExec>,
}

type ConnResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Runs `conn` until it ends; asks it to close gracefully on shutdown or once it has been idle
/// (no request in flight, none started or finished) for the idle timeout.
async fn drive<C, E>(
    mut conn: Pin<&mut C>,
    close: impl Fn(Pin<&mut C>),
    activity: &Activity,
    opts: &ServeOptions,
    mut shutdown: watch::Receiver<bool>,
) -> ConnResult
where
    C: Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Checked every half idle (or send) timeout; idle = checks in a row that saw nothing happen
    // for the idle timeout, so a connection closes 1 to 1.5 idle timeouts after its last request.
    let period = (opts.idle_timeout.min(opts.send_timeout) / 2).max(Duration::from_millis(50));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = activity.events.load(Ordering::Relaxed);
    let mut quiet = Duration::ZERO;
    // Stalled: some response waits on the client, and no response body was asked for anything
    // since the last check. Closed (not gracefully: that would wait for those very responses)
    // once stalled for the send timeout.
    let mut polls = activity.polls.load(Ordering::Relaxed);
    let mut stalled = Duration::ZERO;
    let mut goodbye: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => return r.map_err(Into::into),
            _ = shutdown.changed(), if goodbye.is_none() => {
                close(conn.as_mut());
                // The server's own drain deadline bounds this one.
                goodbye = Some(Box::pin(tokio::time::sleep(Duration::MAX / 4)));
            }
            _ = tick.tick(), if goodbye.is_none() => {
                let polled = activity.polls.load(Ordering::Relaxed);
                let waiting = activity.waiting.load(Ordering::Relaxed) > 0;
                stalled = if waiting && polled == polls { stalled + period } else { Duration::ZERO };
                polls = polled;
                if stalled >= opts.send_timeout {
                    if let Some(m) = &opts.metrics {
                        m.connection_timed_out("send");
                    }
                    return Ok(());
                }
                let now = activity.events.load(Ordering::Relaxed);
                let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
                quiet = if busy || now != seen { Duration::ZERO } else { quiet + period };
                seen = now;
                if quiet >= opts.idle_timeout {
                    if let Some(m) = &opts.metrics {
                        m.connection_timed_out("idle");
                    }
                    close(conn.as_mut());
                    goodbye = Some(Box::pin(tokio::time::sleep(GOODBYE)));
                }
            }
            _ = async { if let Some(g) = goodbye.as_mut() { g.await } }, if goodbye.is_some() => {
                return Ok(());
            }
        }
    }
}

/// What a connection holds for as long as its socket is open: its place under the connection
/// caps, and its count on the worker serving it ([`super::balance`]).
#[derive(Default)]
#[allow(dead_code)] // Held for their drops: the permit and the count are given back on close.
pub(super) struct Place {
    pub permit: Option<ConnPermit>,
    pub load: Option<super::balance::Load>,
}

/// The connection's socket with its [`Place`]: the place goes wherever the socket goes (into a
/// WebSocket tunnel after an upgrade) and is given back when it closes. Its writes count as the
/// client's progress for the send deadline.
struct Counted<S> {
    inner: S,
    _place: Place,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    fn wrote(&self, r: &Poll<std::io::Result<usize>>) {
        if matches!(r, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.polls.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(&r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Bytes that reach the socket are the client's progress; a write that cannot go (the
    /// client reads nothing) is not.
    #[tokio::test]
    async fn the_sockets_writes_count_as_progress() {
        let activity = Arc::new(Activity::default());
        let (near, mut far) = tokio::io::duplex(8);
        let mut io = Counted {
            inner: near,
            _place: Place::default(),
            activity: activity.clone(),
        };
        io.write_all(b"12345678").await.unwrap();
        assert_eq!(activity.polls.load(Ordering::Relaxed), 1);
        let blocked = tokio::time::timeout(Duration::from_millis(50), io.write_all(b"9")).await;
        assert!(blocked.is_err(), "the pipe is full");
        assert_eq!(activity.polls.load(Ordering::Relaxed), 1);
        let mut got = [0u8; 8];
        tokio::io::AsyncReadExt::read_exact(&mut far, &mut got)
            .await
            .unwrap();
        io.write_all(b"9").await.unwrap();
        assert_eq!(activity.polls.load(Ordering::Relaxed), 2);
    }

    /// Every open connection holds this future for its lifetime: at 2,000 connections each
    /// kilobyte is 2 MB. The TLS and h2c branches are boxed, HTTP/1.1 is served by hyper's own
    /// connection type, and that connection is pinned in place (not moved into `drive`):
    /// together they took it from 6.4 KB to about 1.5 KB.
    #[tokio::test]
    async fn a_cleartext_connection_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let (_tx, rx) = watch::channel(false);
        let opts = ServeOptions::for_tests();
        let info = ConnInfo {
            peer: addr,
            scheme: crate::tls::Scheme::Http,
        };
        let builders = Arc::new(Builders {
            http1: hyper::server::conn::http1::Builder::new(),
            auto: auto::Builder::new(StreamExec::new(Duration::from_secs(1), None)),
        });
        let handler = |_: Request<Incoming>, _: ConnInfo| async {
            Response::new(crate::proxy::body::full(""))
        };
        let conn = serve_conn(stream, info, Place::default(), builders, handler, opts, rx);
        let size = std::mem::size_of_val(&conn);
        println!("FIGURE a cleartext connection's future: {size} bytes");
        assert!(size <= 2 * 1024, "a connection's future is {size} bytes");
    }
}
