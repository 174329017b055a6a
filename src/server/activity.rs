//! What a connection's watchdogs read (`conn`, `streams`): the requests in flight on it, and
//! the response bodies whose next step is the client's. A guard counts a request from its
//! head to the end (or drop) of its response body; the body counts how often hyper asks it for
//! more, in its HTTP/2 stream's watch or else in the connection's counters, and hands data
//! over in slices so that a slow but steady client shows progress.
//!
//! Reads no clock and decides nothing: the watchdogs compare two readings of these counters.

use super::streams::StreamWatch;
use bytes::Bytes;
use http_body::Frame;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Requests of one connection: how many are in flight, and a count of starts and ends (the
/// watchdog compares two readings of it instead of reading a clock per request); response
/// bodies waiting on the client, and a count of the client's progress (`polls`).
#[derive(Default)]
pub(super) struct Activity {
    pub(super) in_flight: AtomicUsize,
    pub(super) events: AtomicU64,
    /// Response bodies whose next step is the client's: their head or their last frame has
    /// been handed to hyper, which asks for more only once the client has taken it (HTTP/1.1:
    /// room in the socket; HTTP/2: window).
    pub(super) waiting: AtomicUsize,
    /// Bumped when hyper asks a response body for more, and when bytes reach the socket (a
    /// slow client draining a large frame makes progress too, as nginx's `send_timeout`
    /// counts any write).
    pub(super) polls: AtomicU64,
}

/// One request in flight, from its head to the end (or drop) of its response body.
pub(super) struct InFlight(pub(super) Arc<Activity>);

impl InFlight {
    pub(super) fn new(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.events.fetch_add(1, Ordering::Relaxed);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.events.fetch_add(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight until it is dropped, and as
/// waiting on the client while what it gave hyper has not been taken: in its HTTP/2 stream's
/// watch, or else in its connection's count.
pub struct Tracked<B> {
    inner: B,
    waiting: bool,
    guard: InFlight,
    stream: Option<Arc<StreamWatch>>,
    /// What is left of a data frame larger than [`SLICE`] (HTTP/2 only).
    rest: Option<Bytes>,
}

/// The largest data frame handed to an HTTP/2 stream: its send deadline counts the client's
/// progress in frames taken (the socket's writes are the connection's, not the stream's), and
/// an upstream read under backpressure can bring ~400 KB at once, which a slow but steady
/// client (a phone on a poor link) may take longer than the deadline to drain. In 64 KiB
/// slices (shared, not copied) the deadline asks for ~1 KB/s at its 60 s default. HTTP/1.1 is
/// not sliced: hyper would write each slice with its own system call (downloads measured 24%
/// slower), and there the socket's writes count as progress.
const SLICE: usize = 64 * 1024;

impl<B> Tracked<B> {
    /// The response's head goes to hyper now: until hyper polls the body, it waits on the client.
    pub(super) fn new(inner: B, guard: InFlight, stream: Option<Arc<StreamWatch>>) -> Self {
        let mut t = Tracked {
            inner,
            waiting: false,
            guard,
            stream,
            rest: None,
        };
        t.set_waiting(true);
        t
    }

    fn set_waiting(&mut self, waiting: bool) {
        if waiting != self.waiting {
            self.waiting = waiting;
            if let Some(s) = &self.stream {
                s.waiting.store(waiting, Ordering::Relaxed);
                return;
            }
            let count = &self.guard.0.waiting;
            if waiting {
                count.fetch_add(1, Ordering::Relaxed);
            } else {
                count.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.set_waiting(false);
    }
}

impl<B: http_body::Body<Data = Bytes> + Unpin> http_body::Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match &this.stream {
            Some(s) => s.polls.fetch_add(1, Ordering::Relaxed),
            None => this.guard.0.polls.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(rest) = &mut this.rest {
            let slice = if rest.len() > SLICE {
                rest.split_to(SLICE)
            } else {
                std::mem::take(rest)
            };
            if rest.is_empty() {
                this.rest = None;
            }
            return Poll::Ready(Some(Ok(Frame::data(slice))));
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_data() {
                Ok(mut data) if data.len() > SLICE && this.stream.is_some() => {
                    this.rest = Some(data.split_off(SLICE));
                    Frame::data(data)
                }
                Ok(data) => Frame::data(data),
                Err(frame) => frame,
            }))),
            other => other,
        };
        // A frame handed over waits on the client; pending, the body waits on its source (an
        // event stream with nothing to say is not a stalled client).
        this.set_waiting(matches!(frame, Poll::Ready(Some(Ok(_)))));
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(rest) = &self.rest {
            let n = rest.len() as u64;
            // Upper first: a lower bound above the upper one panics.
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + n);
            }
            hint.set_lower(hint.lower() + n);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::{BodyExt, Full};

    /// On an HTTP/2 stream a large frame goes out in slices, each one a poll its send deadline
    /// sees; the body's length and end stay right, and the request stops counting once the
    /// body is dropped. On HTTP/1.1 the frame goes out whole.
    #[tokio::test]
    async fn a_large_frame_goes_out_in_slices_on_http2_only() {
        let activity = Arc::new(Activity::default());
        let data = Bytes::from(vec![7u8; 3 * SLICE + 100]);
        let watch = Arc::new(StreamWatch::default());
        let guard = InFlight::new(&activity);
        let mut body = Tracked::new(Full::new(data.clone()), guard, Some(watch.clone()));
        assert!(watch.waiting.load(Ordering::Relaxed), "the head waits");
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        let mut sizes = Vec::new();
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            let chunk = frame.unwrap().into_data().unwrap();
            sizes.push(chunk.len());
            got.extend_from_slice(&chunk);
            let left = (data.len() - got.len()) as u64;
            assert_eq!(body.size_hint().exact(), Some(left));
            assert_eq!(body.is_end_stream(), left == 0);
        }
        assert_eq!(sizes, vec![SLICE, SLICE, SLICE, 100]);
        assert_eq!(got, data);
        let polls = watch.polls.load(Ordering::Relaxed);
        assert_eq!(polls, 5, "four slices, then the end");
        assert_eq!(activity.in_flight.load(Ordering::Relaxed), 1);
        drop(body);
        assert_eq!(activity.in_flight.load(Ordering::Relaxed), 0);
        assert!(!watch.waiting.load(Ordering::Relaxed));

        let mut body = Tracked::new(Full::new(data.clone()), InFlight::new(&activity), None);
        assert_eq!(
            activity.waiting.load(Ordering::Relaxed),
            1,
            "the head waits"
        );
        let whole = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(whole.len(), data.len());
        drop(body);
        assert_eq!(activity.waiting.load(Ordering::Relaxed), 0);
    }
}
