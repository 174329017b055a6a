//! The bodies the sidecar handles: what it sends to clients ([`Body`]) and what it sends
//! upstream ([`RequestBody`], wrapped in [`Outgoing`] on its way). Enums rather than boxed
//! trait objects: the proxied path allocates nothing for them (a streamed request body, one
//! small note of its progress).

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
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
/// An upstream may also answer before reading it all (a 401 or 413): the rest is still sent,
/// held to the same rule by a watchdog ([`watch_rest`]) that closes its connection once it
/// stalls.
pub struct Outgoing {
    inner: RequestBody,
    progress: Option<Arc<Progress>>,
}

impl Outgoing {
    /// `body`, with a progress note when it has anything left to send: it may stall for
    /// `stall` at a time, and take `bound` in all.
    pub fn new(
        body: RequestBody,
        stall: Duration,
        bound: Duration,
    ) -> (Outgoing, Option<Arc<Progress>>) {
        let progress =
            (!http_body::Body::is_end_stream(&body)).then(|| Arc::new(Progress::new(stall, bound)));
        let out = Outgoing {
            inner: body,
            progress: progress.clone(),
        };
        (out, progress)
    }

    /// Its progress note, when it streams.
    pub fn progress(&self) -> Option<&Arc<Progress>> {
        self.progress.as_ref()
    }
}

/// When a streamed request body last moved (a frame taken, or its end).
pub struct Progress {
    start: Instant,
    moved_ms: AtomicU64,
    stall: Duration,
    bound: Duration,
    /// Every frame is sent (set by the body itself).
    ended: AtomicBool,
    /// The request's place under the upstream cap once its response has ended before it: the
    /// place is given back when the body is (this note is dropped with it), not before, or
    /// early answers would let one client keep any number of connections busy past the cap.
    held: Mutex<Option<super::pool::CapPermit>>,
    /// The body's place under its holder's cap of bodies on their way upstream: given back
    /// when the body is through, or when the exchange ends without it.
    share: Mutex<Option<super::holders::Share>>,
}

impl Progress {
    fn new(stall: Duration, bound: Duration) -> Self {
        Progress {
            start: Instant::now(),
            moved_ms: AtomicU64::new(0),
            stall,
            bound,
            ended: AtomicBool::new(false),
            held: Mutex::new(None),
            share: Mutex::new(None),
        }
    }

    fn moved(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.moved_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The instant of the last move (its creation, before any).
    pub fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.moved_ms.load(Ordering::Relaxed))
    }

    /// When the body counts as stalled if it does not move before: a stall after its last
    /// move, within its bound from the start.
    pub fn deadline(&self) -> Instant {
        (self.last() + self.stall).min(self.start + self.bound)
    }

    /// Whether every frame has been sent.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Keeps `share` until every frame is sent (or the body is dropped unsent).
    pub(super) fn keep_until_sent(&self, share: super::holders::Share) {
        *self.share.lock().unwrap_or_else(|p| p.into_inner()) = Some(share);
    }

    fn sent(&self) {
        self.ended.store(true, Ordering::Relaxed);
        drop(self.share.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    /// Keeps `permit` until the body is done with.
    pub fn hold(&self, permit: super::pool::CapPermit) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(permit);
    }
}

/// Watches the rest of a request body whose response has ended: once it stalls past its
/// deadline, aborts `connection`'s task, which closes the connection and drops the body (and
/// the place it holds) whether the body or the upstream stopped moving. Holds the note weakly,
/// so the task ends when the body does.
pub fn watch_rest(progress: Arc<Progress>, connection: tokio::task::AbortHandle) {
    let weak = Arc::downgrade(&progress);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        connection.abort();
        return;
    };
    drop(progress);
    runtime.spawn(async move {
        loop {
            let Some(at) = weak.upgrade().map(|p| p.deadline()) else {
                return;
            };
            tokio::time::sleep_until(at).await;
            let Some(p) = weak.upgrade() else { return };
            if p.deadline() <= Instant::now() {
                tracing::debug!(
                    "a request body the upstream had answered stalled: connection closed"
                );
                connection.abort();
                return;
            }
        }
    });
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
        let Some(p) = &this.progress else {
            return frame;
        };
        match &frame {
            Poll::Ready(Some(Ok(_))) => {
                p.moved();
                if http_body::Body::is_end_stream(&this.inner) {
                    p.sent();
                }
            }
            Poll::Ready(None) => {
                p.moved();
                p.sent();
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
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
