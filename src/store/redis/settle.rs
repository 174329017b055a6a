//! Waiting for replicas after a revocation: Redis answers a `DEL` once the master has done it,
//! and replicates afterwards; a failover that promotes a replica the deletion had not reached
//! brings the session back. So the session layer asks, once a revocation is written, for its
//! writes to be on `replicas` replicas (`WAIT`), waiting `wait` at most.
//!
//! `WAIT` blocks the connection it is sent on, so it has a connection of its own (on the shared
//! ones it would hold every request behind it). It covers the writes of its own connection
//! only, so each round first writes a key of its own: the master's replication offset after
//! that write is past every write answered before, on any connection. Rounds are shared: a
//! caller waits for the first round that begins after it asked (one may be under way), so a
//! burst of logouts costs a couple of rounds, not one `WAIT` each. Owns that connection and
//! the count of callers answered short; knows nothing of sessions.
//!
//! A Cluster's writes are spread over its masters, so there a round waits on each master
//! ([`cluster`]), and is as short as the shortest.

mod cluster;

use super::{unavailable, Backend, StoreError};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

/// What a round found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Nothing to wait for: no replicas asked for.
    NotAsked,
    /// At least the replicas asked for have every write answered before the round.
    Replicated,
    /// Fewer replicas than asked acknowledged within the wait (`acked` of them), or the round
    /// failed (`acked` 0): the writes are done on the master only.
    Short { acked: u32 },
}

pub struct Settle {
    replicas: u32,
    wait: Duration,
    /// The key each round writes (prefixed; in the store's key space, for ACLs on a prefix).
    key: String,
    /// Rounds begun so far (the one under way included).
    begun: AtomicU64,
    rounds: Mutex<Rounds>,
    short: AtomicU64,
}

struct Rounds {
    done: u64,
    last: Settled,
    conn: Option<SettleConn>,
    /// A Cluster's slots → a hash tag that lands on it ([`cluster`]), found once each.
    tags: HashMap<u16, String>,
}

/// The connection rounds run on, kept between them.
pub enum SettleConn {
    /// To the master: a single server, or the one the sentinels name.
    Master(MultiplexedConnection),
    /// To every master of a Cluster: its own, besides the requests' one.
    Cluster(ClusterConnection),
}

impl Settle {
    /// `replicas` 0 asks for nothing.
    pub fn new(replicas: u32, wait: Duration, key: String) -> Self {
        Settle {
            replicas,
            wait,
            key,
            begun: AtomicU64::new(0),
            rounds: Mutex::new(Rounds {
                done: 0,
                last: Settled::NotAsked,
                conn: None,
                tags: HashMap::new(),
            }),
            short: AtomicU64::new(0),
        }
    }

    /// How long a round may take: the wait, and `timeout` each for a connection made again and
    /// the round trip around the wait.
    pub fn round_limit(&self, timeout: Duration) -> Duration {
        self.wait + timeout * 2
    }

    /// Callers answered short (or after a failed round) so far.
    pub fn short_answers(&self) -> u64 {
        self.short.load(Ordering::Relaxed)
    }

    /// Waits until every write answered before this call is on the replicas asked for, or the
    /// wait is over; `connect` makes the round's connection when there is none (to the master).
    /// A round's failure is reported as short, never as an error: the writes are done. Each
    /// caller that gets a short answer is counted (a round shared by twenty logouts counts
    /// twenty).
    pub async fn after_writes<F>(&self, limit: Duration, connect: impl Fn() -> F) -> Settled
    where
        F: Future<Output = Result<SettleConn, StoreError>>,
    {
        if self.replicas == 0 {
            return Settled::NotAsked;
        }
        let outcome = self.shared_round(limit, connect).await;
        if outcome != Settled::Replicated {
            self.short.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    async fn shared_round<F>(&self, limit: Duration, connect: impl Fn() -> F) -> Settled
    where
        F: Future<Output = Result<SettleConn, StoreError>>,
    {
        // A round begun after this point covers this caller's writes; one begun before may not.
        let covering = self.begun.load(Ordering::SeqCst) + 1;
        let mut rounds = self.rounds.lock().await;
        if rounds.done >= covering {
            return rounds.last;
        }
        let n = self.begun.fetch_add(1, Ordering::SeqCst) + 1;
        let outcome = match tokio::time::timeout(limit, self.round(&mut rounds, connect)).await {
            Ok(Ok(acked)) if acked >= self.replicas => Settled::Replicated,
            Ok(Ok(acked)) => Settled::Short { acked },
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not wait for Redis replicas after a logout");
                Settled::Short { acked: 0 }
            }
            Err(_) => {
                tracing::warn!("no answer from Redis in time while waiting for its replicas");
                // A reply may still come on that connection: never read it as the next one's.
                rounds.conn = None;
                Settled::Short { acked: 0 }
            }
        };
        rounds.done = n;
        rounds.last = outcome;
        outcome
    }

    /// One `SET` then `WAIT` on the round's connection (on a Cluster's, on each master); the
    /// replicas that acknowledged (on a Cluster, the fewest any master had). A kept
    /// connection found dead (Redis's idle `timeout`, the `CLIENT KILL` of a failover, a
    /// restart) is made again once, so that the first logout after a failover is not the one
    /// left unprotected; one that answers with an error (`NOPERM`, `OOM`, `READONLY`) is kept.
    async fn round<F>(
        &self,
        rounds: &mut Rounds,
        connect: impl Fn() -> F,
    ) -> Result<u32, StoreError>
    where
        F: Future<Output = Result<SettleConn, StoreError>>,
    {
        let (mut conn, fresh) = match rounds.conn.take() {
            Some(c) => (c, false),
            None => (connect().await?, true),
        };
        let mut answer = self.ask(&mut conn, &mut rounds.tags).await;
        if !fresh && answer.as_ref().is_err_and(dead) {
            conn = connect().await?;
            answer = self.ask(&mut conn, &mut rounds.tags).await;
        }
        match answer {
            Ok(acked) => {
                rounds.conn = Some(conn);
                Ok(acked)
            }
            Err(e) => {
                if !dead(&e) {
                    rounds.conn = Some(conn);
                }
                Err(unavailable(e))
            }
        }
    }
}

/// `SET` of `key` then `WAIT` for `replicas` at most `wait`, in one pipeline: the replicas that
/// acknowledged.
async fn set_then_wait(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
    replicas: u32,
    wait: Duration,
) -> redis::RedisResult<u32> {
    let mut p = redis::pipe();
    p.cmd("SET")
        .arg(key)
        .arg(1)
        .arg("PX")
        .arg(60_000)
        .ignore()
        .cmd("WAIT")
        .arg(replicas)
        // Never 0: that waits for ever.
        .arg(super::millis(wait));
    p.query_async::<(u32,)>(conn).await.map(|(n,)| n)
}

impl Settle {
    /// One round's asking on `conn`.
    async fn ask(
        &self,
        conn: &mut SettleConn,
        tags: &mut HashMap<u16, String>,
    ) -> redis::RedisResult<u32> {
        match conn {
            SettleConn::Master(c) => set_then_wait(c, &self.key, self.replicas, self.wait).await,
            SettleConn::Cluster(c) => cluster::on_every_master(self, c, tags).await,
        }
    }
}

/// Whether `e` says the connection is no use any more, rather than Redis refusing the command:
/// gone, or to a master demoted to a replica by a failover that kept its clients (`READONLY`;
/// the connection is made again through the sentinels, or to the address, next time).
pub(super) fn dead(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.code() == Some("READONLY")
}

impl super::RedisStore {
    /// Waits until the writes answered so far are on the replicas a revocation waits for
    /// (`redis_logout_replicas`), or its wait is over; never fails (a failure is a short
    /// round: the writes are done on the master).
    pub async fn after_revocation(&self) -> Settled {
        let limit = self.settle.round_limit(self.timeout);
        Box::pin(
            self.settle
                .after_writes(limit, || self.settle_connection(limit)),
        )
        .await
    }

    /// Revocations answered before their replicas acknowledged them, so far.
    pub fn short_settles(&self) -> u64 {
        self.settle.short_answers()
    }

    /// A connection of its own to the master, for `WAIT`, whose answers may take `limit`.
    async fn settle_connection(&self, limit: Duration) -> Result<SettleConn, StoreError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(limit));
        match &self.backend {
            Backend::Single { client, .. } => client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(SettleConn::Master)
                .map_err(unavailable),
            Backend::Sentinel { settle_client, .. } => settle_client
                .lock()
                .await
                .get_async_connection_with_config(&config)
                .await
                .map(SettleConn::Master)
                .map_err(unavailable),
            // A connection of its own: a `WAIT` holds back every command behind it on the
            // master's connection, which on the requests' one would be every request's.
            Backend::Cluster { client, .. } => client
                .get_async_connection_with_config(
                    redis::cluster::ClusterConfig::new()
                        .set_connection_timeout(self.timeout)
                        .set_response_timeout(limit),
                )
                .await
                .map(SettleConn::Cluster)
                .map_err(unavailable),
        }
    }
}
