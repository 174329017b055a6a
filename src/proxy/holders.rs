//! What one client holds of the replica's shared capacity, counted per holder: its WebSocket
//! tunnels, its request bodies still on their way upstream, and its event streams. Each is
//! capped per holder so that one client (a signed-in user, or an address without a session)
//! cannot take every place: a tunnel and an event stream outlive their request's place under
//! the cap, and a body trickled a byte a minute keeps its upstream connection and place for as
//! long as the body's bound (an hour by default), which the per-address connection cap does
//! not see across HTTP/2 streams or behind an ingress.
//!
//! Knows nothing of users or sessions (a user is an opaque number) nor of what is held.

use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Who holds something, for the caps per client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Holder {
    /// A signed-in user, by an opaque number (their `sub`, hashed with a key of the
    /// replica's): every session of theirs together.
    Session(u64),
    /// A caller without a session, by address (IPv6: its /64).
    Address(IpAddr),
}

impl Holder {
    /// The holder as its caps count it: an IPv6 address by its /64, so a client cannot take
    /// a share per address it owns.
    pub fn as_client(self) -> Holder {
        match self {
            Holder::Address(ip) => Holder::Address(crate::ratelimit::client_block(ip)),
            h => h,
        }
    }
}

/// Counts of one kind of thing held, by holder, with a cap for a session and one for an
/// address. Shared by every worker: a client's connections land on any of them.
pub struct Held {
    /// The caps of a session and of an address (`None`: no cap).
    max: [Option<usize>; 2],
    held: Mutex<HashMap<Holder, usize>>,
    /// Admissions refused over a cap (for `/metrics`).
    refused: Counter,
}

/// One place under its holder's cap; dropping it gives the place back.
pub struct Share {
    of: Arc<Held>,
    holder: Holder,
}

impl Held {
    pub fn new(max: [Option<usize>; 2], refused: Counter) -> Arc<Self> {
        Arc::new(Held {
            max,
            held: Mutex::default(),
            refused,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Holder, usize>> {
        // A poisoned lock still holds valid counts.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more of `holder`'s, unless it holds its cap already.
    pub fn admit(self: &Arc<Self>, holder: Holder) -> Option<Share> {
        let holder = holder.as_client();
        let max = match holder {
            Holder::Address(_) => self.max[1],
            Holder::Session(_) => self.max[0],
        };
        let mut held = self.lock();
        let n = held.entry(holder).or_insert(0);
        if max.is_some_and(|max| *n >= max) {
            drop(held);
            self.refused.inc();
            return None;
        }
        *n += 1;
        Some(Share {
            of: self.clone(),
            holder,
        })
    }

    /// Places held now, by every holder.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.lock().values().sum()
    }

    /// Admissions refused over a cap so far.
    #[cfg(test)]
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.of.lock();
        if let Some(n) = held.get_mut(&self.holder) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.holder);
            }
        }
    }
}

/// What a worker's upstream counts per client: the replica's tunnels, bodies on their way
/// upstream and event streams (shared by the workers), and the worker's responses watched for
/// clients that hold them up.
pub struct PerClient {
    pub tunnels: Arc<super::Tunnels>,
    pub uploads: Arc<Held>,
    pub streams: Arc<Held>,
    pub slow_reads: Arc<super::SlowReads>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_holder_has_its_own_cap_and_a_share_dropped_is_given_back() {
        let t = Held::new([Some(1), Some(2)], Counter::default());
        let ip = |s: &str| Holder::Address(s.parse().unwrap());
        let a1 = t.admit(ip("2001:db8:1:2::1")).unwrap();
        let _a2 = t.admit(ip("2001:db8:1:2::ffff")).unwrap();
        assert!(
            t.admit(ip("2001:db8:1:2:abcd::9")).is_none(),
            "one IPv6 /64 is one client"
        );
        let _b = t.admit(ip("2001:db8:1:3::1")).unwrap();
        let _s = t.admit(Holder::Session(7)).unwrap();
        assert!(
            t.admit(Holder::Session(7)).is_none(),
            "a session has its own cap"
        );
        assert_eq!(t.count(), 4);
        assert_eq!(t.refused(), 2);
        drop(a1);
        assert!(t.admit(ip("2001:db8:1:2::1")).is_some());
        let uncapped = Held::new([None, None], Counter::default());
        let many: Vec<_> = (0..100)
            .filter_map(|_| uncapped.admit(Holder::Session(1)))
            .collect();
        assert_eq!(many.len(), 100);
        drop(many);
        assert_eq!(uncapped.count(), 0, "nothing is left behind");
    }
}
