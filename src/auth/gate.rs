//! The per-request decision: may this request reach the upstream, and as whom?
//!
//! Order (docs/openrag-backend.md#gate): public paths pass without identity (HTML loads
//! of `html_login` paths excepted); a valid session cookie wins over an `Authorization` header;
//! without one a `Bearer` request passes through untouched for the backend to judge (unless
//! `paths.bearer_passthrough` is off, the default with `identity = "headers"`); otherwise
//! UI paths are redirected to the login and everything else gets 401. Unauthenticated requests
//! never reach the upstream, whatever the method (a trusted origin's CORS preflight excepted,
//! `cross_site`). Reads the request head only.

use super::cookies::CookieJar;
use super::redirect::login_location;
use crate::config::PathSettings;
use crate::error::{wants_html, Error};
use crate::session::{Session, Sessions};
use http::request::Parts;

/// What the router should do with the request. Its `Debug` shows no cookie id or token.
pub enum Decision {
    /// Forward without identity.
    Public,
    /// Forward without identity and without any cookie: a request from another site to a
    /// public path, whose cookies (ours, or the upstream's own session) must not act for it.
    PublicWithoutCookies,
    /// A trusted origin's CORS preflight, with `forward_preflights`: forward without
    /// identity, without any cookie and without a body (a browser's preflight has none;
    /// anything sent with one is not a browser's, and an `OPTIONS` handler upstream must not
    /// get unauthenticated data).
    Preflight,
    /// A trusted origin's CORS preflight, answered here (204) with these headers.
    PreflightAnswered(http::HeaderMap),
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

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Public => f.write_str("Public"),
            Decision::PublicWithoutCookies => f.write_str("PublicWithoutCookies"),
            Decision::Preflight => f.write_str("Preflight"),
            Decision::PreflightAnswered(h) => f.debug_tuple("PreflightAnswered").field(h).finish(),
            Decision::Authenticated { session, .. } => f
                .debug_struct("Authenticated")
                .field("session", session)
                .field("id", &"[redacted]")
                .finish(),
            Decision::Bearer => f.write_str("Bearer"),
            Decision::Login(l) => f.debug_tuple("Login").field(l).finish(),
        }
    }
}

/// True for a path that could mean something else to a backend that normalises it: dot
/// segments (raw, percent-encoded, or followed by `;` parameters that Tomcat and Spring drop),
/// encoded slashes and backslashes, `%25`-encoded dots, slashes and backslashes (backends that
/// decode twice), overlong UTF-8 forms (`%c0%ae`) and `%u` escapes (IIS). Path decisions are
/// made on the raw path, so such a path could otherwise pass as `/assets/../admin` under a
/// public prefix; it is refused instead. The same holds for the path decoded once and twice:
/// mixed forms such as `%2%66` or `%%32%65` only become `%2f` and `%2e` once decoded.
pub fn ambiguous_path(path: &str) -> bool {
    // Scanned in place (this runs on every request); decoded only when there is an escape.
    let b = path.as_bytes();
    if ambiguous_layer(b) {
        return true;
    }
    if !b.contains(&b'%') {
        return false;
    }
    let once: Vec<u8> = percent_encoding::percent_decode(b).collect();
    ambiguous_layer(&once)
        || ambiguous_layer(&percent_encoding::percent_decode(&once).collect::<Vec<u8>>())
}

/// One layer of [`ambiguous_path`]: a backslash, a suspicious escape, or a dot segment.
fn ambiguous_layer(b: &[u8]) -> bool {
    let escape = b
        .iter()
        .enumerate()
        .any(|(i, &c)| c == b'\\' || c == b'%' && suspicious_escape(&b[i + 1..]));
    escape
        || b.split(|&c| c == b'/').any(|seg| {
            // `..;x` is `..` to a backend that drops path parameters.
            let seg = seg.split(|&c| c == b';').next().unwrap_or(seg);
            seg == b"." || seg == b".."
        })
}

/// What follows a `%` that makes a path ambiguous: an encoded dot, slash or backslash
/// (`%2e`, `%2f`, `%5c`), the same once more encoded (`%252e`…), an overlong UTF-8 lead byte
/// (`%c0`, `%c1`, `%e0%80`, `%f0%80`: every overlong form of an ASCII character starts so), or
/// a `%u` escape.
fn suspicious_escape(rest: &[u8]) -> bool {
    let hex = |i: usize| rest.get(i).map(|c| c.to_ascii_lowercase());
    match (hex(0), hex(1)) {
        (Some(b'u'), _) => true,
        (Some(b'2'), Some(b'e' | b'f')) | (Some(b'5'), Some(b'c')) => true,
        (Some(b'c'), Some(b'0' | b'1')) => true,
        // `%e0%80`–`%e0%9f` and `%f0%80`–`%f0%8f` are overlong; `%e0%a0`, `%f0%90` and up are not.
        (Some(b'e'), Some(b'0')) => {
            rest.get(2) == Some(&b'%') && matches!(hex(3), Some(b'8' | b'9'))
        }
        (Some(b'f'), Some(b'0')) => rest.get(2) == Some(&b'%') && hex(3) == Some(b'8'),
        (Some(b'2'), Some(b'5')) => {
            // `%25` followed by an encoded dot, slash or backslash: `%252e`, `%252f`, `%255c`.
            matches!(
                (hex(2), hex(3)),
                (Some(b'2'), Some(b'e' | b'f')) | (Some(b'5'), Some(b'c'))
            )
        }
        _ => false,
    }
}

/// `*`-suffixed entries are prefixes, others exact paths.
pub fn path_matches(list: &[String], path: &str) -> bool {
    list.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == p,
    })
}

/// [`path_matches`] for one entry, ignoring ASCII case: how a case-insensitive backend
/// (Express, ASP.NET) matches its routes.
pub fn path_matches_ignoring_case(entry: &str, path: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => path
            .as_bytes()
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes())),
        None => path.eq_ignore_ascii_case(entry),
    }
}

/// A non-empty `token` query parameter where one is a credential ([`PathSettings::token_query`]).
fn has_token_query(parts: &Parts, paths: &PathSettings) -> bool {
    path_matches(&paths.token_query.0, parts.uri.path())
        && parts.uri.query().is_some_and(|q| {
            form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "token" && !v.is_empty())
        })
}

/// A browser opening a page: a `GET` that says so (`Sec-Fetch-Mode: navigate`) or asks for HTML.
fn is_navigation(parts: &Parts) -> bool {
    parts.method == http::Method::GET
        && (parts
            .headers
            .get("sec-fetch-mode")
            .is_some_and(|v| v == "navigate")
            || wants_html(&parts.headers))
}

/// Whether a bearer makes this request the backend's to judge (`paths.bearer_passthrough`;
/// unset counts as on, OpenRag's way; validated settings always say).
pub fn passes_bearer(parts: &Parts, paths: &PathSettings) -> bool {
    bearer_counts(
        crate::proxy::headers::bearer(&parts.headers).is_some(),
        paths,
    )
}

/// Whether a request that has (`bearer`) or has not a bearer credential is the backend's to
/// judge: [`passes_bearer`] once the header has been read.
fn bearer_counts(bearer: bool, paths: &PathSettings) -> bool {
    bearer && paths.bearer_passthrough != Some(false)
}

pub async fn decide(
    parts: &Parts,
    paths: &PathSettings,
    cookies: &CookieJar,
    sessions: &Sessions,
    now: i64,
) -> Result<Decision, Error> {
    // The router has refused ambiguous paths (`ambiguous_path`) before any decision.
    let path = parts.uri.path();
    let html = wants_html(&parts.headers);
    let bearer = passes_bearer(parts, paths);
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

/// Whether a request without a session for `path` (asking for HTML or not, with a bearer
/// credential or not) is public under `paths`: the first thing [`without_session`] decides,
/// and what a stream opened on a public path is asked again after a reload.
pub fn is_public(path: &str, html: bool, bearer: bool, paths: &PathSettings) -> bool {
    let bearer = bearer_counts(bearer, paths);
    let html_login = html && !bearer && path_matches(&paths.html_login.0, path);
    path_matches(&paths.public.0, path) && !html_login
}

/// The decision for a request that has no (longer a) valid session.
pub fn without_session(parts: &Parts, paths: &PathSettings) -> Result<Decision, Error> {
    let path = parts.uri.path();
    // Each read once: the header lookups are the work here.
    let bearer = crate::proxy::headers::bearer(&parts.headers).is_some();
    let html = wants_html(&parts.headers);
    if is_public(path, html, bearer, paths) {
        return Ok(Decision::Public);
    }
    if bearer_counts(bearer, paths) || has_token_query(parts, paths) {
        return Ok(Decision::Bearer);
    }
    let html_login = html && path_matches(&paths.html_login.0, path);
    let browser = paths.browser_login == Some(true) && is_navigation(parts);
    if html_login || browser || path_matches(&paths.ui.0, path) {
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

    mod decisions {
        //! The gate's decision for each kind of request, over a real (memory) session store.
        use super::super::*;
        use crate::crypto::KeyRing;
        use crate::store::{memory::MemoryStore, Store};
        use std::sync::Arc;

        fn parts(path: &str, headers: &[(&str, &str)]) -> Parts {
            let mut b = http::Request::builder().uri(path);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap().into_parts().0
        }

        async fn world() -> (Sessions, CookieJar, String) {
            let keys = Arc::new(KeyRing::parse(&crate::crypto::generate_key()).unwrap());
            let sessions = Sessions::new(Arc::new(Store::Memory(MemoryStore::new())), keys, 1);
            let s = Session::for_tests("alice", 1_000_000, 600);
            let id = sessions
                .create(&s, 1_000_000, 1_000_000)
                .await
                .unwrap()
                .unwrap();
            (sessions, CookieJar::new("sid", false), id)
        }

        async fn decide_for(path: &str, headers: &[(&str, &str)]) -> Result<Decision, Error> {
            let (sessions, jar, id) = world().await;
            let cookie = format!("sid={id}");
            let mut h: Vec<(&str, &str)> = headers.to_vec();
            if h.iter().any(|(k, v)| *k == "cookie" && *v == "SESSION") {
                h.retain(|(k, _)| *k != "cookie");
                h.push(("cookie", &cookie));
                let p = parts(path, &h);
                return decide(&p, &PathSettings::default(), &jar, &sessions, 1_000_100).await;
            }
            decide(
                &parts(path, &h),
                &PathSettings::default(),
                &jar,
                &sessions,
                1_000_100,
            )
            .await
        }

        /// `bearer_passthrough = false` (the default with `identity = "headers"`): a bearer
        /// alone is no credential; the request is judged as if it had none.
        #[tokio::test]
        async fn without_bearer_passthrough_a_bearer_alone_gets_nothing() {
            let (sessions, jar, id) = world().await;
            let paths = PathSettings {
                bearer_passthrough: Some(false),
                ..PathSettings::default()
            };
            let bearer = ("authorization", "Bearer made-up");
            let decide_with = |path: &'static str, headers: Vec<(&'static str, String)>| {
                let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let p = parts(path, &h);
                let (paths, jar, sessions) = (&paths, &jar, &sessions);
                async move { decide(&p, paths, jar, sessions, 1_000_100).await }
            };
            let e = decide_with("/v1/models", vec![(bearer.0, bearer.1.into())])
                .await
                .unwrap_err();
            assert!(matches!(e, Error::Unauthenticated), "{e:?}");
            let d = decide_with("/", vec![(bearer.0, bearer.1.into())])
                .await
                .unwrap();
            assert!(matches!(d, Decision::Login(_)), "{d:?}");
            let d = decide_with(
                "/chainlit/x",
                vec![(bearer.0, bearer.1.into()), ("accept", "text/html".into())],
            )
            .await
            .unwrap();
            assert!(matches!(d, Decision::Login(_)), "{d:?}");
            let d = decide_with(
                "/v1/models",
                vec![(bearer.0, bearer.1.into()), ("cookie", format!("sid={id}"))],
            )
            .await
            .unwrap();
            assert!(matches!(d, Decision::Authenticated { .. }), "{d:?}");
            let d = decide_with("/health_check", vec![(bearer.0, bearer.1.into())])
                .await
                .unwrap();
            assert!(matches!(d, Decision::Public), "{d:?}");
        }

        #[tokio::test]
        async fn each_kind_of_request_gets_its_decision() {
            use Decision::*;
            let d = decide_for("/health_check", &[]).await.unwrap();
            assert!(matches!(d, Public), "{d:?}");
            let d = decide_for("/", &[]).await.unwrap();
            assert!(
                matches!(&d, Login(l) if l == "/auth/login?next=%2F"),
                "{d:?}"
            );
            let d = decide_for("/static/a.js?v=1", &[]).await.unwrap();
            assert!(
                matches!(&d, Login(l) if l == "/auth/login?next=%2Fstatic%2Fa.js%3Fv%3D1"),
                "{d:?}"
            );
            let e = decide_for("/v1/models", &[]).await.unwrap_err();
            assert!(
                matches!(e, Error::Unauthenticated),
                "API paths never redirect"
            );
            let d = decide_for("/v1/models", &[("authorization", "Bearer x")])
                .await
                .unwrap();
            assert!(matches!(d, Bearer), "{d:?}");
            let d = decide_for(
                "/v1/models",
                &[("cookie", "SESSION"), ("authorization", "Bearer x")],
            )
            .await
            .unwrap();
            assert!(
                matches!(d, Authenticated { .. }),
                "a session wins over a bearer: {d:?}"
            );
            let d = decide_for("/chainlit/x", &[]).await.unwrap();
            assert!(
                matches!(d, Public),
                "Chainlit's API calls are public: {d:?}"
            );
            let d = decide_for("/chainlit/x", &[("accept", "text/html")])
                .await
                .unwrap();
            assert!(
                matches!(d, Login(_)),
                "a Chainlit page needs a login: {d:?}"
            );
            let d = decide_for(
                "/chainlit/x",
                &[("accept", "text/html"), ("cookie", "SESSION")],
            )
            .await
            .unwrap();
            assert!(matches!(d, Authenticated { .. }), "{d:?}");
            let e = decide_for("/v1/x", &[("accept", "text/html")])
                .await
                .unwrap_err();
            assert!(
                matches!(e, Error::Unauthenticated),
                "with OpenRag's rules only UI paths redirect a browser"
            );
            let e = decide_for("/v1/x", &[("cookie", "sid=forged")])
                .await
                .unwrap_err();
            assert!(
                matches!(e, Error::Unauthenticated),
                "an unknown session is none"
            );
        }
    }

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
            "/assets/..;/v1/models",
            "/assets/.;/x",
            "/assets/..;jsessionid=1/v1",
            "/a/%252e%252e/b",
            "/a/%252E./b",
            "/a%252fb",
            "/a%255cb",
            "/a/%c0%ae%c0%ae/b",
            "/a/%C0%AF",
            "/a/%c1%9c",
            "/a/%e0%80%ae",
            "/a/%f0%80%80%ae",
            "/a/%u002e%u002e/b",
            "/a/%U2215",
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
            "/a;b/c",
            "/a/..x;y",
            "/%25",
            "/a%2541",
            "/caf%c3%a9",
            "/%e0%a4%b9",
            "/%f0%9f%98%80",
        ] {
            assert!(!ambiguous_path(ok), "{ok}");
        }
    }

    /// Found by fuzzing (`fuzz/corpus/path`): escapes that form `%2e`, `%2f`, `%u` or `;` only
    /// once decoded, for a backend that decodes once or twice.
    #[test]
    fn mixed_encodings_are_ambiguous_once_decoded() {
        for bad in [
            "/a/%2%66b",
            "/a/%%32%65%%32%65/b",
            "/a/%25%32%65%25%32%65/b",
            "/a/%2%65./b",
            "/a/..%3b/b",
            "/a/..%253bx/b",
            "/%25u002e%25u002e/x",
        ] {
            assert!(ambiguous_path(bad), "{bad}");
        }
        for ok in ["/files/100%25%20done.pdf", "/%2%", "/a/%%/b", "/x%3by"] {
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
