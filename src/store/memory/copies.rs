//! Each worker's own copies of the byte values it reads often from the memory store, so that a
//! request whose session is hot touches no lock and no reference count that another core
//! writes. With one busy session on two workers, the shard's mutex and the value's reference
//! count went back and forth between the cores on every request, and the memory store was
//! slower than Redis behind its client-side cache, whose copies are per worker already.
//!
//! Coherence without messages: a stored value carries a flag, shared with every copy of it,
//! that is cleared when the value is dropped from the store (replaced, deleted, expired and
//! purged: every way out of the map drops it). A copy is served only while its flag is set and
//! its deadline (the store entry's) has not passed; otherwise it is dropped and the store read.
//! A write is therefore seen by every worker's next read, as with the lock alone.
//!
//! What this must not do: serve a copy whose flag is cleared or whose deadline has passed, keep
//! a value read only once lately (see [`Admission`]), or hold more than its capacity.

use crate::per_worker::{evict_some, Admission, PerWorker};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::time::Instant;

/// Copies each worker keeps at most (about 1.9 KB for a typical session, so ~2 MB a worker).
pub const PER_WORKER: usize = 1024;

/// A byte value in the store, with the flag its copies watch.
pub(super) struct Shared {
    pub bytes: Bytes,
    alive: Arc<AtomicBool>,
}

impl Shared {
    pub fn new(bytes: Bytes) -> Self {
        Shared {
            bytes,
            alive: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Release: a reader that sees the flag cleared also sees the map without this value.
        self.alive.store(false, Ordering::Release);
    }
}

struct Copy {
    bytes: Bytes,
    expires: Instant,
    alive: Arc<AtomicBool>,
}

#[derive(Default)]
pub(super) struct Worker {
    copies: HashMap<String, Copy>,
    admission: Admission,
}

impl Worker {
    /// This worker's copy of `key`, if it may still be served.
    pub fn live(&mut self, key: &str, now: Instant) -> Option<Bytes> {
        match self.copies.get(key) {
            Some(c) if now < c.expires && c.alive.load(Ordering::Acquire) => {
                return Some(c.bytes.clone())
            }
            Some(_) => {
                self.copies.remove(key);
            }
            None => {}
        }
        None
    }

    /// The value to hand out for `key`, read from the store under its shard's lock: a copy of
    /// this worker's own when the key missed here before, lately; the store's otherwise.
    pub fn read(&mut self, key: &str, value: &Shared, expires: Instant) -> Bytes {
        if !self.admission.seen_before(key, PER_WORKER) {
            return value.bytes.clone();
        }
        if self.copies.len() >= PER_WORKER {
            evict_some(&mut self.copies);
        }
        let bytes = Bytes::copy_from_slice(&value.bytes);
        let copy = Copy {
            bytes: bytes.clone(),
            expires,
            alive: value.alive.clone(),
        };
        self.copies.insert(key.to_owned(), copy);
        bytes
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.copies.len()
    }
}

/// Every worker's copies.
pub(super) struct Copies(PerWorker<Mutex<Worker>>);

impl Copies {
    pub fn new(workers: usize) -> Self {
        Copies(PerWorker::new(workers, Mutex::default))
    }

    /// The calling worker's copies. Taken before a shard's lock, never after: writers take
    /// only shard locks, so the order is the same everywhere.
    pub fn mine(&self) -> MutexGuard<'_, Worker> {
        // Each critical section is one map operation: a poisoned lock is still consistent.
        self.0.get().lock().unwrap_or_else(|p| p.into_inner())
    }
}
