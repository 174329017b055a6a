//! The WebSocket tunnel: once both sides have switched protocols, bytes are copied both ways
//! until either side closes or the stream's watcher ends it, and a read from the client larger
//! than a heartbeat raises the watcher's flag (its messages are use of whatever the caller
//! protects; the pongs a browser or a socket.io client sends on its own every 20-25 s are not).
//!
//! Reads nothing of what it carries: no frames, no messages, no sessions (a heartbeat is told
//! by its size alone).

use super::Watch;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Copies bytes both ways between the upgraded client and upstream connections until either
/// side closes, or the watcher's signal fires (both connections are then closed).
pub(super) async fn run(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    watch: Option<Watch>,
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
    let mut client = Noting {
        io: TokioIo::new(client),
        sent,
    };
    let mut upstream = TokioIo::new(upstream);
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
    }
}

/// The most a read from the client may carry and still be a heartbeat rather than a message: a
/// masked WebSocket frame has 6 bytes of head; a pong echoes its ping's payload (uvicorn's: 4
/// bytes), socket.io's ping and pong are 1-byte text frames. A user's message is longer.
const HEARTBEAT_MAX: usize = 32;

/// The client's side of a tunnel: raises `sent` whenever the client delivers more than a
/// heartbeat in one read.
struct Noting<T> {
    io: T,
    sent: Option<Arc<AtomicBool>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Noting<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before + HEARTBEAT_MAX {
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
