//! OpenRag's rate limits (`RATE_LIMIT_*`), kept by the sidecar in front of it: per client IP, a
//! budget for `/auth/*` requests and one for failed authentications (the sidecar's own 401 and
//! 403 answers). A client over the failure budget gets 429 on every request until its window
//! ends, as in OpenRag, where checking the budget does not spend it.
//!
//! Fixed windows counted in the store, so with Redis every replica shares one budget per
//! client (OpenRag's are per worker process); if Redis cannot be reached the limiter counts
//! in memory instead of failing requests. The same fixed-window counter in both places (not
//! a GCRA crate) keeps local and shared limits alike and lets the failure budget be read
//! without being spent. Knows the store and the settings; no HTTP.

use crate::config::access::{Budget, RateLimits};
use crate::store::memory::MemoryStore;
use crate::store::Store;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Which budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/auth/*` requests (`RATE_LIMIT_AUTH`).
    Auth,
    /// The sidecar's own 401/403 answers (`RATE_LIMIT_AUTH_FAILURE`).
    Failure,
}

impl Kind {
    /// The metric label and the key part.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Auth => "auth",
            Kind::Failure => "failure",
        }
    }
}

pub struct RateLimiter {
    limits: RateLimits,
    /// The session store: Redis (one budget for all replicas) or this process's memory store,
    /// whose purge also drops expired counters.
    store: Arc<Store>,
    /// Counters while Redis cannot be reached, purged every [`PURGE_EVERY`] counts: a client
    /// rotating addresses must not grow them without end.
    fallback: MemoryStore,
    fallback_counts: AtomicU64,
    /// Whether the fallback to local counters has been logged since Redis last answered.
    said_fallback: AtomicBool,
}

/// Counts in the fallback store between two purges of its expired counters.
const PURGE_EVERY: u64 = 4096;

/// The block a client is counted by: an IPv4 address, or an IPv6 /64 (what one subscriber
/// gets, so rotating addresses within it buys nothing).
pub fn client_block(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

impl RateLimiter {
    /// Counters in the session `store` (Redis: shared by the replicas).
    pub fn new(limits: RateLimits, store: Arc<Store>) -> Self {
        RateLimiter {
            limits,
            store,
            fallback: MemoryStore::new(),
            fallback_counts: AtomicU64::new(0),
            said_fallback: AtomicBool::new(false),
        }
    }

    fn budget(&self, kind: Kind) -> Budget {
        match kind {
            Kind::Auth => self.limits.auth,
            Kind::Failure => self.limits.failure,
        }
    }

    /// Spends one unit of `kind` for `ip`: `Err(seconds to wait)` when this one is over budget.
    pub async fn spend(&self, kind: Kind, ip: IpAddr) -> Result<(), u64> {
        let b = self.budget(kind);
        let (n, left) = self.count(kind, ip, b.window, true).await;
        if n > b.limit {
            return Err(retry_after(left));
        }
        Ok(())
    }

    /// Whether `ip` has used up its `kind` budget (spends nothing): `Some(seconds to wait)`.
    pub async fn exhausted(&self, kind: Kind, ip: IpAddr) -> Option<u64> {
        let b = self.budget(kind);
        let (n, left) = self.count(kind, ip, b.window, false).await;
        (n >= b.limit).then(|| retry_after(left))
    }

    async fn count(&self, kind: Kind, ip: IpAddr, window: Duration, hit: bool) -> (u64, Duration) {
        let block = client_block(ip).to_string();
        let key = crate::store::keys::hashed("ratelimit", &["ratelimit", kind.label(), &block]);
        match self.store.count(&key, window, hit).await {
            Ok(r) => {
                self.said_fallback.store(false, Ordering::Relaxed);
                return r;
            }
            Err(e) => {
                if !self.said_fallback.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "rate limits: Redis unreachable, counting on this replica only");
                }
            }
        }
        if self.fallback_counts.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            self.fallback.purge();
        }
        self.fallback.count(&key, window, hit)
    }
}

/// Whole seconds until the window ends, at least 1 (`Retry-After`).
fn retry_after(left: Duration) -> u64 {
    (left.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(auth: u64, failure: u64) -> RateLimiter {
        let minute = Duration::from_secs(60);
        RateLimiter::new(
            RateLimits {
                auth: Budget {
                    limit: auth,
                    window: minute,
                },
                failure: Budget {
                    limit: failure,
                    window: minute,
                },
            },
            Arc::new(Store::Memory(MemoryStore::new())),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_plus_one_is_refused_until_the_window_ends() {
        let l = limiter(3, 2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.spend(Kind::Auth, ip).await, Ok(()));
        }
        let wait = l.spend(Kind::Auth, ip).await.unwrap_err();
        assert!((59..=60).contains(&wait), "{wait}");
        assert_eq!(l.spend(Kind::Auth, other).await, Ok(()), "per client");
        assert_eq!(l.spend(Kind::Failure, ip).await, Ok(()), "per budget");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(l.spend(Kind::Auth, ip).await, Ok(()), "a new window");
    }

    #[tokio::test(start_paused = true)]
    async fn reading_the_failure_budget_does_not_spend_it() {
        let l = limiter(60, 2);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(l.exhausted(Kind::Failure, ip).await, None);
        }
        assert_eq!(l.spend(Kind::Failure, ip).await, Ok(()));
        assert_eq!(l.spend(Kind::Failure, ip).await, Ok(()));
        assert!(l.exhausted(Kind::Failure, ip).await.is_some());
        assert!(l.spend(Kind::Failure, ip).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_ipv6_slash_64_is_one_client_and_expired_counters_are_purged() {
        let store = Arc::new(Store::Memory(MemoryStore::new()));
        let minute = Duration::from_secs(60);
        let budget = |limit| Budget {
            limit,
            window: minute,
        };
        let l = RateLimiter::new(
            RateLimits {
                auth: budget(2),
                failure: budget(2),
            },
            store.clone(),
        );
        for last in 1..=2u16 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, last));
            assert_eq!(l.spend(Kind::Auth, ip).await, Ok(()));
        }
        let rotated: IpAddr = "2001:db8:1:2:ffff::77".parse().unwrap();
        assert!(
            l.spend(Kind::Auth, rotated).await.is_err(),
            "another address in the same /64 shares the budget"
        );
        let next_block: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(l.spend(Kind::Auth, next_block).await, Ok(()));
        // Counters live in the session store, which its purge keeps small.
        for i in 0..100u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, i));
            assert_eq!(l.spend(Kind::Failure, ip).await, Ok(()));
        }
        let Store::Memory(m) = &*store else {
            unreachable!()
        };
        assert!(m.len() >= 102, "{}", m.len());
        tokio::time::advance(minute + Duration::from_secs(1)).await;
        m.purge();
        assert_eq!(m.len(), 0, "expired counters are gone");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after(Duration::from_secs(3)), 3);
        assert_eq!(retry_after(Duration::ZERO), 1);
    }
}
