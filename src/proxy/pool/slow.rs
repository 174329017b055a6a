//! Responses held up by their clients. A response body holds its upstream connection and its
//! place under the worker's cap until the client has taken all of it; a client that reads a
//! few bytes a second (slowhttptest's "slow read") makes enough progress for the send deadline
//! yet holds the place for hours, and a few hundred such reads from one address would hold every
//! place of every worker (nginx buffers responses to disk; the sidecar streams them).
//!
//! So a body of more than one frame is watched once its first frame is out. A body whose
//! client has not asked for more for a second is handed its data in slices of [`SLICE`] from
//! then on (what its client takes then shows, however large the upstream's reads); one whose
//! client took less than a slice in `after` counts as held up, and takes a share of its
//! reader's cap of such bodies ([`Held`], by client address). While a request waits that its
//! place would go to ([`Places::wanted`]), a held-up body over its address's cap is cut: its
//! upstream connection closed, its place given back, its client's answer ended as broken (an
//! error, never a clean end). A body waiting on its upstream (an LLM thinking between tokens) holds
//! nothing up, whatever its client does (it is the upstream side's waker, so it knows whose
//! turn it is); a legitimate slow download beyond the cap is cut only under that pressure.
//!
//! One sweep a second per worker while bodies are watched; the request path only counts polls.
//! Knows nothing of HTTP beyond the body it is handed.

use super::{CapPermit, Places};
use crate::proxy::holders::{Held, Holder, Share};
use prometheus_client::metrics::counter::Counter;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// How often the bodies are looked at.
const SWEEP: Duration = Duration::from_secs(1);

/// What a body's client must take in `slow_read_secs`, at least, not to hold it up: one slice.
const FLOOR: u64 = SLICE as u64;

/// The most of a frame a body hands over at once once its client has been found slow: hyper
/// asks for the next frame only when the last is taken, and the upstream's reads grow to
/// hundreds of KiB, so without slices a client taking 50 KiB/s would look held up, and one
/// taking a few bytes at a time of a stream of small chunks would look busy.
pub const SLICE: usize = 16 * 1024;

/// A watched body, shared by the body (which counts its polls) and the sweeper. It is also the
/// waker the body's upstream side wakes: a body whose last poll found nothing is waiting on
/// the upstream until the upstream wakes it, and on its client after that.
pub struct Tracked {
    reader: IpAddr,
    polls: AtomicU64,
    /// Bytes handed over to the client's side.
    bytes: AtomicU64,
    /// Found waiting on its client once: hands data over in slices from now on.
    slice: AtomicBool,
    /// Asked the upstream for more, which has not come yet: waiting on it, not on the client.
    upstream_turn: AtomicBool,
    /// The waker of whoever polls the body (the client connection), woken in turn.
    client: Mutex<Option<Waker>>,
    /// The body's place under the cap, given back with the body, or when it is cut.
    permit: Mutex<Option<CapPermit>>,
    /// The upstream connection's task, aborted to cut the body; `None` once the body is gone
    /// (its connection may serve another request).
    task: Mutex<Option<tokio::task::AbortHandle>>,
    cut: AtomicBool,
}

impl Tracked {
    /// Polls the body's upstream side `poll` with `upstream` (this watch as a waker), on
    /// behalf of `cx`.
    pub fn poll<T>(
        &self,
        cx: &Context<'_>,
        upstream: &Waker,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        {
            let mut client = self.client.lock().unwrap_or_else(|p| p.into_inner());
            if !client.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *client = Some(cx.waker().clone());
            }
        }
        let r = poll(&mut Context::from_waker(upstream));
        self.upstream_turn.store(r.is_pending(), Ordering::Relaxed);
        r
    }

    /// Another slice of a frame handed over, `n` bytes: a poll, whoever's turn it was.
    pub fn polled_with(&self, n: usize) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.upstream_turn.store(false, Ordering::Relaxed);
        self.handed(n);
    }

    /// `n` bytes of data handed over.
    pub fn handed(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Whether to hand data over in slices of [`SLICE`].
    pub fn slices(&self) -> bool {
        self.slice.load(Ordering::Relaxed)
    }

    /// Who holds the body's place under the cap, while it has one.
    fn holder(&self) -> Option<Holder> {
        let permit = self.permit.lock().unwrap_or_else(|p| p.into_inner());
        permit.as_ref().and_then(CapPermit::holder)
    }

    pub fn take_permit(&self) -> Option<CapPermit> {
        self.permit.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    /// The body is gone: nothing of it is left to cut, and its place (unless handed on with
    /// the request body) is given back now, not when hyper lets go of its waker.
    pub fn retire(&self) {
        self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(self.take_permit());
    }

    fn is_retired(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// Cuts the body: its upstream connection closed, its place given back, its next poll an
    /// error; false when it was gone already.
    fn cut(&self) -> bool {
        let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return false;
        };
        self.cut.store(true, Ordering::Relaxed);
        task.abort();
        drop(self.take_permit());
        // Its client may be asking for more now: let it find the error.
        let client = self.client.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = client {
            w.wake();
        }
        true
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
    /// Swept once: its first sweep only starts its time.
    started: bool,
    /// Polls at the last sweep.
    seen: u64,
    /// Bytes handed over when this window began, and the sweeps since.
    from: u64,
    sweeps: u32,
    share: Option<Share>,
}

#[derive(Default)]
struct List {
    watched: Vec<Watched>,
    sweeping: bool,
}

/// One worker's watched bodies.
pub struct SlowReads {
    /// Its refusals are not counted: a body over its cap is cut only under pressure.
    held: Arc<Held>,
    /// Bodies cut.
    cut: Counter,
    /// Sweeps a body may wait on its client before it needs a share (`None`: no watch).
    after: Option<u32>,
    list: Mutex<List>,
    /// The pool's places under its cap: a held-up response is cut only for a request waiting
    /// that its place would go to.
    places: OnceLock<Arc<Places>>,
}

impl SlowReads {
    /// `held`: the cap of held-up bodies per address (shared by the workers); `after`: how
    /// long a body may wait on its client before it counts (`None`: bodies are not watched).
    pub fn new(held: Arc<Held>, after: Option<Duration>, cut: Counter) -> Arc<Self> {
        let after = after.map(|a| {
            u32::try_from(a.as_secs().div_ceil(SWEEP.as_secs()).max(1)).unwrap_or(u32::MAX)
        });
        Arc::new(SlowReads {
            held,
            cut,
            after,
            list: Mutex::default(),
            places: OnceLock::new(),
        })
    }

    /// The places of the pool whose bodies these are (set once, by the pool).
    pub fn places(&self, places: Arc<Places>) {
        let _ = self.places.set(places);
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
        permit: &mut Option<CapPermit>,
        task: tokio::task::AbortHandle,
    ) -> Option<Arc<Tracked>> {
        self.after?;
        let tracked = Arc::new(Tracked {
            reader,
            polls: AtomicU64::new(1),
            bytes: AtomicU64::new(0),
            slice: AtomicBool::new(false),
            upstream_turn: AtomicBool::new(false),
            client: Mutex::new(None),
            permit: Mutex::new(permit.take()),
            task: Mutex::new(Some(task)),
            cut: AtomicBool::new(false),
        });
        let mut list = self.lock();
        list.watched.push(Watched {
            body: Arc::downgrade(&tracked),
            started: false,
            seen: 0,
            from: 0,
            sweeps: 0,
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
        let mut cut = Vec::new();
        let mut wanted = None;
        let mut list = self.lock();
        list.watched.retain_mut(|w| {
            // Gone (or its body is, while hyper still holds its waker): its share goes with it.
            let Some(body) = w.body.upgrade().filter(|b| !b.is_retired()) else {
                return false;
            };
            let (polls, bytes) = (
                body.polls.load(Ordering::Relaxed),
                body.bytes.load(Ordering::Relaxed),
            );
            if !std::mem::replace(&mut w.started, true) {
                (w.seen, w.from) = (polls, bytes);
                return true;
            }
            let asked = std::mem::replace(&mut w.seen, polls) != polls;
            if body.upstream_turn.load(Ordering::Relaxed) {
                // Waiting on its upstream: whatever its client does, it holds nothing up.
                (w.from, w.sweeps, w.share) = (bytes, 0, None);
                return true;
            }
            if !asked {
                // Its client has not asked for more for a second: from now on it is handed
                // data in slices, so that what its client takes shows.
                body.slice.store(true, Ordering::Relaxed);
            }
            w.sweeps = w.sweeps.saturating_add(1);
            if w.sweeps < after {
                return true;
            }
            if bytes.saturating_sub(w.from) >= FLOOR {
                // Its client took enough this window: a new one begins.
                (w.from, w.sweeps, w.share) = (bytes, 0, None);
                return true;
            }
            if w.share.is_some() {
                return true;
            }
            if let Some(share) = self.held.admit(Holder::Address(body.reader)) {
                w.share = Some(share);
                return true;
            }
            // Over its address's cap: cut while a request waits that its place would go to (a
            // legitimate slow download beyond the cap costs nobody anything until then, and
            // nor does it while the only requests waiting are of clients at their share).
            // Looked at once a sweep, and again after a cut (which served a waiting request):
            // not once per body, under the locks requests take.
            let Some(places) = self.places.get() else {
                return true;
            };
            let now = wanted.get_or_insert_with(|| places.wanted());
            if !body.holder().is_some_and(|h| now.from(h)) {
                return true;
            }
            if body.cut() {
                self.cut.inc();
                cut.push(body.reader);
                wanted = None;
            }
            false
        });
        list.sweeping = !list.watched.is_empty();
        let sweeping = list.sweeping;
        drop(list);
        for client in cut {
            tracing::info!(
                %client,
                "a response its client held up was cut to free its upstream place: the \
                 client's address holds its cap of held-up responses \
                 (connections.max_slow_reads_per_address)"
            );
        }
        sweeping
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
