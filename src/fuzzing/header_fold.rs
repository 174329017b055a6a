//! The `header_fold` target: hop-by-hop and forwarding-header removal under case and `_`/`-` folding.
//! Part of the fuzz targets (`super`); never called by the sidecar.

use crate::proxy::headers::{self as proxy_headers, Peer};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The forwarding headers only a trusted proxy may set, folded.
const FORWARDING: [&str; 6] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "forwarded",
];
/// Hop-by-hop headers: RFC 9110 §7.6.1, the legacy ones, and h2c's `HTTP2-Settings`.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// The first `\n`-separated line is a header name to remove, the others `name:value` headers.
/// `folded_name` is idempotent and `remove_folded` removes exactly the headers that fold to it;
/// `remove_hop_by_hop` removes exactly the hop-by-hop headers and those named in `Connection`;
/// `set_forwarded` from an untrusted peer leaves no forwarding header in any spelling but ours.
pub fn header_fold(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let target = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }

    let folded = proxy_headers::folded_name(&target);
    assert_eq!(proxy_headers::folded_name(&folded), folded);
    assert_eq!(folded.chars().count(), target.chars().count());
    let mut h = headers.clone();
    proxy_headers::remove_folded(&mut h, &[folded.as_str()]);
    assert_eq!(
        h,
        keep(&headers, |k| proxy_headers::folded_name(k.as_str())
            != folded),
        "remove_folded({folded:?}) on {headers:?}"
    );

    let mut h = headers.clone();
    proxy_headers::remove_hop_by_hop(&mut h);
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.eq_ignore_ascii_case(b"close"))
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect();
    assert_eq!(
        h,
        keep(&headers, |k| !HOP_BY_HOP.contains(&k.as_str())
            && !named.contains(k)),
        "remove_hop_by_hop on {headers:?}"
    );

    let peer = Peer {
        ip: std::net::IpAddr::from([198, 51, 100, 7]),
        trusted: false,
        scheme: crate::tls::Scheme::Https,
    };
    let host = headers.get(header::HOST).cloned();
    let mut h = headers.clone();
    proxy_headers::set_forwarded(&mut h, peer, peer.ip, host.clone());
    let mut expected = keep(&headers, |k| {
        !FORWARDING.contains(&proxy_headers::folded_name(k.as_str()).as_str())
    });
    expected.insert(
        proxy_headers::X_FORWARDED_FOR,
        HeaderValue::from_static("198.51.100.7"),
    );
    expected.insert(
        proxy_headers::X_FORWARDED_PROTO,
        HeaderValue::from_static("https"),
    );
    if let Some(host) = host {
        expected.insert(proxy_headers::X_FORWARDED_HOST, host);
    }
    assert_eq!(h, expected, "set_forwarded(untrusted) on {headers:?}");

    let id = proxy_headers::request_id(&headers);
    let b = id.as_bytes();
    assert!(!b.is_empty() && b.len() <= 128 && b.iter().all(u8::is_ascii_graphic));
}

/// The headers of `h` whose name passes `f`, values and order kept.
fn keep(h: &HeaderMap, f: impl Fn(&HeaderName) -> bool) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in h {
        if f(k) {
            out.append(k.clone(), v.clone());
        }
    }
    out
}
