//! The per-request decision: may this request reach the upstream, and as whom?
//!
//! Order (reference §2.1, §10 items 5–7 and 22): public paths pass without identity (HTML loads
//! of `html_login` paths excepted); a valid session cookie wins over an `Authorization` header;
//! without one a `Bearer` request passes through untouched for the backend to judge; otherwise
//! UI paths are redirected to the login and everything else gets 401. Unauthenticated requests
//! never reach the upstream, whatever the method. Reads the request head only.

use super::cookies::CookieJar;
use super::redirect::login_location;
use super::session::{Session, Sessions};
use crate::config::PathSettings;
use crate::error::{wants_html, Error};
use http::{header, request::Parts};

/// What the router should do with the request.
#[derive(Debug)]
pub enum Decision {
    /// Forward without identity.
    Public,
    /// Forward as this user; `id` is the session's cookie id.
    Authenticated {
        session: std::sync::Arc<Session>,
        id: String,
    },
    /// No session, but a bearer credential: forward untouched, the backend decides.
    Bearer,
    /// A browser page without a session: redirect to this login URL.
    Login(String),
}

/// True for a path that could mean something else to a backend that normalises it: dot
/// segments, raw or percent-encoded, encoded slashes and backslashes. Path decisions are made on
/// the raw path, so such a path could otherwise pass as `/assets/../admin` under a public
/// prefix; it is refused instead.
pub fn ambiguous_path(path: &str) -> bool {
    // Scanned in place: this runs on every request.
    let encoded = path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && (w[1] == b'2' && matches!(w[2] | 0x20, b'e' | b'f')
                || w[1] == b'5' && w[2] | 0x20 == b'c')
    });
    encoded || path.contains('\\') || path.split('/').any(|seg| seg == "." || seg == "..")
}

/// `*`-suffixed entries are prefixes, others exact paths.
pub fn path_matches(list: &[String], path: &str) -> bool {
    list.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == p,
    })
}

pub fn has_bearer(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "))
}

pub async fn decide(
    parts: &Parts,
    paths: &PathSettings,
    cookies: &CookieJar,
    sessions: &Sessions,
    now: i64,
) -> Result<Decision, Error> {
    let path = parts.uri.path();
    if ambiguous_path(path) {
        return Err(Error::BadRequest("Invalid request path"));
    }
    let html = wants_html(&parts.headers);
    let bearer = has_bearer(parts);
    let html_login = html && !bearer && path_matches(&paths.html_login.0, path);
    let public = path_matches(&paths.public.0, path) && !html_login;
    // Public paths need no session. Those in `html_login` (Chainlit) still carry the user's
    // identity when a session exists: Chainlit's own requests authenticate with it.
    if public && !path_matches(&paths.html_login.0, path) {
        return Ok(Decision::Public);
    }
    if let Some(id) = cookies.get(&parts.headers, &cookies.session) {
        match sessions.load(&id, now).await {
            Ok(Some(session)) => return Ok(Decision::Authenticated { session, id }),
            Ok(None) => {}
            Err(_) if public || bearer => {}
            // Fail closed for session users.
            Err(e) => return Err(e.into()),
        }
    }
    if public {
        return Ok(Decision::Public);
    }
    without_session(parts, paths)
}

/// The decision for a request that has no (longer a) valid session.
pub fn without_session(parts: &Parts, paths: &PathSettings) -> Result<Decision, Error> {
    let path = parts.uri.path();
    let html_login =
        wants_html(&parts.headers) && !has_bearer(parts) && path_matches(&paths.html_login.0, path);
    if path_matches(&paths.public.0, path) && !html_login {
        return Ok(Decision::Public);
    }
    if has_bearer(parts) {
        return Ok(Decision::Bearer);
    }
    let html_login = wants_html(&parts.headers) && path_matches(&paths.html_login.0, path);
    if html_login || path_matches(&paths.ui.0, path) {
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or(path);
        return Ok(Decision::Login(login_location(pq)));
    }
    Err(Error::Unauthenticated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_paths_are_detected() {
        for bad in [
            "/assets/../admin",
            "/assets/%2e%2e/admin",
            "/chainlit/%2E./x",
            "/a/./b",
            "/a%2fb",
            "/a%5Cb",
            "/a\\b",
            "/..",
        ] {
            assert!(ambiguous_path(bad), "{bad}");
        }
        for ok in [
            "/",
            "/assets/app.js",
            "/static/a.b.c",
            "/v1/x..y",
            "/...",
            "/a/.hidden",
        ] {
            assert!(!ambiguous_path(ok), "{ok}");
        }
    }

    #[test]
    fn prefixes_and_exact_paths() {
        let list = vec![
            "/chainlit".to_string(),
            "/chainlit/*".to_string(),
            "/static*".to_string(),
        ];
        assert!(path_matches(&list, "/chainlit"));
        assert!(path_matches(&list, "/chainlit/x"));
        assert!(
            !path_matches(&list, "/chainlitevil"),
            "OpenRag does not bypass /chainlitevil"
        );
        assert!(path_matches(&list, "/static"));
        assert!(path_matches(&list, "/staticfoo/a.js"));
        assert!(!path_matches(&list, "/"));
    }
}
