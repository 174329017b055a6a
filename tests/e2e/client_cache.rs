//! The Redis client-side cache (RESP3 `CLIENT TRACKING`): reads are served locally, yet every
//! write, delete, flush and expiry made anywhere is seen by the next read, and nothing is served
//! once Redis is gone. Two stores stand for two replicas, on a real redis-server. Reads run in
//! spawned tasks, as requests do in the sidecar (see `store::redis::tracking` on why that matters).

use crate::oidc_support::*;
use sso_sidecar::store::redis::tracking::VERIFIED_FOR;
use sso_sidecar::store::redis::{RedisStore, Topology};
use sso_sidecar::store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

fn replica(redis: &Redis) -> Arc<Store> {
    Arc::new(crate::redis_ha::store(
        Topology::Single { url: &redis.url() },
        None,
    ))
}

fn redis_of(store: &Store) -> &RedisStore {
    match store {
        Store::Redis(r) => r,
        Store::Memory(_) => panic!("a Redis store was expected"),
    }
}

/// A read in its own task, as a request's.
async fn try_read(
    store: &Arc<Store>,
    key: &str,
) -> Result<Option<Vec<u8>>, sso_sidecar::store::StoreError> {
    let (store, key) = (store.clone(), key.to_owned());
    tokio::spawn(async move { store.get(&key).await.map(|v| v.map(|b| b.to_vec())) })
        .await
        .unwrap()
}

async fn read(store: &Arc<Store>, key: &str) -> Option<Vec<u8>> {
    try_read(store, key).await.unwrap()
}

/// Reads `key` until `store` holds it in its client-side cache (its tracked connection is
/// opened in the background by the first read).
async fn until_cached(store: &Arc<Store>, key: &str, want: &[u8]) {
    let start = Instant::now();
    loop {
        assert_eq!(read(store, key).await.as_deref(), Some(want));
        if redis_of(store).cached_entries() > 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the client-side cache never started (is CLIENT TRACKING refused?)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn cached_reads_see_every_write_from_another_replica_at_once() {
    let redis = Redis::start().await;
    let (a, b) = (replica(&redis), replica(&redis));
    let key = "cache:session";
    b.put(key, b"v0", LONG).await.unwrap();
    until_cached(&a, key, b"v0").await;

    // Served from A's cache: Redis sees no GET for it.
    served_from_cache(&redis, &a, key, b"v0", "cached reads reached Redis").await;
    // Still served from the cache well after the first proof of delivery went stale: the
    // health check keeps renewing it.
    tokio::time::sleep(VERIFIED_FOR * 2).await;
    served_from_cache(
        &redis,
        &a,
        key,
        b"v0",
        "the cache stopped serving while Redis was healthy",
    )
    .await;

    // Every write by B is seen by A's very next read, 200 times over.
    for i in 1..=200 {
        let v = format!("v{i}");
        b.put(key, v.as_bytes(), LONG).await.unwrap();
        assert_eq!(
            read(&a, key).await.as_deref(),
            Some(v.as_bytes()),
            "round {i}: A served a value B had replaced"
        );
    }
    // Deleted by B (a logout or a back-channel revocation on another replica).
    b.delete(key).await.unwrap();
    assert_eq!(read(&a, key).await, None, "A served a deleted session");

    // Deleted by anyone else, and a FLUSHALL.
    b.put(key, b"again", LONG).await.unwrap();
    until_cached(&a, key, b"again").await;
    redis
        .cli_async(&["DEL", &format!("conformance:{key}")]) // the stores' key prefix
        .await;
    gone_soon(&a, key, "a DEL from redis-cli was missed").await;
    b.put(key, b"flushed", LONG).await.unwrap();
    until_cached(&a, key, b"flushed").await;
    redis.cli_async(&["FLUSHALL"]).await;
    gone_soon(&a, key, "a FLUSHALL was missed").await;
}

/// A writer that is not a replica (redis-cli) makes no round trip after its write, so Redis
/// may flush its answer to that writer a moment before the invalidation to us (on a loaded
/// machine, between two of its own writes): the invalidation must still arrive and apply
/// within a few milliseconds, never wait for the cache's 1 s proof to run out.
async fn gone_soon(store: &Arc<Store>, key: &str, what: &str) {
    let start = Instant::now();
    while read(store, key).await.is_some() {
        assert!(start.elapsed() < Duration::from_millis(200), "{what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_cached_value_ends_with_its_ttl_and_with_redis() {
    let mut redis = Redis::start().await;
    let a = replica(&redis);
    a.put("cache:warm", b"w", LONG).await.unwrap();
    until_cached(&a, "cache:warm", b"w").await;

    // Redis deletes expired keys lazily, and only then invalidates: the cache keeps the
    // deadline itself.
    a.put("cache:short", b"s", Duration::from_millis(1500))
        .await
        .unwrap();
    assert_eq!(read(&a, "cache:short").await.as_deref(), Some(&b"s"[..]));
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(read(&a, "cache:short").await, None, "served past its TTL");

    // The writer's own next read sees its write, before any invalidation could arrive.
    a.put("cache:warm", b"w2", LONG).await.unwrap();
    assert_eq!(read(&a, "cache:warm").await.as_deref(), Some(&b"w2"[..]));
    until_cached(&a, "cache:warm", b"w2").await;

    // Redis hung (no EOF, no answers): within VERIFIED_FOR the cache stops vouching, the read
    // goes to Redis and times out (the gate answers 503).
    redis.signal("STOP");
    tokio::time::sleep(VERIFIED_FOR + Duration::from_millis(300)).await;
    let r = try_read(&a, "cache:warm").await;
    redis.signal("CONT");
    assert!(
        r.is_err(),
        "a cached value was served by a hung Redis: {r:?}"
    );

    // Redis gone: nothing is served from the cache, the read fails (the gate answers 503).
    until_cached(&a, "cache:warm", b"w2").await;
    redis.kill();
    let r = try_read(&a, "cache:warm").await;
    assert!(r.is_err(), "a cached value was served without Redis: {r:?}");
    assert_eq!(redis_of(&a).cached_entries(), 0);
}

/// Reads `key` 20 times from `store`, each giving `want`, and checks Redis saw no `GET`.
async fn served_from_cache(redis: &Redis, store: &Arc<Store>, key: &str, want: &[u8], why: &str) {
    let before = gets(redis).await;
    for _ in 0..20 {
        assert_eq!(read(store, key).await.as_deref(), Some(want));
    }
    assert_eq!(before, gets(redis).await, "{why}");
}

/// How many `GET`s Redis has answered. redis-cli is awaited, not waited for on the runtime's
/// thread: the stores' health checks, which keep their caches vouched for, run meanwhile.
async fn gets(redis: &Redis) -> u64 {
    calls(&redis.cli_async(&["INFO", "commandstats"]).await, "get")
}

/// The `calls=` count of `cmdstat_<cmd>` in `INFO commandstats` (0 when absent).
fn calls(info: &str, cmd: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The keys Redis tracks for client-side caches (`tracking_total_keys`).
async fn tracked_keys(redis: &Redis) -> u64 {
    let info = redis.cli_async(&["INFO", "stats"]).await;
    info.lines()
        .find_map(|l| l.strip_prefix("tracking_total_keys:"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .expect("INFO stats reports tracking_total_keys (Redis >= 6)")
}

/// Made-up session ids, each sent again and again (any client can), are never read through the
/// tracked connection: Redis would track them, found or not, and a full tracking table evicts
/// by invalidating every replica's cache. A key that exists is still admitted at its third read.
#[tokio::test]
async fn keys_that_do_not_exist_are_never_tracked() {
    let redis = Redis::start().await;
    let a = replica(&redis);
    a.put("cache:warm", b"w", LONG).await.unwrap();
    until_cached(&a, "cache:warm", b"w").await;
    assert_eq!(tracked_keys(&redis).await, 1, "the warm key only");
    for round in 0..3 {
        for i in 0..50 {
            assert_eq!(
                read(&a, &format!("cache:forged-{i}")).await,
                None,
                "{round}"
            );
        }
    }
    assert_eq!(tracked_keys(&redis).await, 1, "a missing key was tracked");
    assert_eq!(redis_of(&a).cached_entries(), 1);

    a.put("cache:real", b"r", LONG).await.unwrap();
    for _ in 0..3 {
        assert_eq!(read(&a, "cache:real").await.as_deref(), Some(&b"r"[..]));
    }
    assert_eq!(tracked_keys(&redis).await, 2, "an existing key read thrice");
    assert_eq!(redis_of(&a).cached_entries(), 2);
}

/// A session read once or twice (most of them, when millions are spread over replicas, or
/// read twice by chance) costs Redis no tracking and the worker no memory: only a key missed
/// three times lately is tracked and kept, and from then on it is invalidated like any other.
#[tokio::test]
async fn a_key_read_once_is_neither_tracked_nor_kept() {
    let redis = Redis::start().await;
    let (a, b) = (replica(&redis), replica(&redis));
    a.put("cache:warm", b"w", LONG).await.unwrap();
    until_cached(&a, "cache:warm", b"w").await;
    let tracked = || tracked_keys(&redis);
    assert_eq!(tracked().await, 1, "the warm key only");

    b.put("cache:once", b"o", LONG).await.unwrap();
    for reads in ["one read", "two reads"] {
        assert_eq!(read(&a, "cache:once").await.as_deref(), Some(&b"o"[..]));
        assert_eq!(redis_of(&a).cached_entries(), 1, "kept after {reads}");
        assert_eq!(tracked().await, 1, "tracked after {reads}");
    }

    assert_eq!(read(&a, "cache:once").await.as_deref(), Some(&b"o"[..]));
    assert_eq!(
        redis_of(&a).cached_entries(),
        2,
        "not kept after three reads"
    );
    assert_eq!(tracked().await, 2);
    served_from_cache(
        &redis,
        &a,
        "cache:once",
        b"o",
        "an admitted key reached Redis",
    )
    .await;
    b.delete("cache:once").await.unwrap();
    assert_eq!(
        read(&a, "cache:once").await,
        None,
        "A served a deleted session"
    );
}

/// `/metrics` reports the cache's hit rate from these counters: a read the cache answers is a
/// hit, one that goes to Redis (before the cache is up, after a write) a miss.
#[tokio::test]
async fn hits_and_misses_are_counted() {
    let redis = Redis::start().await;
    let a = replica(&redis);
    let key = "cache:counted";
    a.put(key, b"v", LONG).await.unwrap();
    until_cached(&a, key, b"v").await;
    let (h0, m0) = a.cache_stats().unwrap();
    assert!(m0 >= 1, "the first reads were misses");
    for _ in 0..20 {
        assert_eq!(read(&a, key).await.as_deref(), Some(&b"v"[..]));
    }
    let (h1, m1) = a.cache_stats().unwrap();
    assert_eq!((h1 - h0, m1 - m0), (20, 0));
    a.put(key, b"w", LONG).await.unwrap();
    assert_eq!(read(&a, key).await.as_deref(), Some(&b"w"[..]));
    assert_eq!(
        a.cache_stats().unwrap().1,
        m1 + 1,
        "a read after a write misses"
    );
}
