//! OIDC login end to end: the real IdP (oidc-provider), a real redis-server, the real binary.

use crate::oidc_support::*;
use crate::support::*;

/// IdP + Redis + upstream + an OIDC sidecar wired together.
pub struct World {
    pub idp: Idp,
    pub redis: Redis,
    pub _up: Upstream,
    pub sc: OidcSidecar,
}

async fn world(extra: &[(&str, &str)]) -> World {
    world_with(&[], extra).await
}

/// A world whose IdP gets `idp_env` on top of the client registration.
pub async fn world_with(idp_env: &[(&str, &str)], extra: &[(&str, &str)]) -> World {
    let port = free_port();
    let mut env = vec![
        (
            "RP_REDIRECT_URIS",
            format!("http://127.0.0.1:{port}/auth/callback"),
        ),
        ("RP_POST_LOGOUT_URIS", "http://127.0.0.1:1/bye".to_string()),
        (
            "RP_BACKCHANNEL_URI",
            format!("http://127.0.0.1:{port}/auth/backchannel-logout"),
        ),
    ];
    env.extend(idp_env.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let idp = Idp::start(0, &env);
    let redis = Redis::start().await;
    let up = Upstream::start();
    let mut env = vec![("SSO_SIDECAR_REDIS_URL", redis.url())];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sc = start_oidc_sidecar(port, &idp.issuer(), &up.url(), &env).await;
    World {
        idp,
        redis,
        _up: up,
        sc,
    }
}

#[tokio::test]
async fn login_then_the_upstream_sees_the_identity_and_nothing_else() {
    let w = world(&[]).await;
    let sc = &w.sc.sidecar;

    // Unauthenticated: UI paths redirect, API paths get 401 JSON, nothing reaches the upstream.
    let r = get(&sc.url("/static/app.js?v=1"), &[]).await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), "/auth/login?next=%2Fstatic%2Fapp.js%3Fv%3D1");
    for method in ["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"] {
        let r = send(request(method, &sc.url("/v1/chat"), &[], body("x")))
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method}");
        assert_eq!(json(&r), serde_json::json!({"detail": "Unauthenticated"}));
    }
    assert_eq!(
        get(&sc.url("/health_check"), &[]).await.unwrap().status(),
        200,
        "public path"
    );
    // A public prefix cannot smuggle a protected path past the gate.
    for sneaky in [
        "/assets/../v1/chat",
        "/assets/%2e%2e/v1/chat",
        "/chainlit/..%2fv1/chat",
    ] {
        let r = get(&sc.url(sneaky), &[]).await.unwrap();
        assert_eq!(r.status(), 400, "{sneaky}");
    }

    let l = login(sc, "alice", "/echo/after?x=1").await;
    assert_eq!(location(&l.callback), "/echo/after?x=1");
    let set = l
        .callback
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    let session_cookie = set
        .iter()
        .find(|c| c.starts_with("sso_sidecar_session="))
        .unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(session_cookie.contains(attr), "{attr} in {session_cookie}");
    }
    assert!(!session_cookie.contains("Secure"), "http origin: no Secure");
    assert!(
        set.iter()
            .any(|c| c.starts_with("sso_sidecar_session_state=;") && c.contains("Max-Age=0")),
        "state cookie deleted: {set:?}"
    );
    assert_eq!(l.cookie.len(), 43);

    let cookie = format!("{}; other=kept", session_header(&l.cookie));
    let r = get(
        &sc.url("/echo/after?x=1"),
        &[
            ("cookie", &cookie),
            ("x-forwarded-user", "mallory"),
            ("X_Forwarded_Email", "mallory@evil"),
            ("x.forwarded.groups", "admins"),
            ("connection", "x-forwarded-user"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let h = json(&r)["headers"].clone();
    assert_eq!(h["x-forwarded-user"], serde_json::json!(["alice"]), "{h}");
    assert_eq!(
        h["x-forwarded-email"],
        serde_json::json!(["alice@example.test"])
    );
    assert_eq!(
        h["x-forwarded-preferred-username"],
        serde_json::json!(["alice"])
    );
    assert_eq!(
        h["x-forwarded-groups"],
        serde_json::json!(["staff,alice-group"])
    );
    assert!(
        h.get("x_forwarded_email").is_none() && h.get("x.forwarded.groups").is_none(),
        "{h}"
    );
    assert!(
        h.get("x-forwarded-access-token").is_none(),
        "the access token is not sent by default"
    );
    assert_eq!(
        h["cookie"],
        serde_json::json!(["other=kept"]),
        "the sidecar's cookie never reaches the upstream"
    );
    // Let through by a cookie, which does not stop a shared cache from keeping it: private,
    // beside what the backend said unless it said who may keep it (the event stream's own
    // `no-cache` says nothing of that).
    assert_eq!(r.headers()["cache-control"], "private");
    let r = get(&sc.url("/sse?n=1"), &[("cookie", &cookie)])
        .await
        .unwrap();
    let cc: Vec<_> = r.headers().get_all("cache-control").iter().collect();
    assert_eq!(cc, ["no-cache", "private"]);
    let r = get(&sc.url("/health_check"), &[]).await.unwrap();
    assert!(
        r.headers().get("cache-control").is_none(),
        "public: as sent"
    );

    // Public and bearer paths carry no identity either, whatever the client sends.
    let r = get(&sc.url("/health_check"), &[("x-forwarded-user", "mallory")])
        .await
        .unwrap();
    assert!(json(&r)["headers"].get("x-forwarded-user").is_none());
    let r = get(
        &sc.url("/v1/models"),
        &[
            ("authorization", "Bearer backend-token"),
            ("x-forwarded-user", "mallory"),
        ],
    )
    .await
    .unwrap();
    // With identity headers a bearer alone is no credential by default: a backend that
    // trusts the headers would serve a made-up token's request as anonymous.
    assert_eq!(
        r.status(),
        401,
        "a bearer alone does not reach the upstream"
    );
    assert_eq!(json(&r)["detail"], "Unauthenticated");
    assert!(
        json(&r).get("headers").is_none(),
        "the sidecar answered, not the upstream"
    );

    let me = get(
        &sc.url("/auth/me"),
        &[("cookie", &session_header(&l.cookie))],
    )
    .await
    .unwrap();
    let me = json(&me);
    assert_eq!(me["sub"], "alice");
    assert_eq!(me["email"], "alice@example.test");
    assert_eq!(me["auth_method"], "oidc");
    assert!(me["session_expires_at"].as_i64().unwrap() > 0);
    assert_eq!(get(&sc.url("/auth/me"), &[]).await.unwrap().status(), 401);
}

#[tokio::test]
async fn redis_holds_nothing_readable() {
    let w = world(&[]).await;
    let sc = &w.sc.sidecar;
    let a = login(sc, "alice", "/").await;
    let b = login(sc, "bob", "/docs/q3-report?q=where-bob-was-going").await;
    let dump = w.redis.dump();
    assert!(
        dump.lines().count() >= 6,
        "sessions, indexes and state markers are there:\n{dump}"
    );
    for secret in [
        a.cookie.as_str(),
        b.cookie.as_str(),
        "alice@example.test",
        "bob@example.test",
        "alice",
        "Test bob",
        "staff",
        "q3-report",
        "where-bob-was-going",
        w.sc.key.as_str(),
    ] {
        assert!(
            !dump.contains(secret),
            "{secret:?} readable in Redis:\n{dump}"
        );
    }
    // Tokens: the IdP's access tokens are opaque; check no JWT (ID token) leaks either. A JWT
    // starts with its base64url header, `{"alg":`, `{"kid":` or `{"typ":`; plain "eyJ" also
    // occurs by chance in Fernet ciphertext (about one dump in fifty).
    assert!(!has_jwt(&dump), "a JWT is stored in clear:\n{dump}");
    // Nor do the logs: no session id, no ID token, no Fernet key, no client secret.
    sc.logged("OIDC login success").await;
    // The login's destination is logged by its path only: its query is the user's (a search).
    let logs = sc.logged("/docs/q3-report").await;
    assert!(!logs.contains("where-bob-was-going"), "{logs}");
    for secret in [
        a.cookie.as_str(),
        b.cookie.as_str(),
        w.sc.key.as_str(),
        CLIENT_SECRET,
    ] {
        assert!(
            !logs.contains(secret),
            "{secret:?} reached the logs:\n{logs}"
        );
    }
    assert!(!has_jwt(&logs), "a JWT reached the logs:\n{logs}");
    for line in dump.lines() {
        let (key, _) = line.split_once(" => ").unwrap();
        assert!(key.starts_with("sso-sidecar:"), "prefixed: {key}");
        assert!(
            key.contains('{') && key.ends_with('}'),
            "hash-tagged: {key}"
        );
    }
}

#[tokio::test]
async fn a_new_login_mints_a_new_id_and_kills_the_old_one() {
    let w = world(&[]).await;
    let sc = &w.sc.sidecar;
    let first = login(sc, "alice", "/").await;
    // Log in again while presenting the old cookie (session fixation attempt).
    let start = get(
        &sc.url("/auth/login?next=/"),
        &[("cookie", &session_header(&first.cookie))],
    )
    .await
    .unwrap();
    let state = set_cookie(&start, "sso_sidecar_session_state").unwrap();
    let cb_url = idp_login(&location(&start), "alice").await;
    let cookies = format!(
        "sso_sidecar_session_state={state}; {}",
        session_header(&first.cookie)
    );
    let cb = get(&cb_url, &[("cookie", &cookies)]).await.unwrap();
    assert_eq!(cb.status(), 302);
    let second = set_cookie(&cb, "sso_sidecar_session").unwrap();
    assert_ne!(second, first.cookie);
    assert_eq!(
        get(&sc.url("/v1/x"), &[("cookie", &session_header(&second))])
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get(
            &sc.url("/v1/x"),
            &[("cookie", &session_header(&first.cookie))]
        )
        .await
        .unwrap()
        .status(),
        401,
        "the old id died"
    );
}

#[tokio::test]
async fn callback_errors_use_openrag_messages_and_delete_the_state_cookie() {
    let w = world(&[]).await;
    let sc = &w.sc.sidecar;
    let detail = |r: &http::Response<bytes::Bytes>| {
        json(r)["detail"].as_str().unwrap_or_default().to_owned()
    };
    let deletes_state = |r: &http::Response<bytes::Bytes>| {
        r.headers().get_all("set-cookie").iter().any(|v| {
            v.to_str()
                .unwrap()
                .starts_with("sso_sidecar_session_state=;")
        })
    };

    let r = get(&sc.url("/auth/callback?state=x"), &[]).await.unwrap();
    assert_eq!(
        (r.status().as_u16(), detail(&r).as_str()),
        (400, "Missing 'code' or 'state' query parameter.")
    );
    assert!(deletes_state(&r));
    let r = get(&sc.url("/auth/callback?code=c&state=x"), &[])
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), detail(&r).as_str()),
        (400, "OIDC state cookie missing.")
    );
    assert!(deletes_state(&r));

    let start = get(&sc.url("/auth/login?next=/"), &[]).await.unwrap();
    let state = set_cookie(&start, "sso_sidecar_session_state").unwrap();
    let cb_url = idp_login(&location(&start), "alice").await;

    // Tampered cookie.
    let mut bytes = state.clone().into_bytes();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let r = get(
        &cb_url,
        &[("cookie", &format!("sso_sidecar_session_state={tampered}"))],
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status().as_u16(), detail(&r).as_str()),
        (400, "Invalid or expired OIDC state cookie.")
    );
    assert!(deletes_state(&r));

    // Expired cookie: sealed with the right key, but 11 minutes old.
    let ring = sso_sidecar::crypto::KeyRing::parse(&w.sc.key).unwrap();
    let old = serde_json::json!({"state":"s","nonce":"n","verifier":"v","next":"/","created": sso_sidecar::auth::oidc::now_unix() - 660});
    let expired = ring.seal(old.to_string().as_bytes());
    let r = get(
        &sc.url("/auth/callback?code=c&state=s"),
        &[("cookie", &format!("sso_sidecar_session_state={expired}"))],
    )
    .await
    .unwrap();
    assert_eq!(detail(&r), "Invalid or expired OIDC state cookie.");

    // State mismatch.
    let mismatched = cb_url.replace("state=", "state=x");
    let r = get(
        &mismatched,
        &[("cookie", &format!("sso_sidecar_session_state={state}"))],
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status().as_u16(), detail(&r).as_str()),
        (400, "OIDC state mismatch.")
    );

    // The real callback works once; the same state and code replayed do not.
    let ok = get(
        &cb_url,
        &[("cookie", &format!("sso_sidecar_session_state={state}"))],
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 302);
    let again = get(
        &cb_url,
        &[("cookie", &format!("sso_sidecar_session_state={state}"))],
    )
    .await
    .unwrap();
    assert_eq!(
        (again.status().as_u16(), detail(&again).as_str()),
        (400, "Invalid or expired OIDC state cookie.")
    );
    assert!(set_cookie(&again, "sso_sidecar_session").is_none());

    // A replayed authorization code under a fresh, valid state: the IdP refuses it.
    let start2 = get(&sc.url("/auth/login?next=/"), &[]).await.unwrap();
    let state2 = set_cookie(&start2, "sso_sidecar_session_state").unwrap();
    let auth2 = url::Url::parse(&location(&start2)).unwrap();
    let s2 = auth2
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let code = url::Url::parse(&cb_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let replay = sc.url(&format!(
        "/auth/callback?code={}&state={}",
        urlencode(&code),
        urlencode(&s2)
    ));
    let r = get(
        &replay,
        &[("cookie", &format!("sso_sidecar_session_state={state2}"))],
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status().as_u16(), detail(&r).as_str()),
        (400, "OIDC code exchange failed")
    );

    // The IdP's own error, shown readably to a browser, for the login in flight in it.
    let r = get(&sc.url("/auth/login?next=/"), &[]).await.unwrap();
    let login = url::Url::parse(&location(&r)).unwrap();
    let state = login
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let cookie = format!(
        "sso_sidecar_session_state={}",
        set_cookie(&r, "sso_sidecar_session_state").unwrap()
    );
    // With the `iss` oidc-provider sends (RFC 9207, its metadata says so): an error response
    // without it is not shown as this IdP's.
    let refused = |state: &str| {
        sc.url(&format!(
            "/auth/callback?error=access_denied&error_description=The+user+said+no&state={}&iss={}",
            urlencode(state),
            urlencode(&w.idp.issuer())
        ))
    };
    let r = get(
        &refused("x"),
        &[("accept", "application/json"), ("cookie", &cookie)],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        !String::from_utf8_lossy(r.body()).contains("said no"),
        "anyone's link: the words are not shown"
    );
    let r = get(
        &refused(&state),
        &[("accept", "text/html"), ("cookie", &cookie)],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let page = String::from_utf8_lossy(r.body());
    assert!(
        page.contains("access_denied") && page.contains("The user said no"),
        "{page}"
    );
    assert!(deletes_state(&r));
}

#[tokio::test]
async fn login_redirect_carries_pkce_state_nonce_and_scopes() {
    let w = world(&[]).await;
    let sc = &w.sc.sidecar;
    let r = get(&sc.url("/auth/login?next=//evil.com"), &[])
        .await
        .unwrap();
    let loc = url::Url::parse(&location(&r)).unwrap();
    assert_eq!(loc.origin().ascii_serialization(), w.idp.issuer());
    let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["scope"], "openid email profile offline_access");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert!(
        q["state"].len() >= 43 && q["nonce"].len() >= 43,
        "256-bit state and nonce"
    );
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"] {
        assert!(cookie.contains(attr), "{attr}: {cookie}");
    }
    // The open redirect was neutralised before it was stored: the login ends on "/".
    let state = set_cookie(&r, "sso_sidecar_session_state").unwrap();
    let cb = idp_login(loc.as_str(), "carol").await;
    let done = get(
        &cb,
        &[("cookie", &format!("sso_sidecar_session_state={state}"))],
    )
    .await
    .unwrap();
    assert_eq!(location(&done), "/");
}

#[tokio::test]
async fn a_real_browser_logs_in_and_lands_on_the_requested_page() {
    let w = world(&[]).await;
    let sc = &w.sc.sidecar;
    let result = browser(
        "login.mjs",
        &[&sc.url("/static/landing?from=browser"), "dave"],
    )
    .await;
    assert_eq!(result["status"], 200);
    assert_eq!(result["url"], sc.url("/static/landing?from=browser"));
    let page: serde_json::Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
    assert_eq!(page["path"], "/static/landing");
    assert_eq!(page["headers"]["x-forwarded-user"][0], "dave");
    assert_eq!(page["headers"]["x-forwarded-email"][0], "dave@example.test");
    assert_eq!(w.idp.events().await["grants"]["authorization_code"], 1);
}

#[tokio::test]
async fn memory_store_logs_in_too_and_says_it_is_single_replica() {
    let (_idp, _up, sc) = memory_world(&[]).await;
    let l = login(&sc.sidecar, "erin", "/").await;
    let r = get(
        &sc.sidecar.url("/echo"),
        &[("cookie", &session_header(&l.cookie))],
    )
    .await
    .unwrap();
    assert_eq!(json(&r)["headers"]["x-forwarded-user"][0], "erin");
    sc.sidecar.logged("OIDC authentication mode enabled").await;
    sc.sidecar
        .logged("sessions are kept in memory: run a single replica")
        .await;
    sc.sidecar.logged(r#""session_store":"memory""#).await;
}

/// `auth_max_age_secs` against the real IdP: a login within `max_age` of the IdP's own
/// authentication is signed in silently (its session's user stays the first one, whoever the
/// flow would type in); once `max_age` has passed, the IdP asks for a login again, and the
/// sidecar accepts the fresh `auth_time` it then sends.
#[tokio::test]
async fn the_real_idp_authenticates_again_once_auth_max_age_has_passed() {
    let (_idp, _up, sc) = memory_world(&[("SSO_SIDECAR_AUTH_MAX_AGE_SECS", "10")]).await;
    let sc = &sc.sidecar;
    let jar_dir = tempfile::tempdir().unwrap();
    let jar = jar_dir.path().join("idp-cookies.txt");
    let jar = Some(jar.to_str().unwrap());
    let user = |l: Login| async move {
        let r = get(&sc.url("/echo"), &[("cookie", &session_header(&l.cookie))])
            .await
            .unwrap();
        json(&r)["headers"]["x-forwarded-user"][0].clone()
    };
    // Before the IdP's authentication, and after it: the IdP counts whole seconds.
    let first = std::time::Instant::now();
    let erin = login_with_jar(sc, "erin", "/", jar).await;
    let signed_in = std::time::Instant::now();
    assert_eq!(user(erin).await, "erin");
    // Within max_age: the IdP's session answers, no login form (so not "frank").
    let again = login_with_jar(sc, "frank", "/", jar).await;
    assert!(
        first.elapsed().as_secs() < 9,
        "too slow to tell: {:?}",
        first.elapsed()
    );
    assert_eq!(user(again).await, "erin");
    // The time max_age is about to pass: nothing to poll for.
    let passed = std::time::Duration::from_secs(11).saturating_sub(signed_in.elapsed());
    tokio::time::sleep(passed).await;
    assert_eq!(
        user(login_with_jar(sc, "frank", "/", jar).await).await,
        "frank"
    );
    let m = metrics(sc).await;
    assert_eq!(
        metric(
            &m,
            r#"sso_sidecar_logins_refused_total{reason="stale_authentication"}"#
        ),
        0.0,
        "{m}"
    );
}

/// The memory store's workers keep their own copies of a busy session: after a logout, the
/// replayed cookie must be refused on every worker, whichever one served the session before.
#[tokio::test]
async fn memory_store_a_busy_session_logged_out_is_refused_on_every_worker() {
    let (_idp, _up, sc) = memory_world(&[("SSO_SIDECAR_WORKERS", "2")]).await;
    let sc = &sc.sidecar;
    let l = login(sc, "erin", "/").await;
    let cookie = session_header(&l.cookie);
    // Each request is a new connection, spread over the two workers: both take a copy.
    for _ in 0..40 {
        let r = get(&sc.url("/v1/x"), &[("cookie", &cookie)]).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = send(request(
        "POST",
        &sc.url("/auth/logout"),
        &[
            ("cookie", &cookie),
            ("origin", &sc.url("")),
            ("sec-fetch-site", "same-origin"),
        ],
        body(""),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 302, "logged out");
    for i in 0..40 {
        let r = get(&sc.url("/v1/x"), &[("cookie", &cookie)]).await.unwrap();
        assert_eq!(r.status(), 401, "replay {i} after logout was let in");
    }
}

#[tokio::test]
async fn the_redis_store_passes_the_conformance_suite() {
    let redis = Redis::start().await;
    let store = crate::redis_ha::store(
        sso_sidecar::store::redis::Topology::Single { url: &redis.url() },
        None,
    );
    sso_sidecar::store::conformance::run(&store).await;
}

/// Whether `text` holds a JWT: the base64url of a JOSE header's usual first member.
fn has_jwt(text: &str) -> bool {
    ["eyJhbGciOi", "eyJraWQiOi", "eyJ0eXAiOi"]
        .iter()
        .any(|h| text.contains(h))
}
