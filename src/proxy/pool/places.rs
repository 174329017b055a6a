//! The places under one worker's cap on upstream requests in flight, and who holds them.
//!
//! A client (a signed-in user, or an address without a session: [`Holder`]) holds at most its
//! share of a worker's places (`upstream_client_share_percent`); its requests beyond wait for one
//! of its own places to end, even while others are free. So one client whose requests the
//! backend answers slowly (a long LLM answer, an ingestion, or an attacker asking for those on
//! purpose) cannot hold every place: the rest stay for everyone else. While every place is
//! taken, requests wait in turn by client, not in one line: a place given back goes to the next
//! client in turn that is under its share, so one client's hundred waiting requests do not put
//! another's one behind them.
//!
//! Knows nothing of requests, users or addresses beyond the opaque holder; the upstream timeout
//! and the queue's memory budget are the caller's ([`crate::proxy::Upstream::place`]).

use crate::proxy::holders::Holder;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// One worker's places.
pub struct Places {
    /// Places one holder may hold at once (at least 1, at most every place).
    share: usize,
    state: Mutex<State>,
    /// Whether a request could have to wait now (no place free, or a holder at its share):
    /// read without the lock, to take a place before building what a request needs to be sent.
    tight: AtomicBool,
}

#[derive(Default)]
struct State {
    free: usize,
    /// Places held, by holder: a list, not a map, as it holds at most one entry per place and
    /// a request finds its holder's without hashing it.
    held: Vec<(Holder, usize)>,
    /// Holders that hold their share.
    at_share: usize,
    /// Requests waiting for a place, by holder, and the holders in turn.
    waiting: HashMap<Holder, VecDeque<oneshot::Sender<CapPermit>>>,
    turns: VecDeque<Holder>,
    /// Entries in `waiting`, including those whose request has stopped waiting (a timeout, a
    /// client gone), and the count at which those are cleared out.
    queued: usize,
    sweep_at: usize,
}

/// A place under the cap (or, once an event stream has left the cap, in the streams'
/// allowance); dropping it gives the place back.
pub struct CapPermit(Kind);

enum Kind {
    Cap(Option<Arc<Places>>, Holder),
    Stream(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit),
}

impl CapPermit {
    /// A place in the event streams' allowance.
    pub fn stream(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        CapPermit(Kind::Stream(permit))
    }

    /// Who holds this place under the cap (none in the streams' allowance).
    pub fn holder(&self) -> Option<Holder> {
        match &self.0 {
            Kind::Cap(_, holder) => Some(*holder),
            Kind::Stream(_) => None,
        }
    }
}

impl Drop for CapPermit {
    fn drop(&mut self) {
        if let Kind::Cap(places, holder) = &mut self.0 {
            if let Some(p) = places.take() {
                p.give_back(*holder);
            }
        }
    }
}

/// Who waits for a place, seen at one moment ([`Places::wanted`]).
pub struct Wanted {
    /// No place is free.
    full: bool,
    /// A request waits whose holder is under its share (it waits for a free place).
    under_share: bool,
    /// Holders at their share with a request waiting (for one of their own places).
    at_share: Vec<Holder>,
}

impl Wanted {
    /// Whether a place `holder` gave back would go to a waiting request at once: one of its
    /// own (at its share: free places or not, it waits for one of its own), or, with no place
    /// free, another's under its share.
    pub fn from(&self, holder: Holder) -> bool {
        self.at_share.contains(&holder) || (self.full && self.under_share)
    }
}

/// The first count at which waiting entries are cleared of requests no longer waiting.
const FIRST_SWEEP: usize = 64;

impl Places {
    /// `max` places (at least 1); one holder may hold `share_percent` of them (at least one).
    pub fn new(max: usize, share_percent: u8) -> Arc<Self> {
        let max = max.max(1);
        let share = (max * usize::from(share_percent.min(100)) / 100).clamp(1, max);
        Arc::new(Places {
            share,
            state: Mutex::new(State {
                free: max,
                sweep_at: FIRST_SWEEP,
                ..State::default()
            }),
            tight: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The counts stay consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for `holder` if it may take one now.
    pub fn try_take(self: &Arc<Self>, holder: Holder) -> Option<CapPermit> {
        let mut s = self.lock();
        let r = self.take_locked(&mut s, holder);
        self.note(&s);
        r
    }

    /// A place for `holder`: at once if it may take one, else once one is given to it. `Err`
    /// only if the places are gone (the pool with them).
    pub async fn take(self: &Arc<Self>, holder: Holder) -> Result<CapPermit, ()> {
        let rx = {
            let mut s = self.lock();
            if let Some(p) = self.take_locked(&mut s, holder) {
                self.note(&s);
                return Ok(p);
            }
            let (tx, rx) = oneshot::channel();
            let queue = s.waiting.entry(holder).or_default();
            let first = queue.is_empty();
            queue.push_back(tx);
            if first {
                s.turns.push_back(holder);
            }
            s.queued += 1;
            if s.queued >= s.sweep_at {
                s.sweep();
            }
            self.note(&s);
            rx
        };
        rx.await.map_err(|_| ())
    }

    /// Whether a request could have to wait now.
    pub fn is_tight(&self) -> bool {
        self.tight.load(Ordering::Relaxed)
    }

    /// Who waits now, to tell whose given-back place would go to a waiting request at once
    /// ([`Wanted::from`]). A place taken from a body held up by its client ([`super::slow`])
    /// is only worth taking then: freed for clients at their share, it would stay free.
    pub fn wanted(&self) -> Wanted {
        let s = self.lock();
        let mut w = Wanted {
            full: s.free == 0,
            under_share: false,
            at_share: Vec::new(),
        };
        for (h, queue) in &s.waiting {
            if !queue.iter().any(|tx| !tx.is_closed()) {
                continue;
            }
            let held = s.held.iter().find(|(x, _)| x == h).map_or(0, |(_, n)| *n);
            match held >= self.share {
                true => w.at_share.push(*h),
                false => w.under_share = true,
            }
        }
        w
    }

    fn take_locked(self: &Arc<Self>, s: &mut State, holder: Holder) -> Option<CapPermit> {
        if s.free == 0 {
            return None;
        }
        let held = s.held.iter().position(|(h, _)| *h == holder);
        if held.is_some_and(|i| s.held[i].1 >= self.share) {
            return None;
        }
        s.free -= 1;
        self.count(s, holder, held);
        Some(CapPermit(Kind::Cap(Some(self.clone()), holder)))
    }

    /// One more place held by `holder` (found at `at` in the list, if there).
    fn count(&self, s: &mut State, holder: Holder, at: Option<usize>) {
        let n = match at {
            Some(i) => {
                s.held[i].1 += 1;
                s.held[i].1
            }
            None => {
                s.held.push((holder, 1));
                1
            }
        };
        if n == self.share {
            s.at_share += 1;
        }
    }

    /// `holder` gives a place back: it goes to the next holder in turn that waits and is under
    /// its share, or is free.
    fn give_back(self: &Arc<Self>, mut holder: Holder) {
        loop {
            let (next, tx) = {
                let mut s = self.lock();
                if let Some(i) = s.held.iter().position(|(h, _)| *h == holder) {
                    if s.held[i].1 == self.share {
                        s.at_share -= 1;
                    }
                    s.held[i].1 -= 1;
                    if s.held[i].1 == 0 {
                        s.held.swap_remove(i);
                    }
                }
                let Some((next, tx)) = self.next_waiting(&mut s) else {
                    s.free += 1;
                    self.note(&s);
                    return;
                };
                let at = s.held.iter().position(|(h, _)| *h == next);
                self.count(&mut s, next, at);
                self.note(&s);
                (next, tx)
            };
            // Sent outside the lock: a request that stopped waiting meanwhile hands its place
            // back here, to the next in turn, without dropping a permit under the lock.
            match tx.send(CapPermit(Kind::Cap(Some(self.clone()), next))) {
                Ok(()) => return,
                Err(mut unsent) => {
                    if let Kind::Cap(places, _) = &mut unsent.0 {
                        places.take();
                    }
                    holder = next;
                }
            }
        }
    }

    /// The next waiting request in turn whose holder is under its share.
    fn next_waiting(&self, s: &mut State) -> Option<(Holder, oneshot::Sender<CapPermit>)> {
        // Each holder in turn is looked at once at most: those at their share go to the back.
        for _ in 0..s.turns.len() {
            let holder = s.turns.pop_front()?;
            let at_share = s.held.iter().any(|(h, n)| *h == holder && *n >= self.share);
            let Some(queue) = s.waiting.get_mut(&holder) else {
                continue;
            };
            let before = queue.len();
            while queue.front().is_some_and(|tx| tx.is_closed()) {
                queue.pop_front();
            }
            let gone = before - queue.len();
            let tx = match at_share {
                true => None,
                false => queue.pop_front(),
            };
            let left = !queue.is_empty();
            s.queued -= gone + usize::from(tx.is_some());
            if left {
                s.turns.push_back(holder);
            } else {
                s.waiting.remove(&holder);
                if s.waiting.is_empty() {
                    s.shrink();
                }
            }
            if let Some(tx) = tx {
                return Some((holder, tx));
            }
        }
        None
    }

    fn note(&self, s: &State) {
        self.tight
            .store(s.free == 0 || s.at_share > 0, Ordering::Relaxed);
    }
}

impl State {
    /// Clears out the requests no longer waiting, and sets the next count to do it at: twice
    /// what is left, so the work is paid for by the entries that made it necessary.
    fn sweep(&mut self) {
        let mut left = 0;
        self.waiting.retain(|_, q| {
            q.retain(|tx| !tx.is_closed());
            left += q.len();
            !q.is_empty()
        });
        let waiting = &self.waiting;
        self.turns.retain(|h| waiting.contains_key(h));
        self.queued = left;
        self.sweep_at = (left * 2).max(FIRST_SWEEP);
        if self.waiting.is_empty() {
            self.shrink();
        }
    }

    /// Nobody waits: the tables a spike of waiting clients grew go back to a small size.
    fn shrink(&mut self) {
        if self.waiting.capacity() > FIRST_SWEEP {
            self.waiting.shrink_to(FIRST_SWEEP);
        }
        if self.turns.capacity() > FIRST_SWEEP {
            self.turns.shrink_to(FIRST_SWEEP);
        }
    }
}

#[cfg(test)]
#[path = "places_tests.rs"]
mod tests;
