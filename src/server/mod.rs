//! Accept loops: HTTP/1.1 and HTTP/2 (h2c by prior knowledge, h2 by ALPN over TLS) with
//! upgrades, optional TLS, and a bounded graceful drain.
//!
//! Knows the handler it is given, not what it does. On shutdown the listener is dropped first
//! (new connections are refused at once), then in-flight requests get `drain_timeout` to finish.

pub mod tls;
pub mod workers;

use crate::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Per-connection facts handed to the handler with each request.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// `https` when the connection is TLS.
    pub scheme: &'static str,
}

/// Knobs of one listener.
#[derive(Clone)]
pub struct ServeOptions {
    pub max_header_bytes: usize,
    pub drain_timeout: Duration,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Name used in logs ("public", "admin").
    pub name: &'static str,
}

/// Seconds a client gets to send a complete request head (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Seconds a client gets to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `shutdown` turns true, then drains.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    opts: ServeOptions,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(opts.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let acceptor = opts.tls.clone().map(TlsAcceptor::from);
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();

    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
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
        let _ = stream.set_nodelay(true);
        let info = ConnInfo { peer, scheme };
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let fut = handler(req, info);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let result = match acceptor {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    let tls =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }

    // Refuse new connections now; let the in-flight ones finish within the deadline.
    drop(listener);
    tracing::info!(
        listener = opts.name,
        connections = graceful.count(),
        "draining"
    );
    if tokio::time::timeout(opts.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = opts.name,
            "drain deadline reached; closing remaining connections"
        );
    }
}
