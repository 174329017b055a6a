//! Responses held up by their clients. A response body holds its upstream connection and its
//! place under the worker's cap until the client has taken all of it; a client that reads a
//! few bytes a second (slowhttptest's "slow read") makes enough progress for the send deadline
//! yet holds the place for hours, and a few hundred such reads from one address would hold every
//! place of every worker (nginx buffers responses to disk; the sidecar streams them).
//!
//! So a body of more than one frame is watched once its first frame is out: when it has been
//! waiting on its client (its last frame taken, no new one asked for) for `after`, it takes a
//! share of its reader's cap of such bodies ([`Held`], by client address); one over the cap is
//! cut (its upstream connection closed, its place given back), and so is its client's answer.
//! A body waiting on the upstream (an LLM thinking between tokens) is never held up by its
//! client, and a client that asks for more gives its share back.
//!
//! One sweep a second per worker while bodies are watched; the request path only counts polls.
//! Knows nothing of HTTP beyond the body it is handed.

use crate::proxy::holders::{Held, Holder, Share};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;

/// How often the bodies are looked at.
const SWEEP: Duration = Duration::from_secs(1);

/// A watched body, shared by the body (which counts its polls) and the sweeper. It is also the
/// waker the body's upstream side wakes: a body whose last poll found nothing is waiting on
/// the upstream until the upstream wakes it, and on its client after that.
pub struct Tracked {
    reader: IpAddr,
    polls: AtomicU64,
    /// Asked the upstream for more, which has not come yet: waiting on it, not on the client.
    upstream_turn: AtomicBool,
    /// The waker of whoever polls the body (the client connection), woken in turn.
    client: Mutex<Option<Waker>>,
    /// The body's place under the cap, given back with the body, or when it is cut.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    /// The upstream connection's task, aborted to cut the body.
    task: tokio::task::AbortHandle,
}

impl Tracked {
    /// Polls the body's upstream side `poll` with this as its waker, on behalf of `cx`.
    pub fn poll<T>(
        self: &Arc<Self>,
        cx: &Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        {
            let mut client = self.client.lock().unwrap_or_else(|p| p.into_inner());
            if !client.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *client = Some(cx.waker().clone());
            }
        }
        let waker = Waker::from(self.clone());
        let r = poll(&mut Context::from_waker(&waker));
        self.upstream_turn.store(r.is_pending(), Ordering::Relaxed);
        r
    }

    pub fn take_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permit.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn cut(&self) {
        self.task.abort();
        drop(self.take_permit());
    }
}

impl Wake for Tracked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    /// The upstream has more: the client's turn to ask for it.
    fn wake_by_ref(self: &Arc<Self>) {
        self.upstream_turn.store(false, Ordering::Relaxed);
        let client = self
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(w) = client {
            w.wake();
        }
    }
}

/// One body under watch, with what the sweeper knows of it.
struct Watched {
    body: Weak<Tracked>,
    seen: u64,
    /// Sweeps it has been waiting on its client.
    still: u32,
    share: Option<Share>,
}

#[derive(Default)]
struct List {
    watched: Vec<Watched>,
    sweeping: bool,
}

/// One worker's watched bodies.
pub struct SlowReads {
    held: Arc<Held>,
    /// Sweeps a body may wait on its client before it needs a share (`None`: no watch).
    after: Option<u32>,
    list: Mutex<List>,
}

impl SlowReads {
    /// `held`: the cap of held-up bodies per address (shared by the workers); `after`: how
    /// long a body may wait on its client before it counts (`None`: bodies are not watched).
    pub fn new(held: Arc<Held>, after: Option<Duration>) -> Arc<Self> {
        let after = after.map(|a| {
            u32::try_from(a.as_secs().div_ceil(SWEEP.as_secs()).max(1)).unwrap_or(u32::MAX)
        });
        Arc::new(SlowReads {
            held,
            after,
            list: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, List> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching a body read by `reader`, which holds `permit` and whose upstream
    /// connection runs as `task`; `None` when bodies are not watched (the permit stays the
    /// caller's then).
    pub fn watch(
        self: &Arc<Self>,
        reader: IpAddr,
        permit: &mut Option<OwnedSemaphorePermit>,
        task: tokio::task::AbortHandle,
    ) -> Option<Arc<Tracked>> {
        self.after?;
        let tracked = Arc::new(Tracked {
            reader,
            polls: AtomicU64::new(1),
            upstream_turn: AtomicBool::new(false),
            client: Mutex::new(None),
            permit: Mutex::new(permit.take()),
            task,
        });
        let mut list = self.lock();
        list.watched.push(Watched {
            body: Arc::downgrade(&tracked),
            seen: 1,
            still: 0,
            share: None,
        });
        if !list.sweeping {
            list.sweeping = true;
            tokio::spawn(sweep_every(Arc::downgrade(self)));
        }
        Some(tracked)
    }

    /// One look at every watched body; false once none is left (the sweeper stops).
    fn sweep(&self) -> bool {
        let Some(after) = self.after else {
            return false;
        };
        let mut list = self.lock();
        list.watched.retain_mut(|w| {
            // Gone: its share goes with it.
            let Some(body) = w.body.upgrade() else {
                return false;
            };
            let polls = body.polls.load(Ordering::Relaxed);
            if polls != w.seen || body.upstream_turn.load(Ordering::Relaxed) {
                w.seen = polls;
                w.still = 0;
                w.share = None;
                return true;
            }
            w.still = w.still.saturating_add(1);
            if w.still < after || w.share.is_some() {
                return true;
            }
            match self.held.admit(Holder::Address(body.reader)) {
                Some(share) => {
                    w.share = Some(share);
                    true
                }
                None => {
                    tracing::info!(
                        client = %body.reader,
                        "a response its client reads too slowly was cut: the client holds its \
                         cap of held-up responses (connections.max_slow_reads_per_address)"
                    );
                    body.cut();
                    false
                }
            }
        });
        list.sweeping = !list.watched.is_empty();
        list.sweeping
    }
}

async fn sweep_every(slow: Weak<SlowReads>) {
    loop {
        tokio::time::sleep(SWEEP).await;
        match slow.upgrade() {
            Some(s) if s.sweep() => {}
            _ => return,
        }
    }
}
