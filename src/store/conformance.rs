//! The one behaviour every store backend must have. Run by the memory backend's unit test and,
//! against a real `redis-server`, by the end-to-end tests. Public so those tests can call it.
//! Test code: it panics (unwrap) on the first deviation, by design.

#![allow(clippy::unwrap_used)]

use super::Store;
use std::time::Duration;

/// Panics on the first behaviour that differs from the contract.
pub async fn run(store: &Store) {
    let ns = crate::crypto::random_token(8);
    // A hash tag, as every key from `keys::hashed` has: an index's keys share its slot.
    let k = |name: &str| format!("conformance:{{{ns}:{name}}}");
    let long = Duration::from_secs(60);

    // get / put / replace / delete
    assert_eq!(store.get(&k("a")).await.unwrap(), None);
    store.put(&k("a"), b"one", long).await.unwrap();
    assert_eq!(
        store.get(&k("a")).await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    store.put(&k("a"), b"two", long).await.unwrap();
    assert_eq!(
        store.get(&k("a")).await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert!(store.delete(&k("a")).await.unwrap());
    assert!(!store.delete(&k("a")).await.unwrap());
    assert_eq!(store.get(&k("a")).await.unwrap(), None);

    // binary values survive untouched
    let binary: Vec<u8> = (0..=255u8).collect();
    store.put(&k("bin"), &binary, long).await.unwrap();
    assert_eq!(
        store.get(&k("bin")).await.unwrap().as_deref(),
        Some(&binary[..])
    );

    // Expiry: short TTLs and a counter window are set up here and checked after the steps below,
    // so their waits overlap. Both are well above a round trip through Sentinel, Cluster or TLS
    // on a loaded machine.
    let short = Duration::from_millis(1500);

    // TTL expiry
    store.put(&k("short"), b"x", short).await.unwrap();
    assert!(store.get(&k("short")).await.unwrap().is_some());

    // touch: a short-lived key made to last, its value kept; a missing key stays missing
    store.put(&k("touched"), b"kept", short).await.unwrap();
    assert!(store.touch(&k("touched"), long).await.unwrap());
    assert!(!store.touch(&k("never"), long).await.unwrap());

    // put_if_absent: first wins, until expiry
    assert!(store.put_if_absent(&k("once"), b"1", short).await.unwrap());
    assert!(!store.put_if_absent(&k("once"), b"2", long).await.unwrap());
    assert_eq!(
        store.get(&k("once")).await.unwrap().as_deref(),
        Some(&b"1"[..])
    );

    // index sets expire too
    store.index_add(&k("idx2"), "m", short).await.unwrap();
    assert_eq!(
        store.index_members(&k("idx2")).await.unwrap(),
        vec!["m".to_string()]
    );
    // Every short TTL was set before this instant, so all are over `short` after it.
    let ttls_set = tokio::time::Instant::now();

    // fixed-window counters (the window starts at the first hit)
    let w = Duration::from_secs(3);
    assert_eq!(store.count(&k("n"), w, false).await.unwrap().0, 0);
    for i in 1..=3 {
        let (n, left) = store.count(&k("n"), w, true).await.unwrap();
        assert_eq!(n, i);
        assert!(left > Duration::ZERO && left <= w, "{left:?}");
    }
    // The window started before this instant, so it is over `w` after it.
    let window_started = tokio::time::Instant::now();
    assert_eq!(
        store.count(&k("n"), w, false).await.unwrap().0,
        3,
        "a peek counts nothing"
    );

    // delete_if: only the holder of the value removes it
    store.put(&k("lock"), b"owner-a", long).await.unwrap();
    assert!(!store.delete_if(&k("lock"), b"owner-b").await.unwrap());
    assert!(
        store.get(&k("lock")).await.unwrap().is_some(),
        "another owner's lock stays"
    );
    assert!(store.delete_if(&k("lock"), b"owner-a").await.unwrap());
    assert_eq!(store.get(&k("lock")).await.unwrap(), None);

    // replace_if: only over the value read, never bringing a key back
    store.put(&k("cas"), b"v1", long).await.unwrap();
    assert!(!store
        .replace_if(&k("cas"), b"v0", b"v2", long)
        .await
        .unwrap());
    assert_eq!(
        store.get(&k("cas")).await.unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    assert!(store
        .replace_if(&k("cas"), b"v1", b"v2", long)
        .await
        .unwrap());
    assert_eq!(
        store.get(&k("cas")).await.unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    store.delete(&k("cas")).await.unwrap();
    assert!(!store
        .replace_if(&k("cas"), b"v2", b"v3", long)
        .await
        .unwrap());
    assert_eq!(
        store.get(&k("cas")).await.unwrap(),
        None,
        "not brought back"
    );

    // indexes: add, members, remove, the index lives as long as its longest member
    assert!(store.index_members(&k("idx")).await.unwrap().is_empty());
    store.index_add(&k("idx"), "m1", long).await.unwrap();
    store
        .index_add(&k("idx"), "m2", Duration::from_millis(100))
        .await
        .unwrap();
    store.index_add(&k("idx"), "m1", long).await.unwrap();
    let mut members = store.index_members(&k("idx")).await.unwrap();
    members.sort();
    assert_eq!(members, vec!["m1".to_string(), "m2".to_string()]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        store.index_members(&k("idx")).await.unwrap().len(),
        2,
        "a shorter TTL does not shorten the set"
    );
    // ...but the next addition drops the member whose own TTL is over: an index kept alive by
    // one login after another holds the sessions that may still live, not every one it had.
    store.index_add(&k("idx"), "m3", long).await.unwrap();
    let mut members = store.index_members(&k("idx")).await.unwrap();
    members.sort();
    assert_eq!(members, vec!["m1".to_string(), "m3".to_string()]);
    store.index_remove(&k("idx"), "m1").await.unwrap();
    assert_eq!(
        store.index_members(&k("idx")).await.unwrap(),
        vec!["m3".to_string()]
    );
    store.index_remove(&k("idx"), "m3").await.unwrap();
    assert!(store.index_members(&k("idx")).await.unwrap().is_empty());

    // an index's members, the first to expire first
    for (m, secs) in [("t3", 62), ("t1", 60), ("t4", 63), ("t2", 61)] {
        store
            .index_add(&k("aged"), m, Duration::from_secs(secs))
            .await
            .unwrap();
    }
    assert_eq!(
        store.index_oldest_first(&k("aged")).await.unwrap(),
        ["t1", "t2", "t3", "t4"].map(String::from).to_vec()
    );
    assert!(store
        .index_oldest_first(&k("none"))
        .await
        .unwrap()
        .is_empty());

    // the short TTLs, then the counter window, are over
    tokio::time::sleep_until(ttls_set + short + Duration::from_millis(500)).await;
    assert_eq!(
        store.get(&k("short")).await.unwrap(),
        None,
        "expired values are gone"
    );
    assert_eq!(
        store.get(&k("touched")).await.unwrap().as_deref(),
        Some(&b"kept"[..]),
        "a touched value outlives its first TTL, unchanged"
    );
    assert!(
        !store.touch(&k("short"), long).await.unwrap(),
        "an expired key is not brought back"
    );
    assert_eq!(store.get(&k("short")).await.unwrap(), None);
    assert!(
        store.put_if_absent(&k("once"), b"3", long).await.unwrap(),
        "free again after expiry"
    );
    assert!(
        store.index_members(&k("idx2")).await.unwrap().is_empty(),
        "index sets expire too"
    );
    tokio::time::sleep_until(window_started + w + Duration::from_millis(500)).await;
    assert_eq!(
        store.count(&k("n"), w, false).await.unwrap().0,
        0,
        "the window ended"
    );
    assert_eq!(
        store.count(&k("n"), w, true).await.unwrap().0,
        1,
        "a new window"
    );

    store.ping().await.unwrap();
    store.delete(&k("bin")).await.unwrap();
    store.delete(&k("once")).await.unwrap();
}
