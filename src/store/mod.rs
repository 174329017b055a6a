//! The session store: opaque bytes with a TTL, plus small string sets whose members expire,
//! used as secondary indexes (sessions by `sid`, by `sub`) and a set-if-absent used for one-time markers.
//!
//! Knows nothing of HTTP, cookies or OIDC, and never sees plaintext: callers hand it keys that
//! are already hashes and values that are already Fernet ciphertext. Two backends, one
//! behaviour, checked by one conformance suite ([`conformance`]): memory (one replica) and Redis
//! (any number of replicas). An enum rather than a trait object: two variants, no allocation.

pub mod conformance;
pub mod keys;
pub mod memory;
pub mod redis;

use bytes::Bytes;
use std::time::Duration;

/// Store failures. Every request that needs the store fails closed on these.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

/// A session store backend. Created once and held in an `Arc`, so the size difference between
/// the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Store {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
}

/// Warns once Redis first answers (it may be down at start) if it evicts keys when full;
/// gives up quietly after five minutes without an answer. That Redis does not answer at start
/// is said once, at WARN: outside Kubernetes nothing polls `/readyz`, and the first sign
/// would otherwise be a user's 503.
async fn warn_if_evicting(store: std::sync::Weak<Store>) {
    let mut silent = false;
    for _ in 0..60 {
        let Some(s) = store.upgrade() else { return };
        let Store::Redis(r) = &*s else { return };
        match r.eviction().await {
            Ok(servers) => {
                if silent {
                    tracing::info!("Redis answers now");
                }
                for w in servers
                    .iter()
                    .filter_map(redis::eviction::Eviction::warning)
                {
                    tracing::warn!("{w}");
                }
                return;
            }
            // A Redis that answers but refuses `INFO` (an ACL without it) serves sessions:
            // only one that does not answer a `PING` either is said to be down.
            Err(e) if !silent && r.ping().await.is_err() => {
                silent = true;
                tracing::warn!(error = %e, "Redis does not answer (SSO_SIDECAR_REDIS_URL or SSO_SIDECAR_REDIS_NODES): logins and sessions get 503 until it does");
            }
            Err(e) => tracing::debug!(error = %e, "INFO memory: no answer"),
        }
        drop(s);
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}

impl Store {
    /// A short description for logs ("memory", "redis").
    /// Starts the store's background work on the current runtime: the memory store purges
    /// expired entries every minute (Redis expires its own); Redis is asked once whether it
    /// evicts keys when full ([`redis::eviction`]). It ends with the store.
    pub fn start_housekeeping(self: &std::sync::Arc<Self>) {
        match &**self {
            Store::Memory(_) => {
                tokio::spawn(memory::purge_every(
                    std::sync::Arc::downgrade(self),
                    std::time::Duration::from_secs(60),
                ));
            }
            Store::Redis(_) => {
                tokio::spawn(warn_if_evicting(std::sync::Arc::downgrade(self)));
            }
        }
    }

    /// Session reads answered by Redis's client-side cache, and the others (`None`: no cache).
    pub fn cache_stats(&self) -> Option<(u64, u64)> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(s) => s.cache_stats(),
        }
    }

    /// Revocations answered before the replicas asked for acknowledged them (`None`: the
    /// memory store, which has no replicas).
    pub fn short_settles(&self) -> Option<u64> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(s) => Some(s.short_settles()),
        }
    }

    /// Once a revocation is written: waits until every write answered so far is on the
    /// replicas the store is set to wait for, or that wait is over. Never fails: the writes
    /// are done, on the master at least.
    pub async fn after_revocation(&self) -> redis::settle::Settled {
        match self {
            Store::Memory(_) => redis::settle::Settled::NotAsked,
            Store::Redis(s) => s.after_revocation().await,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }

    /// The value of `key`. Redis may answer from its client-side cache, which Redis keeps
    /// coherent; code that has just taken a lock in the store reads with [`Store::get_fresh`].
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.get(key)),
            Store::Redis(s) => s.get(key).await,
        }
    }

    /// The value of `key` as the backend holds it at this moment, never from a cache.
    pub async fn get_fresh(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.get(key)),
            Store::Redis(s) => s.get_fresh(key).await,
        }
    }

    /// Stores `value` under `key` for `ttl`, replacing any previous value.
    pub async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => {
                s.put(key, value, ttl);
                Ok(())
            }
            Store::Redis(s) => s.put(key, value, ttl).await,
        }
    }

    /// Stores `value` only if `key` is absent; true when it was stored (replay markers, locks).
    pub async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.put_if_absent(key, value, ttl)),
            Store::Redis(s) => s.put_if_absent(key, value, ttl).await,
        }
    }

    /// Sets the time left to `key` to `ttl`, its value untouched; false when it is gone (an
    /// expired key is not brought back). Sessions' idle timeout.
    pub async fn touch(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.touch(key, ttl)),
            Store::Redis(s) => s.touch(key, ttl).await,
        }
    }

    /// Replaces `key` with `value` only if it still holds `expected`; false when it holds
    /// something else or is gone (a session written by another request since it was read).
    pub async fn replace_if(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.replace_if(key, expected, value, ttl)),
            Store::Redis(s) => s.replace_if(key, expected, value, ttl).await,
        }
    }

    /// Removes `key` only if it still holds `value` (a lock released by its owner only).
    pub async fn delete_if(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.delete_if(key, value)),
            Store::Redis(s) => s.delete_if(key, value).await,
        }
    }

    /// Removes `key`; true when it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.delete(key)),
            Store::Redis(s) => s.delete(key).await,
        }
    }

    /// A fixed-window counter shared by every replica: counts one hit (when `hit`) on `key`,
    /// whose window of `window` starts at its first hit; returns the count and the time left in
    /// the window. Rate limits use it.
    pub async fn count(
        &self,
        key: &str,
        window: Duration,
        hit: bool,
    ) -> Result<(u64, Duration), StoreError> {
        match self {
            Store::Memory(s) => Ok(s.count(key, window, hit)),
            Store::Redis(s) => s.count(key, window, hit).await,
        }
    }

    /// Adds `member` to the index `index` for `ttl`, keeping the index alive at least `ttl`.
    /// Each addition drops the members whose own `ttl` is over, so an index that logins keep
    /// alive does not grow with every login; until then a read may still list them (callers
    /// find their sessions gone). `index` is a key from [`keys::hashed`]: Redis keeps an index
    /// in keys that share its hash tag.
    pub async fn index_add(
        &self,
        index: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => {
                s.index_add(index, member, ttl);
                Ok(())
            }
            Store::Redis(s) => s.index_add(index, member, ttl).await,
        }
    }

    /// The members of `index`, the first to expire first (those an earlier build wrote only to
    /// its plain set are not among them).
    pub async fn index_oldest_first(&self, index: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.index_oldest_first(index)),
            Store::Redis(s) => s.index_oldest_first(index).await,
        }
    }

    pub async fn index_members(&self, index: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.index_members(index)),
            Store::Redis(s) => s.index_members(index).await,
        }
    }

    pub async fn index_remove(&self, index: &str, member: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => {
                s.index_remove(index, member);
                Ok(())
            }
            Store::Redis(s) => s.index_remove(index, member).await,
        }
    }

    /// Whether the backend answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(s) => s.ping().await,
        }
    }
}
