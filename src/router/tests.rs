//! The router's own checks: which addresses count as internal, and the request future's size.

use super::*;

#[test]
fn internal_addresses_are_where_ingresses_live() {
    for ip in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.1.1",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:10.0.0.1",
    ] {
        assert!(internal(ip.parse().unwrap()), "{ip}");
    }
    for ip in [
        "8.8.8.8",
        "100.128.0.1",
        "172.32.0.1",
        "2001:db8::1",
        "::ffff:1.1.1.1",
    ] {
        assert!(!internal(ip.parse().unwrap()), "{ip}");
    }
}

/// The size of what `f` returns (a future), without calling it.
fn returned_size<F, A, B, C, R>(_: &F) -> usize
where
    F: Fn(A, B, C) -> R,
{
    std::mem::size_of::<R>()
}

/// Every request's future is moved by hyper more than once, and the proxied path is the
/// hot one: keep it small (the rare flows are boxed out of it).
#[test]
fn the_request_future_stays_small() {
    let size = returned_size(&App::handle);
    println!("request future: {size} bytes");
    assert!(size <= 3072, "the request future grew to {size} bytes");
}
