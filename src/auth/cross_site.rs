//! Requests that another site's page makes the browser send with the session cookie.
//!
//! Behind the sidecar an API built for bearer tokens, which no other site can make a browser
//! send, answers to a cookie, which browsers attach by themselves: `SameSite=Lax` keeps it off
//! cross-site subrequests, but not off requests from a sibling host of the same site
//! (`wiki.example.com` → `rag.example.com`: forms, `fetch`, images, WebSockets), nor off
//! top-level navigations from anywhere. Without this check, any page on a sibling host could
//! delete a user's documents with a form, or open a WebSocket as the user (cross-site
//! WebSocket hijacking).
//!
//! The policy is Fetch Metadata's resource isolation policy, with `Origin` for browsers that
//! send no `Sec-Fetch-Site`:
//! - `Sec-Fetch-Site: same-origin` or `none` (typed, bookmarked): allowed;
//! - from another origin (`same-site`, `cross-site`): only a link followed (`GET`/`HEAD`,
//!   `Sec-Fetch-Mode: navigate`, not into an `<object>` or `<embed>`), unless the request's
//!   `Origin` is one of `trusted_origins`;
//! - no `Sec-Fetch-Site`: a request that changes things (any method but `GET`, `HEAD`,
//!   `OPTIONS`) or opens a tunnel (`Upgrade`) must come from our own host or a trusted origin
//!   when it names an `Origin`; without one (curl, scripts, servers) it is not a browser's.
//!
//! A request naming another method than its own (`?_method=DELETE`, an override header) is
//! neither a link followed nor harmless. Reads the request's head only (headers, the query's
//! method parameters); knows nothing of sessions or of what the upstream does.

use super::gate::{self, Decision};
pub use crate::config::origins::TrustedOrigins;
use crate::config::PathSettings;
use http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, Method};

/// Read on every request with a session: a name made once, not parsed per lookup.
static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Whether a request carrying the session cookie may act as its user. `own` is the public
/// origin the redirect URI names.
pub fn allowed(parts: &Parts, trusted: &TrustedOrigins, own: &url::Url) -> bool {
    if *trusted == TrustedOrigins::Any {
        return true;
    }
    let h = &parts.headers;
    let origin = h.get(header::ORIGIN).map(|v| v.as_bytes());
    if origin.is_some_and(|o| trusted.contains(o)) {
        return true;
    }
    match h.get(&SEC_FETCH_SITE).map(|v| v.as_bytes()) {
        Some(b"same-origin" | b"none") => true,
        Some(_) => followed_link(parts),
        None => match origin {
            None => true,
            Some(o) => harmless(parts) || same_origin(o, parts, own),
        },
    }
}

/// What becomes of a request [`allowed`] refused: with a bearer token, the token alone speaks
/// (as if no session cookie came); on a public path, a request that changes nothing goes on
/// without identity and without any cookie (the upstream's own session cookie would act for it
/// just the same); anything else is refused (`None`).
pub fn refused(parts: &Parts, paths: &PathSettings) -> Option<Decision> {
    tracing::debug!(
        path = %crate::telemetry::loggable(parts.uri.path()),
        "a request from another site carried the session cookie: refused"
    );
    if gate::passes_bearer(parts, paths) {
        return Some(Decision::Bearer);
    }
    (harmless(parts) && gate::path_matches(&paths.public.0, parts.uri.path()))
        .then_some(Decision::PublicWithoutCookies)
}

/// A CORS preflight from a trusted origin: browsers send it without cookies before a request
/// that is not "simple" (JSON, `PUT`, `DELETE`, custom headers), and the upstream's CORS
/// answer decides whether the real request follows. Forwarded without identity.
///
/// A browser's preflight names the real request's method and headers, and carries neither a
/// credential nor a header of its own: one with `Authorization`, or naming another method in a
/// header (`X-HTTP-Method-Override`), comes from no browser, and goes through the gate like any
/// request, where the rules see that method and that bearer. Its URL is the real request's,
/// query included: a `?_method=` there is taken off by [`as_preflight`].
pub fn trusted_preflight(parts: &Parts, trusted: &TrustedOrigins) -> bool {
    let h = &parts.headers;
    parts.method == Method::OPTIONS
        && h.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        && h.get(header::ORIGIN)
            .is_some_and(|o| trusted.contains(o.as_bytes()))
        && !h.contains_key(header::AUTHORIZATION)
        && !super::authz::names_method_in_headers(h)
}

/// The sidecar's own answer to a trusted preflight (without `forward_preflights`): nothing
/// reaches the upstream. A listed origin may send the request it names with the session (as
/// `trusted_origins` says), so the answer allows that method and those headers, for ten
/// minutes. With `*` (the cross-site check off, which trusts no origin in particular), it
/// allows nothing: any site could otherwise send credentialed JSON, `PUT` or `DELETE`
/// requests, which until then only the upstream's own CORS answer could allow.
pub fn preflight_answer(parts: &Parts, trusted: &TrustedOrigins) -> HeaderMap {
    let mut out = HeaderMap::new();
    out.insert(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    let h = &parts.headers;
    let (TrustedOrigins::These(_), Some(origin), Some(method)) = (
        trusted,
        h.get(header::ORIGIN),
        h.get(header::ACCESS_CONTROL_REQUEST_METHOD),
    ) else {
        return out;
    };
    // A method is one token; headers a list of them (anything else is no browser's).
    if !is_token(method.as_bytes()) {
        return out;
    }
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    out.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, method.clone());
    if let Some(asked) = h.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        let listed = asked.as_bytes().split(|&b| b == b',');
        if listed.map(<[u8]>::trim_ascii).all(is_token) {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
    }
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    out
}

/// An HTTP token (RFC 9110 §5.6.2): a method, or a header's name.
fn is_token(b: &[u8]) -> bool {
    !b.is_empty()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// A trusted preflight as it goes on, without identity: without cookies, without a body (a
/// browser's has none), and without `_method` query parameters, which a backend overriding
/// `OPTIONS` would run as that method with nobody's identity checked.
pub fn as_preflight(parts: &mut Parts) {
    parts.headers.remove(header::COOKIE);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    if let Some(uri) = super::authz::without_method_params(&parts.uri) {
        parts.uri = uri;
    }
}

/// A top-level or frame navigation by `GET` or `HEAD` (what `SameSite=Lax` itself lets through
/// from other sites); plugins' `<object>` and `<embed>` loads excepted, and a link naming
/// another method (`?_method=DELETE`, which a backend overriding `GET` would run).
fn followed_link(parts: &Parts) -> bool {
    let h = &parts.headers;
    matches!(parts.method, Method::GET | Method::HEAD)
        && h.get("sec-fetch-mode").is_some_and(|v| v == "navigate")
        && !h
            .get("sec-fetch-dest")
            .is_some_and(|v| v == "object" || v == "embed")
        && !super::authz::names_another_method(parts)
}

/// A request that changes nothing and opens no tunnel (nor names a method that would).
fn harmless(parts: &Parts) -> bool {
    matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS)
        && !parts.headers.contains_key(header::UPGRADE)
        && !super::authz::names_another_method(parts)
}

/// `Origin` is our own: the public origin of the redirect URI (whatever `Host` an ingress in
/// front rewrote), or, with the same scheme, the host (and port) the request was sent to. A
/// browser sets both `Origin` and `Host`, so only a client that is not a browser could make
/// them agree falsely, and such a client could send no `Origin` at all.
fn same_origin(origin: &[u8], parts: &Parts, own: &url::Url) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    // Rare (browsers without Fetch Metadata): the serialisation is not worth caching.
    if origin == own.origin().ascii_serialization() {
        return true;
    }
    let scheme = format!("{}://", own.scheme());
    let Some(rest) = origin.strip_prefix(scheme.as_str()) else {
        return false; // `null`, another scheme, or not an http(s) origin
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
    host.is_some_and(|h| h.eq_ignore_ascii_case(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri("/v1/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn ok(method: &str, headers: &[(&str, &str)]) -> bool {
        let trusted = TrustedOrigins::These(vec!["https://ui.example.com".into()]);
        let own = url::Url::parse("https://rag.example.com/auth/callback").unwrap();
        allowed(&parts(method, headers), &trusted, &own)
    }

    #[test]
    fn fetch_metadata_decides_when_present() {
        let site = |s| ("sec-fetch-site", s);
        assert!(ok(
            "POST",
            &[site("same-origin"), ("sec-fetch-mode", "cors")]
        ));
        assert!(ok("GET", &[site("none"), ("sec-fetch-mode", "navigate")]));
        let link = [
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
        ];
        assert!(ok("GET", &[site("cross-site"), link[0], link[1]]));
        assert!(ok(
            "GET",
            &[site("same-site"), link[0], ("sec-fetch-dest", "iframe")]
        ));
        // A form posted from a sibling, fetches, images, plugins, WebSockets.
        assert!(!ok("POST", &[site("same-site"), link[0], link[1]]));
        assert!(!ok("GET", &[site("same-site"), ("sec-fetch-mode", "cors")]));
        assert!(!ok(
            "GET",
            &[site("same-site"), ("sec-fetch-mode", "no-cors")]
        ));
        assert!(!ok(
            "GET",
            &[site("cross-site"), link[0], ("sec-fetch-dest", "embed")]
        ));
        assert!(!ok(
            "GET",
            &[site("same-site"), ("sec-fetch-mode", "websocket")]
        ));
        assert!(!ok("DELETE", &[site("weird"), link[0]]));
        // A link naming another method, for a backend that overrides GET.
        let overridden = [
            site("cross-site"),
            link[0],
            link[1],
            ("x-http-method", "DELETE"),
        ];
        assert!(!ok("GET", &overridden));
        let mut p = parts("GET", &[site("same-site"), link[0], link[1]]);
        p.uri = "/v1/x?_method=DELETE".parse().unwrap();
        let own = url::Url::parse("https://rag.example.com/auth/callback").unwrap();
        assert!(!allowed(&p, &TrustedOrigins::default(), &own));
        // A trusted origin's page may call the API.
        let ui = ("origin", "https://ui.example.com");
        assert!(ok(
            "POST",
            &[site("same-site"), ("sec-fetch-mode", "cors"), ui]
        ));
        let near = ("origin", "https://ui.example.com.evil.test");
        assert!(!ok(
            "POST",
            &[site("cross-site"), ("sec-fetch-mode", "cors"), near]
        ));
    }

    #[test]
    fn origin_decides_for_browsers_without_fetch_metadata() {
        let host = ("host", "rag.example.com");
        assert!(ok("POST", &[host]), "not a browser: no Origin");
        assert!(ok("POST", &[host, ("origin", "https://rag.example.com")]));
        assert!(ok("POST", &[host, ("origin", "https://RAG.example.com")]));
        assert!(
            !ok("POST", &[host, ("origin", "http://rag.example.com")]),
            "scheme"
        );
        // Behind an ingress that rewrites Host, the redirect URI's origin is still ours.
        let svc = ("host", "rag-svc:8080");
        assert!(ok("POST", &[svc, ("origin", "https://rag.example.com")]));
        assert!(!ok("POST", &[svc, ("origin", "https://evil.test")]));
        assert!(ok("GET", &[host, ("origin", "https://evil.test")]));
        assert!(!ok(
            "GET",
            &[
                host,
                ("origin", "https://evil.test"),
                ("x-http-method-override", "PUT")
            ]
        ));
        assert!(!ok("POST", &[host, ("origin", "https://evil.test")]));
        assert!(!ok(
            "PUT",
            &[host, ("origin", "https://rag.example.com:8443")]
        ));
        assert!(!ok("POST", &[host, ("origin", "null")]));
        let ws = [("upgrade", "websocket"), ("connection", "upgrade")];
        assert!(!ok(
            "GET",
            &[host, ws[0], ws[1], ("origin", "https://evil.test")]
        ));
        assert!(ok(
            "GET",
            &[host, ws[0], ws[1], ("origin", "https://rag.example.com")]
        ));
    }

    #[test]
    fn any_turns_the_check_off() {
        let own = url::Url::parse("https://rag.example.com/auth/callback").unwrap();
        let p = parts("POST", &[("sec-fetch-site", "cross-site")]);
        assert!(allowed(&p, &TrustedOrigins::Any, &own));
        assert!(!allowed(&p, &TrustedOrigins::default(), &own));
    }

    #[test]
    fn a_refused_request_keeps_its_bearer_token_or_goes_on_bare_on_public_paths() {
        let paths = PathSettings::default();
        let at = |method: &str, path: &str, headers: &[(&str, &str)]| {
            let mut p = parts(method, headers);
            p.uri = path.parse().unwrap();
            refused(&p, &paths)
        };
        let bearer = [("authorization", "Bearer abc")];
        assert!(matches!(
            at("POST", "/v1/x", &bearer),
            Some(Decision::Bearer)
        ));
        assert!(at("POST", "/v1/x", &[]).is_none());
        assert!(matches!(
            at("GET", "/chainlit/x", &[]),
            Some(Decision::PublicWithoutCookies)
        ));
        assert!(at("POST", "/chainlit/x", &[]).is_none());
        assert!(at("GET", "/chainlit/ws", &[("upgrade", "websocket")]).is_none());
        assert!(at("GET", "/v1/x", &[]).is_none());
    }

    #[test]
    fn only_trusted_origins_preflight() {
        let trusted = TrustedOrigins::These(vec!["https://ui.example.com".into()]);
        let pre = |origin: Option<&str>| {
            let mut h = vec![("access-control-request-method", "PUT")];
            h.extend(origin.map(|o| ("origin", o)));
            parts("OPTIONS", &h)
        };
        assert!(trusted_preflight(
            &pre(Some("https://ui.example.com")),
            &trusted
        ));
        assert!(!trusted_preflight(
            &pre(Some("https://evil.test")),
            &trusted
        ));
        assert!(!trusted_preflight(&pre(None), &trusted));
        assert!(!trusted_preflight(
            &pre(Some("https://evil.test")),
            &TrustedOrigins::default()
        ));
        assert!(trusted_preflight(
            &pre(Some("https://evil.test")),
            &TrustedOrigins::Any
        ));
        let not_preflight = parts("OPTIONS", &[("origin", "https://ui.example.com")]);
        assert!(!trusted_preflight(&not_preflight, &trusted));
        // No browser's: a credential, or another method named, goes through the gate.
        let ui = ("origin", "https://ui.example.com");
        let acrm = ("access-control-request-method", "DELETE");
        for extra in [
            ("authorization", "Bearer minted"),
            ("x-http-method-override", "DELETE"),
            ("X_HTTP_Method", "put"),
        ] {
            let p = parts("OPTIONS", &[ui, acrm, extra]);
            assert!(!trusted_preflight(&p, &TrustedOrigins::Any), "{extra:?}");
        }
        // A browser's preflight has the real request's URL, `?_method=` included: it goes
        // on, without the parameter (nor cookies, nor a body).
        let mut p = parts(
            "OPTIONS",
            &[ui, acrm, ("cookie", "s=1"), ("content-length", "3")],
        );
        p.uri = "/v1/x?a=1&_method=DELETE&%5Fmethod=PUT&b=%20"
            .parse()
            .unwrap();
        assert!(trusted_preflight(&p, &trusted), "?_method=");
        as_preflight(&mut p);
        assert_eq!(p.uri, "/v1/x?a=1&b=%20");
        assert!(p.headers.get("cookie").is_none() && p.headers.get("content-length").is_none());
        let mut p = parts("OPTIONS", &[ui, acrm]);
        p.uri = "/v1/x?_method=DELETE".parse().unwrap();
        as_preflight(&mut p);
        assert_eq!(p.uri, "/v1/x");
    }

    #[test]
    fn a_preflight_answered_here_allows_what_a_listed_origin_asks_only() {
        let trusted = TrustedOrigins::These(vec!["https://ui.example.com".into()]);
        let ui = ("origin", "https://ui.example.com");
        let asked = |method: &'static str, headers: &'static str| {
            let acrm = ("access-control-request-method", method);
            parts(
                "OPTIONS",
                &[ui, acrm, ("access-control-request-headers", headers)],
            )
        };
        let a = preflight_answer(&asked("PUT", "content-type, x-csrf"), &trusted);
        assert_eq!(a["access-control-allow-origin"], "https://ui.example.com");
        assert_eq!(a["access-control-allow-credentials"], "true");
        assert_eq!(a["access-control-allow-methods"], "PUT");
        assert_eq!(a["access-control-allow-headers"], "content-type, x-csrf");
        assert_eq!(a["access-control-max-age"], "600");
        assert!(a.contains_key("vary"));
        // Not a list of header names: those are not allowed (the method still is).
        let a = preflight_answer(&asked("PUT", "content-type, x y"), &trusted);
        assert!(!a.contains_key("access-control-allow-headers"));
        // Not a method: nothing is allowed.
        let a = preflight_answer(&asked("PUT X", "a"), &trusted);
        assert!(!a.contains_key("access-control-allow-origin"));
        // `*`: the check is off, but no origin is allowed anything.
        let a = preflight_answer(&asked("PUT", "a"), &TrustedOrigins::Any);
        assert!(!a.contains_key("access-control-allow-origin"));
        assert!(!a.contains_key("access-control-allow-credentials"));
        assert!(a.contains_key("vary"));
    }
}
