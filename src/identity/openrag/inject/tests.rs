//! Where the user's token goes, per path, and what of the client's goes with it.

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

/// OpenRag 1.1.8's Chainlit: the session the sidecar opened replaces the client's, and the
/// client's backend cookies (which Chainlit's header login reads) go too; with no session
/// of the sidecar's, the client's credentials go all the same.
#[test]
fn chainlit_sessions_leave_no_client_credential() {
    let forged = || {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "a=1; access_token=theirs; openrag_chainlit_token=forged; \
                 openrag_session=x; access_token_0=chunk",
            ),
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer forged"),
        );
        h
    };
    let mut h = forged();
    inject_headers(&mut h, Carrier::ChainlitSession, "access_token=ours");
    assert_eq!(h[header::COOKIE], "a=1; access_token=ours");
    assert!(h.get(header::AUTHORIZATION).is_none());
    let mut h = forged();
    without_client_credentials(&mut h);
    assert_eq!(h[header::COOKIE], "a=1");
    assert!(h.get(header::AUTHORIZATION).is_none());
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

/// Starlette strips cookie names with Python's `str.strip()` over latin-1: `\xa0` and `\x85`
/// around a name are whitespace to it. A client's `\xa0openrag_session` is the backend's
/// `openrag_session`, so it is stripped as such, and never speaks beside the injected cookie.
#[test]
fn cookie_names_padded_with_latin1_spaces_are_stripped_as_the_backend_reads_them() {
    for padded in [
        &b"\xa0openrag_session=x; a=1"[..],
        b"openrag_session\x85=x; a=1",
        b"\xa0\x85openrag_chainlit_token=x;a=1",
        b"\xa0access_token_0=x; a=1",
    ] {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_bytes(padded).unwrap());
        strip_user_cookies(&mut h);
        assert_eq!(h[header::COOKIE], "a=1", "{padded:?}");
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_bytes(padded).unwrap());
        if padded.ends_with(b"access_token_0=x; a=1") {
            continue; // Chainlit's own session: the Cookie carrier leaves it to Chainlit.
        }
        inject_headers(&mut h, Carrier::Cookie, "or-t");
        assert_eq!(
            h[header::COOKIE],
            "a=1; openrag_chainlit_token=or-t",
            "{padded:?}"
        );
    }
    // Other latin-1 bytes stay part of the name, and the pair reaches the backend as sent.
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_bytes(b"\xe9openrag_session=x").unwrap(),
    );
    strip_user_cookies(&mut h);
    assert_eq!(h[header::COOKIE].as_bytes(), b"\xe9openrag_session=x");
}
