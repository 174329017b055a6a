//! `[connections]`: how long a client connection may stay silent or idle, how many the sidecar
//! holds at once (in all, and per client address), how many it opens to the upstream, how long
//! and how many WebSocket tunnels may stay open, how often live streams check that their
//! session still exists, and how connections are spread over the workers — their TOML shape,
//! defaults and validation. No I/O.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Raw `[connections]` keys (`SSO_SIDECAR_CONNECTIONS__…`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionSettings {
    /// Seconds a new connection gets to send its first byte (or finish its TLS handshake).
    pub first_byte_timeout_secs: u64,
    /// Seconds a client gets to send a complete request head.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection with no request in flight is kept (HTTP/1.1 keep-alive and HTTP/2).
    pub idle_timeout_secs: u64,
    /// Seconds a response may wait on a client that takes none of it (a full socket, an HTTP/2
    /// window left at zero) before the connection is closed, or on HTTP/2 its stream reset
    /// (nginx's `send_timeout`): such a client would otherwise hold an upstream connection and
    /// its place for ever.
    pub send_timeout_secs: u64,
    /// Streams one HTTP/2 connection may have open at once (nginx's
    /// `http2_max_concurrent_streams`): each may hold an upstream place.
    pub http2_max_streams: u32,
    /// KiB of request body one HTTP/2 connection may send ahead of what the sidecar has read
    /// (its stream and connection flow-control windows), so at most what an idle connection
    /// can make the sidecar hold. More lets a client upload faster over a long round trip.
    pub http2_window_kib: u32,
    /// Seconds between HTTP/2 pings on a quiet connection; a peer that does not answer one
    /// within the same time is disconnected. 0 = no pings.
    pub http2_ping_interval_secs: u64,
    /// Client connections held at once on the public listener; also bounded by the open-file
    /// limit, minus a reserve for upstream, Redis and IdP connections.
    pub max: usize,
    /// Client connections held at once from one address (trusted proxies are exempt). 0 = no cap.
    pub max_per_ip: usize,
    /// Connections held at once on the admin listener (probes and metrics scrapes need few).
    pub admin_max: usize,
    /// Connections each worker opens to the upstream at once; requests beyond wait for one.
    /// WebSocket tunnels do not count, nor event streams once their response has begun (up to
    /// `proxy::STREAMS_PER_PLACE` per place): they last as long as their clients.
    pub upstream_max_per_worker: usize,
    /// The share of a worker's upstream places one client (a signed-in user with all their
    /// sessions, or an address without a session: IPv6 by its /64, read through
    /// `trusted_proxies`) may hold at once, in percent (at least one place). Its requests
    /// beyond wait for one of its own to end, even while places are free: a client whose
    /// requests the backend answers slowly cannot hold every place. While every place is
    /// taken, requests are served in turn by client. 100 = no share.
    pub upstream_client_share_percent: u8,
    /// KiB of request heads one worker holds waiting for an upstream connection (every one
    /// taken, or their client at its share; an HTTP/2 connection may queue 128 heads of up to
    /// 32 KiB), one client at most its share of it; a request beyond is answered 503 at once.
    pub upstream_queue_kib: usize,
    /// Milliseconds between two checks that the sessions of live WebSocket tunnels and event
    /// streams still exist; a revoked session's streams are closed at the next check.
    pub revocation_check_ms: u64,
    /// Seconds the live streams of a session may stay open while the store cannot confirm it
    /// (Redis unreachable); then they are closed, as requests are refused at once. A session
    /// known to be past its end closes them at the next check whatever this says. 0 = until the
    /// store answers again.
    pub revocation_outage_secs: u64,
    /// Seconds a WebSocket tunnel may carry nothing either way before it is closed (nginx's
    /// `proxy_read_timeout` for WebSockets). Pings count: uvicorn and socket.io send one every
    /// 20-25 s, so a live chat never gets near it.
    pub tunnel_idle_timeout_secs: u64,
    /// WebSocket tunnels one signed-in user (all their sessions together) may hold open at
    /// once on a replica. Over it, the handshake is answered 429. 0 = no cap.
    pub max_tunnels_per_session: usize,
    /// WebSocket tunnels callers without a session may hold open at once on a replica from one
    /// client address (IPv6: its /64; read through `trusted_proxies`). Higher than the
    /// session's: many people may share an address (a NAT, an ingress not listed in
    /// `trusted_proxies`). Over it, the handshake is answered 429. 0 = no cap.
    pub max_tunnels_per_address: usize,
    /// Requests with a body one signed-in user (all their sessions together) may have on
    /// their way upstream at once on a replica
    /// (each holds an upstream place until its body is through, however slowly its client
    /// sends it). Over it, the request is answered 429 before the upstream sees it. 0 = no cap.
    pub max_uploads_per_session: usize,
    /// The same for callers without a session, by client address (IPv6: its /64; read through
    /// `trusted_proxies`). 0 = no cap.
    pub max_uploads_per_address: usize,
    /// Event streams (`text/event-stream` answers) one signed-in user (all their sessions
    /// together) may hold open at once on a replica: each holds an upstream connection for as long as its client wants it. The
    /// stream beyond is answered 429 (its upstream connection closed). 0 = no cap.
    pub max_streams_per_session: usize,
    /// The same for callers without a session, by client address (IPv6: its /64; read through
    /// `trusted_proxies`). 0 = no cap.
    pub max_streams_per_address: usize,
    /// Responses that clients at one address (IPv6: its /64; read through `trusted_proxies`)
    /// may hold up at once on a replica: a response whose client takes less than 16 KiB of it
    /// in `slow_read_secs` (its upstream not being the slow side). Each holds an upstream
    /// place; the ones beyond are cut for a request waiting that their place would go to
    /// (their upstream connections closed, their clients' answers ended as broken). 0 = no
    /// cap.
    pub max_slow_reads_per_address: usize,
    /// The time in which a response's client must take 16 KiB of it not to hold it up.
    pub slow_read_secs: u64,
    /// How client connections are spread over the worker threads: `exact` (a worker that
    /// accepts a connection while another holds fewer hands it over, so a few long-lived
    /// connections from an ingress use every core) or `kernel` (where `SO_REUSEPORT`'s hash
    /// puts it: no hand-over, for many short connections).
    pub balance: String,
}

/// `connections.balance`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    Exact,
    Kernel,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            first_byte_timeout_secs: 10,
            header_read_timeout_secs: 30,
            idle_timeout_secs: 60,
            send_timeout_secs: 60,
            http2_max_streams: 128,
            http2_window_kib: 256,
            http2_ping_interval_secs: 20,
            max: 10_000,
            max_per_ip: 512,
            admin_max: 256,
            upstream_max_per_worker: 64,
            upstream_client_share_percent: 75,
            upstream_queue_kib: 16 * 1024,
            revocation_check_ms: 2000,
            revocation_outage_secs: 30,
            tunnel_idle_timeout_secs: 600,
            max_tunnels_per_session: 32,
            max_tunnels_per_address: 256,
            max_uploads_per_session: 16,
            max_uploads_per_address: 32,
            max_streams_per_session: 32,
            max_streams_per_address: 256,
            max_slow_reads_per_address: 16,
            slow_read_secs: 5,
            balance: "exact".into(),
        }
    }
}

/// The validated `[connections]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub first_byte_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    pub http2_max_streams: u32,
    /// Bytes.
    pub http2_window: u32,
    pub http2_ping_interval: Option<Duration>,
    pub max: usize,
    pub max_per_ip: Option<usize>,
    pub admin_max: usize,
    pub upstream_max_per_worker: usize,
    /// Percent of a worker's upstream places one client may hold (1-100).
    pub upstream_client_share: u8,
    /// Bytes.
    pub upstream_queue: usize,
    pub revocation_check: Duration,
    pub revocation_outage: Option<Duration>,
    pub tunnel_idle_timeout: Duration,
    pub max_tunnels_per_session: Option<usize>,
    pub max_tunnels_per_address: Option<usize>,
    pub max_uploads_per_session: Option<usize>,
    pub max_uploads_per_address: Option<usize>,
    pub max_streams_per_session: Option<usize>,
    pub max_streams_per_address: Option<usize>,
    pub max_slow_reads_per_address: Option<usize>,
    pub slow_read_after: Duration,
    pub balance: Balance,
}

impl ConnectionSettings {
    pub fn validate(&self, problems: &mut Vec<String>) -> Option<ConnectionLimits> {
        let before = problems.len();
        for (name, v) in [
            ("first_byte_timeout_secs", self.first_byte_timeout_secs),
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("send_timeout_secs", self.send_timeout_secs),
            ("tunnel_idle_timeout_secs", self.tunnel_idle_timeout_secs),
            ("http2_max_streams", u64::from(self.http2_max_streams)),
            ("max", self.max as u64),
            ("admin_max", self.admin_max as u64),
            (
                "upstream_max_per_worker",
                self.upstream_max_per_worker as u64,
            ),
            ("upstream_queue_kib", self.upstream_queue_kib as u64),
            ("slow_read_secs", self.slow_read_secs),
        ] {
            if v == 0 {
                problems.push(format!("connections.{name} must be at least 1"));
            }
        }
        if !(64..=16_384).contains(&self.http2_window_kib) {
            problems.push(format!(
                "connections.http2_window_kib must be between 64 and 16384, got {}",
                self.http2_window_kib
            ));
        }
        if !(100..=60_000).contains(&self.revocation_check_ms) {
            problems.push(format!(
                "connections.revocation_check_ms must be between 100 and 60000, got {}",
                self.revocation_check_ms
            ));
        }
        if !(1..=100).contains(&self.upstream_client_share_percent) {
            problems.push(format!(
                "connections.upstream_client_share_percent must be between 1 and 100, got {}",
                self.upstream_client_share_percent
            ));
        }
        let balance = super::types::one_of("connections.balance", &self.balance, problems);
        if problems.len() > before {
            return None;
        }
        Some(ConnectionLimits {
            first_byte_timeout: Duration::from_secs(self.first_byte_timeout_secs),
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            send_timeout: Duration::from_secs(self.send_timeout_secs),
            http2_max_streams: self.http2_max_streams,
            http2_window: self.http2_window_kib * 1024,
            http2_ping_interval: (self.http2_ping_interval_secs > 0)
                .then(|| Duration::from_secs(self.http2_ping_interval_secs)),
            max: self.max,
            max_per_ip: cap(self.max_per_ip),
            admin_max: self.admin_max,
            upstream_max_per_worker: self.upstream_max_per_worker,
            upstream_client_share: self.upstream_client_share_percent,
            upstream_queue: self.upstream_queue_kib.saturating_mul(1024),
            revocation_check: Duration::from_millis(self.revocation_check_ms),
            revocation_outage: (self.revocation_outage_secs > 0)
                .then(|| Duration::from_secs(self.revocation_outage_secs)),
            tunnel_idle_timeout: Duration::from_secs(self.tunnel_idle_timeout_secs),
            max_tunnels_per_session: cap(self.max_tunnels_per_session),
            max_tunnels_per_address: cap(self.max_tunnels_per_address),
            max_uploads_per_session: cap(self.max_uploads_per_session),
            max_uploads_per_address: cap(self.max_uploads_per_address),
            max_streams_per_session: cap(self.max_streams_per_session),
            max_streams_per_address: cap(self.max_streams_per_address),
            max_slow_reads_per_address: cap(self.max_slow_reads_per_address),
            slow_read_after: Duration::from_secs(self.slow_read_secs),
            balance: balance?,
        })
    }
}

/// A cap as set: 0 means none.
fn cap(n: usize) -> Option<usize> {
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_zeroes_are_refused() {
        let mut problems = Vec::new();
        let l = ConnectionSettings::default()
            .validate(&mut problems)
            .unwrap();
        assert_eq!(l.first_byte_timeout, Duration::from_secs(10));
        assert_eq!(l.max_per_ip, Some(512));
        let bad = ConnectionSettings {
            first_byte_timeout_secs: 0,
            max: 0,
            revocation_check_ms: 10,
            upstream_client_share_percent: 0,
            ..Default::default()
        };
        assert!(bad.validate(&mut problems).is_none());
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("connections.first_byte_timeout_secs"));
    }
}
