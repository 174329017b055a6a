//! What back-channel logouts may hold at once on a replica, and who may send them.
//!
//! The route is anonymous and spends no rate-limit budget (an IdP ending many sessions at once
//! must not be turned away, and IdPs do not retry), so its bounds must keep anyone else from
//! crowding the IdP's logouts out. A logout passes three stages, each with a pool of its own,
//! so that congesting one leaves the others free:
//! - **reading** its form (slow forms): [`READING`] in all, [`READING_PER_ADDRESS`] for one
//!   client address (IPv6: its /64), and [`READING_PER_SITE`] for one IPv6 /48 (a single
//!   customer's allocation holds 65,536 /64s);
//! - **waiting for a key**, when its `kid` is not in the cached JWKS (invented keys wait for
//!   the next re-fetch, up to 15 s): [`WAITING`] in all;
//! - **handling** a verified token (the store's revocation): [`HANDLING`] in all. Only the
//!   IdP can sign one, so nobody else can take these.
//!
//! From reading to its answer a logout also holds one of [`PER_ADDRESS`] places of its
//! address. So tokens with invented keys can delay only a logout signed with a key the IdP
//! has just rotated in, and slow forms need 32 IPv4 addresses or 4 IPv6 /48s to fill the
//! reading pool: `backchannel_logout_from`, the IdP's own networks, closes the route to
//! everyone else.
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
/// Forms one IPv6 /48 may be sending at once.
pub const READING_PER_SITE: usize = 64;
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
    reading_per_site: Arc<Held>,
    per_address: Arc<Held>,
    /// Logouts refused for want of a place, whichever.
    refused: Counter,
}

/// A logout admitted to the route: its address's place, and its reading places until
/// [`Admitted::read`].
pub struct Admitted<'a> {
    _address: Share,
    reading: Option<(Share, Option<Share>, SemaphorePermit<'a>)>,
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
            reading_per_site: per_address(READING_PER_SITE),
            per_address: per_address(PER_ADDRESS),
            refused,
        }
    }

    /// Whether `client` may post logouts at all (an IPv4 address written as IPv6, as a
    /// dual-stack listener sees it, is the IPv4 address).
    pub fn accepts_from(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.from.is_empty() || self.from.iter().any(|n| n.contains(&client))
    }

    /// A new logout from `client`: `None` when its address, or the reading pool, is full.
    pub fn admit(&self, client: IpAddr) -> Option<Admitted<'_>> {
        let holder = Holder::Address(client);
        let reading = self.reading_per_address.admit(holder)?;
        let site = match site_of(client) {
            Some(site) => Some(self.reading_per_site.admit(Holder::Address(site))?),
            None => None,
        };
        let address = self.per_address.admit(holder)?;
        let Ok(permit) = self.reading.try_acquire() else {
            self.refused.inc();
            return None;
        };
        Some(Admitted {
            _address: address,
            reading: Some((reading, site, permit)),
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

/// An IPv6 address's /48 (what one site or customer is given); `None` for IPv4.
fn site_of(client: IpAddr) -> Option<IpAddr> {
    match client {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(IpAddr::V6(std::net::Ipv6Addr::new(
                s[0], s[1], s[2], 0, 0, 0, 0, 0,
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(from: &[&str]) -> BackchannelLimits {
        let from = from.iter().map(|n| n.parse().unwrap()).collect();
        BackchannelLimits::new(from, Counter::default())
    }

    fn v4(i: usize) -> IpAddr {
        IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8])
    }

    #[test]
    fn each_pool_holds_its_own_bound() {
        let l = limits(&[]);
        // Reading: 256 in all, from addresses under their own caps.
        let mut held: Vec<_> = (0..READING).map(|i| l.admit(v4(i)).unwrap()).collect();
        assert!(l.admit(v4(READING)).is_none(), "the reading pool is full");
        // Read forms give their reading places back.
        held.iter_mut().for_each(Admitted::read);
        assert!(l.admit(v4(READING)).is_some());
        // Waiting for a key and handling have pools of their own.
        let waiting: Vec<_> = (0..WAITING).map(|_| l.wait_for_key().unwrap()).collect();
        assert!(l.wait_for_key().is_none());
        let handling: Vec<_> = (0..HANDLING).map(|_| l.handle().unwrap()).collect();
        assert!(l.handle().is_none());
        drop((waiting, handling));
        assert!(l.wait_for_key().is_some() && l.handle().is_some());
        assert_eq!(l.refused.get(), 3);
    }

    #[test]
    fn an_address_and_an_ipv6_site_hold_their_share() {
        let l = limits(&[]);
        let one = v4(1);
        let held: Vec<_> = (0..READING_PER_ADDRESS)
            .map(|_| l.admit(one).unwrap())
            .collect();
        assert!(l.admit(one).is_none(), "the address's forms");
        // 64 from one /48, over many /64s.
        let in_site = |i: u16| IpAddr::from([0x2001, 0xdb8, 7, i, 0, 0, 0, 1]);
        let site: Vec<_> = (0..READING_PER_SITE as u16)
            .map(|i| l.admit(in_site(i)).unwrap())
            .collect();
        assert!(l.admit(in_site(999)).is_none(), "the site's forms");
        let elsewhere = IpAddr::from([0x2001, 0xdb8, 8, 0, 0, 0, 0, 1]);
        assert!(l.admit(elsewhere).is_some(), "another site");
        drop((held, site));
        assert!(l.admit(one).is_some() && l.admit(in_site(999)).is_some());
    }

    #[test]
    fn only_the_listed_networks_may_post_when_some_are() {
        assert!(limits(&[]).accepts_from(v4(1)));
        let l = limits(&["192.0.2.0/24", "2001:db8::/32"]);
        assert!(l.accepts_from("192.0.2.9".parse().unwrap()));
        assert!(l.accepts_from("2001:db8:1::1".parse().unwrap()));
        assert!(!l.accepts_from("192.0.3.1".parse().unwrap()));
        assert!(l.accepts_from("::ffff:192.0.2.9".parse().unwrap()));
        assert!(!l.accepts_from("::ffff:192.0.3.9".parse().unwrap()));
    }
}
