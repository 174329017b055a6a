//! Redis backend, shared by every replica: one server (`redis://` or `rediss://`), a Sentinel
//! set-up (the master found through the sentinels, again after a failover) or a Cluster.
//!
//! Connections are made lazily, so the sidecar starts (and reports not-ready) while Redis is
//! down, and recover by themselves when it returns: the single-server connection manager and the
//! cluster client reconnect on their own (and a single server's connection is made again when
//! the server behind the address answers as a replica: a failover that kept its clients); a
//! Sentinel connection that fails is dropped and the master asked for again. Every key gets the configured prefix; callers hash-tag their keys
//! (`session:{<hash>}`) so one session's keys share a Cluster slot. Errors never echo a URL
//! (it may hold a password).
//!
//! A single server also gets one connection per worker thread, driven by that worker's runtime,
//! and, unless turned off, a client-side cache of session reads that Redis keeps coherent
//! ([`tracking`]); reads that must see the latest value use [`RedisStore::get_fresh`].

mod build;
pub mod eviction;
mod scripts;
pub mod settle;
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
    /// Replicas a revocation waits for (`WAIT`), and how long at most; 0: none (single server
    /// and Sentinel only).
    pub logout_replicas: u32,
    pub logout_wait: Duration,
}

enum Backend {
    Single {
        client: redis::Client,
        config: ConnectionManagerConfig,
        /// One per worker thread, and a last one for callers off the workers.
        conns: PerWorker<WorkerConn>,
        tracking: Option<Tracking>,
    },
    Cluster {
        client: ClusterClient,
        conn: OnceCell<ClusterConnection>,
    },
    Sentinel {
        client: Mutex<SentinelClient>,
        /// The settle connection's own (`settle`): asking the sentinels for it never holds
        /// the requests' connection back.
        settle_client: Mutex<SentinelClient>,
        conn: Mutex<Option<MultiplexedConnection>>,
        timeout: Duration,
    },
}

pub struct RedisStore {
    backend: Backend,
    prefix: String,
    scripts: scripts::Scripts,
    /// How long a request waits for a connection to Redis at most: a connection attempt and
    /// its retry. Connections are made one at a time (one per worker); without a bound, the
    /// k-th request queued behind an unreachable Redis would wait k attempts.
    connect_wait: Duration,
    /// Waiting for replicas after a revocation ([`settle`]).
    settle: settle::Settle,
    timeout: Duration,
}

/// Runs `$body` with `$c` bound to a live connection of whichever backend this is.
macro_rules! with_conn {
    ($self:ident, |$c:ident| $body:expr) => {
        match &$self.backend {
            Backend::Single {
                client,
                config,
                conns,
                tracking,
            } => {
                let worker = conns.get();
                let cell = worker.current();
                let mut $c = cached_or_connect(&cell, $self.connect_wait, || {
                    ConnectionManager::new_with_config(client.clone(), config.clone())
                })
                .await?;
                let result = $body.await;
                if let Err(e) = &result {
                    if demoted(e) && worker.replace(&cell) {
                        // The connection manager reconnects only when the connection breaks,
                        // and a master demoted by a failover behind the same address (a
                        // Service, a VIP, a managed endpoint) keeps its clients: every write
                        // would fail for good. Connect again, and track again.
                        if let Some(t) = tracking {
                            t.reconnect();
                        }
                        tracing::warn!(
                            error = %e,
                            "Redis answered as a replica (a failover behind the same address?): connecting again"
                        );
                    }
                }
                result.map_err(unavailable)
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
                ..
            } => {
                // A connection made before is used as it is (its commands are timed by the
                // connection itself, `redis_timeout_ms`, as with the other backends).
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
                if let Err(e) = &result {
                    // The master may have moved: ask the sentinels again next time. Not for an
                    // answer the master gave (a full Redis refusing writes, a script's error):
                    // the connection is fine, and dropping it would queue every request
                    // behind a sentinel query while it lasts.
                    if settle::dead(e) || e.is_timeout() || e.code() == Some("MASTERDOWN") {
                        *conn.lock().await = None;
                    }
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
        // The store's timeout, not the crate's defaults (0.5 s a command), which failed every
        // command a master's pause (a fork for BGSAVE) held longer.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let fresh = tokio::time::timeout(timeout, client.get_async_connection_with_config(&config))
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

    /// `inv` on this backend's connection; boxed for the reason given at `query`.
    async fn invoke<T: FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        Box::pin(async { with_conn!(self, |c| inv.invoke_async::<T>(&mut c)) }).await
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
        let Some(t) = self.tracking() else {
            return self.get_fresh(key).await;
        };
        let full = self.key(key);
        if let Some(v) = t.get(&full).await {
            return Ok(v);
        }
        let v = self.fetch(&full).await?;
        if v.is_some() {
            t.found(&full);
        }
        Ok(v)
    }

    /// The value of `key` as Redis holds it now, never from the cache.
    pub async fn get_fresh(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.fetch(&self.key(key)).await
    }

    /// `GET` of a key already prefixed.
    async fn fetch(&self, full: &str) -> Result<Option<Bytes>, StoreError> {
        let v: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(full)).await?;
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

/// A worker's connection to a single server, made again when the server behind the address
/// turns out to be a replica. The cell is shared while it is current, so that concurrent
/// requests wait for one connection attempt, not one each.
#[derive(Default)]
struct WorkerConn(std::sync::Mutex<std::sync::Arc<OnceCell<ConnectionManager>>>);

impl WorkerConn {
    fn current(&self) -> std::sync::Arc<OnceCell<ConnectionManager>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces `used` by an empty cell, unless another request did already; whether this did.
    fn replace(&self, used: &std::sync::Arc<OnceCell<ConnectionManager>>) -> bool {
        let mut current = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !std::sync::Arc::ptr_eq(&current, used) {
            return false;
        }
        *current = std::sync::Arc::default();
        true
    }
}

/// Whether the server answered as a replica: a master demoted by a failover (`READONLY` to a
/// write), or a replica that lost its master (`MASTERDOWN`).
fn demoted(e: &redis::RedisError) -> bool {
    matches!(e.code(), Some("READONLY" | "MASTERDOWN"))
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
