//! `X-Forwarded-*`: who the client is and which scheme it used, believed only from trusted
//! proxies, and the forwarding headers written for the upstream. From anyone else, every
//! spelling of a forwarding header is removed (`super::remove_folded_if`) before ours is written.

use super::{
    remove_folded, remove_folded_if, Scheme, FORWARDING, URL_OVERRIDES, X_FORWARDED_FOR,
    X_FORWARDED_HOST, X_FORWARDED_PROTO,
};
use http::header::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use std::net::IpAddr;

/// What the sidecar knows about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub ip: IpAddr,
    /// Whether `ip` is one of the configured trusted proxies.
    pub trusted: bool,
    /// `https` when the public listener has TLS.
    pub scheme: Scheme,
}

/// Writes `X-Forwarded-For/-Proto/-Host`. From a trusted proxy the incoming chain is kept up to
/// the `client`'s entry (what [`client_ip`] found) and its proto/host kept; from anyone else
/// all forwarding headers are replaced by ours.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: Peer,
    client: IpAddr,
    host: Option<HeaderValue>,
) {
    // From an untrusted peer the client is the peer: one address, in both branches.
    let mut buf = [0u8; 64];
    let ip = ip_text(client, &mut buf);
    if !peer.trusted {
        // None of them is left after this: write ours without looking first.
        remove_folded(headers, &FORWARDING);
        if let Ok(v) = HeaderValue::from_str(ip) {
            headers.insert(X_FORWARDED_FOR, v);
        }
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(peer.scheme.as_str()),
        );
        if let Some(host) = host {
            headers.insert(X_FORWARDED_HOST, host);
        }
        return;
    }
    // Not even a trusted proxy's: headers a backend may route by instead of the path decided
    // on here, and other spellings of the forwarding headers (only lenient backends read them,
    // so they are the client's, passed on by an ingress that does not know them).
    // That is: a URL override in any spelling (they are forwarding headers too), or a
    // forwarding header spelled with `_` or `.` (which only lenient backends fold).
    remove_folded_if(headers, &FORWARDING, |name, folded| {
        URL_OVERRIDES.contains(&folded) || name.bytes().any(|b| b == b'_' || b == b'.')
    });
    // Every line of the incoming chain, in order: a proxy may add its own line instead of
    // extending the last one, and the client's address is on the right. A line that is not
    // text breaks the chain: nothing left of it can be placed.
    let mut chain = String::new();
    for line in headers.get_all(&X_FORWARDED_FOR) {
        match line.to_str().map(str::trim) {
            Ok("") => {}
            Ok(line) => {
                if !chain.is_empty() {
                    chain.push_str(", ");
                }
                chain.push_str(line);
            }
            Err(_) => {
                chain.clear();
                break;
            }
        }
    }
    // The chain ends at the client: the trusted hops right of its entry, and the peer, are
    // left out. The upstream trusts only the sidecar (OpenRag's uvicorn, by default), so it
    // takes the right-most entry for the client: were it the ingress, the backend would charge
    // every user's failed authentications to that one address, and one client's junk bearers
    // would get everyone 429. The client's entry is written as a plain address (an ingress
    // may write `ip:port`, a new key for every connection to a backend reading it as text);
    // those left of it are kept as they came.
    let before = client_entry_start(&chain, client)
        .map_or(0, |start| chain[..start.saturating_sub(1)].trim_end().len());
    chain.truncate(before);
    if !chain.is_empty() {
        chain.push_str(", ");
    }
    chain.push_str(ip);
    if let Ok(v) = HeaderValue::from_str(&chain) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(peer.scheme.as_str()),
        );
    }
    if let Some(host) = host {
        if !headers.contains_key(&X_FORWARDED_HOST) {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
}

/// `ip` as text in `buf`. IPv4 by hand: this runs on every request, and `Display` for
/// addresses is slow (it formats twice to support padding).
pub(super) fn ip_text(ip: IpAddr, buf: &mut [u8; 64]) -> &str {
    let n = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(_) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            // 45 bytes at most: always fits.
            let _ = write!(cursor, "{ip}");
            usize::try_from(cursor.position()).unwrap_or(0)
        }
    };
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the last address
/// of `X-Forwarded-For` that is not itself a trusted proxy (the one that connected to the
/// first proxy we trust). The walk goes from the right, where each entry was written by the
/// hop after it, so entries left of the client's (the client's own inventions) are never
/// read. An entry that does not parse as an address (with or without a port) ends the walk
/// at the last trusted hop: what it wrote cannot be read.
pub fn client_ip(headers: &HeaderMap, peer: Peer, trusted: &[IpNet]) -> IpAddr {
    if !peer.trusted {
        return peer.ip;
    }
    let mut last = peer.ip;
    for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(value) = value.to_str() else {
            return last;
        };
        for entry in value.rsplit(',') {
            let Some(ip) = forwarded_address(entry.trim()) else {
                return last;
            };
            if !trusted.iter().any(|n| n.contains(&ip)) {
                return ip;
            }
            last = ip;
        }
    }
    last
}

/// Where the right-most entry of `chain` naming `client` starts (just after its comma):
/// entries right of it are the trusted hops [`client_ip`] walked over. `None` when no entry
/// names it (the client is the peer itself, or the walk stopped at an entry that does not read
/// as an address).
fn client_entry_start(chain: &str, client: IpAddr) -> Option<usize> {
    let mut end = chain.len();
    loop {
        let start = chain[..end].rfind(',').map_or(0, |i| i + 1);
        if forwarded_address(chain[start..end].trim()) == Some(client) {
            return Some(start);
        }
        if start == 0 {
            return None;
        }
        end = start - 1;
    }
}

/// An address as proxies write it in `X-Forwarded-For`: `192.0.2.1`, `2001:db8::1`, or with a
/// port (`192.0.2.1:4711`, `[2001:db8::1]:4711`, as some cloud load balancers write it).
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .ok()?;
    Some(ip.to_canonical())
}

/// The scheme the client used, as far as we may believe: a trusted proxy's first
/// `X-Forwarded-Proto` value, else the listener's own scheme.
pub fn public_scheme(headers: &HeaderMap, peer: Peer) -> Scheme {
    if peer.trusted {
        if let Some(v) = headers
            .get(&X_FORWARDED_PROTO)
            .and_then(|v| v.to_str().ok())
        {
            match v.split(',').next().map(str::trim) {
                Some(p) if p.eq_ignore_ascii_case("https") => return Scheme::Https,
                Some(p) if p.eq_ignore_ascii_case("http") => return Scheme::Http,
                _ => {}
            }
        }
    }
    peer.scheme
}
