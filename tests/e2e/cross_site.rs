//! Requests another site's page makes a browser send with the session cookie (CSRF from a
//! sibling host, cross-site WebSocket hijacking): refused before the upstream unless the
//! browser says they come from our own origin, are a link followed, or come from a trusted
//! origin; browsers without `Sec-Fetch-Site` judged by `Origin`; clients that are not browsers
//! unaffected.

use crate::mock_idp::{Key, MockIdp};
use crate::oidc_support::*;
use crate::support::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The mock IdP with its signing key published.
async fn mock_idp() -> (MockIdp, Key) {
    let idp = MockIdp::start().await;
    let key = Key::new("k1");
    idp.set(|m| m.jwks = json!({"keys": [key.jwk()]}));
    (idp, key)
}

/// An upstream, a sidecar in front of it with `env`, and alice's session cookie there.
async fn signed_in(
    idp: &MockIdp,
    key: &Key,
    env: &[(&str, &str)],
) -> (Upstream, OidcSidecar, String) {
    let up = Upstream::start();
    let sc = start_oidc_sidecar(free_port(), &idp.issuer(), &up.url(), env).await;
    let cookie = session_header(&idp.login(key, &sc.sidecar, "alice", "sid-1").await);
    (up, sc, cookie)
}

/// `method path` with `cookie` and `headers` (a small form body unless `GET`, `HEAD` or
/// `OPTIONS`); the whole response.
async fn call(
    sc: &Sidecar,
    method: &str,
    path: &str,
    cookie: &str,
    headers: &[(&str, &str)],
) -> http::Response<bytes::Bytes> {
    let mut h = vec![("cookie", cookie)];
    h.extend_from_slice(headers);
    let b = if matches!(method, "GET" | "HEAD" | "OPTIONS") {
        ""
    } else {
        "x=1"
    };
    send(request(method, &sc.url(path), &h, body(b)))
        .await
        .unwrap()
}

async fn status_of(
    sc: &Sidecar,
    method: &str,
    path: &str,
    cookie: &str,
    headers: &[(&str, &str)],
) -> u16 {
    call(sc, method, path, cookie, headers)
        .await
        .status()
        .as_u16()
}

/// The identity the upstream was given, as its echo shows it.
fn user_of(r: &http::Response<bytes::Bytes>) -> serde_json::Value {
    json(r)["headers"]["x-forwarded-user"].clone()
}

/// A WebSocket handshake with `extra` header lines; the status line of the answer.
async fn websocket(sc: &Sidecar, cookie: &str, extra: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: {cookie}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n",
        sc.addr.port()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn requests_from_other_sites_do_not_act_as_the_user() {
    let (idp, key) = mock_idp().await;
    let (up, sc, cookie) = signed_in(&idp, &key, &[]).await;
    let sc = &sc.sidecar;
    let own = format!("http://127.0.0.1:{}", sc.addr.port());

    // Allowed: our own pages, what the user typed, links followed from anywhere, clients that
    // are not browsers, and browsers without Fetch Metadata on our own origin.
    let same_origin = [
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "cors"),
    ];
    let link = [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
    ];
    let allowed: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("POST", same_origin.to_vec()),
        ("DELETE", same_origin.to_vec()),
        (
            "GET",
            vec![("sec-fetch-site", "none"), ("sec-fetch-mode", "navigate")],
        ),
        ("GET", link.to_vec()),
        ("POST", vec![]),
        ("POST", vec![("origin", own.as_str())]),
        ("GET", vec![("origin", "https://evil.test")]),
    ];

    // Refused: a sibling's form, fetch, image; a cross-site form; a plugin; a browser without
    // Fetch Metadata posting from elsewhere, or from an opaque origin.
    let refused: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "POST",
            vec![
                ("sec-fetch-site", "same-site"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "document"),
            ],
        ),
        (
            "DELETE",
            vec![("sec-fetch-site", "same-site"), ("sec-fetch-mode", "cors")],
        ),
        (
            "GET",
            vec![
                ("sec-fetch-site", "same-site"),
                ("sec-fetch-mode", "no-cors"),
            ],
        ),
        (
            "POST",
            vec![
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate"),
            ],
        ),
        (
            "GET",
            vec![
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "embed"),
            ],
        ),
        ("POST", vec![("origin", "https://evil.test")]),
        ("PUT", vec![("origin", "null")]),
    ];
    for (want, kind, cases) in [(200, "allowed", &allowed), (403, "refused", &refused)] {
        for (i, (method, headers)) in cases.iter().enumerate() {
            let r = call(sc, method, &format!("/echo/{kind}-{i}"), &cookie, headers).await;
            assert_eq!(r.status(), want, "{method} {headers:?}");
            if want == 200 {
                assert_eq!(user_of(&r), json!(["alice"]), "{method} {headers:?}");
            }
        }
    }

    // Cross-site WebSocket hijacking, with and without Fetch Metadata; our own page's passes.
    let sibling = "Origin: https://wiki.example.test\r\nSec-Fetch-Site: same-site\r\n\
                   Sec-Fetch-Mode: websocket\r\n";
    assert_eq!(
        websocket(sc, &cookie, sibling).await,
        "HTTP/1.1 403 Forbidden"
    );
    let old = "Origin: https://evil.test\r\n";
    assert_eq!(websocket(sc, &cookie, old).await, "HTTP/1.1 403 Forbidden");
    let mine = format!("Origin: {own}\r\nSec-Fetch-Site: same-origin\r\n");
    assert!(websocket(sc, &cookie, &mine)
        .await
        .starts_with("HTTP/1.1 101"));

    // On a public path the session's identity is not given to a cross-site request.
    let r = call(
        sc,
        "GET",
        "/chainlit/x",
        &cookie,
        &[("sec-fetch-site", "same-site")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(user_of(&r), serde_json::Value::Null, "{:?}", json(&r));
    let r = call(
        sc,
        "GET",
        "/chainlit/x",
        &cookie,
        &[("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(user_of(&r), json!(["alice"]));

    // Nothing refused reached the upstream; everything allowed did, as alice.
    let paths = up.paths().await;
    assert!(!paths.iter().any(|p| p.contains("refused")), "{paths:?}");
    for i in 0..allowed.len() {
        assert!(paths.contains(&format!("/echo/allowed-{i}")), "{paths:?}");
    }
    let tunnels = paths.iter().filter(|p| **p == "/ws").count();
    assert_eq!(
        tunnels, 1,
        "only our own page's WebSocket reached the upstream"
    );
}

/// A front end of ours on another origin (`trusted_origins`) may call the API with the session;
/// a look-alike origin may not; `*` turns the check off.
#[tokio::test]
async fn trusted_origins_may_act_as_the_user() {
    let (idp, key) = mock_idp().await;
    let env = [("SSO_SIDECAR_TRUSTED_ORIGINS", "https://ui.example.test")];
    let (_up, sc, cookie) = signed_in(&idp, &key, &env).await;
    let sc = &sc.sidecar;
    let cors = |origin| {
        [
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-mode", "cors"),
            ("origin", origin),
        ]
    };
    let ui = cors("https://ui.example.test");
    assert_eq!(status_of(sc, "POST", "/echo/a", &cookie, &ui).await, 200);
    let near = cors("https://ui.example.test.evil.test");
    assert_eq!(status_of(sc, "POST", "/echo/b", &cookie, &near).await, 403);
    let port = cors("https://ui.example.test:8443");
    assert_eq!(status_of(sc, "POST", "/echo/c", &cookie, &port).await, 403);

    let any = [("SSO_SIDECAR_TRUSTED_ORIGINS", "*")];
    let (up, open, cookie) = signed_in(&idp, &key, &any).await;
    let open = &open.sidecar;
    let evil = cors("https://evil.test");
    assert_eq!(
        status_of(open, "POST", "/echo/d", &cookie, &evil).await,
        200
    );
    // The check off trusts no origin in particular: a preflight is answered, allowing nothing
    // (a site's credentialed `PUT` would follow), and reaches nothing upstream.
    let before = up.paths().await.len();
    let h = [
        ("origin", "https://evil.test"),
        ("access-control-request-method", "PUT"),
    ];
    let r = send(request("OPTIONS", &open.url("/echo/e"), &h, body("")))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert_eq!(up.paths().await.len(), before);
}

/// What a refused request becomes: with a bearer token, the token alone (no identity from the
/// cookie); on a public path, a harmless request without any cookie (the upstream's own
/// session cookie would act for it as well), anything else 403. Trusted origins' CORS
/// preflights are answered by the sidecar (with `forward_preflights`, by the upstream); `Origin` checks follow the public origin behind an ingress
/// that rewrites `Host`; and refusals do not spend the visitor's failure budget.
#[tokio::test]
async fn refused_requests_carry_nothing_of_the_user() {
    let (idp, key) = mock_idp().await;
    let env = [
        ("SSO_SIDECAR_TRUSTED_ORIGINS", "https://ui.example.test"),
        ("RATE_LIMIT_ENABLED", "true"),
        ("RATE_LIMIT_AUTH_FAILURE", "3/minute"),
        // A backend that checks its own bearer tokens (off by default with identity headers).
        ("SSO_SIDECAR_PATHS__BEARER_PASSTHROUGH", "true"),
    ];
    let (up, sc, cookie) = signed_in(&idp, &key, &env).await;
    let sc = &sc.sidecar;
    let cookies = format!("{cookie}; upstream_session=its-own");
    let sibling = ("sec-fetch-site", "same-site");
    let echo = |r: &http::Response<bytes::Bytes>| json(r)["headers"].clone();

    // A public path: forwarded bare.
    let r = send(request(
        "GET",
        &sc.url("/chainlit/x"),
        &[("cookie", &cookies), sibling, ("sec-fetch-mode", "no-cors")],
        body(""),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(echo(&r).get("cookie").is_none(), "{}", echo(&r));
    assert!(echo(&r).get("x-forwarded-user").is_none(), "{}", echo(&r));
    // ... unless it changes something.
    let h = [sibling, ("sec-fetch-mode", "cors")];
    assert_eq!(status_of(sc, "POST", "/chainlit/x", &cookie, &h).await, 403);
    // A bearer token speaks for itself.
    let r = send(request(
        "POST",
        &sc.url("/echo/bearer"),
        &[
            ("cookie", &cookie),
            ("authorization", "Bearer t0k3n"),
            sibling,
        ],
        body(""),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(echo(&r)["authorization"], json!(["Bearer t0k3n"]));
    assert!(echo(&r).get("x-forwarded-user").is_none(), "{}", echo(&r));

    // CORS preflights: a trusted origin's is answered by the sidecar, and reaches nothing
    // upstream (a backend running its handler for OPTIONS would serve an anonymous client);
    // another's is what any request without a session is.
    let preflight = |sc: &Sidecar, origin: &'static str| {
        request(
            "OPTIONS",
            &sc.url("/echo/preflight"),
            &[
                ("origin", origin),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "content-type"),
                ("sec-fetch-mode", "cors"),
            ],
            body(""),
        )
    };
    let before = up.paths().await.len();
    let r = send(preflight(sc, "https://ui.example.test"))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://ui.example.test");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-methods"], "PUT");
    assert_eq!(h["access-control-allow-headers"], "content-type");
    assert_eq!(
        up.paths().await.len(),
        before,
        "the preflight reached the upstream"
    );
    let r = send(preflight(sc, "https://evil.test")).await.unwrap();
    assert_eq!(r.status(), 401);
    // `forward_preflights`: the upstream answers them, without identity.
    let env = [
        ("SSO_SIDECAR_TRUSTED_ORIGINS", "https://ui.example.test"),
        ("SSO_SIDECAR_FORWARD_PREFLIGHTS", "true"),
    ];
    let (_up, fwd, _) = signed_in(&idp, &key, &env).await;
    let fwd = &fwd.sidecar;
    let r = send(preflight(fwd, "https://ui.example.test"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["method"], "OPTIONS");
    // A browser's preflight has no body; a client that sends one with it does not get it to
    // the upstream's OPTIONS handler unauthenticated.
    let mut with_body = preflight(fwd, "https://ui.example.test");
    *with_body.body_mut() = body("{\"delete\": \"everything\"}");
    let r = send(with_body).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["body_len"], 0, "{}", json(&r));
    assert!(json(&r)["headers"]
        .get("content-length")
        .is_none_or(|v| v[0] == "0"));
    let r = send(preflight(fwd, "https://evil.test")).await.unwrap();
    assert_eq!(r.status(), 401);

    // No Fetch Metadata, Host rewritten by an ingress: the redirect URI's origin is ours.
    let own = format!("http://127.0.0.1:{}", sc.addr.port());
    let svc = [("host", "rag-svc:8000"), ("origin", own.as_str())];
    assert_eq!(status_of(sc, "POST", "/echo/svc", &cookie, &svc).await, 200);
    let https = format!("https://127.0.0.1:{}", sc.addr.port());
    let other_scheme = [("origin", https.as_str())];
    assert_eq!(
        status_of(sc, "POST", "/echo/refused-scheme", &cookie, &other_scheme).await,
        403
    );

    // Five refusals over a failure budget of three: no 429, and a request without a session
    // from the same address still gets its plain 401.
    for i in 0..5 {
        let path = format!("/echo/refused-budget-{i}");
        let h = [sibling, ("sec-fetch-mode", "cors")];
        assert_eq!(
            status_of(sc, "DELETE", &path, &cookie, &h).await,
            403,
            "{i}"
        );
    }
    assert_eq!(get(&sc.url("/v1/x"), &[]).await.unwrap().status(), 401);
    // Every refusal counted for the operator: the public GET, the public POST, the bearer
    // request, the other scheme and the five above.
    let m = metrics(sc).await;
    assert_eq!(
        metric(&m, "sso_sidecar_cross_site_refused_total"),
        9.0,
        "{m}"
    );

    let paths = up.paths().await;
    assert!(!paths.iter().any(|p| p.contains("refused")), "{paths:?}");
    let chainlit = paths.iter().filter(|p| **p == "/chainlit/x").count();
    assert_eq!(chainlit, 1, "the GET went on, the POST did not");
}

/// The same attacks from a real browser: headless Chromium on a sibling host's page
/// (`wiki.example.…`) with the user's session cookie for `rag.example.…` (one site, so
/// `SameSite=Lax` lets the cookie go): a credentialed fetch, an image, a form and a WebSocket
/// do not reach the upstream; a link followed, and the user's own page, act as the user. Under
/// `example.localhost` the browser sends Fetch Metadata; under `example.test`, plain http, it
/// sends only `Origin`, which guards what changes things (the image, a `GET`, goes through:
/// the limit the README states).
#[tokio::test]
async fn a_real_browser_on_a_sibling_host_cannot_act_as_the_user() {
    let (idp, key) = mock_idp().await;
    for (site, image_refused) in [("example.localhost", true), ("example.test", false)] {
        let (up, sc, cookie) = signed_in(&idp, &key, &[]).await;
        let sc = &sc.sidecar;
        let (name, value) = cookie.split_once('=').unwrap();
        let rp = format!("http://rag.{site}:{}", sc.addr.port());
        let out = browser("cross_site.mjs", &[&rp, name, value]).await;
        assert_eq!(out["attacks"]["ws"], "error", "{site}: {out}");
        assert_eq!(out["link"]["user"], json!(["alice"]), "{site}: {out}");
        assert_eq!(out["own"]["status"], 200, "{site}: {out}");
        assert_eq!(out["own"]["user"], json!(["alice"]), "{site}: {out}");
        assert_eq!(out["own"]["ws"], "open", "{site}: {out}");

        let paths = up.paths().await;
        for refused in ["/echo/xs-fetch", "/echo/xs-form"] {
            assert!(
                !paths.iter().any(|p| p == refused),
                "{site}: {refused} went through: {paths:?}"
            );
        }
        assert_eq!(
            !paths.iter().any(|p| p == "/echo/xs-img"),
            image_refused,
            "{site}: {paths:?}"
        );
        for allowed in ["/echo/xs-link", "/echo/own-page", "/echo/own-fetch"] {
            assert!(
                paths.iter().any(|p| p == allowed),
                "{site}: {allowed}: {paths:?}"
            );
        }
        let tunnels = paths.iter().filter(|p| **p == "/ws").count();
        assert_eq!(
            tunnels, 1,
            "{site}: only the user's own WebSocket: {paths:?}"
        );
        // The browser did send the cookie with the sibling's requests (a request without it
        // would be refused for want of a session and never reach the upstream either): each
        // was refused as a cross-site one.
        let refused = metric(&metrics(sc).await, "sso_sidecar_cross_site_refused_total");
        let attacks = if image_refused { 4.0 } else { 3.0 };
        assert!(refused >= attacks, "{site}: {refused} cross-site refusals");
    }
}
