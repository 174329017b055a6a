//! What the requests waiting for an upstream place hold, against a budget per worker: while
//! requests wait (every place taken, or their client holding its share of them), they queue
//! holding their heads, and an HTTP/2 connection may queue 128 heads of up to 32 KiB each.
//! Past the budget a request is refused at once rather than queued
//! ([`super::Upstream::place`]). One client may fill only its share of the budget, as of the
//! places: else a client at its share, whose further requests all wait, could fill the queue
//! and have everyone else's refused.
//!
//! Knows request heads only by their size, and clients only as opaque holders; decides
//! nothing about who waits.

use super::holders::Holder;
use std::collections::HashMap;
use std::sync::Mutex;

/// What the requests waiting for a place hold, against a budget.
pub(super) struct Queue {
    state: Mutex<State>,
    max: usize,
    /// The most one client's waiting heads may hold.
    max_per_client: usize,
}

#[derive(Default)]
struct State {
    bytes: usize,
    by_client: HashMap<Holder, usize>,
}

/// A request's part of the queue's budget, given back when it stops waiting.
pub(super) struct Queued<'a> {
    queue: &'a Queue,
    holder: Holder,
    bytes: usize,
}

impl Queue {
    /// A budget of `max` bytes, `share_percent` of it (at least one head's worth is up to the
    /// caller) for any one client.
    pub(super) fn new(max: usize, share_percent: u8) -> Self {
        Queue {
            state: Mutex::default(),
            max,
            max_per_client: max / 100 * usize::from(share_percent.min(100)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The counts stay consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A part of the budget for a head of `bytes` of `holder`'s, unless the budget, or the
    /// client's share of it, would be exceeded. Only requests that must wait come here.
    pub(super) fn join(&self, bytes: usize, holder: Holder) -> Option<Queued<'_>> {
        let mut s = self.lock();
        let total = s.bytes.checked_add(bytes).filter(|&t| t <= self.max)?;
        let mine = s.by_client.get(&holder).copied().unwrap_or(0);
        let mine = mine
            .checked_add(bytes)
            .filter(|&m| m <= self.max_per_client)?;
        s.bytes = total;
        s.by_client.insert(holder, mine);
        Some(Queued {
            queue: self,
            holder,
            bytes,
        })
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut s = self.queue.lock();
        s.bytes -= self.bytes;
        if let Some(mine) = s.by_client.get_mut(&self.holder) {
            *mine -= self.bytes;
            if *mine == 0 {
                s.by_client.remove(&self.holder);
            }
        }
    }
}

/// About what a request's head takes while it waits: its target, and each field with the
/// map's own overhead (~100 bytes an entry).
pub fn head_bytes(parts: &http::request::Parts) -> usize {
    let fields: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 100)
        .sum();
    parts.uri.path_and_query().map_or(0, |p| p.as_str().len()) + fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Holder = Holder::Session(1);
    const B: Holder = Holder::Session(2);

    #[test]
    fn the_budget_is_held_while_waiting_and_given_back() {
        let q = Queue::new(100, 100);
        let a = q.join(60, A).unwrap();
        assert!(q.join(50, B).is_none(), "over the budget");
        let b = q.join(40, B).unwrap();
        drop(a);
        let c = q.join(60, A).unwrap();
        drop((b, c));
        assert!(q.join(100, A).is_some(), "all given back");
    }

    #[test]
    fn one_client_fills_only_its_share_of_the_budget() {
        let q = Queue::new(1000, 75);
        let a: Vec<_> = (0..7).map(|_| q.join(100, A).unwrap()).collect();
        assert!(q.join(100, A).is_none(), "A's share is 750 bytes");
        let b = q.join(300, B).expect("the rest is for others");
        assert!(q.join(1, B).is_none(), "the whole budget is taken");
        drop(a);
        drop(b);
        let s = q.lock();
        assert_eq!((s.bytes, s.by_client.len()), (0, 0));
    }
}
