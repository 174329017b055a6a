//! In-memory backend for a single replica: a map split into [`SHARDS`] shards by key hash, each
//! behind a `std::sync::Mutex`, so requests of different sessions on different cores do not
//! wait on one lock; and, in front of it, each worker's copies of the values it reads often
//! ([`copies`]), so requests of the same session on different cores do not share one either.
//!
//! A std mutex, not tokio's: no `.await` happens while it is held, and critical sections are a
//! hash lookup. Expired entries are dropped lazily on access and by [`MemoryStore::purge`],
//! which the caller runs periodically so abandoned sessions do not accumulate.

mod copies;

use bytes::Bytes;
use copies::{Copies, Shared};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
// tokio's clock: paused-time tests drive the TTLs; in production it is the monotonic clock.
use tokio::time::Instant;

enum Value {
    /// Shared bytes: a read hands out a reference-counted handle (or the worker's copy).
    Bytes(Shared),
    /// An index: each member with the instant it expires ([`MemoryStore::index_add`]).
    Index(HashMap<String, Instant>),
    /// A fixed-window counter ([`MemoryStore::count`]).
    Count(u64),
}

impl Value {
    /// A byte value of its own (not sharing the caller's buffer), with its copies' flag.
    fn bytes(value: &[u8]) -> Self {
        Value::Bytes(Shared::new(Bytes::copy_from_slice(value)))
    }
}

struct Entry {
    value: Value,
    expires: Instant,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.expires <= now
    }
}

/// `now + ttl`, or a century from now for a TTL the clock cannot represent (never a panic).
fn deadline(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

/// Shards of the map: enough that cores rarely meet on one lock, few enough that a purge
/// walking them all stays cheap.
pub const SHARDS: usize = 64;

type Shard = Mutex<HashMap<String, Entry>>;

pub struct MemoryStore {
    shards: Box<[Shard]>,
    copies: Copies,
    /// Keys are spread by this hasher's seed (random per store: no one can aim keys at one
    /// shard).
    hasher: std::collections::hash_map::RandomState,
}

/// A shard's map; a panic while holding its lock cannot leave an entry half-written (each
/// operation is a single insert/remove), so a poisoned map is still consistent.
fn guard(shard: &Shard) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_workers(1)
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store read by `workers` worker threads, each keeping its own copies.
    pub fn with_workers(workers: usize) -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            copies: Copies::new(workers),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The shard holding `key`, locked.
    fn lock(&self, key: &str) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        use std::hash::BuildHasher;
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        guard(&self.shards[i])
    }

    fn live<'a>(
        map: &'a mut HashMap<String, Entry>,
        key: &str,
        now: Instant,
    ) -> Option<&'a mut Entry> {
        if map.get(key).is_some_and(|e| e.expired(now)) {
            map.remove(key);
        }
        map.get_mut(key)
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        let now = Instant::now();
        let mut mine = self.copies.mine();
        if let Some(copy) = mine.live(key, now) {
            return Some(copy);
        }
        let mut map = self.lock(key);
        // One lookup on the path every request takes (`live` hashes the key twice).
        match map.get(key) {
            Some(e) if !e.expired(now) => match &e.value {
                Value::Bytes(b) => Some(mine.read(key, b, e.expires)),
                _ => None,
            },
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, key: &str, value: &[u8], ttl: Duration) {
        let entry = Entry {
            value: Value::bytes(value),
            expires: deadline(Instant::now(), ttl),
        };
        self.lock(key).insert(key.to_owned(), entry);
    }

    pub fn put_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> bool {
        let now = Instant::now();
        let mut map = self.lock(key);
        if Self::live(&mut map, key, now).is_some() {
            return false;
        }
        map.insert(
            key.to_owned(),
            Entry {
                value: Value::bytes(value),
                expires: deadline(now, ttl),
            },
        );
        true
    }

    pub fn touch(&self, key: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut map = self.lock(key);
        match Self::live(&mut map, key, now) {
            // The workers' copies keep the deadline they were read with: an earlier one, so
            // they are read again sooner, never served longer than the value lives.
            Some(e) => {
                e.expires = deadline(now, ttl);
                true
            }
            None => false,
        }
    }

    pub fn replace_if(&self, key: &str, expected: &[u8], value: &[u8], ttl: Duration) -> bool {
        let now = Instant::now();
        let mut map = self.lock(key);
        match Self::live(&mut map, key, now) {
            Some(e) if matches!(&e.value, Value::Bytes(b) if b.bytes.as_ref() == expected) => {
                *e = Entry {
                    value: Value::bytes(value),
                    expires: deadline(now, ttl),
                };
                true
            }
            _ => false,
        }
    }

    pub fn delete_if(&self, key: &str, value: &[u8]) -> bool {
        let mut map = self.lock(key);
        let matches = matches!(
            Self::live(&mut map, key, Instant::now()),
            Some(Entry { value: Value::Bytes(b), .. }) if b.bytes.as_ref() == value
        );
        if matches {
            map.remove(key);
        }
        matches
    }

    pub fn delete(&self, key: &str) -> bool {
        let mut map = self.lock(key);
        let existed = Self::live(&mut map, key, Instant::now()).is_some();
        map.remove(key);
        existed
    }

    /// A counter that lives `window` from its first hit: the count after this hit (`hit`) or
    /// as it is, and the time left in its window.
    pub fn count(&self, key: &str, window: Duration, hit: bool) -> (u64, Duration) {
        let now = Instant::now();
        let mut map = self.lock(key);
        let (n, expires) = match Self::live(&mut map, key, now) {
            Some(Entry {
                value: Value::Count(n),
                expires,
            }) => (*n, *expires),
            _ => (0, deadline(now, window)),
        };
        if !hit {
            return (n, expires.saturating_duration_since(now));
        }
        let n = n.saturating_add(1);
        map.insert(
            key.to_owned(),
            Entry {
                value: Value::Count(n),
                expires,
            },
        );
        (n, expires.saturating_duration_since(now))
    }

    /// Adds `member` to `index` for `ttl`, dropping the members whose time is over (an index
    /// holds the sessions that may still live, however many logins keep it alive); the index
    /// lives at least `ttl`.
    pub fn index_add(&self, index: &str, member: &str, ttl: Duration) {
        let now = Instant::now();
        let mut map = self.lock(index);
        let expires = deadline(now, ttl);
        match Self::live(&mut map, index, now) {
            Some(Entry {
                value: Value::Index(members),
                expires: e,
            }) => {
                members.retain(|_, until| *until > now);
                members.insert(member.to_owned(), expires);
                *e = (*e).max(expires);
            }
            _ => {
                let members = HashMap::from([(member.to_owned(), expires)]);
                map.insert(
                    index.to_owned(),
                    Entry {
                        value: Value::Index(members),
                        expires,
                    },
                );
            }
        }
    }

    /// The members of `index`, the first to expire first.
    pub fn index_oldest_first(&self, index: &str) -> Vec<String> {
        let mut map = self.lock(index);
        let Some(Entry {
            value: Value::Index(m),
            ..
        }) = Self::live(&mut map, index, Instant::now())
        else {
            return Vec::new();
        };
        let mut by_expiry: Vec<(Instant, String)> =
            m.iter().map(|(k, until)| (*until, k.clone())).collect();
        by_expiry.sort();
        by_expiry.into_iter().map(|(_, k)| k).collect()
    }

    pub fn index_members(&self, index: &str) -> Vec<String> {
        let mut map = self.lock(index);
        match Self::live(&mut map, index, Instant::now()).map(|e| &e.value) {
            Some(Value::Index(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    pub fn index_remove(&self, index: &str, member: &str) {
        let mut map = self.lock(index);
        if let Some(Entry {
            value: Value::Index(m),
            ..
        }) = Self::live(&mut map, index, Instant::now())
        {
            m.remove(member);
            if m.is_empty() {
                map.remove(index);
            }
        }
    }

    /// Drops every expired entry; returns how many were dropped.
    pub fn purge(&self) -> usize {
        let now = Instant::now();
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut map = guard(shard);
            let before = map.len();
            map.retain(|_, e| e.expires > now);
            dropped += before - map.len();
        }
        dropped
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| guard(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Purges expired entries every `period` while the store lives (nothing would otherwise
/// remove a key that is never read again).
pub(super) async fn purge_every(store: std::sync::Weak<super::Store>, period: std::time::Duration) {
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else { return };
        if let super::Store::Memory(m) = &*store {
            m.purge();
        }
    }
}

#[cfg(test)]
mod tests;
