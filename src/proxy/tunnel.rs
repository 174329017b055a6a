//! The WebSocket tunnel: once both sides have switched protocols, bytes are copied both ways
//! until either side closes, the stream's watcher ends it, or nothing has moved either way for
//! the idle timeout. A read from the client larger than a heartbeat raises the watcher's flag
//! (its messages are use of whatever the caller protects; the pongs a browser or a socket.io
//! client sends on its own every 20-25 s are not), while any byte keeps the tunnel itself open.
//!
//! Also owns how many tunnels one client holds ([`Tunnels`]): a tunnel outlives its request,
//! holds an upstream connection and a client connection, and behind an ingress the per-address
//! connection cap does not see who opened it.
//!
//! Reads nothing of what it carries: no frames, no messages, no sessions (a heartbeat is told
//! by its size alone; a session is an opaque number).

use super::holders::{Held, Holder, Share};
use super::Watch;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The tunnels open on this replica, by holder, and how long one may stay silent. Shared by
/// every worker: a client's connections land on any of them.
pub struct Tunnels {
    idle_timeout: Duration,
    /// Tunnels held, by holder, under the caps of a session and of an address.
    held: Arc<Held>,
    /// Tunnels closed for silence (for `/metrics`).
    idled: Counter,
    /// The tunnels' tasks: they outlive the connection that opened them, so a shutdown's
    /// drain waits for them as for the connections ([`Tunnels::tasks`]).
    tasks: tokio_util::task::TaskTracker,
}

impl Tunnels {
    /// `max`: the caps of a session and of an address (`None`: no cap); `refused` counts the
    /// handshakes refused over them.
    pub fn new(
        idle_timeout: Duration,
        max: [Option<usize>; 2],
        refused: Counter,
        idled: Counter,
    ) -> Arc<Self> {
        Arc::new(Tunnels {
            idle_timeout,
            held: Held::new(max, refused),
            idled,
            tasks: tokio_util::task::TaskTracker::new(),
        })
    }

    /// The tunnels' tasks, for a listener's drain to wait on: without it, a shutdown ended
    /// every open WebSocket at once (the connection that opened one has ended already).
    pub fn tasks(&self) -> tokio_util::task::TaskTracker {
        self.tasks.clone()
    }

    /// Runs a tunnel on this worker, tracked.
    pub(super) fn spawn<F>(&self, tunnel: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(tunnel);
    }

    /// A place for one more tunnel of `holder`, unless it holds its cap already.
    pub(super) fn admit(&self, holder: Holder) -> Option<Share> {
        self.held.admit(holder)
    }
}

/// Copies bytes both ways between the upgraded client and upstream connections until either
/// side closes, the watcher's signal fires or nothing moves for the idle timeout (both
/// connections are then closed). The tunnel's place under its holder's cap is held for as long.
pub(super) async fn run(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    watch: Option<Watch>,
    tunnels: Arc<Tunnels>,
    _permit: Share,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let (end, sent) = match watch {
        Some(w) => (Some(w.end), Some(w.client_sent)),
        None => (None, None),
    };
    let moved = Arc::new(Moved::default());
    let mut client = Noting {
        io: TokioIo::new(client),
        sent,
        moved: moved.clone(),
    };
    let mut upstream = Noting {
        io: TokioIo::new(upstream),
        sent: None,
        moved: moved.clone(),
    };
    let end = async {
        match end {
            Some(a) => a.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "upgraded connection closed with an error");
            }
        }
        _ = end => tracing::debug!("tunnel closed: its session ended"),
        _ = moved.silent_for(tunnels.idle_timeout) => {
            tunnels.idled.inc();
            tracing::debug!("tunnel closed: nothing moved for the idle timeout");
        }
    }
}

/// When bytes last moved through a tunnel, either way: milliseconds since `start`.
struct Moved {
    start: Instant,
    last_ms: AtomicU64,
}

impl Default for Moved {
    fn default() -> Self {
        Moved {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Moved {
    fn now(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `idle`. Sleeps until the deadline counted from
    /// the last movement it knows of, and again from a later one: one timer per idle period,
    /// not per read.
    async fn silent_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// The most a read from the client may carry and still be a heartbeat rather than a message: a
/// masked WebSocket frame has 6 bytes of head; a pong echoes its ping's payload (uvicorn's: 4
/// bytes), socket.io's ping and pong are 1-byte text frames. A user's message is longer.
const HEARTBEAT_MAX: usize = 32;

/// One side of a tunnel: notes when bytes arrive, and on the client's side raises `sent`
/// whenever the client delivers more than a heartbeat in one read.
struct Noting<T> {
    io: T,
    sent: Option<Arc<AtomicBool>>,
    moved: Arc<Moved>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Noting<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let got = buf.filled().len() - before;
        if got > 0 {
            self.moved.now();
        }
        if got > HEARTBEAT_MAX {
            if let Some(sent) = &self.sent {
                sent.store(true, Ordering::Relaxed);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Noting<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Either side's bytes are movement: an upstream that pushes to a silent client (a feed)
    /// keeps its tunnel open; and a heartbeat-sized read keeps it open without being use.
    #[tokio::test(start_paused = true)]
    async fn bytes_read_on_either_side_are_movement() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let moved = Arc::new(Moved::default());
        let sent = Arc::new(AtomicBool::new(false));
        let (near, mut far) = tokio::io::duplex(64);
        let mut upstream = Noting {
            io: near,
            sent: None,
            moved: moved.clone(),
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        far.write_all(b"pushed by the upstream").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(upstream.read(&mut buf).await.unwrap(), 22);
        assert_eq!(moved.last_ms.load(Ordering::Relaxed), 5000);

        let (near, mut far) = tokio::io::duplex(64);
        let mut client = Noting {
            io: near,
            sent: Some(sent.clone()),
            moved: moved.clone(),
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        far.write_all(b"pong").await.unwrap();
        assert_eq!(client.read(&mut buf).await.unwrap(), 4);
        assert_eq!(moved.last_ms.load(Ordering::Relaxed), 7000);
        assert!(!sent.load(Ordering::Relaxed), "a heartbeat is not use");
        far.write_all(&[b'm'; 40]).await.unwrap();
        assert_eq!(client.read(&mut buf).await.unwrap(), 40);
        assert!(sent.load(Ordering::Relaxed), "a message is");
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_counted_from_the_last_byte_either_way() {
        let moved = Moved::default();
        let idle = Duration::from_secs(10);
        tokio::time::sleep(Duration::from_secs(6)).await;
        moved.now();
        let start = Instant::now();
        moved.silent_for(idle).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(10),
            "ten seconds after the last byte"
        );
        let at_once = Instant::now();
        moved.silent_for(idle).await;
        assert_eq!(
            at_once.elapsed(),
            Duration::ZERO,
            "already silent for that long"
        );
    }
}
