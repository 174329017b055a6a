//! Prometheus metrics: the registry and the handful of instruments the proxy updates.
//!
//! Owns metric names and labels; encoding is the `prometheus-client` crate's. Label values are
//! `&'static str` so recording a request allocates nothing, and what every request records is
//! sharded per worker ([`sharded`]).

mod polled;
pub use polled::StoreCounts;
mod sharded;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The sidecar's metrics. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    /// Counters of `requests` resolved once, indexed [method][status class]: recording a
    /// request then costs one atomic add, no hashing and no lock.
    request_counters: Vec<Vec<sharded::Counter>>,
    refreshes: Family<ResultLabel, Counter>,
    config_reloads: Family<ResultLabel, Counter>,
    logouts: Family<KindLabel, Counter>,
    revoked: Counter,
    logins_refused: Family<ReasonLabel, Counter>,
    logins_reauthenticated: Counter,
    store_counts: polled::StoreCollector,
    rate_limited: Family<KindLabel, Counter>,
    duration: sharded::Histogram,
    in_flight: sharded::Gauge,
    upstream_errors: Family<KindLabel, Counter>,
    connections_open: prometheus_client::metrics::gauge::Gauge,
    connections_refused: Family<ReasonLabel, Counter>,
    connections_closed: Family<ReasonLabel, Counter>,
    upstream_queued: Counter,
    streams_revoked: Counter,
    cross_site_refused: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

impl Metrics {
    /// `workers`: the number of worker threads, each of which records into its own shard.
    pub fn new(workers: usize) -> Self {
        let mut registry = Registry::with_prefix("sso_sidecar");
        let store_counts = polled::StoreCollector::default();
        registry.register_collector(Box::new(store_counts.clone()));
        let requests =
            Family::<RequestLabels, sharded::Counter, _>::new_with_constructor(move || {
                sharded::Counter::new(workers)
            });
        registry.register(
            "http_requests",
            "Requests answered on the public listener, by method and status class",
            requests.clone(),
        );
        // 0.5 ms … ~65 s: proxied latencies on loopback up to long-running backend calls.
        let duration = sharded::Histogram::new(workers, exponential_buckets(0.0005, 2.0, 18));
        registry.register(
            "http_request_duration_seconds",
            "Time from request head received to response head sent",
            duration.clone(),
        );
        let in_flight = sharded::Gauge::new(workers);
        registry.register(
            "http_requests_in_flight",
            "Requests being handled",
            in_flight.clone(),
        );
        let upstream_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "upstream_errors",
            "Failed upstream exchanges, by kind (connect, timeout, reset; busy: refused while every \
             upstream place was taken and the worker's queue budget spent)",
            upstream_errors.clone(),
        );
        let refreshes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "token_refreshes",
            "Access-token refreshes, by result (ok, refused: session ended, failed: IdP unreachable)",
            refreshes.clone(),
        );
        let config_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP, or a watched file changed), by result (applied, refused: \
             invalid or unsafe, the running configuration kept)",
            config_reloads.clone(),
        );
        // Both at 0 from the start, so that an alert on a rate sees the first refusal.
        for result in ["applied", "refused"] {
            let _ = config_reloads.get_or_create(&ResultLabel { result });
        }
        let logouts = Family::<KindLabel, Counter>::default();
        registry.register(
            "logouts",
            "Logouts, by kind (rp, backchannel, frontchannel)",
            logouts.clone(),
        );
        let revoked = Counter::default();
        registry.register(
            "sessions_revoked",
            "Sessions ended by logout or refused refresh",
            revoked.clone(),
        );
        let logins_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "logins_refused",
            "Logins refused after the IdP authenticated the user (or sessions ended at a refresh), by reason (group, email, email_unverified, not_registered, no_token, email_conflict, idp_session_ended, stale_authentication)",
            logins_refused.clone(),
        );
        let logins_reauthenticated = Counter::default();
        registry.register(
            "logins_reauthenticated",
            "Logins begun again with prompt=login, the IdP's auth_time being missing or older than auth_max_age_secs",
            logins_reauthenticated.clone(),
        );
        let rate_limited = Family::<KindLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests answered 429 by the rate limits, by kind (auth, failure)",
            rate_limited.clone(),
        );
        let connections_open = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "connections_open",
            "Client connections held on the public listener",
            connections_open.clone(),
        );
        let connections_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connections_refused",
            "Client connections closed at once because a cap was reached, by reason \
             (max_connections, max_connections_per_ip, admin_max_connections; max_tunnels \
             counts WebSocket handshakes answered 429, max_uploads requests with a body answered 429, \
             max_streams event streams answered 429, max_backchannel back-channel logouts \
             answered 503)",
            connections_refused.clone(),
        );
        let connections_closed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connections_timed_out",
            "Client connections closed by a deadline, by reason (first_byte, idle, send, \
             tunnel_idle, slow_read; send also counts HTTP/2 streams reset while the connection \
             lives on, slow_read responses cut from a client reading too slowly)",
            connections_closed.clone(),
        );
        let upstream_queued = Counter::default();
        registry.register(
            "upstream_queued",
            "Requests that waited for an upstream connection (the per-worker cap was reached)",
            upstream_queued.clone(),
        );
        let streams_revoked = Counter::default();
        registry.register(
            "streams_revoked",
            "WebSocket tunnels and event streams closed because their session ended, or their path no longer admits them (path rules, paths.public)",
            streams_revoked.clone(),
        );
        let cross_site_refused = Counter::default();
        registry.register(
            "cross_site_refused",
            "Requests from another site's page that carried the session cookie: refused, or sent \
             on without identity",
            cross_site_refused.clone(),
        );
        let request_counters = METHODS
            .iter()
            .map(|m| {
                CLASSES
                    .iter()
                    .map(|c| {
                        requests
                            .get_or_create(&RequestLabels {
                                method: m,
                                status: c,
                            })
                            .clone()
                    })
                    .collect()
            })
            .collect();
        Metrics {
            registry,
            request_counters,
            refreshes,
            config_reloads,
            logouts,
            revoked,
            logins_refused,
            logins_reauthenticated,
            store_counts,
            rate_limited,
            duration,
            in_flight,
            upstream_errors,
            connections_open,
            connections_refused,
            connections_closed,
            upstream_queued,
            streams_revoked,
            cross_site_refused,
        }
    }

    pub fn connection_opened(&self) {
        self.connections_open.inc();
    }

    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn connection_timed_out(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The counter of connections (or streams) closed for `reason`, for whoever closes them.
    pub fn closed_counter(&self, reason: &'static str) -> Counter {
        self.connections_closed
            .get_or_create(&ReasonLabel { reason })
            .clone()
    }

    /// The counters of WebSocket handshakes refused over a tunnel cap, and of tunnels closed
    /// for silence.
    pub fn tunnel_counters(&self) -> (Counter, Counter) {
        let idled = self.connections_closed.get_or_create(&ReasonLabel {
            reason: "tunnel_idle",
        });
        (self.holder_refused_counter("max_tunnels"), idled.clone())
    }

    /// The counter of requests refused over a holder's cap, by `reason` (`max_uploads`:
    /// bodies in flight; `max_streams`: event streams).
    pub fn holder_refused_counter(&self, reason: &'static str) -> Counter {
        self.connections_refused
            .get_or_create(&ReasonLabel { reason })
            .clone()
    }

    /// The counter the upstream pool bumps when a request has to wait for a connection.
    pub fn upstream_queued_counter(&self) -> Counter {
        self.upstream_queued.clone()
    }

    pub fn streams_revoked(&self, n: u64) {
        self.streams_revoked.inc_by(n);
    }

    pub fn cross_site_refused(&self) {
        self.cross_site_refused.inc();
    }

    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    /// Requests in flight on this worker thread (the router sheds memory above a number).
    pub fn in_flight_here(&self) -> i64 {
        self.in_flight.here()
    }

    pub fn request_finished(&self, method: &http::Method, status: u16, elapsed: Duration) {
        self.in_flight.dec();
        self.duration.observe(elapsed.as_secs_f64());
        self.request_counters[method_index(method)][class_index(status)].inc();
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// A refresh attempt, by result (`ok`, `refused`, `failed`).
    pub fn refresh(&self, result: &'static str) {
        self.refreshes.get_or_create(&ResultLabel { result }).inc();
    }

    /// A configuration reload, by result (`applied`, `refused`).
    pub fn config_reload(&self, result: &'static str) {
        self.config_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn logout(&self, kind: &'static str) {
        self.logouts.get_or_create(&KindLabel { kind }).inc();
    }

    /// Where the store's counters come from (`session_cache_hits_total`/`_misses_total`,
    /// `store_revocations_unreplicated_total`); set once.
    pub fn set_store_source(&self, f: polled::Source) {
        let _ = self.store_counts.source.set(f);
    }

    /// A login refused (or a session ended at a refresh) by `[authz]`, the identity mode or
    /// `auth_max_age_secs`.
    pub fn login_refused(&self, reason: &'static str) {
        self.logins_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// A login begun again with `prompt=login` (`auth_max_age_secs`).
    pub fn login_reauthenticated(&self) {
        self.logins_reauthenticated.inc();
    }

    /// A request answered 429, by budget (`auth`, `failure`).
    pub fn rate_limited(&self, kind: &'static str) {
        self.rate_limited.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn sessions_revoked(&self, n: u64) {
        self.revoked.inc_by(n);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "OTHER",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_index(m: &http::Method) -> usize {
    match *m {
        http::Method::GET => 0,
        http::Method::POST => 1,
        http::Method::PUT => 2,
        http::Method::DELETE => 3,
        http::Method::PATCH => 4,
        http::Method::HEAD => 5,
        http::Method::OPTIONS => 6,
        _ => 7,
    }
}

fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests;
