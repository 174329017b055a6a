//! The send deadline of each HTTP/2 stream: hyper runs every stream of an HTTP/2 connection as
//! its own task, spawned through the executor given here, which puts each one under a
//! watchdog of its own. A stream whose response waits on a client that takes none of it (its
//! window left at zero) for the send timeout is ended: its task is dropped, h2 resets the
//! stream (`RST_STREAM`), and the upstream connection behind it goes back to the pool or away.
//! The connection and its other streams carry on.
//!
//! Why per stream: one connection-wide count cannot tell a stalled stream from a quiet one.
//! Another stream that keeps moving hid a stalled one for ever, and a stream waiting on a
//! silent upstream (an event stream, a slow answer) let one paused download cut the whole
//! connection. HTTP/1.1 has one response in flight at a time; `conn` keeps its
//! connection-wide watchdog for it.
//!
//! Knows nothing of what the streams carry. The response body learns its stream's watch from
//! a task-local ([`current`]) and reports into it (`conn::Tracked`); no clock per request.

use crate::metrics::Metrics;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

tokio::task_local! {
    static WATCH: Arc<StreamWatch>;
}

/// What one stream's response body reports: whether its next step is the client's, and how
/// often hyper asked it for more.
#[derive(Default)]
pub(super) struct StreamWatch {
    pub waiting: AtomicBool,
    pub polls: AtomicU64,
}

/// The watch of the HTTP/2 stream whose task is running, if this is one.
pub(super) fn current() -> Option<Arc<StreamWatch>> {
    WATCH.try_with(Arc::clone).ok()
}

/// Spawns hyper's HTTP/2 stream tasks, each under its send watchdog.
#[derive(Clone)]
pub(super) struct StreamExec {
    send_timeout: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl StreamExec {
    pub fn new(send_timeout: Duration, metrics: Option<Arc<Metrics>>) -> Self {
        StreamExec {
            send_timeout,
            metrics,
        }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let watch = Arc::new(StreamWatch::default());
        // Checked every half send timeout: a stalled stream ends 1 to 1.5 send timeouts after
        // the client last took something from it, as a connection does in `conn`.
        let period = (self.send_timeout / 2).max(Duration::from_millis(50));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let watched = Watched {
            stream: Box::pin(WATCH.scope(watch.clone(), fut)),
            watch,
            tick,
            period,
            polls: 0,
            stalled: Duration::ZERO,
            send_timeout: self.send_timeout,
            metrics: self.metrics.clone(),
        };
        tokio::spawn(watched);
    }
}

/// A stream's task and its watchdog: ends when the stream does, or when it has stalled.
struct Watched<F> {
    stream: Pin<Box<F>>,
    watch: Arc<StreamWatch>,
    tick: tokio::time::Interval,
    period: Duration,
    polls: u64,
    stalled: Duration,
    send_timeout: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.stream.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        while this.tick.poll_tick(cx).is_ready() {
            let polled = this.watch.polls.load(Ordering::Relaxed);
            let waiting = this.watch.waiting.load(Ordering::Relaxed);
            this.stalled = if waiting && polled == this.polls {
                this.stalled + this.period
            } else {
                Duration::ZERO
            };
            this.polls = polled;
            if this.stalled >= this.send_timeout {
                // Counted with the connections cut for the same reason: to an operator it is
                // the same event (a client that stopped reading), smaller in scope.
                if let Some(m) = &this.metrics {
                    m.connection_timed_out("send");
                }
                tracing::debug!("an HTTP/2 stream waited on its client too long: reset");
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;

    /// A stream whose body waits on the client and is never asked for more ends within 1.5
    /// send timeouts; one whose body keeps being asked does not.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_ends_and_a_moving_one_does_not() {
        let exec = StreamExec::new(Duration::from_secs(10), None);
        let (stalled_tx, mut stalled_rx) = tokio::sync::mpsc::channel::<Arc<StreamWatch>>(1);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<&'static str>(2);
        for name in ["stalled", "moving"] {
            let stalled_tx = stalled_tx.clone();
            let done = done_tx.clone();
            exec.execute(async move {
                struct Ended(tokio::sync::mpsc::Sender<&'static str>, &'static str);
                impl Drop for Ended {
                    fn drop(&mut self) {
                        let _ = self.0.try_send(self.1);
                    }
                }
                let _ended = Ended(done, name);
                let watch = current().expect("a stream task knows its watch");
                watch.waiting.store(true, Ordering::Relaxed);
                if name == "stalled" {
                    let _ = stalled_tx.send(watch.clone()).await;
                    std::future::pending::<()>().await;
                }
                loop {
                    watch.polls.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
        let _stalled = stalled_rx.recv().await;
        let t0 = tokio::time::Instant::now();
        assert_eq!(done_rx.recv().await, Some("stalled"));
        let after = t0.elapsed();
        assert!(
            after >= Duration::from_secs(10) && after <= Duration::from_secs(15),
            "{after:?}"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(done_rx.try_recv().is_err(), "the moving stream goes on");
        assert!(
            current().is_none(),
            "outside a stream task there is no watch"
        );
    }
}
