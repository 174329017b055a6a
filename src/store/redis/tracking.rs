//! A client-side cache of Redis reads that Redis itself keeps coherent: server-assisted
//! client-side caching (RESP3 `CLIENT TRACKING`). With it, a request whose session this worker
//! has already read costs no Redis round trip, yet a logout or revocation on any replica is
//! seen as soon as it reaches the replica: Redis pushes an invalidation for every key a tracked
//! connection has read, the moment the key is written, deleted or expires.
//!
//! One [`Slot`] per worker thread: its own RESP3 connection (driven by that worker's runtime,
//! so no cross-thread wake-up) and its own entries. A slot serves from its cache only while its
//! tracked connection is up and *verified*: an answer on that connection to a command sent at
//! instant T proves that every invalidation Redis queued before T has arrived and been applied
//! (replies and pushes share the connection, in order). A PING every [`HEALTH_INTERVAL`] keeps
//! the proof fresh; the cache is used only while the last proof is younger than
//! [`VERIFIED_FOR`]. So even when Redis hangs or the network drops packets without closing the
//! connection, no cached value is older than that bound. When the connection ends or fails a
//! command, the entries are dropped and reads go through the ordinary connection.
//!
//! Races, and why they are safe. An invalidation can arrive between a miss's `GET` reply and the
//! moment the reader stores the value. Every slot has a generation, bumped by every
//! invalidation, disconnection and local write; a value is stored only if the generation is
//! still the one seen before the `GET` was sent. Invalidations are applied inside the
//! connection's reader, in order with the replies, so "reply, then invalidation" always either
//! removes the stored value or prevents its storing. Before serving an entry it holds, a read
//! yields once to its runtime, which polls its sockets before resuming it: an invalidation
//! already in the worker's socket is applied first (best effort: it relies on the scheduler's
//! order).
//!
//! Admission. A key is read through the tracked connection, and kept, only the third time
//! this worker misses it lately, and only if the first two (ordinary) reads found it: a small
//! table of recent misses remembers the keys found, and how often. Tracking is not free: Redis records every key a
//! tracked connection reads, found or not, in a table that grows with the keys read (and evicts
//! with invalidations past `tracking-table-max-keys`, emptying every replica's cache), and the
//! read asks for the TTL too. A session seen once, as most are when millions are spread over a
//! few replicas, is read the ordinary way: one `GET`, nothing tracked, nothing kept here; a
//! made-up session id, however often it is sent, is never tracked.
//!
//! What this must not do: serve anything while its connection is down, hold anything that did
//! not come from Redis, or be used by code that has just taken a lock in Redis and needs the
//! latest value (the refresh): those read with `get_fresh`.

use crate::per_worker::PerWorker;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// How often a slot's tracked connection is checked with a `PING`.
const HEALTH_INTERVAL: Duration = Duration::from_millis(250);

/// How long an answer on the tracked connection vouches for the cache (see the module doc):
/// the most a cached value can lag behind Redis when invalidations stop arriving.
pub const VERIFIED_FOR: Duration = Duration::from_secs(1);

/// How long a slot waits before trying to connect again after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Ordinary reads that must have found a key lately before its next miss is read through the
/// tracked connection (and kept). Two, not one: when sessions far outnumber the cache and are
/// used evenly, a key read twice within the admission table's memory is mostly chance (the
/// birthday bound: 7.6 % of requests at 100k sessions), and each such tracked read cost a
/// tracking entry in Redis and a slower pipeline for a value almost never read again; a key
/// read three times is in use.
const FOUND_BEFORE_TRACKING: u64 = 2;

pub struct Tracking {
    client: redis::Client,
    timeout: Duration,
    capacity: usize,
    /// One per worker thread, and a last one for callers off the workers.
    slots: PerWorker<Arc<Slot>>,
}

#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    /// Reads answered from the cache, and the others (this worker's only: no sharing).
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct SlotState {
    /// The tracked connection, while it is up and tracking.
    conn: Option<(u64, MultiplexedConnection)>,
    /// Identifies connections, so a late event of an old one cannot end a newer one.
    next_id: u64,
    connecting: bool,
    generation: u64,
    /// Values with the instant their key expires in Redis (`None`: no TTL). Redis announces
    /// an expiry only when it gets round to deleting the key, so the deadline is kept here.
    entries: HashMap<String, (Bytes, Option<Instant>)>,
    /// Recent misses: a key is tracked and kept the second time (see the module doc).
    admission: crate::per_worker::Admission,
    /// The send time of the latest command answered on the current connection.
    verified_at: Option<Instant>,
    /// The last connection reported gone, in case that happens before it is installed.
    dead: Option<u64>,
    /// No connection attempt before this (after a failed one).
    retry_at: Option<tokio::time::Instant>,
    /// Set once Redis refused `CLIENT TRACKING` (an old server, an ACL): no further attempts.
    refused: bool,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // Each critical section is one map operation: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a message Redis pushed to connection `id`.
    fn on_push(&self, id: u64, push: &PushInfo) {
        let mut st = self.lock();
        match push.kind {
            PushKind::Invalidate => {
                st.generation += 1;
                let Some(Value::Array(keys)) = push.data.first() else {
                    // FLUSHALL / FLUSHDB, or a shape we do not know: forget everything.
                    st.entries.clear();
                    return;
                };
                let keys = keys.iter().filter_map(|k| match k {
                    Value::BulkString(k) => std::str::from_utf8(k).ok(),
                    _ => None,
                });
                for k in keys {
                    st.entries.remove(k);
                }
            }
            PushKind::Disconnection => {
                st.dead = Some(id);
                st.drop_conn(id);
            }
            _ => {}
        }
    }
}

impl SlotState {
    fn is_current(&self, id: u64) -> bool {
        self.conn.as_ref().is_some_and(|c| c.0 == id)
    }

    /// Stops serving from the cache: the connection `id` is gone.
    fn drop_conn(&mut self, id: u64) {
        self.generation += 1;
        self.entries.clear();
        if self.is_current(id) {
            self.conn = None;
            self.verified_at = None;
        }
    }

    /// Connection `id` answered a command sent at `sent`.
    fn verified(&mut self, id: u64, sent: Instant) {
        if self.is_current(id) {
            self.verified_at = Some(self.verified_at.map_or(sent, |v| v.max(sent)));
        }
    }
}

impl Tracking {
    /// `client` must speak RESP3; `slots` is the number of worker threads.
    pub fn new(client: redis::Client, timeout: Duration, capacity: usize, slots: usize) -> Self {
        Tracking {
            client,
            timeout,
            capacity: capacity.max(1),
            slots: PerWorker::new(slots, Arc::default),
        }
    }

    fn slot(&self) -> &Arc<Slot> {
        self.slots.get()
    }

    /// Drops this worker's tracked connection, and with it the entries it kept coherent: its
    /// server turned out to be a replica (a failover behind the same address), which may lag
    /// or have lost its master. The next read opens one again, to whatever the address is now.
    pub fn reconnect(&self) {
        let mut st = self.slot().lock();
        if let Some(id) = st.conn.as_ref().map(|(id, _)| *id) {
            st.drop_conn(id);
        }
    }

    /// Reads answered from the cache and reads that were not, summed over the workers.
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.slots.all().fold((0, 0), |(h, m), s| {
            (h + s.hits.load(Relaxed), m + s.misses.load(Relaxed))
        })
    }

    /// The value of `key` from the cache or through the tracked connection. `None` when this
    /// worker's tracked connection is not up (yet), or the key is not admitted (missed for the
    /// first time lately): the caller reads the ordinary way.
    pub async fn get(&self, key: &str) -> Option<Option<Bytes>> {
        let (value, hit) = self.lookup(key).await;
        let slot = self.slot();
        let counter = if hit { &slot.hits } else { &slot.misses };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        value
    }

    /// [`Tracking::get`], and whether the cache answered.
    async fn lookup(&self, key: &str) -> (Option<Option<Bytes>>, bool) {
        let slot = self.slot();
        // One look at the entries (hashing the key costs as much as the rest of a hit), with
        // the generation it was taken at: unchanged later, nothing was invalidated meanwhile.
        let early = {
            let st = slot.lock();
            let entry = st.conn.as_ref().and(st.entries.get(key));
            (
                entry.map(|(v, expires)| (v.clone(), *expires)),
                st.generation,
            )
        };
        if early.0.is_some() {
            // Let this worker's runtime poll its sockets first: the runtime resumes a yielded
            // task only after it has polled the I/O driver and run the tasks that woke, the
            // tracked connection's reader among them. So every invalidation that had reached
            // this worker when the request got here is applied before the entry is served.
            // Only when there is an entry to serve: invalidations remove entries, so a key
            // without one has nothing to wait for, and a miss does not pay for a reschedule.
            tokio::task::yield_now().await;
        }
        let (mut conn, id, generation) = {
            let mut st = slot.lock();
            if st.conn.is_none() {
                let due = st.retry_at.is_none_or(|t| t <= tokio::time::Instant::now());
                if due && !st.connecting && !st.refused {
                    st.connecting = true;
                    tokio::spawn(connect(slot.clone(), self.client.clone(), self.timeout));
                }
                return (None, false);
            }
            let now = Instant::now();
            if st.verified_at.is_none_or(|v| now >= v + VERIFIED_FOR) {
                // No recent proof that invalidations arrive: ask Redis the ordinary way.
                return (None, false);
            }
            let entry = match early {
                (entry, seen) if seen == st.generation => entry,
                // Something changed meanwhile (an invalidation, a write): look again.
                _ => st
                    .entries
                    .get(key)
                    .map(|(v, expires)| (v.clone(), *expires)),
            };
            match entry {
                Some((v, expires)) if expires.is_none_or(|e| now < e) => {
                    return (Some(Some(v)), true);
                }
                Some(_) => {
                    st.entries.remove(key);
                }
                None => {}
            }
            if !st.admission.remembered(key, FOUND_BEFORE_TRACKING) {
                // Not found by an ordinary read lately: read the ordinary way, untracked, and
                // keep nothing ([`Tracking::found`]).
                return (None, false);
            }
            let Some((id, conn)) = st.conn.clone() else {
                return (None, false);
            };
            (conn, id, st.generation)
        };
        // A miss: read through the tracked connection, so Redis tracks the key for us.
        let mut read = redis::pipe();
        read.cmd("GET").arg(key).cmd("PTTL").arg(key);
        let asked = Instant::now();
        let reply = read.query_async::<(Option<Vec<u8>>, i64)>(&mut conn);
        match tokio::time::timeout(self.timeout, reply).await {
            Ok(Ok((value, pttl))) => {
                let value = value.map(Bytes::from);
                let mut st = slot.lock();
                st.verified(id, asked);
                // PTTL: milliseconds left, counted from before the ask; -1 without a TTL; -2
                // when the key went between the two commands (then nothing is stored).
                let expires = match pttl {
                    -1 => Some(None),
                    ms if ms > 0 => u64::try_from(ms)
                        .ok()
                        .map(|ms| Some(asked + Duration::from_millis(ms))),
                    _ => None,
                };
                if let (Some(v), Some(expires)) = (&value, expires) {
                    if st.generation == generation && st.is_current(id) {
                        if st.entries.len() >= self.capacity {
                            crate::per_worker::evict_some(&mut st.entries);
                        }
                        st.entries.insert(key.to_owned(), (v.clone(), expires));
                    }
                }
                (Some(value), false)
            }
            _ => {
                slot.lock().drop_conn(id);
                (None, false)
            }
        }
    }

    /// After an ordinary read of `key` (untracked, the cache's answer was `None`) found a
    /// value: this worker's next miss of it is read through the tracked connection and kept.
    /// Only keys that exist are admitted: Redis tracks every key a tracked connection reads,
    /// found or not, so admitting made-up session ids (any client can send them, twice) would
    /// fill its tracking table, whose evictions invalidate every replica's cache.
    pub fn found(&self, key: &str) {
        self.slot().lock().admission.remember(key, self.capacity);
    }

    /// Forgets `key` in every slot (after a write from this process): the writer's own next
    /// read must not wait for Redis's invalidation to arrive.
    pub fn forget(&self, key: &str) {
        for slot in self.slots.all() {
            let mut st = slot.lock();
            st.generation += 1;
            st.entries.remove(key);
        }
    }

    /// Entries held by all slots (tests and diagnostics).
    pub fn len(&self) -> usize {
        self.slots.all().map(|s| s.lock().entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

mod connection;
use connection::connect;

#[cfg(test)]
mod tests;
