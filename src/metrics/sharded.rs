//! Instruments updated on every request, with one shard per worker thread: a worker only ever
//! writes its own shard, so recording a request never moves a cache line between cores (the
//! shared `prometheus-client` histogram took a write lock per request). A scrape adds the
//! shards up and encodes the sums through `prometheus-client`'s encoder, so the exposition is
//! the same as with the crate's own types.

use crate::per_worker::PerWorker;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// One number per worker, added up when read; clones share it.
#[derive(Clone)]
struct Shards(Arc<PerWorker<AtomicI64>>);

impl Shards {
    fn new(workers: usize) -> Self {
        Shards(Arc::new(PerWorker::new(workers, AtomicI64::default)))
    }

    fn add(&self, n: i64) {
        self.0.get().fetch_add(n, Ordering::Relaxed);
    }

    fn sum(&self) -> i64 {
        self.0.all().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// This worker's own number.
    fn here(&self) -> i64 {
        self.0.get().load(Ordering::Relaxed)
    }
}

/// A counter; clones share the count.
#[derive(Clone)]
pub struct Counter(Shards);

impl Counter {
    pub fn new(workers: usize) -> Self {
        Counter(Shards::new(workers))
    }

    pub fn inc(&self) {
        self.0.add(1);
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let total = u64::try_from(self.0.sum()).unwrap_or(0);
        encoder.encode_counter::<NoLabelSet, _, u64>(&total, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counter({})", self.0.sum())
    }
}

/// A gauge that goes up and down (requests in flight); clones share the value. A request may
/// end on another thread than it started on: only the sum is meaningful, and it is.
#[derive(Clone)]
pub struct Gauge(Shards);

impl Gauge {
    pub fn new(workers: usize) -> Self {
        Gauge(Shards::new(workers))
    }

    pub fn inc(&self) {
        self.0.add(1);
    }

    pub fn dec(&self) {
        self.0.add(-1);
    }

    /// This worker's share of the sum: its requests in flight, as workers run each request to
    /// its end on the thread it started on.
    pub fn here(&self) -> i64 {
        self.0.here()
    }
}

impl EncodeMetric for Gauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.0.sum())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

impl std::fmt::Debug for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gauge")
    }
}

/// A histogram with fixed upper bounds (the last one is `f64::MAX`, encoded as `+Inf`);
/// clones share the observations.
#[derive(Clone)]
pub struct Histogram {
    bounds: Arc<[f64]>,
    shards: Arc<PerWorker<Mutex<Shard>>>,
}

#[derive(Default)]
struct Shard {
    sum: f64,
    count: u64,
    /// Observations per bucket, not cumulative (what the encoder expects).
    buckets: Vec<u64>,
}

impl Histogram {
    pub fn new(workers: usize, bounds: impl Iterator<Item = f64>) -> Self {
        let bounds: Arc<[f64]> = bounds.chain(std::iter::once(f64::MAX)).collect();
        let n = bounds.len();
        Histogram {
            bounds,
            shards: Arc::new(PerWorker::new(workers, || {
                Mutex::new(Shard {
                    buckets: vec![0; n],
                    ..Shard::default()
                })
            })),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self.bounds.iter().position(|b| *b >= v);
        let mut s = self.shards.get().lock().unwrap_or_else(|p| p.into_inner());
        s.sum += v;
        s.count += 1;
        if let Some(b) = i.and_then(|i| s.buckets.get_mut(i)) {
            *b += 1;
        }
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (mut sum, mut count) = (0.0, 0);
        let mut buckets: Vec<(f64, u64)> = self.bounds.iter().map(|b| (*b, 0)).collect();
        for shard in self.shards.all() {
            let s = shard.lock().unwrap_or_else(|p| p.into_inner());
            sum += s.sum;
            count += s.count;
            for (total, n) in buckets.iter_mut().zip(&s.buckets) {
                total.1 += n;
            }
        }
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Histogram")
    }
}
