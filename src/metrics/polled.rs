//! Counters kept elsewhere and read at each scrape: the Redis client-side session cache's hits
//! and misses live in the store's per-worker slots, which know nothing of metrics; the wiring
//! hands this collector a function that reads them.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use std::sync::{Arc, OnceLock};

/// Reads (hits, misses); `None` when there is nothing to report.
pub type Source = Box<dyn Fn() -> Option<(u64, u64)> + Send + Sync>;

/// `session_cache_hits_total` and `session_cache_misses_total`, once a source is set.
#[derive(Clone, Default)]
pub struct CacheCollector {
    pub source: Arc<OnceLock<Source>>,
}

impl std::fmt::Debug for CacheCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheCollector")
    }
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((hits, misses)) = self.source.get().and_then(|f| f()) else {
            return Ok(());
        };
        for (name, help, v) in [
            (
                "session_cache_hits",
                "Session reads answered by the Redis client-side cache",
                hits,
            ),
            (
                "session_cache_misses",
                "Session reads the Redis client-side cache could not answer (read from Redis)",
                misses,
            ),
        ] {
            let e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v).encode(e)?;
        }
        Ok(())
    }
}
