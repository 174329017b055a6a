//! Redis backend, shared by every replica: one server (`redis://` or `rediss://`), a Sentinel
//! set-up (the master found through the sentinels, again after a failover) or a Cluster.
//!
//! Connections are made lazily, so the sidecar starts (and reports not-ready) while Redis is
//! down, and recover by themselves when it returns: the single-server connection manager and the
//! cluster client reconnect on their own; a Sentinel connection that fails is dropped and the
//! master asked for again. Every key gets the configured prefix; callers hash-tag their keys
//! (`session:{<hash>}`) so one session's keys share a Cluster slot. Errors never echo a URL
//! (it may hold a password).

use super::StoreError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{FromRedisValue, RedisConnectionInfo, TlsMode};
use std::time::Duration;
use tokio::sync::{Mutex, OnceCell};

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
}

enum Backend {
    Single {
        client: redis::Client,
        config: ConnectionManagerConfig,
        conn: OnceCell<ConnectionManager>,
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

pub struct RedisStore {
    backend: Backend,
    prefix: String,
    index_add: redis::Script,
    delete_if: redis::Script,
}

/// Runs `$body` with `$c` bound to a live connection of whichever backend this is.
macro_rules! with_conn {
    ($self:ident, |$c:ident| $body:expr) => {
        match &$self.backend {
            Backend::Single {
                client,
                config,
                conn,
            } => {
                let mut $c = conn
                    .get_or_try_init(|| {
                        ConnectionManager::new_with_config(client.clone(), config.clone())
                    })
                    .await
                    .map_err(unavailable)?
                    .clone();
                $body.await.map_err(unavailable)
            }
            Backend::Cluster { client, conn } => {
                let mut $c = conn
                    .get_or_try_init(|| client.get_async_connection())
                    .await
                    .map_err(unavailable)?
                    .clone();
                $body.await.map_err(unavailable)
            }
            Backend::Sentinel {
                client,
                conn,
                timeout,
            } => {
                let mut $c = $self.sentinel_master(client, conn, *timeout).await?;
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
    /// The store described by validated settings.
    pub fn from_config(c: &crate::config::RedisConfig, connections: usize) -> Result<Self, String> {
        use crate::config::RedisTopology;
        let ca_pem = match &c.ca_file {
            Some(p) => Some(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?),
            None => None,
        };
        let topology = match &c.topology {
            RedisTopology::Single { url } => Topology::Single { url: url.expose() },
            RedisTopology::Sentinel { nodes, master, tls } => Topology::Sentinel {
                sentinels: nodes,
                master,
                tls: *tls,
            },
            RedisTopology::Cluster { nodes } => Topology::Cluster { nodes },
        };
        Self::new(RedisOptions {
            topology,
            key_prefix: &c.key_prefix,
            username: c.username.as_deref(),
            password: c.password.as_ref().map(|p| p.expose().as_str()),
            sentinel_username: c.sentinel_username.as_deref(),
            sentinel_password: c.sentinel_password.as_ref().map(|p| p.expose().as_str()),
            ca_pem,
            timeout: c.timeout,
            connections,
        })
    }

    pub fn new(opts: RedisOptions<'_>) -> Result<Self, String> {
        let bad = |e: redis::RedisError| format!("invalid Redis settings ({:?})", e.kind());
        let backend = match opts.topology {
            Topology::Single { url } => {
                let mut info: redis::ConnectionInfo =
                    redis::IntoConnectionInfo::into_connection_info(url).map_err(bad)?;
                info = with_credentials(info, opts.username, opts.password);
                let client = match opts.ca_pem.clone() {
                    Some(ca) => redis::Client::build_with_tls(
                        info,
                        redis::TlsCertificates {
                            client_tls: None,
                            root_cert: Some(ca),
                        },
                    ),
                    None => redis::Client::open(info),
                }
                .map_err(bad)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(opts.timeout))
                    .set_response_timeout(Some(opts.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(2));
                Backend::Single {
                    client,
                    config,
                    conn: OnceCell::new(),
                }
            }
            Topology::Cluster { nodes } => {
                let mut b = ClusterClient::builder(nodes.to_vec())
                    .connection_timeout(opts.timeout)
                    .response_timeout(opts.timeout)
                    .retries(2);
                if let Some(u) = opts.username {
                    b = b.username(u);
                }
                if let Some(p) = opts.password {
                    b = b.password(p);
                }
                if let Some(ca) = opts.ca_pem.clone() {
                    b = b.certs(redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(ca),
                    });
                }
                Backend::Cluster {
                    client: b.build().map_err(bad)?,
                    conn: OnceCell::new(),
                }
            }
            Topology::Sentinel {
                sentinels,
                master,
                tls,
            } => {
                let mut redis_info = RedisConnectionInfo::default();
                if let Some(u) = opts.username {
                    redis_info = redis_info.set_username(u);
                }
                if let Some(p) = opts.password {
                    redis_info = redis_info.set_password(p);
                }
                let mut node =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(redis_info);
                if tls {
                    node = node.set_tls_mode(TlsMode::Secure);
                }
                let mut addresses = Vec::new();
                for s in sentinels {
                    let info: redis::ConnectionInfo =
                        redis::IntoConnectionInfo::into_connection_info(s.as_str()).map_err(bad)?;
                    addresses.push(with_credentials(
                        info,
                        opts.sentinel_username,
                        opts.sentinel_password,
                    ));
                }
                let client = SentinelClient::build(
                    addresses,
                    master,
                    Some(node),
                    SentinelServerType::Master,
                )
                .map_err(bad)?;
                Backend::Sentinel {
                    client: Mutex::new(client),
                    conn: Mutex::new(None),
                    timeout: opts.timeout,
                }
            }
        };
        Ok(RedisStore {
            backend,
            prefix: opts.key_prefix.to_owned(),
            index_add: redis::Script::new(INDEX_ADD),
            delete_if: redis::Script::new(DELETE_IF),
        })
    }

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
        format!("{}{k}", self.prefix)
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        with_conn!(self, |c| cmd.query_async::<T>(&mut c))
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.query(redis::cmd("GET").arg(self.key(key))).await
    }

    pub async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.query(
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(value)
                .arg("PX")
                .arg(millis(ttl)),
        )
        .await
    }

    pub async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.set_if(key, value, ttl, "NX").await
    }

    pub async fn put_if_present(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.set_if(key, value, ttl, "XX").await
    }

    /// `SET key value <NX|XX> PX ttl`: true when the condition held and the value was written.
    async fn set_if(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        condition: &str,
    ) -> Result<bool, StoreError> {
        let cmd = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg(condition)
            .arg("PX")
            .arg(millis(ttl))
            .clone();
        let r: Option<String> = self.query(&cmd).await?;
        Ok(r.is_some())
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let n: i64 = self.query(redis::cmd("DEL").arg(self.key(key))).await?;
        Ok(n > 0)
    }

    pub async fn delete_if(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let key = self.key(key);
        let script = &self.delete_if;
        let n: i64 = with_conn!(self, |c| script
            .key(&key)
            .arg(value)
            .invoke_async::<i64>(&mut c))?;
        Ok(n > 0)
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
        let _: i64 = with_conn!(self, |c| script
            .key(&key)
            .arg(member)
            .arg(ms)
            .invoke_async::<i64>(&mut c))?;
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

    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }
}

fn with_credentials(
    mut info: redis::ConnectionInfo,
    user: Option<&str>,
    pass: Option<&str>,
) -> redis::ConnectionInfo {
    let mut r = info.redis_settings().clone();
    if let Some(u) = user {
        r = r.set_username(u);
    }
    if let Some(p) = pass {
        r = r.set_password(p);
    }
    info = info.set_redis_settings(r);
    info
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}
