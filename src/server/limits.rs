//! How many client connections a listener holds: in all, and per client address. A
//! connection over either cap is closed as soon as it is accepted, so one client cannot use up
//! the process's file descriptors and lock everyone else out.
//!
//! Owns the counts and the open-file limit; knows nothing of HTTP. A `ConnPermit` is held by
//! the connection's I/O object, so a connection upgraded to a WebSocket tunnel keeps counting
//! until the tunnel closes.

use crate::metrics::Metrics;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Seconds between two WARN lines about refused connections (each says how many).
const WARN_EVERY_SECS: u64 = 10;

/// Raises the soft open-file limit to the hard limit and returns the soft limit in force.
/// Container runtimes often start processes at 1024 with a far higher hard limit.
pub fn raise_nofile_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// The connection cap that leaves room under `nofile` for what else the process opens:
/// upstream connections, Redis, the IdP, log files (an eighth, at least 64).
pub fn cap_for_nofile(configured: usize, nofile: Option<u64>) -> usize {
    match nofile {
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            let reserve = (n / 8).max(64);
            configured.min(n.saturating_sub(reserve).max(1))
        }
        None => configured,
    }
}

/// The container's memory limit in bytes (cgroup v2 `memory.max`, else v1's
/// `memory.limit_in_bytes`); `None` without one (or outside a container).
pub fn memory_limit() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let v2 = read("/sys/fs/cgroup/memory.max");
    let v1 = || read("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    let text = v2.or_else(v1)?;
    // "max" (v2), or a number near u64::MAX (v1), when unlimited.
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|&n| n < (1u64 << 50))
}

/// Memory a connection may hold beyond its request head: hyper's state, TLS buffers, the
/// response in flight.
const CONN_OVERHEAD_BYTES: u64 = 16 * 1024;

/// The connection cap that fits `limit` bytes of memory when every connection holds a request
/// head of `head_bytes` (a client may send a partial head that large and hold it until the
/// header timeout): three quarters of the limit, less 32 MiB for the rest of the process, go to
/// connections; never under 64.
pub fn cap_for_memory(configured: usize, limit: Option<u64>, head_bytes: usize) -> usize {
    let Some(limit) = limit else {
        return configured;
    };
    let per_conn = (head_bytes as u64).saturating_add(CONN_OVERHEAD_BYTES);
    let room = (limit / 4 * 3).saturating_sub(32 << 20);
    let fits = usize::try_from(room / per_conn).unwrap_or(usize::MAX);
    configured.min(fits.max(64))
}

/// The counts, shared by every worker of a listener.
pub struct ConnLimiter {
    /// The listener's name in logs, and the refusal's label prefix off the public one.
    listener: &'static str,
    max: usize,
    max_per_ip: Option<usize>,
    /// Peers exempt from the per-address cap: a trusted proxy carries many clients.
    exempt: Vec<IpNet>,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    metrics: Arc<Metrics>,
    refused_since_warn: AtomicU64,
    last_warn: AtomicU64,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerIp,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::Total => "max_connections",
            Refused::PerIp => "max_connections_per_ip",
        }
    }
}

/// One admitted connection; dropping it gives its place back.
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    /// The counted address, when the per-address cap applies to it.
    ip: Option<IpAddr>,
}

impl ConnLimiter {
    pub fn new(
        max: usize,
        max_per_ip: Option<usize>,
        exempt: Vec<IpNet>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Self::for_listener("public", max, max_per_ip, exempt, metrics)
    }

    /// The admin listener's cap: `max` connections in all, and a quarter of them (at least 8)
    /// per client address, so that one client holding connections open cannot lock the
    /// kubelet's probes out (a liveness probe refused three times restarts the pod); counted
    /// as `reason="admin_max_connections"`.
    pub fn admin(max: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        let per_ip = (max / 4).max(8);
        Self::for_listener("admin", max, Some(per_ip), Vec::new(), metrics)
    }

    fn for_listener(
        listener: &'static str,
        max: usize,
        max_per_ip: Option<usize>,
        exempt: Vec<IpNet>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(ConnLimiter {
            listener,
            max,
            max_per_ip,
            exempt,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            metrics,
            refused_since_warn: AtomicU64::new(0),
            last_warn: AtomicU64::new(0),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Admits a connection from `peer`, or says which cap it is over (counted and logged).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ConnPermit, Refused> {
        let peer = peer.to_canonical();
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(self.refused(Refused::Total, peer));
        }
        let key = match self.max_per_ip {
            Some(cap) if !self.exempt.iter().any(|n| n.contains(&peer)) => {
                let key = address_key(peer);
                let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
                let n = map.entry(key).or_insert(0);
                if *n >= cap {
                    drop(map);
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    return Err(self.refused(Refused::PerIp, peer));
                }
                *n += 1;
                Some(key)
            }
            _ => None,
        };
        // The gauge is the public listener's (its help says so): probes and scrapes are not
        // clients.
        if self.listener == "public" {
            self.metrics.connection_opened();
        }
        Ok(ConnPermit {
            limiter: self.clone(),
            ip: key,
        })
    }

    fn refused(&self, why: Refused, peer: IpAddr) -> Refused {
        let label = match (self.listener, why) {
            ("admin", _) => "admin_max_connections",
            (_, why) => why.label(),
        };
        self.metrics.connection_refused(label);
        let pending = self.refused_since_warn.fetch_add(1, Ordering::Relaxed) + 1;
        let now = crate::clock::now_unix().max(0) as u64;
        let last = self.last_warn.load(Ordering::Relaxed);
        if now >= last + WARN_EVERY_SECS
            && self
                .last_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.refused_since_warn.store(0, Ordering::Relaxed);
            tracing::warn!(
                listener = self.listener,
                reason = label,
                %peer,
                refused = pending,
                max_connections = self.max,
                max_connections_per_ip = self.max_per_ip,
                "connections refused: a connection cap is reached"
            );
        }
        why
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let l = &self.limiter;
        l.open.fetch_sub(1, Ordering::Relaxed);
        if l.listener == "public" {
            l.metrics.connection_closed();
        }
        if let Some(ip) = self.ip {
            let mut map = l.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// IPv4 addresses count one by one; IPv6 ones by /64 (as the rate limits do).
fn address_key(ip: IpAddr) -> IpAddr {
    crate::ratelimit::client_block(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_in_all() {
        let m = Arc::new(Metrics::new(1));
        let trusted: IpNet = "10.0.0.0/8".parse().unwrap();
        let l = ConnLimiter::new(4, Some(2), vec![trusted], m);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = l.admit(a).unwrap();
        let _p2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Refused::PerIp));
        drop(p1);
        let _p3 = l.admit(a).unwrap();
        let _p4 = l.admit(b).unwrap();
        let _p5 = l.admit("10.1.2.3".parse().unwrap()).unwrap();
        assert_eq!(l.admit(b).err(), Some(Refused::Total));
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(address_key(v6a), address_key(v6b), "one /64");
    }

    #[test]
    fn the_open_connections_gauge_is_the_public_listeners() {
        let m = Arc::new(Metrics::new(1));
        let open = |m: &Metrics| {
            let text = m.encode();
            let line = text
                .lines()
                .find(|l| l.starts_with("sso_sidecar_connections_open "))
                .map(str::to_owned);
            line.unwrap_or_default()
        };
        let admin = ConnLimiter::admin(4, m.clone());
        let _probe = admin.admit("10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(open(&m), "sso_sidecar_connections_open 0");
        let public = ConnLimiter::new(4, None, Vec::new(), m.clone());
        let client = public.admit("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(open(&m), "sso_sidecar_connections_open 1");
        drop(client);
        assert_eq!(open(&m), "sso_sidecar_connections_open 0");
    }

    /// One client cannot hold every admin connection: the kubelet's probes from another
    /// address still get in.
    #[test]
    fn one_address_holds_at_most_a_quarter_of_the_admin_listener() {
        let m = Arc::new(Metrics::new(1));
        let admin = ConnLimiter::admin(64, m);
        let flood: IpAddr = "10.0.0.9".parse().unwrap();
        let held: Vec<_> = (0..16).map(|_| admin.admit(flood).unwrap()).collect();
        assert!(admin.admit(flood).is_err(), "a 17th from one address");
        let kubelet: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(admin.admit(kubelet).is_ok());
        drop(held);
        assert!(admin.admit(flood).is_ok());
        assert_eq!(
            ConnLimiter::admin(4, Arc::new(Metrics::new(1))).max_per_ip,
            Some(8)
        );
    }

    #[test]
    fn the_cap_leaves_room_for_other_files() {
        assert_eq!(cap_for_nofile(10_000, Some(1024)), 896);
        assert_eq!(cap_for_nofile(10_000, Some(256)), 192);
        assert_eq!(cap_for_nofile(500, Some(1_048_576)), 500);
        assert_eq!(cap_for_nofile(500, None), 500);
    }

    /// 10,000 connections each holding a 32 KiB partial head need ~470 MiB: under a 256 MiB
    /// limit (the chart's) the cap comes down to what fits, with room for the rest.
    #[test]
    fn the_cap_fits_the_memory_limit() {
        let mib = 1u64 << 20;
        let cap = cap_for_memory(10_000, Some(256 * mib), 32 * 1024);
        assert_eq!(cap, 3_413);
        assert!(cap as u64 * (48 * 1024) <= 192 * mib - 32 * mib);
        assert_eq!(cap_for_memory(10_000, Some(4096 * mib), 32 * 1024), 10_000);
        assert_eq!(cap_for_memory(10_000, None, 32 * 1024), 10_000);
        assert_eq!(
            cap_for_memory(10_000, Some(16 * mib), 32 * 1024),
            64,
            "a floor"
        );
    }
}
