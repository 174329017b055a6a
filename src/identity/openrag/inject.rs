//! Where an OpenRag backend looks for a user's token, per path (docs/openrag-backend.md#tokens):
//! `Authorization: Bearer` on most paths, the `token` query parameter on `/static…` (the header
//! is ignored there), the `openrag_chainlit_token` cookie on `/chainlit…` (Chainlit reads only
//! cookies). Pure functions over the request head.

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Uri};

pub const CHAINLIT_COOKIE: &str = "openrag_chainlit_token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    Bearer,
    Query,
    /// The `openrag_chainlit_token` cookie (the hand-off of later OpenRag versions).
    Cookie,
    /// Chainlit's own session cookies (OpenRag 1.1.8: Chainlit logs users in itself); the
    /// "token" is then those `name=value` pairs.
    ChainlitSession,
}

pub fn carrier(path: &str) -> Carrier {
    if path.starts_with("/static") {
        Carrier::Query
    } else if path == "/chainlit" || path.starts_with("/chainlit/") {
        Carrier::Cookie
    } else {
        Carrier::Bearer
    }
}

/// `uri` with every client-supplied `token` parameter replaced by ours.
pub fn with_token_query(uri: &Uri, token: &str) -> Option<Uri> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(query) = uri.query() {
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if k != "token" {
                q.append_pair(&k, &v);
            }
        }
    }
    q.append_pair("token", token);
    let pq: PathAndQuery = format!("{}?{}", uri.path(), q.finish()).parse().ok()?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).ok()
}

/// Writes the token into the headers for `Bearer` and `Cookie` carriers. A client's own
/// `Authorization`, or its backend cookies on Chainlit paths, never reach the backend beside ours.
pub fn inject_headers(headers: &mut HeaderMap, carrier: Carrier, token: &str) {
    match carrier {
        Carrier::Bearer => match HeaderValue::from_str(&format!("Bearer {token}")) {
            Ok(v) => {
                headers.insert(header::AUTHORIZATION, v);
            }
            // A token that cannot be a header value (a newline from a file): never the
            // client's own in its place.
            Err(_) => {
                headers.remove(header::AUTHORIZATION);
            }
        },
        Carrier::Query => {
            headers.remove(header::AUTHORIZATION);
        }
        Carrier::Cookie => {
            headers.remove(header::AUTHORIZATION);
            replace_cookies(
                headers,
                |name| name == CHAINLIT_COOKIE || name == "openrag_session",
                Some(&format!("{CHAINLIT_COOKIE}={token}")),
            );
        }
        Carrier::ChainlitSession => {
            headers.remove(header::AUTHORIZATION);
            replace_cookies(headers, is_chainlit_session_cookie, Some(token));
        }
    }
}

/// Chainlit's own session cookie: `access_token`, or its chunks `access_token_0`, `_1`… when
/// the token is too long for one cookie.
pub fn is_chainlit_session_cookie(name: &str) -> bool {
    name == "access_token"
        || name
            .strip_prefix("access_token_")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The `Cookie` header without the pairs whose name `drop` selects (the client's copies of
/// what the sidecar injects), with `add` (`name=value` pairs) appended; without `add`, the
/// header goes when nothing is left. Pairs are kept as bytes: a cookie the client sent in
/// another encoding still reaches the backend unchanged.
fn replace_cookies(headers: &mut HeaderMap, drop: impl Fn(&str) -> bool, add: Option<&str>) {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        for pair in v.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            if !pair.is_empty() && !drop(&pair_name(pair)) {
                kept.push(pair.to_vec());
            }
        }
    }
    if let Some(add) = add {
        kept.push(add.as_bytes().to_vec());
    }
    if kept.is_empty() {
        headers.remove(header::COOKIE);
    } else if let Ok(v) = HeaderValue::from_bytes(&kept.join(&b"; "[..])) {
        headers.insert(header::COOKIE, v);
    }
}

/// A `Cookie` pair's name, trimmed (lossy for non-UTF-8 bytes; borrowed otherwise).
fn pair_name(pair: &[u8]) -> std::borrow::Cow<'_, str> {
    let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
    String::from_utf8_lossy(name.trim_ascii())
}

/// The names in a request's `Cookie` headers.
fn cookie_names(headers: &HeaderMap) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .map(pair_name)
        .filter(|n| !n.is_empty())
}

/// Whether `name` is a cookie that speaks for an OpenRag or Chainlit user: the hand-off
/// cookie, OpenRag's own session, Chainlit's session (and its chunks).
pub fn is_user_cookie(name: &str) -> bool {
    name == CHAINLIT_COOKIE || name == "openrag_session" || is_chainlit_session_cookie(name)
}

/// Removes every cookie that speaks for a user from a request that has no session here (a
/// public path, a bearer): once the sidecar's session is gone, a Chainlit cookie left in the
/// browser must not keep its user logged in to Chainlit.
pub fn strip_user_cookies(headers: &mut HeaderMap) {
    // Rebuilt only when there is one (most requests carry none: nothing allocated then).
    if cookie_names(headers).any(|n| is_user_cookie(&n)) {
        replace_cookies(headers, is_user_cookie, None);
    }
}

/// Appends to `response` the `Set-Cookie` values that end Chainlit's session in the browser,
/// as OpenRag does at the hand-off and at logout: `access_token` and the chunks the request
/// shows, on `/` and on `/chainlit`. Sent when a session starts or ends here, so that a
/// Chainlit cookie of the browser's previous user never speaks for the next one.
pub fn end_chainlit_session(request: &HeaderMap, response: &mut HeaderMap) {
    let mut names = vec![std::borrow::Cow::Borrowed("access_token")];
    for n in cookie_names(request) {
        if is_chainlit_session_cookie(&n) && !names.contains(&n) {
            names.push(n);
        }
    }
    for name in &names {
        for path in ["/", "/chainlit"] {
            let v = format!(
                "{name}=; Path={path}; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax"
            );
            if let Ok(v) = HeaderValue::from_str(&v) {
                response.append(header::SET_COOKIE, v);
            }
        }
    }
}

/// Removes the injected `token` from the upstream's `Location` and `Content-Location`: a
/// backend that redirects `/static?x` to `/static/?x&token=…` (a trailing-slash redirect keeps
/// the query) would otherwise hand the user's token to the browser, its history and every
/// `Referer`. A value the token still appears in after that (under another name) is dropped.
pub fn scrub_token(headers: &mut HeaderMap, token: &str) {
    let encoded: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let carries = |v: &str| v.contains(token) || v.contains(&encoded);
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        // Every value: a backend may send the header twice, and a client may read either.
        let values: Vec<String> = headers
            .get_all(&name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if !values.iter().any(|v| carries(v)) {
            continue;
        }
        headers.remove(&name);
        for raw in values {
            let cleaned = if carries(&raw) {
                without_token(&raw, token)
            } else {
                Some(raw)
            };
            if let Some(v) = cleaned
                .filter(|c| !carries(c))
                .and_then(|c| HeaderValue::from_str(&c).ok())
            {
                headers.append(&name, v);
            }
        }
    }
}

/// `location` without the query pairs whose value is `token`.
fn without_token(location: &str, token: &str) -> Option<String> {
    let (before, fragment) = match location.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (location, None),
    };
    let (path, query) = before.split_once('?')?;
    let mut q = form_urlencoded::Serializer::new(String::new());
    let mut kept = 0;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if v != token {
            q.append_pair(&k, &v);
            kept += 1;
        }
    }
    let mut out = path.to_owned();
    if kept > 0 {
        out.push('?');
        out.push_str(&q.finish());
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

/// True when a response looks like a token-mode backend refusing the token it was given: 403
/// `{"detail":"Invalid token"}`, its middleware's answer (docs/openrag-backend.md#tokens). A 401 is never that
/// answer (Chainlit's own `Invalid authentication token`, a provider's refusal relayed by a
/// route), nor is `Missing token` (the token was not where that path looks). Only a hint: the
/// bridge confirms it with a probe before acting on it.
pub fn is_token_refusal(status: u16, body: &[u8]) -> bool {
    status == 403
        && serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .is_some_and(|d| d == "Invalid token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_that_cannot_be_a_header_never_leaves_the_clients_in_place() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer clients-own"),
        );
        inject_headers(&mut h, Carrier::Bearer, "or-token\n");
        assert!(h.get(header::AUTHORIZATION).is_none(), "{h:?}");
        inject_headers(&mut h, Carrier::Bearer, "or-token");
        assert_eq!(h[header::AUTHORIZATION], "Bearer or-token");
    }

    #[test]
    fn carriers_follow_the_backends_rules() {
        assert_eq!(carrier("/v1/chat"), Carrier::Bearer);
        assert_eq!(carrier("/static/a.js"), Carrier::Query);
        assert_eq!(
            carrier("/staticfoo"),
            Carrier::Query,
            "OpenRag matches the /static prefix"
        );
        assert_eq!(carrier("/chainlit"), Carrier::Cookie);
        assert_eq!(carrier("/chainlit/x"), Carrier::Cookie);
        assert_eq!(carrier("/chainlitevil"), Carrier::Bearer);
    }

    #[test]
    fn the_token_query_parameter_is_replaced() {
        let u: Uri = "/static/a.js?v=1&token=client&token=again".parse().unwrap();
        assert_eq!(
            with_token_query(&u, "or-abc").unwrap(),
            "/static/a.js?v=1&token=or-abc"
        );
        let u: Uri = "/static/a.js".parse().unwrap();
        assert_eq!(
            with_token_query(&u, "or-abc").unwrap(),
            "/static/a.js?token=or-abc"
        );
    }

    #[test]
    fn chainlit_cookie_replaces_the_clients() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; openrag_chainlit_token=forged; openrag_session=x"),
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer forged"),
        );
        inject_headers(&mut h, Carrier::Cookie, "or-abc");
        assert_eq!(h[header::COOKIE], "a=1; openrag_chainlit_token=or-abc");
        assert!(h.get(header::AUTHORIZATION).is_none());
        let mut h = HeaderMap::new();
        inject_headers(&mut h, Carrier::Bearer, "or-abc");
        assert_eq!(h[header::AUTHORIZATION], "Bearer or-abc");
    }

    #[test]
    fn an_injected_token_never_leaves_in_a_redirect() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("http://rag.example/static/?tab=1&token=or-abc"),
        );
        h.insert(
            header::CONTENT_LOCATION,
            HeaderValue::from_static("/static/x?token=or-abc#top"),
        );
        scrub_token(&mut h, "or-abc");
        assert_eq!(h[header::LOCATION], "http://rag.example/static/?tab=1");
        assert_eq!(h[header::CONTENT_LOCATION], "/static/x#top");
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("/login/or-abc/next"),
        );
        scrub_token(&mut h, "or-abc");
        assert!(h.get(header::LOCATION).is_none(), "elsewhere: dropped");
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, HeaderValue::from_static("/static/?tab=1"));
        scrub_token(&mut h, "or-abc");
        assert_eq!(h[header::LOCATION], "/static/?tab=1", "untouched");
        // A second value is read too (a client may follow either).
        let mut h = HeaderMap::new();
        h.append(header::LOCATION, HeaderValue::from_static("/static/?tab=1"));
        h.append(
            header::LOCATION,
            HeaderValue::from_static("/static/?token=or-abc"),
        );
        scrub_token(&mut h, "or-abc");
        let left: Vec<_> = h.get_all(header::LOCATION).iter().collect();
        assert_eq!(left, ["/static/?tab=1", "/static/"]);
    }

    #[test]
    fn only_credential_refusals_count() {
        assert!(is_token_refusal(403, br#"{"detail":"Invalid token"}"#));
        assert!(!is_token_refusal(403, br#"{"detail":"Missing token"}"#));
        assert!(!is_token_refusal(401, b""));
        assert!(!is_token_refusal(
            401,
            br#"{"detail":"Invalid authentication token"}"#
        ));
        assert!(!is_token_refusal(
            403,
            br#"{"detail":"Not a partition owner"}"#
        ));
        assert!(!is_token_refusal(200, br#"{"detail":"Invalid token"}"#));
    }
}
