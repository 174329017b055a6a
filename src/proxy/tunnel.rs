//! The WebSocket tunnel: once both sides have switched protocols, bytes are copied both ways
//! until either side closes or the stream's watcher ends it, and every read from the client
//! raises the watcher's flag (its messages are use of whatever the caller protects).
//!
//! Reads nothing of what it carries: no frames, no messages, no sessions.

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

/// The client's side of a tunnel: raises `sent` whenever the client delivers bytes.
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
        if buf.filled().len() > before {
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
