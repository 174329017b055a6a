//! One value per worker thread ([`PerWorker`]), and which worker the calling thread is.
//!
//! A leaf: the server marks its worker threads here, and every layer that keeps per-worker
//! state (sessions cache, Redis connections, metrics shards, settings copies) reads it, without
//! depending on the server; and how those bounded caches make room ([`evict_some`]).

thread_local! {
    /// The index of the worker running on this thread, if any.
    static WORKER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Marks the calling thread as worker `index` (called once, at the start of its thread).
pub fn enter(index: usize) {
    WORKER.with(|w| w.set(Some(index)));
}

/// The index of the worker thread the caller runs on (`None` off the workers). Lets shared
/// clients keep one connection per worker, driven by that worker's own runtime.
pub fn current() -> Option<usize> {
    WORKER.with(|w| w.get())
}

/// This worker thread's entry of a per-worker list whose last entry serves callers off the
/// workers (admin listener, background tasks). Never empty by construction.
fn slot<T>(slots: &[T]) -> &T {
    let last = slots.len().saturating_sub(1);
    let i = current().map_or(last, |w| w % last.max(1));
    &slots[i]
}

/// One value per worker thread, plus one for callers off the workers. What every request
/// reads and writes (settings behind a lock, `Arc`s, counters) then stays in its own core's
/// cache instead of bouncing between cores on each request. Each value sits on cache lines of
/// its own, so neighbours do not share a line either.
pub struct PerWorker<T>(Vec<Padded<T>>);

/// Two cache lines (the prefetcher pairs adjacent lines on x86).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> PerWorker<T> {
    pub fn new(workers: usize, mut make: impl FnMut() -> T) -> Self {
        PerWorker((0..=workers).map(|_| Padded(make())).collect())
    }

    /// This thread's value.
    pub fn get(&self) -> &T {
        &slot(&self.0).0
    }

    /// Every worker's value (to change them all, or add them up).
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|p| &p.0)
    }
}

/// Reloadable state: each worker reads its own copy, a reload replaces every copy.
impl<T> PerWorker<std::sync::RwLock<std::sync::Arc<T>>> {
    /// This worker's current value.
    pub fn current(&self) -> std::sync::Arc<T> {
        self.get().read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces every worker's value with one of its own, made by `make`.
    pub fn replace(&self, mut make: impl FnMut() -> T) {
        for slot in self.all() {
            *slot.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(make());
        }
    }
}

/// Makes room in a full per-worker cache: each entry leaves with probability 1/8, drawn
/// afresh each time (random eviction, in batches so the cost stays O(1) per insert). Entries in
/// use are soon back; the others go. Emptying the whole cache threw the hot sessions out with
/// the cold ones, and always dropping the map's first entry froze the rest of the cache
/// (`bench/scale`, skewed requests over 100k sessions with 2,048 entries a worker: 18% hits
/// emptying, 7% dropping the first entry, 22% with this; uniform: 1.9%, the 2% a cache of that
/// size can hold).
pub fn evict_some<K: Eq + std::hash::Hash, V>(map: &mut std::collections::HashMap<K, V>) {
    use std::hash::{BuildHasher, Hasher};
    // One random seed per sweep; entries are drawn by hashing it with a counter.
    let seed = std::collections::hash_map::RandomState::new();
    let mut n: u64 = 0;
    map.retain(|_, _| {
        n += 1;
        let mut h = seed.build_hasher();
        h.write_u64(n);
        !h.finish().is_multiple_of(8)
    });
}

/// Which keys a bounded per-worker cache takes in: those it missed twice lately. A key missed
/// once (most keys, when far more are in use than the cache holds) is not copied in, so it
/// neither costs the copy nor pushes out a key in use. A table of recent misses by hash, one
/// per slot (a later miss on the same slot takes it over), allocated on first use.
#[derive(Default)]
pub struct Admission {
    seen: Box<[u64]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Admission {
    /// Slots per entry of the cache: "lately" is the last few cachefuls of misses.
    const SLOTS_PER_ENTRY: usize = 4;

    /// The low bits of a slot: how many more times than once its key was remembered.
    const COUNT: u64 = 3;

    /// Whether `key` missed before, lately: then it is worth keeping. Remembers it if not.
    /// `capacity`: the cache's, which sizes the table at the first call (32 bytes an entry).
    pub fn seen_before(&mut self, key: &str, capacity: usize) -> bool {
        self.allocate(capacity);
        let Some((i, hash)) = self.slot(key) else {
            return false;
        };
        let before = self.seen[i] & !Self::COUNT == hash;
        self.seen[i] = hash;
        before
    }

    /// Whether `key` was remembered at least `times` times lately, in a row of its slot
    /// (nothing is remembered by asking; counts stop at 4).
    pub fn remembered(&self, key: &str, times: u64) -> bool {
        match self.slot(key) {
            Some((i, hash)) => {
                self.seen[i] & !Self::COUNT == hash && (self.seen[i] & Self::COUNT) + 1 >= times
            }
            None => false,
        }
    }

    /// Remembers `key` once more, taking over its slot if another key held it.
    pub fn remember(&mut self, key: &str, capacity: usize) {
        self.allocate(capacity);
        if let Some((i, hash)) = self.slot(key) {
            let held = self.seen[i];
            self.seen[i] = if held & !Self::COUNT == hash {
                hash | ((held & Self::COUNT) + 1).min(Self::COUNT)
            } else {
                hash
            };
        }
    }

    /// The table, sized by the cache's `capacity` at the first use (32 bytes an entry).
    fn allocate(&mut self, capacity: usize) {
        if self.seen.is_empty() {
            let slots = capacity.saturating_mul(Self::SLOTS_PER_ENTRY).max(1);
            self.seen = vec![0; slots].into_boxed_slice();
        }
    }

    /// `key`'s slot and hash, its count bits clear (0 marks an empty slot, so no hash is 0);
    /// `None` before the table exists.
    fn slot(&self, key: &str) -> Option<(usize, u64)> {
        use std::hash::BuildHasher;
        if self.seen.is_empty() {
            return None;
        }
        let hash = self.hasher.hash_one(key);
        let slot = (hash % self.seen.len() as u64) as usize;
        Some((slot, (hash & !Self::COUNT).max(Self::COUNT + 1)))
    }
}

#[cfg(test)]
mod eviction_tests {
    #[test]
    fn a_full_cache_loses_about_an_eighth_at_random() {
        let mut m: std::collections::HashMap<u32, u32> = (0..10_000).map(|i| (i, i)).collect();
        super::evict_some(&mut m);
        assert!((8_000..9_500).contains(&m.len()), "{} left", m.len());
        let mut empty: std::collections::HashMap<u32, u32> = Default::default();
        super::evict_some(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn remembered_keys_are_counted_until_another_takes_their_slot() {
        let mut a = super::Admission::default();
        assert!(!a.remembered("k", 1), "nothing before the table exists");
        a.remember("k", 0);
        assert!(a.remembered("k", 1) && !a.remembered("k", 2));
        a.remember("k", 0);
        assert!(a.remembered("k", 2) && !a.remembered("k", 3));
        for _ in 0..10 {
            a.remember("k", 0);
        }
        assert!(a.remembered("k", 4), "counts stop at four");
        // One slot: another key takes it over, counted from one.
        a.remember("other", 0);
        assert!(!a.remembered("k", 1));
        assert!(a.remembered("other", 1) && !a.remembered("other", 2));
        assert!(a.seen_before("other", 0), "the same slots for both uses");
    }

    #[test]
    fn a_key_is_admitted_the_second_time_it_misses() {
        let mut a = super::Admission::default();
        assert!(!a.seen_before("k", 0), "first miss: not kept");
        assert!(a.seen_before("k", 0), "second miss: kept");
        assert!(a.seen_before("k", 0));
        // One slot: another key takes it over, and "k" is new again.
        assert!(!a.seen_before("other", 0));
        assert!(!a.seen_before("k", 0));
        // Room for 256k: two of these 100 keys share a slot once in ~50 runs (and both are
        // then new again on the second pass), three once in a million.
        let mut big = super::Admission::default();
        let admitted = (0..100)
            .filter(|i| big.seen_before(&i.to_string(), 1 << 16))
            .count();
        assert_eq!(admitted, 0, "keys missed once are not admitted");
        let again = (0..100)
            .filter(|i| big.seen_before(&i.to_string(), 1 << 16))
            .count();
        assert!(
            again >= 96,
            "{again} of 100 keys missed twice were admitted"
        );
    }
}
