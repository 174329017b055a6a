//! The upstream connection pool of one worker: HTTP/1.1 connections (`hyper::client::conn`)
//! kept alive between requests, and the response body that hands its connection back.
//!
//! Each worker thread has its own `Upstream`, hence its own pool, and every connection's task
//! runs on that worker's runtime. So the pool is a plain list behind an uncontended lock: no
//! pool keys, no hashing, no task spawned per request. hyper-util's general-purpose client did
//! all three, which was the largest single item of the proxy's own CPU time (bench/README.md).
//!
//! Owns: connecting (through the shared TLS-capable connector), reuse, the idle timeout, the cap
//! on connections in use (requests beyond it wait for one: many HTTP/2 streams of one client
//! must not become as many upstream connections), and the
//! one retry a request gets when a reused connection turns out to be closed before the request
//! was sent. Knows nothing of headers or URIs beyond what it is handed.

use crate::proxy::body::Outgoing;
use crate::proxy::holders::Holder;
use http::{Request, Response, Uri};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::Duration;
use tower_service::Service;

mod body;
mod places;
pub mod slow;
pub use body::UpstreamBody;
pub use places::{CapPermit, Places};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a checkout waits for an idle connection that is not ready yet: long enough for
/// its task to see the end of the last response, short against a client trickling the body
/// of a request the upstream already answered.
const CHECKOUT_WAIT: Duration = Duration::from_millis(100);

/// Why a request could not be forwarded: no connection at all, or a connection that failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect: {0}")]
    Connect(#[source] BoxError),
    #[error("{0}")]
    Request(#[source] hyper::Error),
    /// The upstream answered against the protocol (a 101 nobody asked for).
    #[error("{0}")]
    Protocol(&'static str),
}

/// An upstream connection: where requests go in, and the task that drives it (aborted to
/// close it at once, whatever it is waiting for).
pub(crate) struct Conn {
    sender: SendRequest<Outgoing>,
    task: tokio::task::AbortHandle,
}

/// Idle connections, newest last, each with the sweeper epoch it was handed back in.
#[derive(Default)]
struct Idle {
    conns: VecDeque<(Conn, u64)>,
    /// Whether this pool's sweeper task is running.
    sweeping: bool,
    /// Advanced by the sweeper every half idle timeout. Ages are counted in epochs rather than
    /// read from the clock, so a request reads no clock.
    epoch: u64,
}

impl Idle {
    /// Idle for at least two epochs: between half the idle timeout and the whole of it, never
    /// longer (the upstream's own keep-alive timeout must not be reached).
    fn expired(&self, since: u64) -> bool {
        self.epoch.saturating_sub(since) >= 2
    }
}

/// Event streams a worker keeps open beyond its cap, per place under the cap (64 places, so
/// 1,024 streams a worker by default).
pub const STREAMS_PER_PLACE: usize = 16;

/// One worker's connections to the upstream.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority` of the upstream, what the connector dials.
    target: Uri,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Idle>,
    /// One place per request in flight upstream, shared out among clients ([`Places`]). A new
    /// connection is only opened when no idle one is left, so open connections never
    /// outnumber the places, but for event streams (which move to `streams` once their
    /// response begins, [`UpstreamBody::leave_cap`]) and tunnels (which leave the pool).
    places: Arc<Places>,
    /// Places for event streams, [`STREAMS_PER_PLACE`] per place under the cap: open streams
    /// do not make other requests wait, yet one client's HTTP/2 streams cannot open connections
    /// without bound (once these are taken, a stream keeps its place under the cap).
    streams: Arc<tokio::sync::Semaphore>,
    queued: prometheus_client::metrics::counter::Counter,
    /// Response bodies watched for a client that holds them up.
    slow: Arc<slow::SlowReads>,
}

impl Pool {
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        target: Uri,
        idle_timeout: Duration,
        max_idle: usize,
        (max_busy, share_percent): (usize, u8),
        queued: prometheus_client::metrics::counter::Counter,
        slow: Arc<slow::SlowReads>,
    ) -> Arc<Self> {
        let places = Places::new(max_busy, share_percent);
        slow.places(places.clone());
        Arc::new(Pool {
            connector,
            target,
            idle_timeout,
            max_idle,
            idle: Mutex::new(Idle::default()),
            places,
            streams: Arc::new(tokio::sync::Semaphore::new(
                max_busy.max(1).saturating_mul(STREAMS_PER_PLACE),
            )),
            queued,
            slow,
        })
    }

    /// Sends `req` on an idle connection, or a new one, and returns the response head with a
    /// body that gives the connection back once it has been read to the end.
    ///
    /// Not an `async fn`: one keeps its arguments twice in its future (as given, and moved into
    /// the body), and this future is part of every request in flight. The `async move` block
    /// keeps `req` once.
    ///
    /// The request's place under the cap is taken first (`Upstream::place`), so that requests
    /// wait for one holding only their head.
    #[allow(clippy::manual_async_fn)] // on purpose: see the doc above
    pub fn send(
        self: &Arc<Self>,
        mut req: Request<Outgoing>,
        permit: CapPermit,
    ) -> impl std::future::Future<Output = Result<Response<UpstreamBody>, SendError>> + '_ {
        async move {
            // A reused connection the upstream has just closed refuses the request unsent: try the
            // next one. A new connection gets no second chance.
            loop {
                let (mut conn, fresh) = match self.checkout().await {
                    Some(c) => (c, false),
                    // Boxed: rare, and its state would otherwise enlarge every request's future.
                    None => (Box::pin(self.connect()).await?, true),
                };
                let progress = req.body().progress().cloned();
                match conn.sender.try_send_request(req).await {
                    Ok(resp) => {
                        return Ok(resp.map(|b| UpstreamBody::new(b, conn, self, permit, progress)))
                    }
                    Err(mut e) => match e.take_message() {
                        Some(unsent) if !fresh => req = unsent,
                        _ => return Err(SendError::Request(e.into_error())),
                    },
                }
            }
        }
    }

    /// A place under the cap for `holder`, if it may take one now.
    pub fn try_permit(&self, holder: Holder) -> Option<CapPermit> {
        self.places.try_take(holder)
    }

    /// A place under the cap for `holder`: at once if it may take one, else once one is given
    /// to it (counted in `sso_sidecar_upstream_queued_total`).
    pub async fn permit(&self, holder: Holder) -> Result<CapPermit, SendError> {
        if let Some(p) = self.try_permit(holder) {
            return Ok(p);
        }
        self.queued.inc();
        self.places
            .take(holder)
            .await
            .map_err(|()| SendError::Protocol("the upstream pool is gone"))
    }

    /// Whether a request could have to wait for a place now (none free, or a client holding
    /// its share).
    pub fn is_tight(&self) -> bool {
        self.places.is_tight()
    }

    /// The newest idle connection that is still open and ready for a request.
    async fn checkout(&self) -> Option<Conn> {
        // Connections that were not ready in time, handed back (as the oldest) once done.
        let mut busy = Vec::new();
        let found = loop {
            let (mut conn, since) = {
                let mut idle = self.lock();
                let Some((conn, since)) = idle.conns.pop_back() else {
                    break None;
                };
                if idle.expired(since) {
                    // Everything older is older still.
                    idle.conns.clear();
                    break None;
                }
                (conn, since)
            };
            let sender = &mut conn.sender;
            // Usually ready at once; a connection handed back a moment ago becomes ready as
            // soon as its task has seen the end of the last response. One that is still busy
            // sending the previous request's body (the upstream answered before reading it
            // all, and the client trickles the rest) may stay busy for as long as that client
            // likes: it is given a moment, then set aside, and the next one tried. Set aside,
            // not dropped: on a loaded machine a moment may not be enough for a healthy one,
            // and the idle sweeper closes it if it stays busy.
            match std::future::poll_fn(|cx| Poll::Ready(sender.poll_ready(cx))).await {
                Poll::Ready(Ok(())) => break Some(conn),
                Poll::Ready(Err(_)) => continue,
                Poll::Pending => {}
            }
            match tokio::time::timeout(CHECKOUT_WAIT, sender.ready()).await {
                Ok(Ok(())) => break Some(conn),
                Ok(Err(_)) => {}
                Err(_) => busy.push((conn, since)),
            }
        };
        if !busy.is_empty() {
            let mut idle = self.lock();
            for c in busy.into_iter().rev() {
                idle.conns.push_front(c);
            }
        }
        found
    }

    async fn connect(self: &Arc<Self>) -> Result<Conn, SendError> {
        let io = self
            .connector
            .clone()
            .call(self.target.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Request)?;
        let task = tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        self.start_sweeper();
        Ok(Conn {
            sender,
            task: task.abort_handle(),
        })
    }

    fn checkin(&self, conn: Conn) {
        // An idle timeout of zero means no connection is kept.
        if conn.sender.is_closed() || self.idle_timeout.is_zero() {
            return;
        }
        let mut idle = self.lock();
        if idle.conns.len() < self.max_idle {
            let epoch = idle.epoch;
            idle.conns.push_back((conn, epoch));
        }
    }

    /// Closes connections idle for longer than the idle timeout even when no request comes to
    /// notice, so the upstream is not left holding them. One task per pool, started with the
    /// first connection on the worker's runtime; it ends with the pool.
    fn start_sweeper(self: &Arc<Self>) {
        {
            let mut idle = self.lock();
            if idle.sweeping {
                return;
            }
            idle.sweeping = true;
        }
        let pool: Weak<Pool> = Arc::downgrade(self);
        let period = (self.idle_timeout / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(pool) = pool.upgrade() else { return };
                let mut idle = pool.lock();
                idle.epoch += 1;
                while let Some((c, since)) = idle.conns.front() {
                    if !(c.sender.is_closed() || idle.expired(*since)) {
                        break;
                    }
                    idle.conns.pop_front();
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        // The list stays consistent whatever panicked while holding it.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    //! The idle rule and the sweeper's clock, on paused time.
    use super::*;

    fn pool(idle: Duration) -> Arc<Pool> {
        let tls = crate::tls::client_config(None).unwrap();
        let connector = crate::tls::connector(tls, Duration::from_secs(1));
        let target: Uri = "http://127.0.0.1:9".parse().unwrap();
        let held = crate::proxy::Held::new([None, None], Default::default());
        let slow = slow::SlowReads::new(held, None, Default::default());
        Pool::new(
            connector,
            target,
            idle,
            4,
            (4, 100),
            Default::default(),
            slow,
        )
    }

    #[test]
    fn a_connection_is_idle_after_two_epochs() {
        let idle = Idle {
            epoch: 5,
            ..Idle::default()
        };
        assert!(!idle.expired(5));
        assert!(
            !idle.expired(4),
            "half an idle timeout to a whole one: kept"
        );
        assert!(idle.expired(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_counts_half_idle_timeouts() {
        let p = pool(Duration::from_secs(4));
        p.start_sweeper();
        assert_eq!(p.lock().epoch, 0);
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert_eq!(p.lock().epoch, 1);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(p.lock().epoch, 3);
        // The sweeper ends with its pool.
        let weak = Arc::downgrade(&p);
        drop(p);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(weak.upgrade().is_none());
    }
}
