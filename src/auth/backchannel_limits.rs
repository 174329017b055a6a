//! What back-channel logouts may hold at once on a replica, and who may send them.
//!
//! The route is anonymous and spends no rate-limit budget (an IdP ending many sessions at once
//! must not be turned away, and IdPs do not retry), so its bounds must keep anyone else from
//! crowding the IdP's logouts out. A logout passes three stages, each with a pool of its own,
//! so that congesting one leaves the others free:
//! - **reading** its form (slow forms): [`READING`] in all, [`READING_PER_ADDRESS`] for one
//!   client address (IPv6: its /64);
//! - **waiting for a key**, when its `kid` is not in the cached JWKS (invented keys wait for
//!   the next re-fetch, up to 15 s): [`WAITING`] in all;
//! - **handling** a verified token (the store's revocation): [`HANDLING`] in all. Only the
//!   IdP can sign one, so nobody else can take these.
//!
//! From reading to its answer a logout also holds one of [`PER_ADDRESS`] places of its
//! address. So tokens with invented keys can delay only a logout signed with a key the IdP
//! has just rotated in, and slow forms need [`READING`] / [`READING_PER_ADDRESS`] addresses to
//! fill the reading pool: `backchannel_logout_from`, the IdP's own networks, closes the route
//! to everyone else.
//!
//! Knows nothing of tokens, forms or HTTP: admission only.

use crate::proxy::{Held, Holder, Share};
use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Forms being read at once (64 KiB each at most: 16 MiB).
pub const READING: usize = 256;
/// Forms one client address may be sending at once.
pub const READING_PER_ADDRESS: usize = 8;
/// Logouts waiting for a JWKS re-fetch at once.
pub const WAITING: usize = 256;
/// Verified logouts being handled at once.
pub const HANDLING: usize = 64;
/// Logouts one client address may have on this replica at once, from reading to answer (an
/// IdP behind a trusted ingress, whose logouts all share its address, still has 32).
pub const PER_ADDRESS: usize = 32;

pub struct BackchannelLimits {
    /// `backchannel_logout_from`: empty = any address.
    from: Vec<IpNet>,
    reading: Semaphore,
    waiting: Semaphore,
    handling: Semaphore,
    reading_per_address: Arc<Held>,
    per_address: Arc<Held>,
    /// Logouts refused for want of a place, whichever.
    refused: Counter,
}

/// A logout admitted to the route: its address's place, and its reading places until
/// [`Admitted::read`].
pub struct Admitted<'a> {
    _address: Share,
    reading: Option<(Share, SemaphorePermit<'a>)>,
}

impl Admitted<'_> {
    /// Its form is read: the reading places go back.
    pub fn read(&mut self) {
        self.reading = None;
    }
}

impl BackchannelLimits {
    pub fn new(from: Vec<IpNet>, refused: Counter) -> Self {
        let per_address = |cap| Held::new([None, Some(cap)], refused.clone());
        BackchannelLimits {
            from,
            reading: Semaphore::new(READING),
            waiting: Semaphore::new(WAITING),
            handling: Semaphore::new(HANDLING),
            reading_per_address: per_address(READING_PER_ADDRESS),
            per_address: per_address(PER_ADDRESS),
            refused,
        }
    }

    /// Whether `client` may post logouts at all.
    pub fn accepts_from(&self, client: IpAddr) -> bool {
        self.from.is_empty() || self.from.iter().any(|n| n.contains(&client))
    }

    /// A new logout from `client`: `None` when its address, or the reading pool, is full.
    pub fn admit(&self, client: IpAddr) -> Option<Admitted<'_>> {
        let holder = Holder::Address(client);
        let reading = self.reading_per_address.admit(holder)?;
        let address = self.per_address.admit(holder)?;
        let Ok(permit) = self.reading.try_acquire() else {
            self.refused.inc();
            return None;
        };
        Some(Admitted {
            _address: address,
            reading: Some((reading, permit)),
        })
    }

    /// A place to wait for a JWKS re-fetch in, if one is free.
    pub fn wait_for_key(&self) -> Option<SemaphorePermit<'_>> {
        self.take(&self.waiting)
    }

    /// A place to handle a verified logout in, if one is free.
    pub fn handle(&self) -> Option<SemaphorePermit<'_>> {
        self.take(&self.handling)
    }

    fn take<'a>(&self, pool: &'a Semaphore) -> Option<SemaphorePermit<'a>> {
        let permit = pool.try_acquire().ok();
        if permit.is_none() {
            self.refused.inc();
        }
        permit
    }
}
