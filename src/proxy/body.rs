//! The bodies the sidecar handles: what it sends to clients ([`Body`]) and what it sends
//! upstream ([`RequestBody`], wrapped in [`Outgoing`] on its way). Enums rather than boxed
//! trait objects: the proxied path allocates nothing for them (a streamed request body, one
//! small note of its progress).

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;

/// The body of every response the sidecar sends: a streamed upstream body or a small one of
/// its own.
pub type Body = Either<super::UpstreamBody, Full<Bytes>>;

/// The body of a request sent upstream: the client's, streamed, or one the sidecar made.
pub type RequestBody = Either<Incoming, Full<Bytes>>;

/// A response body of the sidecar's own.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Full::new(bytes.into()))
}

/// A request body on its way upstream, noting when it last moved when it streams: the upstream
/// may rightly wait for the whole body before it answers (a multipart upload is read in full
/// first), so the wait for the answer is timed from the body's last move, not from its start.
pub struct Outgoing {
    inner: RequestBody,
    progress: Option<Arc<Progress>>,
}

impl Outgoing {
    /// `body`, with a progress note when it has anything left to send.
    pub fn new(body: RequestBody) -> (Outgoing, Option<Arc<Progress>>) {
        let progress = (!http_body::Body::is_end_stream(&body)).then(|| Arc::new(Progress::new()));
        let out = Outgoing {
            inner: body,
            progress: progress.clone(),
        };
        (out, progress)
    }
}

/// When a streamed request body last moved (a frame taken, or its end).
pub struct Progress {
    start: Instant,
    moved_ms: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Progress {
            start: Instant::now(),
            moved_ms: AtomicU64::new(0),
        }
    }

    fn moved(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.moved_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// When the body started on its way.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// The instant of the last move (its creation, before any).
    pub fn last(&self) -> Instant {
        self.start + std::time::Duration::from_millis(self.moved_ms.load(Ordering::Relaxed))
    }
}

impl http_body::Body for Outgoing {
    type Data = Bytes;
    type Error = <RequestBody as http_body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Some(p), Poll::Ready(Some(Ok(_)) | None)) = (&this.progress, &frame) {
            p.moved();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}
