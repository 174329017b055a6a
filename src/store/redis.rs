//! Redis backend (`redis://` or `rediss://`), shared by every replica.
//!
//! One multiplexed, self-reconnecting `ConnectionManager`, created lazily so the sidecar starts
//! (and reports not-ready) while Redis is down, and recovers by itself when it returns. Every
//! key gets the configured prefix. Callers hash-tag their keys (`session:{<hash>}`) so that one
//! session's keys land in one Cluster slot.

use super::StoreError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Adds `member` to a set and raises the set's TTL to at least `ttl_ms` (never lowers it).
const INDEX_ADD: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1";

pub struct RedisStore {
    client: redis::Client,
    config: ConnectionManagerConfig,
    conn: OnceCell<ConnectionManager>,
    prefix: String,
    index_add: redis::Script,
}

pub struct RedisOptions<'a> {
    pub url: &'a str,
    pub key_prefix: &'a str,
    /// PEM CA bundle for `rediss://` with a private CA.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl RedisStore {
    pub fn new(opts: RedisOptions<'_>) -> Result<Self, String> {
        let client = match opts.ca_pem {
            Some(ca) => redis::Client::build_with_tls(
                opts.url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca),
                },
            ),
            None => redis::Client::open(opts.url),
        }
        // The URL may carry a password: describe the error, never echo the URL.
        .map_err(|e| format!("invalid Redis URL ({:?})", e.kind()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.timeout))
            .set_response_timeout(Some(opts.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        Ok(RedisStore {
            client,
            config,
            conn: OnceCell::new(),
            prefix: opts.key_prefix.to_owned(),
            index_add: redis::Script::new(INDEX_ADD),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let c = self
            .conn
            .get_or_try_init(|| {
                ConnectionManager::new_with_config(self.client.clone(), self.config.clone())
            })
            .await
            .map_err(unavailable)?;
        Ok(c.clone())
    }

    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.prefix)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    pub async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    pub async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let r: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(r.is_some())
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let n: i64 = redis::cmd("DEL")
            .arg(self.key(key))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    pub async fn index_add(
        &self,
        index: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: i64 = self
            .index_add
            .key(self.key(index))
            .arg(member)
            .arg(millis(ttl))
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn index_members(&self, index: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("SMEMBERS")
            .arg(self.key(index))
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    pub async fn index_remove(&self, index: &str, member: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: i64 = redis::cmd("SREM")
            .arg(self.key(index))
            .arg(member)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}
