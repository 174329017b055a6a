//! Redis backend, shared by every replica: one server (`redis://` or `rediss://`), a Sentinel
//! set-up (the master found through the sentinels, again after a failover) or a Cluster.
//!
//! Connections are made lazily, so the sidecar starts (and reports not-ready) while Redis is
//! down, and recover by themselves when it returns: the single-server connection manager and the
//! cluster client reconnect on their own; a Sentinel connection that fails is dropped and the
//! master asked for again. Every key gets the configured prefix; callers hash-tag their keys
//! (`session:{<hash>}`) so one session's keys share a Cluster slot. Errors never echo a URL
//! (it may hold a password).
//!
//! A single server also gets one connection per worker thread, driven by that worker's runtime,
//! and, unless turned off, a client-side cache of session reads that Redis keeps coherent
//! ([`tracking`]); reads that must see the latest value use [`RedisStore::get_fresh`].

mod build;
pub mod tracking;

use super::StoreError;
use crate::per_worker::PerWorker;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelClient;
use redis::FromRedisValue;
use std::time::Duration;
use tokio::sync::{Mutex, OnceCell};
use tracking::Tracking;

/// Adds `member` to a set and raises the set's TTL to at least `ttl_ms` (never lowers it).
const INDEX_ADD: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1";

/// How the sidecar reaches Redis.
pub enum Topology<'a> {
    /// One server: `redis://` or `rediss://` URL (credentials may be inline).
    Single { url: &'a str },
    /// Sentinels (their URLs, with the sentinels' own credentials inline) watching `master`.
    Sentinel {
        sentinels: &'a [String],
        master: &'a str,
        tls: bool,
    },
    /// Cluster seed nodes.
    Cluster { nodes: &'a [String] },
}

pub struct RedisOptions<'a> {
    pub topology: Topology<'a>,
    pub key_prefix: &'a str,
    /// ACL credentials of the data servers, when not in the URL (Sentinel, Cluster, Single).
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    /// The sentinels' own credentials, applied to every sentinel address.
    pub sentinel_username: Option<&'a str>,
    pub sentinel_password: Option<&'a str>,
    /// PEM CA bundle for TLS with a private CA (single server and Cluster).
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Connections to a single server: one per worker thread.
    pub connections: usize,
    /// Entries of the client-side cache per worker (single server only); `None` turns it off.
    pub client_cache: Option<usize>,
}

enum Backend {
    Single {
        client: redis::Client,
        config: ConnectionManagerConfig,
        /// One per worker thread, and a last one for callers off the workers.
        conns: PerWorker<OnceCell<ConnectionManager>>,
        tracking: Option<Tracking>,
    },
    Cluster {
        client: ClusterClient,
        conn: OnceCell<ClusterConnection>,
    },
    Sentinel {
        client: Mutex<SentinelClient>,
        conn: Mutex<Option<MultiplexedConnection>>,
        timeout: Duration,
    },
}

/// Deletes KEYS[1] only if it still holds ARGV[1] (a lock released by its owner only).
const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// Sets KEYS[1] to ARGV[2] with a TTL of ARGV[3] ms only if it still holds ARGV[1] (a session
/// changed by one request while nobody else wrote it).
const REPLACE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

/// A fixed-window counter: INCR KEYS[1] when ARGV[2] is 1 (its window, ARGV[1] ms, starts at
/// the first hit), else read it; returns {count, ms left}. One script, so two replicas never
/// see a counter without its expiry.
const COUNT: &str = r"
local n
if ARGV[2] == '1' then
  n = redis.call('INCR', KEYS[1])
else
  n = tonumber(redis.call('GET', KEYS[1]) or '0')
end
local ttl = redis.call('PTTL', KEYS[1])
if n > 0 and ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
if ttl < 0 then ttl = 0 end
return {n, ttl}";

pub struct RedisStore {
    backend: Backend,
    prefix: String,
    index_add: redis::Script,
    delete_if: redis::Script,
    replace_if: redis::Script,
    count: redis::Script,
    /// How long a request waits for a connection to Redis at most: a connection attempt and
    /// its retry. Connections are made one at a time (one per worker); without a bound, the
    /// k-th request queued behind an unreachable Redis would wait k attempts.
    connect_wait: Duration,
}

/// Runs `$body` with `$c` bound to a live connection of whichever backend this is.
macro_rules! with_conn {
    ($self:ident, |$c:ident| $body:expr) => {
        match &$self.backend {
            Backend::Single {
                client,
                config,
                conns,
                ..
            } => {
                let mut $c = cached_or_connect(conns.get(), $self.connect_wait, || {
                    ConnectionManager::new_with_config(client.clone(), config.clone())
                })
                .await?;
                $body.await.map_err(unavailable)
            }
            Backend::Cluster { client, conn } => {
                let mut $c =
                    cached_or_connect(conn, $self.connect_wait, || client.get_async_connection())
                        .await?;
                $body.await.map_err(unavailable)
            }
            Backend::Sentinel {
                client,
                conn,
                timeout,
            } => {
                // A connection made before is used as it is: no timer on a command once
                // connected, as with the other backends.
                let known = conn.try_lock().ok().and_then(|c| c.clone());
                let mut $c = match known {
                    Some(c) => c,
                    None => {
                        let master = $self.sentinel_master(client, conn, *timeout);
                        match tokio::time::timeout($self.connect_wait, master).await {
                            Ok(c) => c?,
                            Err(_) => return Err(no_connection_in_time()),
                        }
                    }
                };
                let result = $body.await;
                if result.is_err() {
                    // The master may have moved: ask the sentinels again next time.
                    *conn.lock().await = None;
                }
                result.map_err(unavailable)
            }
        }
    };
}

impl RedisStore {
    async fn sentinel_master(
        &self,
        client: &Mutex<SentinelClient>,
        conn: &Mutex<Option<MultiplexedConnection>>,
        timeout: Duration,
    ) -> Result<MultiplexedConnection, StoreError> {
        let mut cached = conn.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let mut client = client.lock().await;
        let fresh = tokio::time::timeout(timeout, client.get_async_connection())
            .await
            .map_err(|_| {
                StoreError::Unavailable("no answer from the sentinels' master in time".into())
            })?
            .map_err(unavailable)?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    fn key(&self, k: &str) -> String {
        // Not `format!`: every request builds one, and the formatting machinery showed.
        let mut full = String::with_capacity(self.prefix.len() + k.len());
        full.push_str(&self.prefix);
        full.push_str(k);
        full
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        // Boxed: the connection futures of the three backends make this state several KB,
        // which every caller up to the request's own future would otherwise carry and copy,
        // on every request, even when the session comes from the client-side cache.
        Box::pin(async { with_conn!(self, |c| cmd.query_async::<T>(&mut c)) }).await
    }

    fn tracking(&self) -> Option<&Tracking> {
        match &self.backend {
            Backend::Single { tracking, .. } => tracking.as_ref(),
            _ => None,
        }
    }

    /// The client-side cache's hits and misses so far, when it is on.
    pub fn cache_stats(&self) -> Option<(u64, u64)> {
        self.tracking().map(Tracking::stats)
    }

    /// Entries held by the client-side cache (tests and diagnostics).
    pub fn cached_entries(&self) -> usize {
        self.tracking().map_or(0, Tracking::len)
    }

    /// After this process wrote `key`: forgets it in this process's client-side caches, then
    /// makes one more round trip. Redis sends a write's invalidations to the other replicas in
    /// the same pass that sends the writer its reply, so once a later command is answered they
    /// are on the wire: whatever the writer answers next (a logout's 200) is answered after
    /// every replica can know. A failed round trip changes nothing: the write is done.
    async fn written(&self, key: &str) {
        if let Some(t) = self.tracking() {
            t.forget(&self.key(key));
            let _: Result<String, _> = self.query(&redis::cmd("PING")).await;
        }
    }

    /// The value of `key`, from the client-side cache when it holds it.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        if let Some(t) = self.tracking() {
            if let Some(v) = t.get(&self.key(key)).await {
                return Ok(v);
            }
        }
        self.get_fresh(key).await
    }

    /// The value of `key` as Redis holds it now, never from the cache.
    pub async fn get_fresh(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let v: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(self.key(key))).await?;
        Ok(v.map(Bytes::from))
    }

    pub async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let r = self
            .query(
                redis::cmd("SET")
                    .arg(self.key(key))
                    .arg(value)
                    .arg("PX")
                    .arg(millis(ttl)),
            )
            .await;
        self.written(key).await;
        r
    }

    /// `SET key value NX PX ttl`: true when `key` was absent and the value was written.
    pub async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        let r: Result<Option<String>, _> = self.query(&cmd).await;
        self.written(key).await;
        Ok(r?.is_some())
    }

    /// `PEXPIRE key ttl`. Nothing to wait for afterwards (unlike a write): Redis tells the
    /// client-side caches, which read the key again, and nobody must see the new TTL at once.
    pub async fn touch(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let n: i64 = self
            .query(redis::cmd("PEXPIRE").arg(self.key(key)).arg(millis(ttl)))
            .await?;
        Ok(n == 1)
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let n: Result<i64, _> = self.query(redis::cmd("DEL").arg(self.key(key))).await;
        self.written(key).await;
        Ok(n? > 0)
    }

    pub async fn delete_if(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let full = self.key(key);
        let script = &self.delete_if;
        // Boxed for the reason given at `query`.
        let n: Result<i64, _> = Box::pin(async {
            with_conn!(self, |c| script
                .key(&full)
                .arg(value)
                .invoke_async::<i64>(&mut c))
        })
        .await;
        self.written(key).await;
        Ok(n? > 0)
    }

    pub async fn replace_if(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let full = self.key(key);
        let script = &self.replace_if;
        // Boxed for the reason given at `query`.
        let n: Result<i64, _> = Box::pin(async {
            with_conn!(self, |c| script
                .key(&full)
                .arg(expected)
                .arg(value)
                .arg(millis(ttl))
                .invoke_async::<i64>(&mut c))
        })
        .await;
        self.written(key).await;
        Ok(n? > 0)
    }

    pub async fn count(
        &self,
        key: &str,
        window: Duration,
        hit: bool,
    ) -> Result<(u64, Duration), StoreError> {
        let full = self.key(key);
        let script = &self.count;
        // Boxed for the reason given at `query`.
        let (n, ms): (u64, u64) = Box::pin(async {
            with_conn!(self, |c| script
                .key(&full)
                .arg(millis(window))
                .arg(if hit { "1" } else { "0" })
                .invoke_async::<(u64, u64)>(&mut c))
        })
        .await?;
        Ok((n, Duration::from_millis(ms)))
    }

    pub async fn index_add(
        &self,
        index: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.key(index);
        let ms = millis(ttl);
        let script = &self.index_add;
        // Boxed for the reason given at `query`.
        let _: i64 = Box::pin(async {
            with_conn!(self, |c| script
                .key(&key)
                .arg(member)
                .arg(ms)
                .invoke_async::<i64>(&mut c))
        })
        .await?;
        Ok(())
    }

    pub async fn index_members(&self, index: &str) -> Result<Vec<String>, StoreError> {
        self.query(redis::cmd("SMEMBERS").arg(self.key(index)))
            .await
    }

    pub async fn index_remove(&self, index: &str, member: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .query(redis::cmd("SREM").arg(self.key(index)).arg(member))
            .await?;
        Ok(())
    }

    /// Whether the client-side cache can work: `CLIENT TRACKING` allowed for this user (its
    /// ACL may refuse it). `None` when the cache is off or the topology has none.
    pub async fn tracking_allowed(&self) -> Result<Option<bool>, StoreError> {
        if self.tracking().is_none() {
            return Ok(None);
        }
        let on: Result<String, _> = self
            .query(redis::cmd("CLIENT").arg("TRACKING").arg("ON"))
            .await;
        match on {
            Ok(_) => {
                let _: Result<String, _> = self
                    .query(redis::cmd("CLIENT").arg("TRACKING").arg("OFF"))
                    .await;
                Ok(Some(true))
            }
            Err(StoreError::Unavailable(e)) if e.to_ascii_lowercase().contains("noperm") => {
                Ok(Some(false))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The connection in `cell`, else one made by `connect` within `wait` (and kept there).
async fn cached_or_connect<T, F>(
    cell: &OnceCell<T>,
    wait: Duration,
    connect: impl FnOnce() -> F,
) -> Result<T, StoreError>
where
    T: Clone,
    F: std::future::Future<Output = Result<T, redis::RedisError>>,
{
    if let Some(c) = cell.get() {
        return Ok(c.clone());
    }
    match tokio::time::timeout(wait, cell.get_or_try_init(connect)).await {
        Ok(r) => r.cloned().map_err(unavailable),
        Err(_) => Err(no_connection_in_time()),
    }
}

fn no_connection_in_time() -> StoreError {
    StoreError::Unavailable("no connection to Redis in time".into())
}
