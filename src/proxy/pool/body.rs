//! The response body of a pooled upstream connection: it hands the connection back to its pool
//! when read to the end, closes it when dropped early (the client went away), and carries the
//! request's place under the pool's cap for as long as the body lives (and the request body,
//! when that outlives it).

use super::{Conn, Pool};
use crate::proxy::body::{watch_rest, Progress};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// An upstream response body that returns its connection to the pool when it is dropped after
/// being read to the end. Dropped early (the client went away), it closes the connection
/// instead: the rest of the response would otherwise have to be read first.
pub struct UpstreamBody {
    inner: Incoming,
    conn: Option<(Conn, Arc<Pool>)>,
    done: bool,
    /// This request's place under the pool's cap, given back with the body.
    _permit: Option<super::CapPermit>,
    /// Ends the body early when it fires (a long-lived stream whose reason to exist ended).
    abort: Option<crate::proxy::Abort>,
    /// The request body's progress, when it streamed: it may outlive the response.
    request: Option<Arc<Progress>>,
    /// An event stream's place under its holder's cap, given back with the body.
    _share: Option<crate::proxy::holders::Share>,
    /// Who reads the body, when it is to be watched for a client that holds it up
    /// ([`super::slow`]); taken when the watch begins.
    reader: Option<std::net::IpAddr>,
    /// The watch, and the waker its upstream side is polled with (made once: it is the watch).
    tracked: Option<(Arc<super::slow::Tracked>, std::task::Waker)>,
    /// What is left of a data frame handed over in slices ([`super::slow::SLICE`]).
    rest: Option<bytes::Bytes>,
}

impl UpstreamBody {
    pub(super) fn new(
        inner: Incoming,
        conn: Conn,
        pool: &Arc<Pool>,
        permit: super::CapPermit,
        request: Option<Arc<Progress>>,
    ) -> Self {
        UpstreamBody {
            inner,
            conn: Some((conn, pool.clone())),
            done: false,
            _permit: Some(permit),
            abort: None,
            request,
            _share: None,
            reader: None,
            tracked: None,
            rest: None,
        }
    }

    /// Watches the body, once its first frame is out and more are to come, for a client
    /// (`reader`) that holds it up ([`super::slow`]).
    pub fn read_by(&mut self, reader: std::net::IpAddr) {
        self.reader = Some(reader);
    }

    /// This request's place under the pool's cap, wherever it is kept now.
    fn take_permit(&mut self) -> Option<super::CapPermit> {
        self._permit
            .take()
            .or_else(|| self.tracked.as_ref().and_then(|(t, _)| t.take_permit()))
    }

    /// Ends the body (cleanly, as if the upstream had finished) once `abort` fires; the
    /// upstream connection is then closed rather than reused.
    pub fn abort_on(&mut self, abort: crate::proxy::Abort) {
        self.abort = Some(abort);
    }

    /// Moves the request from the pool's cap to its allowance for event streams, if a place
    /// is free there (the connection still goes back to the pool when the body ends): an event
    /// stream lives as long as its client wants it, and a few hundred open chat streams must
    /// not make every other request wait for a connection. `share`: its place under its
    /// holder's cap of event streams, held as long.
    pub fn leave_cap(&mut self, share: crate::proxy::holders::Share) {
        self._share = Some(share);
        let Some((_, pool)) = &self.conn else { return };
        if let Ok(place) = pool.streams.clone().try_acquire_owned() {
            self._permit = Some(super::CapPermit::stream(place));
        }
    }

    /// Keeps the connection out of the pool (it has been upgraded to another protocol) and
    /// out of its cap: a tunnel lives as long as its client connection, which is capped there.
    pub fn detach(&mut self) {
        self.conn = None;
        self._permit = None;
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // The upstream answered before it had the whole request body, and the client is still
        // sending it: the connection stays busy until then. It keeps its place under the cap
        // (held by the body's note, given back with the body), is closed if the body stalls,
        // and is not reused (it closes once the body is through).
        if let Some(p) = self.request.take().filter(|p| !p.ended()) {
            if Arc::strong_count(&p) > 1 {
                if let Some(permit) = self.take_permit() {
                    p.hold(permit);
                }
                if let Some((conn, _)) = self.conn.take() {
                    watch_rest(p, conn.task);
                }
            }
        }
        let cut = self.tracked.as_ref().is_some_and(|(t, _)| t.is_cut());
        if let Some((conn, pool)) = self.conn.take() {
            // A cut connection's task is aborted, not yet gone: never handed back.
            if !cut && (self.done || http_body::Body::is_end_stream(&self.inner)) {
                pool.checkin(conn);
            }
        }
        // Its connection may serve another request now: never cut it for this one.
        if let Some((t, _)) = &self.tracked {
            t.retire();
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = super::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(abort) = this.abort.as_mut() {
            if abort.as_mut().poll(cx).is_ready() {
                this.abort = None;
                // Closed at once, not merely kept out of the pool: a request body still on its
                // way (a client trickling it, or stalled) would otherwise keep the connection,
                // and the place that goes with it, with no watch on its progress.
                if let Some((conn, _)) = this.conn.take() {
                    conn.task.abort();
                }
                this.done = true;
                return Poll::Ready(None);
            }
        }
        let inner = &mut this.inner;
        let frame = match &this.tracked {
            // Cut for holding its upstream place up: an error, so that the client's answer
            // ends as broken (its connection closed, its HTTP/2 stream reset), never as if it
            // were whole (the upstream's end would read as a clean end of a chunked body).
            Some((t, _)) if t.is_cut() => {
                this.conn = None;
                this.rest = None;
                return Poll::Ready(Some(Err("a response held up by its client was cut".into())));
            }
            Some((t, upstream)) => {
                if let Some(rest) = this.rest.as_mut() {
                    let slice = rest.split_to(rest.len().min(super::slow::SLICE));
                    if rest.is_empty() {
                        this.rest = None;
                    }
                    t.polled_with(slice.len());
                    return Poll::Ready(Some(Ok(http_body::Frame::data(slice))));
                }
                match t.poll(cx, upstream, |cx| Pin::new(inner).poll_frame(cx)) {
                    Poll::Ready(Some(Ok(f))) if f.is_data() => {
                        let mut data = f.into_data().unwrap_or_default();
                        if t.slices() && data.len() > super::slow::SLICE {
                            this.rest = Some(data.split_off(super::slow::SLICE));
                        }
                        t.handed(data.len());
                        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
                    }
                    other => other,
                }
            }
            None => Pin::new(inner).poll_frame(cx),
        };
        let frame = frame.map(|f| f.map(|r| r.map_err(super::BoxError::from)));
        match &frame {
            Poll::Ready(None) => this.done = true,
            Poll::Ready(Some(Err(_))) => this.conn = None,
            // More to come after this frame: from now on, watched for a client that holds
            // it up (a body of one frame, nearly every answer, never is).
            Poll::Ready(Some(Ok(_))) if this.reader.is_some() && !this.inner.is_end_stream() => {
                if let (Some(reader), Some((conn, pool))) = (this.reader.take(), &this.conn) {
                    this.tracked = pool
                        .slow
                        .watch(reader, &mut this._permit, conn.task.clone())
                        .map(|t| (t.clone(), std::task::Waker::from(t)));
                }
            }
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && (self.done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let inner = self.inner.size_hint();
        let Some(rest) = &self.rest else {
            return inner;
        };
        let n = rest.len() as u64;
        let mut hint = http_body::SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(n));
        }
        hint.set_lower(inner.lower().saturating_add(n));
        hint
    }
}
