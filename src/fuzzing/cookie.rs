//! The `cookie` target: the session cookie jar's `get` and `strip` against the `cookie` crate's full parse.
//! Part of the fuzz targets (`super`); never called by the sidecar.

use crate::auth::cookies::CookieJar;
use http::header::{self, HeaderMap, HeaderValue};
use percent_encoding::percent_decode;

/// The session cookie name the fuzzed jar uses (the default setting).
const SESSION: &str = "sso_sidecar_session";

/// `Cookie` headers, one per `\n`-separated line of `data[1..]`; bit 0 of `data[0]` turns the
/// `__Host-` prefix on. `get` must agree with a full parse by the `cookie` crate (a name present
/// more than once is absent); after `strip` none of the jar's names (prefixed or not, raw or
/// percent-encoded) is left in any `Cookie` header, and every other pair is still there, in
/// order, byte for byte.
pub fn cookie(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let host_prefix = flags & 1 == 1;
    let jar = CookieJar::new(SESSION, host_prefix);
    let mut own = vec![jar.session.clone(), jar.state.clone()];
    if host_prefix {
        own.push(SESSION.to_owned());
        own.push(format!("{SESSION}_state"));
    }
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(header::COOKIE, v);
        }
    }

    for name in [&jar.session, &jar.state] {
        assert_eq!(
            jar.get(&headers, name),
            reference_get(&headers, name),
            "get({name:?}) disagrees with a full parse of {headers:?}"
        );
    }

    let before: Vec<Vec<u8>> = cookie_pairs(&headers)
        .into_iter()
        .filter(|p| !own.contains(&pair_name(p)))
        .collect();
    let mut stripped = headers.clone();
    jar.strip(&mut stripped);
    for name in [&jar.session, &jar.state] {
        assert_eq!(
            jar.get(&stripped, name),
            None,
            "{name:?} readable after strip"
        );
    }
    let after = cookie_pairs(&stripped);
    for p in &after {
        assert!(
            !own.contains(&pair_name(p)),
            "own cookie {:?} left after strip of {headers:?}",
            String::from_utf8_lossy(p)
        );
    }
    assert_eq!(
        after, before,
        "other cookies not kept byte for byte: {headers:?} became {stripped:?}"
    );
}

/// Every non-empty `;`-separated pair of every `Cookie` header, trimmed, as bytes.
fn cookie_pairs(headers: &HeaderMap) -> Vec<Vec<u8>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// A pair's name as a server that trims it (Unicode white space, as the `cookie` crate does)
/// and percent-decodes it reads it.
fn pair_name(pair: &[u8]) -> String {
    let raw = pair.split(|&b| b == b'=').next().unwrap_or_default();
    let raw = String::from_utf8_lossy(raw);
    percent_decode(raw.trim().as_bytes())
        .decode_utf8_lossy()
        .into_owned()
}

/// The value of `name` by the `cookie` crate's full parse of each pair that is text: `Some` only
/// when exactly one pair has that name, as sent.
fn reference_get(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found: Vec<String> = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        for pair in v.as_bytes().split(|&b| b == b';') {
            let Ok(pair) = std::str::from_utf8(pair) else {
                continue;
            };
            // The name as sent (never decoded: see `CookieJar::get`), the value decoded.
            let raw = cookie::Cookie::parse(pair.trim());
            if let (Ok(raw), Ok(c)) = (raw, cookie::Cookie::parse_encoded(pair.trim())) {
                if raw.name() == name {
                    found.push(c.value().to_owned());
                }
            }
        }
    }
    (found.len() == 1).then(|| found.remove(0))
}
