//! What the requests waiting for an upstream place hold, against a budget per worker: while
//! every place under the cap is taken, requests queue holding their heads, and an HTTP/2
//! connection may queue 128 heads of up to 32 KiB each. Past the budget a request is refused at
//! once rather than queued ([`super::Upstream::place`]).
//!
//! Knows request heads only by their size; decides nothing about who waits.

/// What the requests waiting for a place hold, against a budget.
pub(super) struct Queue {
    bytes: std::sync::atomic::AtomicUsize,
    max: usize,
}

/// A request's part of the queue's budget, given back when it stops waiting.
pub(super) struct Queued<'a>(&'a Queue, usize);

impl Queue {
    pub(super) fn new(max: usize) -> Self {
        Queue {
            bytes: std::sync::atomic::AtomicUsize::new(0),
            max,
        }
    }

    /// A part of the budget for a head of `bytes`, unless the budget would be exceeded.
    pub(super) fn join(&self, bytes: usize) -> Option<Queued<'_>> {
        use std::sync::atomic::Ordering::Relaxed;
        self.bytes
            .fetch_update(Relaxed, Relaxed, |held| {
                held.checked_add(bytes).filter(|&after| after <= self.max)
            })
            .ok()
            .map(|_| Queued(self, bytes))
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0
            .bytes
            .fetch_sub(self.1, std::sync::atomic::Ordering::Relaxed);
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

    #[test]
    fn the_budget_is_held_while_waiting_and_given_back() {
        let q = Queue::new(100);
        let a = q.join(60).unwrap();
        assert!(q.join(50).is_none(), "over the budget");
        let b = q.join(40).unwrap();
        drop(a);
        let c = q.join(60).unwrap();
        drop((b, c));
        assert!(q.join(100).is_some(), "all given back");
    }
}
