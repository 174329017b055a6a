//! Pure header operations of the forwarder: hop-by-hop removal, `X-Forwarded-*`, request ids.
//!
//! Nothing here does I/O or knows about authentication; every function takes a `HeaderMap` and
//! is unit-tested. Security invariants:
//! - hop-by-hop headers (RFC 9110 §7.6.1), and every header a client names in `Connection`,
//!   never cross the proxy — a client cannot use `Connection: X-Forwarded-For` to make us
//!   forward or drop what it likes, because our own headers are written after this removal;
//! - `X-Forwarded-*` from an untrusted peer are removed in every spelling a backend might fold
//!   to the same name (`X_Forwarded_For`, `x.forwarded.for`), then written by us.

pub use crate::tls::Scheme;
pub use forwarded::{client_ip, public_scheme, set_forwarded, Peer};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers: RFC 9110 §7.6.1, plus the legacy names of RFC 2616 §13.5.1 that
/// proxies still see in the wild (`Proxy-Connection`, `Keep-Alive`, `Trailer`, `Proxy-*`).
/// A `match` on the name rather than a `const` array of `HeaderName`s, which would be built
/// and dropped again at every use (this runs for every header of every message).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "proxy-connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            // RFC 9113 §3.2 removed h2c; its settings header only ever meant this hop.
            | "http2-settings"
    )
}

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Client-supplied forwarding headers that only a trusted proxy may set: what frameworks
/// behind a proxy believe about the client's address, scheme, host, path prefix or original
/// URL (Spring and ASP.NET build links and redirects from `X-Forwarded-Prefix`; IIS routes by
/// `X-Original-URL`, so it would dodge every path decision made here; gunicorn takes
/// `X-Forwarded-Protocol` for the scheme, Rails `Client-IP` for the address, CDNs'
/// `True-Client-IP` is read by many).
const FORWARDING: [&str; 23] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-client-cert",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "front-end-https",
    "x-real-ip",
    "forwarded",
    "x-forwarded-protocol",
    "x-url-scheme",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "x-cluster-client-ip",
];

/// The forwarding headers that name another URL to serve than the request's (the path decided
/// on here): removed even when a trusted proxy sends them.
const URL_OVERRIDES: [&str; 3] = ["x-original-url", "x-original-uri", "x-rewrite-url"];

/// Removes hop-by-hop headers and every header named in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none, or only `Connection`: one pass over the names present is
    // cheaper than a hashed lookup for each of the nine (this runs twice per request).
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Collect first: the names live inside the `Connection` values we are about to remove.
    // The usual tokens (`keep-alive`, `close`, `upgrade`) name nothing beyond the fixed list,
    // so the common case parses no name and allocates nothing.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            // `X-Request-Id` is the sidecar's own (set on every request before it is
            // forwarded): a client naming it in `Connection` must not drop it for the upstream.
            if token.is_empty()
                || token.eq_ignore_ascii_case(b"x-request-id")
                || token.eq_ignore_ascii_case(b"keep-alive")
                || token.eq_ignore_ascii_case(b"close")
                || token.eq_ignore_ascii_case(b"upgrade")
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(&name);
    }
    // A handful at most: remove them one by one rather than collect them.
    while let Some(name) = headers.keys().find(|k| is_hop_by_hop(k)).cloned() {
        headers.remove(&name);
    }
}

/// Joins the request's `Cookie` fields into one, `; `-separated (RFC 9113 §8.2.3: an HTTP/2
/// client may send each cookie as a field of its own, and they must be joined before the
/// request goes on as HTTP/1.1, where servers read only the first `Cookie` line).
pub fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, v);
    }
}

/// Keeps one `Content-Length` line: an HTTP/2 request may carry the same length twice (h2
/// refuses lengths that differ), which would reach the HTTP/1.1 upstream as two lines, and
/// parsers there (llhttp, under uvicorn) refuse a request so framed.
pub fn one_content_length(headers: &mut HeaderMap) {
    if headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .nth(1)
        .is_none()
    {
        return;
    }
    if let Some(first) = headers.get(header::CONTENT_LENGTH).cloned() {
        headers.insert(header::CONTENT_LENGTH, first);
    }
}

/// True for a valid WebSocket opening handshake (RFC 6455 §4.1): an HTTP/1.1 `GET` with
/// `Connection: upgrade`, `Upgrade: websocket` and no other protocol, a `Sec-WebSocket-Key` of
/// 16 bytes in base64 and a `Sec-WebSocket-Version`. It is the only upgrade the sidecar
/// tunnels: any other (`h2c` above all) would splice the client to the backend with no more
/// checks on what follows inside.
pub fn is_websocket_handshake(
    method: &http::Method,
    version: http::Version,
    headers: &HeaderMap,
) -> bool {
    // Every request asks; almost none is one. Settled first by what is cheapest to read.
    if method != http::Method::GET
        || version != http::Version::HTTP_11
        || !headers.contains_key(header::UPGRADE)
    {
        return false;
    }
    let tokens = |name: header::HeaderName| {
        headers
            .get_all(name)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
    };
    let connection_upgrade = tokens(header::CONNECTION)
        .iter()
        .any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    let upgrade = tokens(header::UPGRADE);
    let websocket = upgrade.len() == 1 && upgrade[0].eq_ignore_ascii_case(b"websocket");
    let key = headers
        .get_all(header::SEC_WEBSOCKET_KEY)
        .iter()
        .collect::<Vec<_>>();
    // 16 random bytes in base64: 24 characters ending in "==".
    let key_ok = key.len() == 1 && key[0].len() == 24 && key[0].as_bytes().ends_with(b"==");
    connection_upgrade && websocket && key_ok && headers.contains_key(header::SEC_WEBSOCKET_VERSION)
}

/// A header name folded the way lenient backends fold it: lower case, `_` and `.` as `-`.
pub fn folded_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Removes every header whose folded name is in `names` (already folded, lower case).
pub fn remove_folded<S: AsRef<str>>(headers: &mut HeaderMap, names: &[S]) {
    remove_folded_if(headers, names, |_, _| true);
}

/// [`remove_folded`], for the headers whose name and folded name also pass `also`.
fn remove_folded_if<S: AsRef<str>>(
    headers: &mut HeaderMap,
    names: &[S],
    also: impl Fn(&str, &str) -> bool,
) {
    // Runs on every request for a handful of names: a mask of their lengths rules out most
    // headers with one test, and nothing is allocated unless something is removed.
    let lengths = names
        .iter()
        .fold(0u64, |m, n| m | 1 << n.as_ref().len().min(63));
    let matches = |k: &HeaderName| {
        let k = k.as_str();
        lengths & (1 << k.len().min(63)) != 0
            && names
                .iter()
                .any(|n| folds_to(k, n.as_ref()) && also(k, n.as_ref()))
    };
    while let Some(name) = headers.keys().find(|k| matches(k)).cloned() {
        headers.remove(&name);
    }
}

/// `folded_name(name) == folded`, without allocating (`folded` is already folded).
pub fn folds_to(name: &str, folded: &str) -> bool {
    name.len() == folded.len()
        && name.bytes().zip(folded.bytes()).all(|(a, b)| {
            let a = match a {
                b'_' | b'.' => b'-',
                a => a.to_ascii_lowercase(),
            };
            a == b
        })
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case), if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    (v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ")).then(|| v[7..].trim())
}

/// Keeps a client's `X-Request-Id` when it is a short printable token, else makes one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    // Unique, not secret: a random prefix and a counter per thread, so no syscall and no
    // counter shared between cores per request.
    thread_local! {
        static IDS: (String, std::cell::Cell<u64>) =
            (crate::crypto::random_token(6), std::cell::Cell::new(0));
    }
    IDS.with(|(prefix, counter)| {
        let n = counter.get();
        counter.set(n.wrapping_add(1));
        id_text(prefix, n)
    })
}

/// `{prefix}{n:08x}` by hand, without the formatting machinery (every request).
fn id_text(prefix: &str, n: u64) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 24];
    let p = prefix.len().min(16);
    id[..p].copy_from_slice(&prefix.as_bytes()[..p]);
    for i in 0..8 {
        id[p + i] = HEX[((n >> (28 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id[..p + 8]).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Copies a request's target and header values into one allocation of their own size.
///
/// hyper parses a request head in place: the values and the path are slices of the
/// connection's read buffer (8 KB), and while the request lives that buffer cannot be reused, so
/// hyper reads the connection into a new one. A request that waits (on a busy worker's run
/// queue, or for an upstream connection) would hold 8 KB the whole time; under a flood of 2,000
/// connections most of them wait. The router calls this only on a busy worker: a copy on every
/// request would cost more than it saves.
pub fn detach_head<B>(req: &mut http::Request<B>) {
    let path = req.uri().path_and_query().map_or("", |p| p.as_str());
    let path_len = path.len();
    let size = path_len + req.headers().values().map(|v| v.len()).sum::<usize>();
    let mut buf = bytes::BytesMut::with_capacity(size);
    buf.extend_from_slice(path.as_bytes());
    for v in req.headers().values() {
        buf.extend_from_slice(v.as_bytes());
    }
    let mut buf = buf.freeze();
    let own_path = buf.split_to(path_len);
    if path_len > 0 {
        // The same bytes, already validated once: this cannot fail, and a failure keeps the
        // original target (the URI is cloned, not taken, until the copy is whole).
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = http::uri::PathAndQuery::from_maybe_shared(own_path) {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    let headers = req.headers_mut();
    let mut detached = HeaderMap::with_capacity(headers.len());
    let mut last: Option<HeaderName> = None;
    for (name, value) in std::mem::take(headers) {
        let name = match name {
            Some(n) => {
                last = Some(n.clone());
                n
            }
            None => match &last {
                Some(n) => n.clone(),
                None => continue,
            },
        };
        let sensitive = value.is_sensitive();
        let own = buf.split_to(value.len());
        let mut copy = HeaderValue::from_maybe_shared(own).unwrap_or(value);
        copy.set_sensitive(sensitive);
        detached.append(name, copy);
    }
    *headers = detached;
}

mod forwarded;
#[cfg(test)]
mod tests;
