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
//! Reads request headers only; knows nothing of sessions or of what the upstream does.

pub use crate::config::origins::TrustedOrigins;
use http::{header, request::Parts, Method};

/// Whether a request carrying the session cookie may act as its user.
pub fn allowed(parts: &Parts, trusted: &TrustedOrigins) -> bool {
    let list = match trusted {
        TrustedOrigins::Any => return true,
        TrustedOrigins::These(list) => list,
    };
    let h = &parts.headers;
    let origin = h.get(header::ORIGIN).map(|v| v.as_bytes());
    if origin.is_some_and(|o| list.iter().any(|t| t.as_bytes() == o)) {
        return true;
    }
    match h.get("sec-fetch-site").map(|v| v.as_bytes()) {
        Some(b"same-origin" | b"none") => true,
        Some(_) => followed_link(parts),
        None => match origin {
            None => true,
            Some(o) => harmless(parts) || same_host(o, parts),
        },
    }
}

/// A top-level or frame navigation by `GET` or `HEAD` (what `SameSite=Lax` itself lets through
/// from other sites); plugins' `<object>` and `<embed>` loads excepted.
fn followed_link(parts: &Parts) -> bool {
    let h = &parts.headers;
    matches!(parts.method, Method::GET | Method::HEAD)
        && h.get("sec-fetch-mode").is_some_and(|v| v == "navigate")
        && !h
            .get("sec-fetch-dest")
            .is_some_and(|v| v == "object" || v == "embed")
}

/// A request that changes nothing and opens no tunnel.
fn harmless(parts: &Parts) -> bool {
    matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS)
        && !parts.headers.contains_key(header::UPGRADE)
}

/// `Origin` names the host (and port) the request was sent to: a browser's own page. A browser
/// sets both, so only a client that is not a browser could make them agree falsely, and such a
/// client could send no `Origin` at all.
fn same_host(origin: &[u8], parts: &Parts) -> bool {
    let Some(rest) = std::str::from_utf8(origin).ok().and_then(|o| {
        o.strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
    }) else {
        return false; // `null`, or not an http(s) origin
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
        allowed(&parts(method, headers), &trusted)
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
        assert!(ok("POST", &[host, ("origin", "http://RAG.example.com")]));
        assert!(ok("GET", &[host, ("origin", "https://evil.test")]));
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
        let p = parts("POST", &[("sec-fetch-site", "cross-site")]);
        assert!(allowed(&p, &TrustedOrigins::Any));
        assert!(!allowed(&p, &TrustedOrigins::default()));
    }
}
