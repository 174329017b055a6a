//! The memory store: the conformance suite, TTLs on the paused clock, purging, and the
//! workers' copies.
use super::*;

#[tokio::test]
async fn memory_store_passes_the_conformance_suite() {
    let store = crate::store::Store::Memory(MemoryStore::new());
    crate::store::conformance::run(&store).await;
}

#[test]
fn purge_drops_expired_entries() {
    let s = MemoryStore::new();
    s.put("a", b"1", Duration::from_millis(0));
    s.put("b", b"2", Duration::from_secs(60));
    assert_eq!(s.purge(), 1);
    assert_eq!(s.len(), 1);
}

/// TTLs on tokio's paused clock: no real waiting.
#[tokio::test(start_paused = true)]
async fn entries_live_exactly_their_ttl() {
    let s = MemoryStore::new();
    s.put("k", b"v", Duration::from_secs(600));
    assert!(s.put_if_absent("once", b"1", Duration::from_secs(60)));
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(!s.put_if_absent("once", b"2", Duration::from_secs(60)));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(
        s.put_if_absent("once", b"3", Duration::from_secs(60)),
        "expired at 60 s"
    );
    tokio::time::advance(Duration::from_secs(539)).await;
    assert!(s.get("k").is_some(), "alive at 599 s");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(s.get("k").is_none(), "gone at 600 s");
}

/// Values read often are served from the reading worker's own copy, and every write,
/// delete, expiry and purge made from any thread is seen by the next read.
#[tokio::test(start_paused = true)]
async fn a_workers_copy_never_outlives_its_value() {
    let s = std::sync::Arc::new(MemoryStore::with_workers(2));
    let on_worker = |i: usize, f: Box<dyn FnOnce(&MemoryStore) + Send>| {
        let s = s.clone();
        std::thread::spawn(move || {
            crate::per_worker::enter(i);
            f(&s)
        })
        .join()
        .unwrap()
    };
    s.put("k", b"v1", Duration::from_secs(60));
    // Worker 0 reads it three times: the second read makes the copy.
    for _ in 0..3 {
        on_worker(
            0,
            Box::new(|s| assert_eq!(s.get("k").as_deref(), Some(&b"v1"[..]))),
        );
    }
    on_worker(0, Box::new(|s| assert_eq!(s.copies.mine().len(), 1)));
    // Written by worker 1: worker 0's next read sees it.
    on_worker(1, Box::new(|s| s.put("k", b"v2", Duration::from_secs(60))));
    on_worker(
        0,
        Box::new(|s| assert_eq!(s.get("k").as_deref(), Some(&b"v2"[..]))),
    );
    for _ in 0..2 {
        on_worker(0, Box::new(|s| drop(s.get("k"))));
    }
    on_worker(1, Box::new(|s| assert!(s.delete("k"))));
    on_worker(
        0,
        Box::new(|s| assert_eq!(s.get("k"), None, "a deleted value")),
    );
    // Replaced only if present, and deleted only if it holds a value.
    s.put("k", b"v3", Duration::from_secs(60));
    for _ in 0..2 {
        on_worker(0, Box::new(|s| drop(s.get("k"))));
    }
    assert!(s.replace_if("k", b"v3", b"v4", Duration::from_secs(60)));
    on_worker(
        0,
        Box::new(|s| assert_eq!(s.get("k").as_deref(), Some(&b"v4"[..]))),
    );
    for _ in 0..2 {
        on_worker(0, Box::new(|s| drop(s.get("k"))));
    }
    assert!(s.delete_if("k", b"v4"));
    on_worker(0, Box::new(|s| assert_eq!(s.get("k"), None)));
    // The copy keeps the entry's deadline, and a purge ends it too. On this thread (the
    // slot of callers off the workers): the paused clock is this runtime's.
    s.put("t", b"t", Duration::from_secs(10));
    for _ in 0..3 {
        assert!(s.get("t").is_some());
    }
    assert_eq!(s.copies.mine().len(), 1);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(s.get("t"), None, "served past its TTL");
    s.put("p", b"p", Duration::from_secs(10));
    for _ in 0..3 {
        assert!(s.get("p").is_some());
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(s.purge(), 1);
    s.put("p", b"q", Duration::from_secs(10));
    assert_eq!(s.get("p").as_deref(), Some(&b"q"[..]));
}

#[test]
fn an_extreme_ttl_does_not_overflow() {
    let s = MemoryStore::new();
    s.put("k", b"v", Duration::MAX);
    assert!(s.get("k").is_some());
}
