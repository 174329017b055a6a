//! Counters kept elsewhere and read at each scrape: the Redis client-side session cache's hits
//! and misses live in the store's per-worker slots, and the count of logouts answered before
//! Redis's replicas had them in the store's own counter; neither knows anything of metrics, so
//! the wiring hands this collector a function that reads them.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use std::sync::{Arc, OnceLock};

/// What the store counts; `None` where the store has no such thing.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreCounts {
    /// The client-side cache's (hits, misses).
    pub cache: Option<(u64, u64)>,
    /// Revocations answered before the replicas asked for acknowledged them.
    pub short_settles: Option<u64>,
    /// Values read from the store that no key of the ring opens.
    pub undecryptable: u64,
}

/// Reads the store's counts; `None` once the store is gone.
pub type Source = Box<dyn Fn() -> Option<StoreCounts> + Send + Sync>;

/// `session_cache_hits_total`, `session_cache_misses_total` and
/// `store_revocations_unreplicated_total`, once a source is set.
#[derive(Clone, Default)]
pub struct StoreCollector {
    pub source: Arc<OnceLock<Source>>,
}

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(counts) = self.source.get().and_then(|f| f()) else {
            return Ok(());
        };
        let mut counters = Vec::with_capacity(4);
        if let Some((hits, misses)) = counts.cache {
            counters.push((
                "session_cache_hits",
                "Session reads answered by the Redis client-side cache",
                hits,
            ));
            counters.push((
                "session_cache_misses",
                "Session reads the Redis client-side cache could not answer (read from Redis)",
                misses,
            ));
        }
        if let Some(short) = counts.short_settles {
            counters.push((
                "store_revocations_unreplicated",
                "Revocations (logouts, sessions ended at a refresh or replaced at a login, \
                 refresh tokens rotated) answered before the Redis replicas asked for (redis_logout_replicas) \
                 acknowledged them within redis_logout_wait_ms: a failover then may bring their \
                 sessions back",
                short,
            ));
        }
        counters.push((
            "store_values_undecryptable",
            "Values read from the session store that no key of OIDC_TOKEN_ENCRYPTION_KEY opens \
             (a key removed too soon, or replicas with different keys): treated as absent",
            counts.undecryptable,
        ));
        for (name, help, v) in counters {
            let e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v).encode(e)?;
        }
        Ok(())
    }
}
