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
                is_backend_cookie,
                Some(&format!("{CHAINLIT_COOKIE}={token}")),
            );
        }
        Carrier::ChainlitSession => {
            // Chainlit's header login (`/chainlit/auth/header`) would read the client's own
            // backend cookies: the session the sidecar opened is all that speaks.
            headers.remove(header::AUTHORIZATION);
            replace_cookies(
                headers,
                |name| is_chainlit_session_cookie(name) || is_backend_cookie(name),
                Some(token),
            );
        }
    }
}

/// A `/chainlit` request that goes on with no credential of the sidecar's (Chainlit refused
/// the sidecar's login for the user): without the client's own either, so that Chainlit sees
/// nobody rather than whoever the client's cookies or bearer name.
pub fn without_client_credentials(headers: &mut HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    replace_cookies(
        headers,
        |name| is_chainlit_session_cookie(name) || is_backend_cookie(name),
        None,
    );
}

/// The backend's token cookies (what the sidecar injects on Chainlit paths).
fn is_backend_cookie(name: &str) -> bool {
    name == CHAINLIT_COOKIE || name == "openrag_session"
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

/// A `Cookie` pair's name as the backend reads it: Starlette decodes the header as latin-1 and
/// strips each name with Python's `str.strip()`, which also takes off `\xa0` and `\x85` (and
/// `\x1c`–`\x1f`). So `\xa0openrag_session` is `openrag_session` to the backend and must be
/// to the sidecar too, or a client's copy would pass the strip. Borrowed when plain ASCII.
fn pair_name(pair: &[u8]) -> std::borrow::Cow<'_, str> {
    let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
    let strip = |b: &u8| python_space(char::from(*b));
    let start = name.iter().position(|b| !strip(b)).unwrap_or(name.len());
    let end = name
        .iter()
        .rposition(|b| !strip(b))
        .map_or(start, |i| i + 1);
    let name = &name[start..end];
    match std::str::from_utf8(name) {
        Ok(ascii) if name.is_ascii() => std::borrow::Cow::Borrowed(ascii),
        // Latin-1: one char per byte, as Starlette reads it.
        _ => std::borrow::Cow::Owned(name.iter().map(|b| char::from(*b)).collect()),
    }
}

/// Whether Python's `str.isspace()` holds for this latin-1 character.
fn python_space(c: char) -> bool {
    matches!(c, '\t'..='\r' | '\x1c'..='\x1f' | ' ' | '\u{85}' | '\u{a0}')
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
mod tests;
