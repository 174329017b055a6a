//! Accept loops: HTTP/1.1 and HTTP/2 (h2c by prior knowledge, h2 by ALPN over TLS) with
//! upgrades, optional TLS, connection caps and deadlines (`limits`, `conn`), and a bounded
//! graceful drain.
//!
//! Knows the handler it is given, not what it does. On shutdown the listener is dropped first
//! (new connections are refused at once), then in-flight requests get `drain_timeout` to finish.

mod activity;
pub mod balance;
mod conn;
pub mod limits;
mod streams;
pub mod workers;

use crate::metrics::Metrics;
use crate::proxy::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// TCP keepalive on every client connection: probes after a minute of silence, every 10 s,
/// six unanswered and the connection is dropped. What an idle deadline cannot judge (a
/// WebSocket tunnel or an event stream may rightly be silent for long) still ends within about
/// two minutes once its client has vanished (a phone gone off the network, a peer powered off).
const KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(60))
    .with_interval(Duration::from_secs(10))
    .with_retries(6);

/// How long data sent to a client may stay unacknowledged before the connection is dropped
/// (`TCP_USER_TIMEOUT`): keepalive probes are not sent while data is in flight, so a stream
/// that keeps writing to a vanished client would otherwise live until the kernel gives up
/// (about 15 minutes).
const UNACKED_MAX: Duration = Duration::from_secs(120);

/// Per-connection facts handed to the handler with each request.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// `https` when the connection is TLS.
    pub scheme: crate::tls::Scheme,
}

/// Knobs of one listener.
#[derive(Clone)]
pub struct ServeOptions {
    pub max_header_bytes: usize,
    pub drain_timeout: Duration,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Name used in logs ("public", "admin").
    pub name: &'static str,
    /// Time a new connection gets for its first byte, and for its TLS handshake.
    pub first_byte_timeout: Duration,
    /// Time a client gets to send a complete request head (slowloris guard); on HTTP/1.1 the
    /// wait for the next request of a kept-alive connection counts too.
    pub header_read_timeout: Duration,
    /// Time a connection with no request in flight is kept.
    pub idle_timeout: Duration,
    /// Time a response may wait on a client that takes none of it before the connection is
    /// closed (HTTP/2: before its stream is reset).
    pub send_timeout: Duration,
    /// Streams one HTTP/2 connection may have open at once.
    pub http2_max_streams: u32,
    /// Bytes of request body an HTTP/2 client may send ahead (stream and connection windows).
    pub http2_window: u32,
    /// HTTP/2 pings on a quiet connection, and the time allowed for their answer.
    pub http2_ping_interval: Option<Duration>,
    /// Connection caps (public listener only).
    pub limiter: Option<Arc<limits::ConnLimiter>>,
    pub metrics: Option<Arc<Metrics>>,
    /// Tasks a connection leaves running when it ends (WebSocket tunnels): the drain waits
    /// for them too, within the same deadline.
    pub detached: Option<tokio_util::task::TaskTracker>,
}

#[cfg(test)]
impl ServeOptions {
    /// Short deadlines, no caps, no TLS, no metrics.
    pub fn for_tests() -> Self {
        ServeOptions {
            max_header_bytes: 16384,
            drain_timeout: Duration::from_secs(1),
            tls: None,
            name: "test",
            first_byte_timeout: Duration::from_secs(1),
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
            http2_max_streams: 128,
            http2_window: 256 * 1024,
            http2_ping_interval: None,
            limiter: None,
            metrics: None,
            detached: None,
        }
    }
}

/// A listening socket on `addr` whose connections carry TCP keepalive and `TCP_USER_TIMEOUT`.
///
/// The options are set before `listen`: a connection inherits them when the kernel creates it,
/// which may be before anyone accepts it. Set later (when a worker thread first runs), the
/// connections that arrived meanwhile would have none. `shared` adds `SO_REUSEPORT`, so that
/// each worker can listen on the same address (`workers::siblings`).
pub fn listen(addr: SocketAddr, shared: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    let tuned = socket2::SockRef::from(&socket);
    // `[::]` takes IPv4 too, whatever the system's default (`net.ipv6.bindv6only`): the
    // configuration checks count on it (`config::validate`).
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        tuned.set_only_v6(false)?;
    }
    // Best effort: a platform without one of these options still serves, with a warning.
    if let Err(e) = tuned.set_tcp_keepalive(&KEEPALIVE) {
        tracing::warn!(%addr, error = %e, "TCP keepalive not set on the listener");
    }
    if let Err(e) = tuned.set_tcp_user_timeout(Some(UNACKED_MAX)) {
        tracing::warn!(%addr, error = %e, "TCP_USER_TIMEOUT not set on the listener");
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A socket bound to `addr` without `SO_REUSEPORT` and not listening: it fails with
/// `AddrInUse` when another socket listens there, even one that would share the address.
pub fn bind_alone(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket2::SockRef::from(&socket).set_only_v6(false)?;
    }
    socket.bind(addr)?;
    Ok(socket)
}

/// Serves `listener` until `shutdown` turns true, then drains. Connections get TCP keepalive
/// only if the listener came from [`listen`].
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    opts: ServeOptions,
    shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve_balanced(listener, None, handler, opts, shutdown).await
}

/// [`serve`] as one of several workers: with an `inbox`, a connection accepted while another
/// worker holds fewer is handed to it, and the connections other workers hand over are served
/// here too ([`balance`]).
pub async fn serve_balanced<H, F>(
    listener: TcpListener,
    mut inbox: Option<balance::Inbox>,
    handler: H,
    opts: ServeOptions,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    // The same HTTP/1.1 settings on both builders: `http1` serves cleartext HTTP/1.1, `auto`
    // the connections that may be HTTP/2 (conn.rs says why two).
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_bytes);
    // Each HTTP/2 stream is spawned under its own send deadline (`streams`).
    let exec = streams::StreamExec::new(opts.send_timeout, opts.metrics.clone());
    let mut builder = auto::Builder::new(exec);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(opts.http2_max_streams)
        .initial_stream_window_size(opts.http2_window)
        .initial_connection_window_size(opts.http2_window)
        .keep_alive_interval(opts.http2_ping_interval)
        .keep_alive_timeout(opts.http2_ping_interval.unwrap_or(Duration::from_secs(20)))
        .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX));
    let builders = Arc::new(conn::Builders {
        http1,
        auto: builder,
    });
    let scheme = if opts.tls.is_some() {
        crate::tls::Scheme::Https
    } else {
        crate::tls::Scheme::Http
    };
    let connections = tokio_util::task::TaskTracker::new();
    // Serves one connection in its own task. Its place (under the caps, on this worker) is held
    // until its socket closes: a WebSocket tunnel outlives the task, and the socket carries it.
    let conn_shutdown = shutdown.clone();
    let start = |stream, info, place| {
        connections.spawn(conn::serve_conn(
            stream,
            info,
            place,
            builders.clone(),
            handler.clone(),
            opts.clone(),
            conn_shutdown.clone(),
        ));
    };

    loop {
        let handed = async {
            match inbox.as_mut() {
                Some(inbox) => inbox.next().await,
                None => std::future::pending().await,
            }
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(h) = handed => {
                // Another worker accepted it, admitted it under the caps and counted it here.
                match tokio::net::TcpStream::from_std(h.stream) {
                    Ok(stream) => {
                        start(stream, ConnInfo { peer: h.peer, scheme }, h.place);
                    }
                    Err(e) => tracing::warn!(error = %e, "a handed-over connection was lost"),
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = opts.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match &opts.limiter {
            None => None,
            Some(l) => match l.admit(peer.ip()) {
                Ok(p) => Some(p),
                // Closed at once: over a cap, a connection must not hold a descriptor.
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo { peer, scheme };
        match &inbox {
            None => start(stream, info, conn::Place { permit, load: None }),
            Some(inbox) => {
                if let Some((stream, place)) = inbox.place(stream, peer, permit) {
                    start(stream, info, place);
                }
            }
        }
    }

    // Refuse new connections now; let the in-flight ones finish within the deadline.
    drop(listener);
    if let Some(inbox) = inbox.as_mut() {
        // Hand-overs still on their way are closed like the connections refused above, and
        // from now on the other workers serve what they accept themselves.
        inbox.close();
    }
    connections.close();
    // Shared by the workers: each waits for all of them, all within the same deadline.
    if let Some(detached) = &opts.detached {
        detached.close();
    }
    tracing::info!(
        listener = opts.name,
        connections = connections.len(),
        tunnels = opts.detached.as_ref().map_or(0, |d| d.len()),
        "draining"
    );
    let everything = async {
        connections.wait().await;
        if let Some(detached) = &opts.detached {
            detached.wait().await;
        }
    };
    if tokio::time::timeout(opts.drain_timeout, everything)
        .await
        .is_err()
    {
        tracing::warn!(
            listener = opts.name,
            "drain deadline reached; closing remaining connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel hands over on accept carries the options, read back from the accepted
    /// socket itself; a plain listener's connection does not (the test can fail).
    #[tokio::test]
    async fn accepted_connections_carry_keepalive_and_the_unacked_deadline() {
        let listener = listen("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let s = socket2::SockRef::from(&accepted);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(60));
        assert_eq!(s.tcp_keepalive_interval().unwrap(), Duration::from_secs(10));
        assert_eq!(s.tcp_keepalive_retries().unwrap(), 6);
        assert_eq!(s.tcp_user_timeout().unwrap(), Some(UNACKED_MAX));

        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(plain.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = plain.accept().await.unwrap();
        assert!(!socket2::SockRef::from(&accepted).keepalive().unwrap());
    }
}
