//! Session lifecycle across replicas: refresh (and its race), RP-initiated logout, back-channel
//! logout from the real IdP and from forged tokens.

use crate::mock_idp::*;
use crate::oidc::world_with;
use crate::oidc_support::*;
use crate::support::*;
use serde_json::json;
use std::time::Duration;

/// The IdP grants 8-second access tokens; the sidecar refreshes within the skew, bounded by a
/// quarter of the token's lifetime (2 s), so a refresh becomes due six seconds after each
/// refresh, five at the earliest as times are whole seconds (a round of 50 concurrent requests
/// must finish well inside that window, even on a loaded CI).
const SHORT: [(&str, &str); 1] = [("ACCESS_TOKEN_TTL", "8")];
const SKEW: [(&str, &str); 1] = [("SSO_SIDECAR_REFRESH_SKEW_SECS", "57")];
const PAST_DUE: Duration = Duration::from_millis(6300);

#[tokio::test]
async fn sessions_refresh_across_expiry_and_end_when_the_grant_is_revoked() {
    let with_token = [
        SKEW[0],
        (
            "SSO_SIDECAR_HEADERS__ACCESS_TOKEN",
            "X-Forwarded-Access-Token",
        ),
    ];
    let w = world_with(&SHORT, &with_token).await;
    let sc = &w.sc.sidecar;
    let l = login(sc, "alice", "/").await;
    let cookie = session_header(&l.cookie);
    let token = |r: &http::Response<bytes::Bytes>| {
        json(r)["headers"]["x-forwarded-access-token"][0]
            .as_str()
            .map(str::to_owned)
    };
    let r = get(&sc.url("/v1/x"), &[("cookie", &cookie)]).await.unwrap();
    assert_eq!(r.status(), 200);
    let first_token = token(&r).expect("the access token is forwarded");
    assert_eq!(
        w.idp.events().await["grants"]["refresh_token"],
        0,
        "not due yet"
    );

    tokio::time::sleep(PAST_DUE).await;
    let r = get(&sc.url("/v1/x"), &[("cookie", &cookie)]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["headers"]["x-forwarded-user"][0], "alice");
    let refreshed_token = token(&r).expect("the access token is forwarded");
    assert_ne!(
        refreshed_token, first_token,
        "after the refresh the upstream gets the new access token, not one kept from before"
    );
    let r = get(&sc.url("/v1/x"), &[("cookie", &cookie)]).await.unwrap();
    assert_eq!(token(&r), Some(refreshed_token), "and keeps getting it");
    assert_eq!(
        w.idp.events().await["grants"]["refresh_token"],
        1,
        "the IdP saw one refresh_token grant"
    );

    let revoked = send(request(
        "POST",
        &format!("{}/__test/revoke-grants?sub=alice", w.idp.issuer()),
        &[],
        body(""),
    ))
    .await
    .unwrap();
    assert_eq!(revoked.status(), 200);
    tokio::time::sleep(PAST_DUE).await;
    let r = get(&sc.url("/v1/x"), &[("cookie", &cookie)]).await.unwrap();
    assert_eq!(
        r.status(),
        401,
        "refused refresh ends the session (API path)"
    );
    let r = get(&sc.url("/"), &[("cookie", &cookie)]).await.unwrap();
    assert_eq!(r.status(), 302, "UI path goes back to the login");
    assert_eq!(location(&r), "/auth/login?next=%2F");

    let m = metrics(sc).await;
    assert_eq!(
        metric(&m, r#"sso_sidecar_token_refreshes_total{result="ok"}"#),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"sso_sidecar_token_refreshes_total{result="refused"}"#),
        1.0,
        "{m}"
    );
    assert!(
        metric(&m, "sso_sidecar_sessions_revoked_total") >= 1.0,
        "{m}"
    );
}

/// Two replicas on one Redis with one Fernet key, behind one IdP client.
struct Pair {
    idp: Idp,
    _redis: Redis,
    _up: Upstream,
    a: OidcSidecar,
    b: OidcSidecar,
}

async fn pair(idp_env: &[(&str, &str)], extra: &[(&str, &str)]) -> Pair {
    let (pa, pb) = (free_port(), free_port());
    let mut env = vec![
        (
            "RP_REDIRECT_URIS",
            format!("http://127.0.0.1:{pa}/auth/callback,http://127.0.0.1:{pb}/auth/callback"),
        ),
        (
            "RP_BACKCHANNEL_URI",
            format!("http://127.0.0.1:{pa}/auth/backchannel-logout"),
        ),
    ];
    env.extend(idp_env.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let idp = Idp::start(0, &env);
    let redis = Redis::start().await;
    let up = Upstream::start();
    let key = sso_sidecar::crypto::generate_key();
    let mut sc_env = vec![("SSO_SIDECAR_REDIS_URL", redis.url())];
    sc_env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let sc_env: Vec<(&str, &str)> = sc_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = start_oidc_sidecar_with_key(&key, pa, &idp.issuer(), &up.url(), &sc_env).await;
    let b = start_oidc_sidecar_with_key(&key, pb, &idp.issuer(), &up.url(), &sc_env).await;
    Pair {
        idp,
        _redis: redis,
        _up: up,
        a,
        b,
    }
}

#[tokio::test]
async fn the_refresh_race_fifty_requests_two_replicas_one_grant_per_expiry() {
    let p = pair(&[SHORT[0], ("ROTATE_REFRESH_TOKENS", "1")], &SKEW).await;
    let l = login(&p.a.sidecar, "alice", "/").await;
    let cookie = session_header(&l.cookie);
    for round in 1..=2u64 {
        tokio::time::sleep(PAST_DUE).await;
        let mut tasks = Vec::new();
        for i in 0..50 {
            let url = if i % 2 == 0 {
                p.a.sidecar.url("/v1/race")
            } else {
                p.b.sidecar.url("/v1/race")
            };
            let cookie = cookie.clone();
            tasks.push(tokio::spawn(async move {
                get(&url, &[("cookie", &cookie)])
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        assert!(
            statuses.iter().all(|s| *s == 200),
            "round {round}: {statuses:?}"
        );
        let ev = p.idp.events().await;
        assert_eq!(
            ev["grants"]["refresh_token"], round,
            "round {round}: exactly one refresh per expiry: {ev}"
        );
        assert!(
            ev["grant_errors"].get("refresh_token").is_none(),
            "no refresh token was reused: {ev}"
        );
    }
    let (ma, mb) = (metrics(&p.a.sidecar).await, metrics(&p.b.sidecar).await);
    let ok = metric(&ma, r#"sso_sidecar_token_refreshes_total{result="ok"}"#)
        + metric(&mb, r#"sso_sidecar_token_refreshes_total{result="ok"}"#);
    assert_eq!(ok, 2.0, "two refreshes in all, split between the replicas");
}

#[tokio::test]
async fn logout_at_the_idp_reaches_replica_a_and_is_refused_on_replica_b() {
    let p = pair(&[], &[]).await;
    let jar_dir = tempfile::tempdir().unwrap();
    let jar = jar_dir.path().join("idp-cookies.txt");
    let l = login_with_jar(&p.a.sidecar, "alice", "/", Some(jar.to_str().unwrap())).await;
    let cookie = session_header(&l.cookie);
    let r = get(&p.b.sidecar.url("/v1/x"), &[("cookie", &cookie)])
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a session made on A works on B");

    // End the session at the IdP: end-session plus confirm; the IdP POSTs the logout token to A.
    let end = format!("{}/session/end?client_id={CLIENT_ID}", p.idp.issuer());
    flow(&["logout", &end, "--jar", jar.to_str().unwrap()]).await;
    let ev = p.idp.events().await;
    assert_eq!(
        ev["backchannel"][0]["ok"], true,
        "the IdP delivered the logout token: {ev}"
    );

    assert_eq!(
        get(&p.b.sidecar.url("/v1/x"), &[("cookie", &cookie)])
            .await
            .unwrap()
            .status(),
        401,
        "refused at once on B"
    );
    assert_eq!(
        get(&p.a.sidecar.url("/v1/x"), &[("cookie", &cookie)])
            .await
            .unwrap()
            .status(),
        401
    );
    let m = metrics(&p.a.sidecar).await;
    assert_eq!(
        metric(&m, r#"sso_sidecar_logouts_total{kind="backchannel"}"#),
        1.0,
        "{m}"
    );
}

// === with the mock IdP: forged logout tokens and RP-initiated logout =======================

pub(crate) struct MockPair {
    pub(crate) idp: MockIdp,
    pub(crate) key: Key,
    pub(crate) redis: Redis,
    pub(crate) up: Upstream,
    pub(crate) a: OidcSidecar,
    pub(crate) b: OidcSidecar,
}

pub(crate) async fn mock_pair(extra: &[(&str, &str)]) -> MockPair {
    let idp = MockIdp::start().await;
    let key = Key::new("k1");
    idp.set(|m| m.jwks = json!({"keys": [key.jwk()]}));
    let redis = Redis::start().await;
    let up = Upstream::start();
    let fernet = sso_sidecar::crypto::generate_key();
    let mut env = vec![("SSO_SIDECAR_REDIS_URL", redis.url())];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = start_oidc_sidecar_with_key(&fernet, free_port(), &idp.issuer(), &up.url(), &env).await;
    let b = start_oidc_sidecar_with_key(&fernet, free_port(), &idp.issuer(), &up.url(), &env).await;
    MockPair {
        idp,
        key,
        redis,
        up,
        a,
        b,
    }
}

pub(crate) async fn mock_login(m: &MockPair, sc: &Sidecar, sub: &str, sid: &str) -> String {
    m.idp.login(&m.key, sc, sub, sid).await
}

pub(crate) fn logout_claims(m: &MockPair) -> serde_json::Value {
    let now = sso_sidecar::auth::oidc::now_unix();
    json!({"iss": m.idp.issuer(), "aud": CLIENT_ID, "iat": now, "exp": now + 120,
           "jti": sso_sidecar::crypto::random_token(16), "sid": "sid-1", "sub": "alice",
           "events": {"http://schemas.openid.net/event/backchannel-logout": {}}})
}

pub(crate) async fn post_logout(sc: &Sidecar, token: &str) -> http::Response<bytes::Bytes> {
    let form = format!("logout_token={}", urlencode(token));
    send(request(
        "POST",
        &sc.url("/auth/backchannel-logout"),
        &[("content-type", "application/x-www-form-urlencoded")],
        body(form),
    ))
    .await
    .unwrap()
}

/// The user's own logout (the confirmation page's button, same-origin) on `sc`.
pub(crate) async fn log_out(sc: &Sidecar, cookie: &str) {
    let h = [
        ("cookie", session_header(cookie)),
        ("sec-fetch-site", "same-origin".to_owned()),
    ];
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = send(request("POST", &sc.url("/auth/logout"), &h, body("")))
        .await
        .unwrap();
    assert!(
        r.status().is_redirection() || r.status().is_success(),
        "{}",
        r.status()
    );
}

/// The refresh grants the mock IdP has been sent so far (their form bodies).
pub(crate) fn refresh_grants(m: &MockPair) -> Vec<String> {
    let s = m.idp.state.lock().unwrap();
    let grants = s.token_requests.iter();
    grants
        .filter(|r| r.contains("grant_type=refresh_token"))
        .cloned()
        .collect()
}

/// Requests of `cookie` on replica A, each of which must be served, until one has been served
/// after the mock IdP was sent a refresh grant (so the refresh's result is stored).
pub(crate) async fn served_until_refreshed(m: &MockPair, cookie: &str) {
    let started = std::time::Instant::now();
    loop {
        let was = !refresh_grants(m).is_empty();
        assert!(alive(&m.a.sidecar, cookie).await, "the session ended");
        if was {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no refresh");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Requests of `cookie` on replica A, each of which must be served, until one finds the
/// session due for a refresh and waits on the mock IdP (slowed by the test): that request,
/// still under way.
pub(crate) async fn refresh_under_way(
    m: &MockPair,
    cookie: &str,
) -> tokio::task::JoinHandle<http::Response<bytes::Bytes>> {
    let before = refresh_grants(m).len();
    let started = std::time::Instant::now();
    loop {
        let (url, header) = (m.a.sidecar.url("/v1/x"), session_header(cookie));
        let r = tokio::spawn(async move { get(&url, &[("cookie", &header)]).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(250)).await;
        if refresh_grants(m).len() > before {
            return r;
        }
        assert_eq!(r.await.unwrap().status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no refresh began"
        );
    }
}

pub(crate) async fn alive(sc: &Sidecar, cookie: &str) -> bool {
    get(&sc.url("/v1/x"), &[("cookie", &session_header(cookie))])
        .await
        .unwrap()
        .status()
        == 200
}

#[tokio::test]
async fn forged_logout_tokens_are_refused_and_revoke_nothing() {
    let m = mock_pair(&[]).await;
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let other = Key::new("k1");
    let logout_header = json!({"alg": "ES256", "typ": "logout+jwt", "kid": "k1"});
    type Forge = Box<dyn Fn(&MockPair, &Key) -> String>;
    let with = |f: fn(&mut serde_json::Value)| -> Forge {
        Box::new(move |m, _| {
            let mut c = logout_claims(m);
            f(&mut c);
            m.key.sign_with_header(
                &json!({"alg": "ES256", "typ": "logout+jwt", "kid": "k1"}),
                &c,
            )
        })
    };
    let cases: Vec<(&str, Forge)> = vec![
        (
            "bad signature",
            Box::new(move |m, o| o.sign_with_header(&logout_header, &logout_claims(m))),
        ),
        (
            "wrong iss",
            with(|c| c["iss"] = json!("https://evil.example")),
        ),
        ("wrong aud", with(|c| c["aud"] = json!("other-client"))),
        (
            "stale iat",
            with(|c| c["iat"] = json!(sso_sidecar::auth::oidc::now_unix() - 3600)),
        ),
        (
            "expired",
            with(|c| c["exp"] = json!(sso_sidecar::auth::oidc::now_unix() - 3600)),
        ),
        ("nonce present", with(|c| c["nonce"] = json!("n"))),
        (
            "events missing",
            with(|c| {
                c.as_object_mut().unwrap().remove("events");
            }),
        ),
        (
            "events wrong",
            with(|c| c["events"] = json!({"http://schemas.openid.net/event/other": {}})),
        ),
        (
            "neither sid nor sub",
            with(|c| {
                let o = c.as_object_mut().unwrap();
                o.remove("sid");
                o.remove("sub");
            }),
        ),
        (
            "jti missing",
            with(|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
        ),
        (
            "wrong typ",
            Box::new(|m, _| {
                m.key.sign_with_header(
                    &json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}),
                    &logout_claims(m),
                )
            }),
        ),
        (
            "alg none",
            Box::new(|m, _| {
                format!(
                    "{}.{}.",
                    b64(br#"{"alg":"none"}"#),
                    b64(logout_claims(m).to_string().as_bytes())
                )
            }),
        ),
    ];
    for (case, forge) in cases {
        let r = post_logout(&m.a.sidecar, &forge(&m, &other)).await;
        assert_eq!(r.status(), 400, "{case}");
        assert_eq!(json(&r)["error"], "invalid_request", "{case}");
        assert!(json(&r)["error_description"].is_string(), "{case}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{case}");
        assert!(
            alive(&m.a.sidecar, &cookie).await && alive(&m.b.sidecar, &cookie).await,
            "{case} revoked a session"
        );
    }
    let r = post_logout(&m.a.sidecar, "").await;
    assert_eq!(r.status(), 400, "empty token");

    // A valid token to A revokes the session on both replicas; its replay is refused by A and B.
    let other_session = mock_login(&m, &m.b.sidecar, "bob", "sid-2").await;
    let token = m.key.sign_with_header(
        &json!({"alg": "ES256", "typ": "logout+jwt", "kid": "k1"}),
        &logout_claims(&m),
    );
    let r = post_logout(&m.a.sidecar, &token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(
        !alive(&m.b.sidecar, &cookie).await,
        "revoked through A, refused on B at once"
    );
    assert!(
        alive(&m.a.sidecar, &other_session).await,
        "only sid-1's sessions are revoked"
    );
    for sc in [&m.a.sidecar, &m.b.sidecar] {
        let r = post_logout(sc, &token).await;
        assert_eq!(r.status(), 400);
        assert!(json(&r)["error_description"]
            .as_str()
            .unwrap()
            .contains("replayed"));
    }

    // sub only: every session of that user from this issuer.
    let s1 = mock_login(&m, &m.a.sidecar, "carol", "sid-3").await;
    let s2 = mock_login(&m, &m.b.sidecar, "carol", "sid-4").await;
    let mut c = logout_claims(&m);
    c["sub"] = json!("carol");
    c.as_object_mut().unwrap().remove("sid");
    assert_eq!(
        post_logout(&m.b.sidecar, &m.key.sign(&c)).await.status(),
        200
    );
    assert!(!alive(&m.a.sidecar, &s1).await && !alive(&m.a.sidecar, &s2).await);
    assert!(alive(&m.a.sidecar, &other_session).await);
}

/// An IdP whose ID tokens carry no `sid` but whose logout tokens do: the sidecar cannot find the
/// session by `sid`, so it ends that user's sessions made without one, and only those. Before,
/// it answered 200 and left the session alive.
#[tokio::test]
async fn a_logout_by_sid_reaches_the_users_sessions_made_without_one() {
    let m = mock_pair(&[]).await;
    let sidless = mock_login(&m, &m.a.sidecar, "alice", "").await;
    let with_sid = mock_login(&m, &m.b.sidecar, "alice", "sid-9").await;
    let bobs = mock_login(&m, &m.a.sidecar, "bob", "").await;
    let logout = |sub: &str| {
        let mut c = logout_claims(&m);
        c["sub"] = json!(sub);
        c["sid"] = json!("sid-unknown");
        m.key.sign(&c)
    };
    assert_eq!(
        post_logout(&m.b.sidecar, &logout("alice")).await.status(),
        200
    );
    assert!(
        !alive(&m.a.sidecar, &sidless).await,
        "alice's session without sid lives on"
    );
    assert!(
        alive(&m.a.sidecar, &with_sid).await,
        "a session of another sid was ended"
    );
    assert!(
        alive(&m.b.sidecar, &bobs).await,
        "another user's session was ended"
    );

    // A logout naming a sid that exists ends that session only, not the sid-less ones (Alice
    // signs in again at once, without a sid: let in).
    let again = mock_login(&m, &m.a.sidecar, "alice", "").await;
    let mut c = logout_claims(&m);
    c["sid"] = json!("sid-9");
    assert_eq!(
        post_logout(&m.a.sidecar, &m.key.sign(&c)).await.status(),
        200
    );
    assert!(!alive(&m.a.sidecar, &with_sid).await);
    assert!(alive(&m.a.sidecar, &again).await);
    // The same sid again (another token): it was known, so nothing falls back to the sid-less.
    c["jti"] = json!(sso_sidecar::crypto::random_token(16));
    assert_eq!(
        post_logout(&m.b.sidecar, &m.key.sign(&c)).await.status(),
        200
    );
    assert!(
        alive(&m.a.sidecar, &again).await,
        "a repeated logout ended a sid-less session"
    );
}

/// Alice's login (IdP session `sid-r`) on replica A up to its callback, the logout `claims`
/// on replica B meanwhile, then the callback: it must keep no session, and say why.
async fn login_racing(m: &MockPair, claims: &serde_json::Value) {
    login_racing_as(m, "sid-r", claims).await
}

/// The same with a login whose ID token names IdP session `sid` (none when empty).
async fn login_racing_as(m: &MockPair, sid: &str, claims: &serde_json::Value) {
    let callback = m
        .idp
        .login_until_callback(&m.key, &m.a.sidecar, "alice", sid, "")
        .await;
    // At the IdP's login page for a second at least: a user's record ends the logins begun
    // before the logout's second (one begun within it is taken for a sign-in again).
    let begun = sso_sidecar::clock::now_unix();
    while sso_sidecar::clock::now_unix() <= begun {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = post_logout(&m.b.sidecar, &m.key.sign(claims)).await;
    assert_eq!(r.status(), 200);
    let cb = callback.await;
    let page = String::from_utf8_lossy(cb.body()).to_string();
    assert_eq!(cb.status(), 401, "{page}");
    assert!(page.contains("ended while you were signing in"), "{page}");
    assert!(
        set_cookie(&cb, "sso_sidecar_session").is_none_or(|v| v.is_empty()),
        "a session cookie was set"
    );
}

/// A back-channel logout that reaches one replica while a login of the same IdP session is
/// completing on another (the IdP has issued the code, the callback has not come back): the
/// login keeps no session, and says why. A later login of another IdP session works.
#[tokio::test]
async fn a_login_racing_the_logout_of_its_idp_session_gets_no_session() {
    let m = mock_pair(&[]).await;
    let mut c = logout_claims(&m);
    c["sid"] = json!("sid-r");
    login_racing(&m, &c).await;
    let later = mock_login(&m, &m.a.sidecar, "alice", "sid-s").await;
    assert!(alive(&m.b.sidecar, &later).await);

    // An attacker who knows a victim's IdP session cannot block its login: a forged logout
    // token (another key) and a front-channel logout (no signature at all) record nothing.
    let forger = Key::new("k1");
    let mut c = logout_claims(&m);
    c["sid"] = json!("sid-v");
    let forged = forger.sign_with_header(
        &json!({"alg": "ES256", "typ": "logout+jwt", "kid": "k1"}),
        &c,
    );
    assert_eq!(post_logout(&m.b.sidecar, &forged).await.status(), 400);
    let front = m.b.sidecar.url(&format!(
        "/auth/frontchannel-logout?iss={}&sid=sid-v",
        urlencode(&m.idp.issuer())
    ));
    assert_eq!(get(&front, &[]).await.unwrap().status(), 200);
    let callback = m
        .idp
        .login_until_callback(&m.key, &m.a.sidecar, "alice", "sid-v", "")
        .await;
    assert_eq!(
        callback.await.status(),
        302,
        "the victim's login was refused"
    );
}

/// The same race with a logout token that names only the user (every session of that user
/// ends): before, the login completing meanwhile kept its session. A login begun after the
/// logout (the user signing in again) works.
#[tokio::test]
async fn a_login_racing_a_logout_of_its_user_gets_no_session() {
    let m = mock_pair(&[]).await;
    let mut c = logout_claims(&m);
    c.as_object_mut().unwrap().remove("sid");
    login_racing(&m, &c).await;
    let bobs = mock_login(&m, &m.a.sidecar, "bob", "sid-b").await;
    assert!(alive(&m.b.sidecar, &bobs).await, "another user");
    // Alice signs in again at once (a browser sent from the IdP's logout page straight back
    // to a login): let in, even within the logout's second.
    let later = mock_login(&m, &m.a.sidecar, "alice", "sid-s").await;
    assert!(alive(&m.b.sidecar, &later).await);
}

/// A callback replayed on another replica (its state cookie and URL captured): the state's
/// one-time mark is in the shared store, so the second replica refuses it too.
#[tokio::test]
async fn a_callback_replayed_on_another_replica_is_refused() {
    let m = mock_pair(&[]).await;
    let (path, cookie) = m
        .idp
        .callback_for(&m.key, &m.a.sidecar, "alice", "sid-1", "")
        .await;
    let first = get(&m.a.sidecar.url(&path), &[("cookie", &cookie)])
        .await
        .unwrap();
    assert_eq!(first.status(), 302);
    let replay = get(&m.b.sidecar.url(&path), &[("cookie", &cookie)])
        .await
        .unwrap();
    let page = String::from_utf8_lossy(replay.body()).to_string();
    assert_eq!(replay.status(), 400, "{page}");
    assert!(page.contains("Invalid or expired OIDC state"), "{page}");
    assert!(
        set_cookie(&replay, "sso_sidecar_session").is_none_or(|v| v.is_empty()),
        "a session cookie was set"
    );
}

/// The same race for an IdP whose ID tokens carry no `sid` but whose logout tokens name one
/// and the user: the logout ends the user's sessions made without a `sid`, and the login of
/// that kind completing meanwhile kept its session before.
#[tokio::test]
async fn a_login_without_sid_racing_a_logout_naming_a_sid_gets_no_session() {
    let m = mock_pair(&[]).await;
    let mut c = logout_claims(&m);
    c["sid"] = json!("sid-unknown");
    login_racing_as(&m, "", &c).await;
}

#[tokio::test]
async fn rp_logout_redirects_to_the_idp_and_the_old_cookie_dies() {
    // Written as the IdP has it registered, and sent as written (as OpenRag does): not
    // re-serialised as `https://portal.example.com/`.
    let m = mock_pair(&[(
        "OIDC_POST_LOGOUT_REDIRECT_URI",
        "https://Portal.example.com",
    )])
    .await;
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let sc = &m.a.sidecar;

    let r = get(
        &sc.url("/auth/logout"),
        &[
            ("cookie", &session_header(&cookie)),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "cors"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403, "cross-site non-navigation logout");
    assert!(alive(sc, &cookie).await, "nothing revoked");

    // Logout CSRF: a cross-site link, a same-site <img>, a client without Sec-Fetch-* get the
    // confirmation page and end nothing.
    for headers in [
        vec![
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
        ],
        vec![
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-mode", "no-cors"),
        ],
        vec![],
    ] {
        let mut h = vec![("cookie", session_header(&cookie))];
        h.extend(headers.iter().map(|(k, v)| (*k, v.to_string())));
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = get(&sc.url("/auth/logout"), &h).await.unwrap();
        assert_eq!(r.status(), 200, "{headers:?}");
        assert_eq!(
            r.headers()["referrer-policy"],
            "same-origin",
            "so that the button's POST carries its Origin"
        );
        let page = String::from_utf8_lossy(r.body());
        assert!(
            page.contains("<form method=\"post\" action=\"/auth/logout\">"),
            "{page}"
        );
        assert!(alive(sc, &cookie).await, "nothing revoked by {headers:?}");
    }
    // The page's button, forged from another origin, is refused.
    let own_origin = sc.url("");
    for (origin, site) in [
        ("https://evil.example", None),
        ("https://evil.example", Some("cross-site")),
        // A browser says same-origin, but the Origin is another's: no browser sends both.
        ("https://evil.example", Some("same-origin")),
        (own_origin.as_str(), Some("cross-site")),
        // `Origin: null` proves nothing either way: Fetch Metadata decides, or nothing does.
        ("null", Some("cross-site")),
        ("null", Some("same-site")),
        ("null", None),
    ] {
        let mut h = vec![
            ("cookie", session_header(&cookie)),
            ("origin", origin.to_string()),
        ];
        if let Some(site) = site {
            h.push(("sec-fetch-site", site.to_string()));
        }
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = send(request("POST", &sc.url("/auth/logout"), &h, body("")))
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{origin} {site:?}");
        assert!(alive(sc, &cookie).await, "nothing revoked");
    }
    let r = send(request(
        "POST",
        &sc.url("/auth/logout"),
        &[
            ("cookie", &session_header(&cookie)),
            // What a browser sends when a privacy setting imposes `no-referrer` on the page
            // (a real browser's own origin: browser_logins.rs).
            ("origin", "null"),
            ("sec-fetch-site", "same-origin"),
        ],
        body(""),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 302, "the user's own confirmation logs out");
    let loc = url::Url::parse(&location(&r)).unwrap();
    assert_eq!(
        format!("{}{}", loc.origin().ascii_serialization(), loc.path()),
        format!("{}/session/end", m.idp.issuer())
    );
    let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["post_logout_redirect_uri"], "https://Portal.example.com");
    let hint = sso_sidecar::auth::jwt::verify(
        &q["id_token_hint"],
        &serde_json::from_value(json!({"keys": [m.key.jwk()]})).unwrap(),
    )
    .unwrap();
    assert_eq!(
        hint.claims["sub"], "alice",
        "id_token_hint is the session's ID token"
    );
    let cleared = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().starts_with("sso_sidecar_session=;"));
    assert!(cleared, "the session cookie is cleared");
    assert!(
        !alive(sc, &cookie).await && !alive(&m.b.sidecar, &cookie).await,
        "the old cookie is refused on both replicas"
    );
    let metrics =
        String::from_utf8_lossy(get(&sc.admin_url("/metrics"), &[]).await.unwrap().body())
            .into_owned();
    assert!(
        metrics.contains(r#"sso_sidecar_logouts_total{kind="rp"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_post_logout_uri_on_the_sidecars_own_origin_is_warned_about() {
    let idp = MockIdp::start().await;
    idp.set(|m| m.jwks = json!({"keys": [Key::new("k").jwk()]}));
    let up = Upstream::start();
    let port = free_port();
    let own = format!("http://127.0.0.1:{port}/");
    let sc = start_oidc_sidecar(
        port,
        &idp.issuer(),
        &up.url(),
        &[("OIDC_POST_LOGOUT_REDIRECT_URI", &own)],
    )
    .await;
    sc.sidecar.logged("re-login loop").await;
}

/// Requests with alice's session on replica a until one is refused (within 12 s), each served
/// one as alice and never as mallory; the refusal's status.
async fn served_as_alice_until_refused(m: &MockPair, cookie: &str) -> u16 {
    let start = std::time::Instant::now();
    loop {
        let r = get(
            &m.a.sidecar.url("/v1/x"),
            &[("cookie", &session_header(cookie))],
        )
        .await
        .unwrap();
        if r.status() != 200 {
            return r.status().as_u16();
        }
        let seen = String::from_utf8_lossy(r.body()).into_owned();
        assert!(
            seen.contains("alice") && !seen.contains("mallory"),
            "{seen}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "no refresh ended the session"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A refresh whose new ID token names another user (an IdP bug, or a refresh token that is
/// not this session's) ends the session: the upstream never sees the other user.
#[tokio::test]
async fn a_refresh_that_names_another_user_ends_the_session() {
    let m = mock_pair(&[]).await;
    m.idp.set(|s| s.login_expires_in = 8);
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let now = sso_sidecar::auth::oidc::now_unix();
    let other = m.key.sign(
        &json!({"iss": m.idp.issuer(), "sub": "mallory", "aud": CLIENT_ID,
                                    "exp": now + 600, "iat": now, "sid": "sid-1"}),
    );
    m.idp.set(|s| {
        s.token_response = json!({"access_token": "at2", "token_type": "Bearer",
                                  "expires_in": 600, "id_token": other, "refresh_token": "rt2"})
    });
    served_as_alice_until_refused(&m, &cookie).await;
    assert!(
        !alive(&m.b.sidecar, &cookie).await,
        "ended on every replica"
    );
    assert!(
        !m.idp.state.lock().unwrap().token_requests.is_empty(),
        "a refresh was asked for"
    );
}

/// With `OIDC_CLAIM_SOURCE=userinfo`, a refresh that brings no new ID token (OIDC Core §12.2
/// allows it) reads userinfo again with the new access token: the session follows the IdP's
/// profile (a new email reaches the upstream), and a user removed from the allowed group loses
/// the session at that refresh, not at the end of its lifetime.
#[tokio::test]
async fn a_refresh_without_id_token_reads_userinfo_again() {
    let m = mock_pair(&[
        ("OIDC_CLAIM_SOURCE", "userinfo"),
        ("SSO_SIDECAR_AUTHZ__ALLOWED_GROUPS", "staff"),
    ])
    .await;
    let info = |email: &str, groups: serde_json::Value| json!({"sub": "alice", "email": email, "email_verified": true, "groups": groups});
    m.idp.set(|s| {
        s.login_expires_in = 8;
        s.userinfo = info("alice@old.test", json!(["staff"]));
    });
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let refreshes = |m: &MockPair| {
        let s = m.idp.state.lock().unwrap();
        s.token_requests
            .iter()
            .filter(|r| r.contains("grant_type=refresh_token"))
            .count()
    };
    m.idp.set(|s| {
        s.token_response =
            json!({"access_token": "at-2", "token_type": "Bearer", "expires_in": 8, "refresh_token": "rt-2"});
        s.userinfo = info("alice@new.test", json!(["staff"]));
    });
    let email = |r: &http::Response<bytes::Bytes>| {
        let page: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        page["headers"]["x-forwarded-email"][0].clone()
    };
    let start = std::time::Instant::now();
    let seen = loop {
        let r = get(
            &m.a.sidecar.url("/v1/x"),
            &[("cookie", &session_header(&cookie))],
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200, "still in the group");
        if refreshes(&m) > 0 {
            break email(&r);
        }
        assert!(start.elapsed() < Duration::from_secs(12), "no refresh");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        seen, "alice@new.test",
        "the refreshed profile is userinfo's"
    );
    // Out of the group at the IdP: the next refresh ends the session.
    m.idp
        .set(|s| s.userinfo = info("alice@new.test", json!(["alumni"])));
    let start = std::time::Instant::now();
    while alive(&m.a.sidecar, &cookie).await {
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "a refresh without ID token kept a user the allow-list no longer admits"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(refreshes(&m), 2, "ended at the second refresh");
    assert!(!alive(&m.b.sidecar, &cookie).await, "on every replica");
}

/// The same refresh, userinfo answering for another subject with the session's new access
/// token: the session ends, as when a refreshed ID token names someone else; the upstream
/// never sees the other user.
#[tokio::test]
async fn a_refresh_whose_userinfo_names_another_user_ends_the_session() {
    let m = mock_pair(&[("OIDC_CLAIM_SOURCE", "userinfo")]).await;
    m.idp.set(|s| {
        s.login_expires_in = 8;
        s.userinfo = json!({"sub": "alice", "email": "alice@x.test"});
    });
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    m.idp.set(|s| {
        s.token_response =
            json!({"access_token": "at-2", "token_type": "Bearer", "expires_in": 8, "refresh_token": "rt-2"});
        s.userinfo = json!({"sub": "mallory", "email": "mallory@x.test"});
    });
    assert_eq!(served_as_alice_until_refused(&m, &cookie).await, 401);
    assert!(!alive(&m.b.sidecar, &cookie).await, "on every replica");
}

/// The refresh tokens of a refresh that was answered but whose new ID token cannot be verified
/// yet (signed with a key the JWKS does not serve, the JWKS answering 503) are kept: later
/// refreshes spend the new refresh token, not the one the IdP has already spent (an IdP that
/// detects reuse would revoke the grant). The unconfirmed profile is not trusted longer than
/// the access token it had: past it, the session is not served until an ID token can be
/// verified (a user removed from a group at the IdP loses access within one lifetime).
#[tokio::test]
async fn a_refresh_whose_id_token_cannot_be_verified_yet_keeps_its_new_refresh_token() {
    let m = mock_pair(&[]).await;
    m.idp.set(|s| s.login_expires_in = 8);
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let logged_in = std::time::Instant::now();
    let rotated = Key::new("k2");
    let signed = |key: &Key| {
        let now = sso_sidecar::auth::oidc::now_unix();
        key.sign(
            &json!({"iss": m.idp.issuer(), "sub": "alice", "aud": CLIENT_ID,
                         "exp": now + 600, "iat": now, "sid": "sid-1"}),
        )
    };
    m.idp.set(|s| {
        s.jwks_status = 503;
        s.token_response = json!({"access_token": "at2", "token_type": "Bearer",
            "expires_in": 600, "id_token": signed(&rotated), "refresh_token": "rt2"});
    });
    let refreshes = refresh_grants;
    while refreshes(&m).is_empty() {
        assert!(alive(&m.a.sidecar, &cookie).await, "the session lives on");
        assert!(logged_in.elapsed() < Duration::from_secs(30), "no refresh");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Served until the first access token's 8 s are over, not the 600 s of the unconfirmed one.
    while logged_in.elapsed() < Duration::from_millis(7500) {
        assert!(
            alive(&m.a.sidecar, &cookie).await,
            "until the first token's end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !alive(&m.a.sidecar, &cookie).await,
        "served past its access token on an unconfirmed profile"
    );
    // The JWKS back, with the new key: the next request's refresh is confirmed.
    m.idp.set(|s| {
        s.jwks_status = 0;
        s.jwks = json!({"keys": [m.key.jwk(), rotated.jwk()]});
        s.token_response = json!({"access_token": "at3", "token_type": "Bearer",
            "expires_in": 600, "id_token": signed(&rotated), "refresh_token": "rt3"});
    });
    // Not asked again before 5 s after the unconfirmed one: then confirmed.
    let back = std::time::Instant::now();
    while !alive(&m.a.sidecar, &cookie).await {
        assert!(back.elapsed() < Duration::from_secs(20), "never confirmed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all = refreshes(&m);
    assert_eq!(
        all.len(),
        2,
        "one grant per try, not one per request: {all:?}"
    );
    assert!(all[0].contains("refresh_token=rt&"), "{all:?}");
    assert!(
        all[1].contains("refresh_token=rt2"),
        "the later refresh spent the old refresh token again: {all:?}"
    );
    assert!(
        alive(&m.b.sidecar, &cookie).await,
        "alive on the other replica"
    );
    m.a.sidecar.logged("cannot be verified now").await;
}

/// A Redis that refuses writes (full, `noeviction`) still answers reads: a session due for a
/// refresh, which cannot take the refresh lock, is served while its access token is valid (as
/// in an IdP outage; it used to get 503 at once), and is refreshed once Redis takes writes again.
#[tokio::test]
async fn a_full_redis_keeps_a_session_due_for_refresh_until_its_access_token_expires() {
    let m = mock_pair(&[]).await;
    m.idp.set(|s| s.login_expires_in = 8);
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let logged_in = std::time::Instant::now();
    m.redis
        .cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    m.redis.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    // Due at 6 s (the last quarter), valid until 8 s.
    while logged_in.elapsed() < Duration::from_millis(7200) {
        assert!(
            alive(&m.a.sidecar, &cookie).await,
            "at {:?}",
            logged_in.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    m.a.sidecar.logged("cannot take the refresh lock").await;
    m.redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    assert!(
        alive(&m.a.sidecar, &cookie).await,
        "refreshed once Redis takes writes"
    );
    let refreshed = m.idp.state.lock().unwrap().token_requests.len();
    assert!(refreshed >= 2, "the code, then a refresh: {refreshed}");
}

/// A refreshed ID token without `kid`, while the JWKS holds two keys that could have signed it
/// (an IdP in the middle of a rotation; OIDC Core wants a `kid` then): not taken for a forgery.
/// The new tokens are kept and the session lives, unconfirmed, as when the JWKS is down; before,
/// the session was ended.
#[tokio::test]
async fn a_refreshed_id_token_without_kid_among_two_keys_ends_nothing() {
    let m = mock_pair(&[]).await;
    m.idp.set(|s| s.login_expires_in = 8);
    // Both keys published, and the sidecar made to fetch them (a login signed with the new one).
    let next = Key::new("k2");
    m.idp
        .set(|s| s.jwks = json!({"keys": [m.key.jwk(), next.jwk()]}));
    let cookie = m.idp.login(&next, &m.a.sidecar, "alice", "sid-1").await;
    let now = sso_sidecar::auth::oidc::now_unix();
    let kidless = m.key.sign_with_header(
        &json!({"alg": "ES256", "typ": "JWT"}),
        &json!({"iss": m.idp.issuer(), "sub": "alice", "aud": CLIENT_ID,
                "exp": now + 600, "iat": now, "sid": "sid-1"}),
    );
    m.idp.set(|s| {
        s.token_response = json!({"access_token": "at2", "token_type": "Bearer",
            "expires_in": 600, "id_token": kidless, "refresh_token": "rt2"});
    });
    served_until_refreshed(&m, &cookie).await;
    assert!(alive(&m.b.sidecar, &cookie).await);
    m.a.sidecar.logged("cannot be verified now").await;
}

/// Redis refusing writes (full, `noeviction`) just as the IdP answers a refresh: the IdP has
/// spent the old refresh token, so the new tokens are written once Redis takes writes again,
/// and the session's next refresh does not spend the old one a second time (an IdP that
/// rotates refresh tokens refuses it, `invalid_grant`, and the user is logged out). Before,
/// the write failed once, the request got 503, and the next request refreshed again with the
/// spent token.
#[tokio::test]
async fn a_refresh_whose_write_the_store_refuses_keeps_its_new_tokens() {
    let m = mock_pair(&[]).await;
    m.idp.set(|s| s.login_expires_in = 8);
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    m.idp.set(|s| {
        s.token_response = json!({"access_token": "at-2", "token_type": "Bearer",
                                  "expires_in": 600, "refresh_token": "rt-2"});
        s.token_delay_ms = 1500;
    });
    let refreshes = refresh_grants;
    // Until a request finds the refresh due and waits on the IdP: then Redis refuses writes.
    let refreshing = refresh_under_way(&m, &cookie).await;
    m.redis
        .cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    m.redis.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    // The IdP answers meanwhile (1.5 s); the write is refused for a while after.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    m.redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(
        refreshing.await.unwrap().status(),
        200,
        "the refreshing request"
    );
    m.idp.set(|s| s.token_delay_ms = 0);
    for _ in 0..5 {
        assert!(alive(&m.a.sidecar, &cookie).await);
        assert!(alive(&m.b.sidecar, &cookie).await);
    }
    let all = refreshes(&m);
    assert_eq!(
        all.len(),
        1,
        "the spent refresh token was sent again: {all:?}"
    );
    m.a.sidecar
        .logged("tried again while its refresh lock holds")
        .await;
}

#[tokio::test]
async fn an_idp_outage_during_refresh_keeps_the_session_an_invalid_grant_ends_it() {
    // An 8 s access token: a refresh is due in its last quarter (2 s), while it is still valid.
    let m = mock_pair(&[]).await;
    m.idp.set(|s| s.login_expires_in = 8);
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    m.idp.set(|s| {
        s.token_status = 503;
        s.token_response = json!({"error": "temporarily_unavailable"});
    });
    alive_until_a_failed_refresh(
        &m,
        &cookie,
        1.0,
        "a 5xx from the IdP does not end a session whose access token is still valid",
    )
    .await;
    let met = metrics(&m.a.sidecar).await;
    assert_eq!(
        metric(
            &met,
            r#"sso_sidecar_token_refreshes_total{result="failed"}"#
        ),
        1.0,
        "{met}"
    );
    // The log reaches `output()` through a reader thread, maybe after the metric moved.
    wait_until(
        "a warning that the refresh failed",
        Duration::from_secs(10),
        || m.a.sidecar.output().contains("refresh failed"),
    )
    .await;

    m.idp.set(|s| {
        s.token_status = 400;
        s.token_response = json!({"error": "invalid_grant"});
    });
    // The next try (not before 5 s after the failed one) gets invalid_grant.
    let refused = r#"sso_sidecar_token_refreshes_total{result="refused"}"#;
    let failed_at = std::time::Instant::now();
    while metric(&metrics(&m.a.sidecar).await, refused) < 1.0 {
        alive(&m.a.sidecar, &cookie).await;
        assert!(
            failed_at.elapsed() < Duration::from_secs(15),
            "invalid_grant never ended the session"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!alive(&m.a.sidecar, &cookie).await, "ended");
    assert!(!alive(&m.b.sidecar, &cookie).await, "on every replica");
    let met = metrics(&m.a.sidecar).await;
    assert_eq!(
        metric(
            &met,
            r#"sso_sidecar_token_refreshes_total{result="refused"}"#
        ),
        1.0,
        "{met}"
    );
}

/// Requests the session on replica A, each answered as alive (`why` otherwise), until A has
/// counted `failed` failed refreshes; within 12 s.
async fn alive_until_a_failed_refresh(m: &MockPair, cookie: &str, failed: f64, why: &str) {
    let counted = r#"sso_sidecar_token_refreshes_total{result="failed"}"#;
    let start = std::time::Instant::now();
    while metric(&metrics(&m.a.sidecar).await, counted) < failed {
        assert!(alive(&m.a.sidecar, cookie).await, "{why}");
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "no refresh was attempted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Refusals that are not about the user's grant: `invalid_client` (a client secret being
/// rotated) and a 403 page from something in front of the IdP. Ending every session that
/// refreshes meanwhile would log everyone out; they count as failures, and the session lives.
#[tokio::test]
async fn a_refusal_that_is_not_invalid_grant_keeps_the_session() {
    let m = mock_pair(&[]).await;
    m.idp.set(|s| s.login_expires_in = 8);
    let refused = r#"sso_sidecar_token_refreshes_total{result="refused"}"#;
    let cases = [
        (400, json!({"error": "invalid_client"})),
        (403, json!("Forbidden")),
    ];
    for (n, (status, body)) in cases.into_iter().enumerate() {
        m.idp.set(|s| s.token_status = 0);
        let cookie = mock_login(&m, &m.a.sidecar, "alice", &format!("sid-{n}")).await;
        m.idp.set(|s| {
            s.token_status = status;
            s.token_response = body.clone();
        });
        let why = format!("a {status} {body} ends no session");
        alive_until_a_failed_refresh(&m, &cookie, (n + 1) as f64, &why).await;
        assert!(alive(&m.a.sidecar, &cookie).await, "{status} {body}");
        assert!(alive(&m.b.sidecar, &cookie).await, "{status} {body}");
        assert_eq!(metric(&metrics(&m.a.sidecar).await, refused), 0.0);
    }
}

/// An IdP without an end-session endpoint and no post-logout URI: the logout ends the session
/// where it stands, and a browser gets a page saying so (an API client, OpenRag's JSON).
#[tokio::test]
async fn a_logout_with_nowhere_to_go_answers_a_browser_with_a_page() {
    let idp = MockIdp::start().await;
    let key = Key::new("k1");
    idp.set(|m| {
        m.jwks = json!({"keys": [key.jwk()]});
        m.no_end_session = true;
    });
    let up = Upstream::start();
    let sc = start_oidc_sidecar(free_port(), &idp.issuer(), &up.url(), &[]).await;
    let sc = &sc.sidecar;
    for (accept, page) in [("text/html,*/*;q=0.8", true), ("application/json", false)] {
        let cookie = idp.login(&key, sc, "alice", "sid-1").await;
        let r = get(
            &sc.url("/auth/logout"),
            &[
                ("cookie", &session_header(&cookie)),
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-mode", "navigate"),
                ("accept", accept),
            ],
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let body = String::from_utf8_lossy(r.body());
        let content_type = r.headers()["content-type"].to_str().unwrap();
        if page {
            assert!(content_type.starts_with("text/html"), "{content_type}");
            assert!(
                body.contains("Logged out") && body.contains("<html"),
                "{body}"
            );
        } else {
            assert_eq!(body, r#"{"detail":"Logged out"}"#);
        }
        assert!(!alive(sc, &cookie).await, "the session ended");
    }
}

/// `session_idle_timeout_secs` over two replicas on Redis: requests on one replica keep the
/// session alive on both past the timeout; once nobody uses it, it ends on both.
#[tokio::test]
async fn an_idle_session_ends_on_every_replica_and_a_used_one_lives_on() {
    let m = mock_pair(&[("SSO_SIDECAR_SESSION_IDLE_TIMEOUT_SECS", "10")]).await;
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let start = std::time::Instant::now();
    // Used on replica a every second for 16 s (more than the timeout plus an eighth).
    while start.elapsed() < Duration::from_secs(16) {
        assert!(
            alive(&m.a.sidecar, &cookie).await,
            "used, at {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        alive(&m.b.sidecar, &cookie).await,
        "alive on the other replica too"
    );
    // Then left alone: gone on both within the timeout, an eighth and the caches' second.
    let idle = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(12_500)).await;
    for sc in [&m.b.sidecar, &m.a.sidecar] {
        assert!(!alive(sc, &cookie).await, "idle for {:?}", idle.elapsed());
    }
}

/// An IdP's `expires_in` has no bound: `i64::MAX` seconds once overflowed `now + expires_in`
/// (a panic in a debug build, a token "long expired" in a release one, refreshed on every
/// request). It is taken as a year: the session works and nothing is refreshed.
#[tokio::test]
async fn an_absurd_expires_in_gives_a_working_session_and_no_refresh() {
    let m = mock_pair(&[]).await;
    m.idp.set(|s| s.login_expires_in = i64::MAX);
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let exchanged = m.idp.state.lock().unwrap().token_requests.len();
    for _ in 0..3 {
        assert!(alive(&m.a.sidecar, &cookie).await);
    }
    assert_eq!(
        m.idp.state.lock().unwrap().token_requests.len(),
        exchanged,
        "no refresh for a token that is good for a year"
    );
}

/// A back-channel logout whose store writes time out (Redis holds them, `CLIENT PAUSE … WRITE`,
/// longer than the sidecar's timeout, and applies them afterwards) answers 503 and leaves no
/// `jti` marker behind: the IdP's retry of the same token revokes the session. Before, the
/// marker was written first; applied after its caller gave up, it made the retry a "replay"
/// and the session lived on.
#[tokio::test]
async fn a_logout_cut_short_by_the_store_is_not_taken_for_a_replay_when_retried() {
    let m = mock_pair(&[("SSO_SIDECAR_REDIS_TIMEOUT_MS", "300")]).await;
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let token = m.key.sign(&logout_claims(&m));
    m.redis
        .cli_async(&["CLIENT", "PAUSE", "1500", "WRITE"])
        .await;
    let r = post_logout(&m.a.sidecar, &token).await;
    assert_eq!(r.status(), 503, "{}", String::from_utf8_lossy(r.body()));
    // Wait out the pause: the writes Redis held are applied now.
    let ping = m.redis.cli_async(&["SET", "probe", "1"]).await;
    assert!(ping.contains("OK"), "{ping}");
    let r = post_logout(&m.b.sidecar, &token).await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    assert!(!alive(&m.a.sidecar, &cookie).await, "the retry revoked it");
    let r = post_logout(&m.b.sidecar, &token).await;
    assert_eq!(
        r.status(),
        400,
        "a completed logout's replay is still refused"
    );
}

/// A logout on one replica while a refresh of the same session waits on the IdP on another:
/// the refresh must not write the session back (it amends what is there, and nothing is), so
/// the request that refreshed gets 401 and the session stays ended on every replica.
#[tokio::test]
async fn a_logout_during_a_refresh_stays_a_logout() {
    let m = mock_pair(&[]).await;
    // 8 s access tokens: a refresh is due in their last quarter.
    m.idp.set(|s| s.login_expires_in = 8);
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    m.idp.set(|s| {
        s.token_response =
            json!({"access_token": "at-2", "token_type": "Bearer", "expires_in": 8, "refresh_token": "rt-2"});
        s.token_delay_ms = 2000;
    });
    // Until a request finds the refresh due and waits on the IdP.
    let refreshing = refresh_under_way(&m, &cookie).await;
    log_out(&m.b.sidecar, &cookie).await;
    assert!(
        !refreshing.is_finished(),
        "the refresh was still waiting on the IdP"
    );
    assert_eq!(
        refreshing.await.unwrap().status(),
        401,
        "the refreshed request"
    );
    assert!(!alive(&m.a.sidecar, &cookie).await);
    assert!(!alive(&m.b.sidecar, &cookie).await);
}

/// A refresh on one replica that waits 12 s on the IdP (under a 20 s timeout), while
/// the access token has expired: a request of the same session on the other replica waits for
/// that refresh and is served with its result. It gave up after 8 s and answered 401, logging
/// the user out of a session that was being refreshed.
#[tokio::test]
async fn a_replica_waits_for_a_slow_refresh_on_another_instead_of_a_401() {
    // A 12 s IdP under a 20 s timeout: past the 8 s after which B gave up.
    let m = mock_pair(&[("SSO_SIDECAR_IDP_TIMEOUT_SECS", "20")]).await;
    m.idp.set(|s| s.login_expires_in = 2);
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let expires = sso_sidecar::auth::oidc::now_unix() + 2;
    m.idp.set(|s| {
        s.token_response["expires_in"] = json!(600);
        s.token_delay_ms = 12_000;
    });
    let refreshes = || m.idp.state.lock().unwrap().token_requests.len();
    let before = refreshes();
    wait_until("the access token expired", Duration::from_secs(5), || {
        sso_sidecar::auth::oidc::now_unix() > expires
    })
    .await;
    let url = m.a.sidecar.url("/v1/x");
    let header = session_header(&cookie);
    let on_a = tokio::spawn(async move { get(&url, &[("cookie", &header)]).await.unwrap() });
    wait_until("replica A asked the IdP", Duration::from_secs(5), || {
        refreshes() > before
    })
    .await;
    let started = std::time::Instant::now();
    let on_b = get(
        &m.b.sidecar.url("/v1/x"),
        &[("cookie", &session_header(&cookie))],
    )
    .await
    .unwrap();
    assert_eq!(on_b.status(), 200, "replica B waited for A's refresh");
    assert!(
        started.elapsed() > Duration::from_secs(9),
        "B answered once the refresh was done, not with the expired token"
    );
    assert_eq!(on_a.await.unwrap().status(), 200, "replica A");
    assert_eq!(refreshes(), before + 1, "one refresh grant for both");
    assert!(alive(&m.b.sidecar, &cookie).await);
}

/// The refresh lock expires while replica A waits on the IdP (here: deleted, as its TTL would
/// do with a slow store), so replica B takes it and sends the same refresh token. A's refresh
/// succeeds and writes the new token; then the IdP refuses B's reuse (`invalid_grant`). B must
/// not end the session the successful refresh just wrote: it ended it, logging the user out.
#[tokio::test]
async fn a_refusal_of_a_token_another_replica_already_rotated_ends_nothing() {
    let m = mock_pair(&[]).await;
    m.idp.set(|s| s.login_expires_in = 2);
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let expires = sso_sidecar::auth::oidc::now_unix() + 2;
    m.idp.set(|s| {
        s.token_response = json!({"access_token": "at-2", "token_type": "Bearer",
            "expires_in": 600, "refresh_token": "rt-2"});
        s.token_delay_ms = 2000;
    });
    let refreshes = || m.idp.state.lock().unwrap().token_requests.len();
    let before = refreshes();
    wait_until("the access token expired", Duration::from_secs(5), || {
        sso_sidecar::auth::oidc::now_unix() > expires
    })
    .await;
    let request = |sc: &Sidecar| {
        let (url, header) = (sc.url("/v1/x"), session_header(&cookie));
        tokio::spawn(async move { get(&url, &[("cookie", &header)]).await.unwrap().status() })
    };
    let on_a = request(&m.a.sidecar);
    wait_until("A asked the IdP", Duration::from_secs(5), || {
        refreshes() > before
    })
    .await;
    // The lock gone, as if its TTL had run out; B's request waits longer at the IdP.
    let deleted = m.redis.cli(&[
        "EVAL",
        "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do \
         n = n + redis.call('DEL', k) end return n",
        "0",
        "sso-sidecar:lock:*",
    ]);
    assert_eq!(deleted, "(integer) 1", "A held one refresh lock");
    m.idp.set(|s| s.token_delay_ms = 4000);
    let on_b = request(&m.b.sidecar);
    wait_until("B asked the IdP too", Duration::from_secs(5), || {
        refreshes() > before + 1
    })
    .await;
    assert_eq!(on_a.await.unwrap(), 200, "A refreshed");
    // B's answer, computed when its delay is over: the reused token refused.
    m.idp.set(|s| {
        s.token_status = 400;
        s.token_response = json!({"error": "invalid_grant"});
    });
    assert_eq!(
        on_b.await.unwrap(),
        200,
        "B is served the session A refreshed"
    );
    assert!(alive(&m.a.sidecar, &cookie).await, "not logged out");
    assert!(alive(&m.b.sidecar, &cookie).await, "not logged out");
}

/// While a request refreshes a session whose access token is still valid, the session's other
/// requests on the same replica are served with it at once, not queued behind a slow IdP.
#[tokio::test]
async fn a_slow_refresh_does_not_hold_the_sessions_other_requests() {
    let m = mock_pair(&[]).await;
    // 8 s access tokens: a refresh is due in their last quarter, while they are still valid.
    m.idp.set(|s| s.login_expires_in = 8);
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    m.idp.set(|s| {
        s.token_response = json!({"access_token": "at-2", "token_type": "Bearer",
            "expires_in": 600, "refresh_token": "rt-2"});
        s.token_delay_ms = 4000;
    });
    let refreshes = || m.idp.state.lock().unwrap().token_requests.len();
    let before = refreshes();
    let refreshing = refresh_under_way(&m, &cookie).await;
    let asked = std::time::Instant::now();
    assert!(alive(&m.a.sidecar, &cookie).await);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "served at once, not after the IdP's 4 s: {:?}",
        asked.elapsed()
    );
    assert!(
        !refreshing.is_finished(),
        "the refresh still waits on the IdP"
    );
    assert_eq!(refreshing.await.unwrap().status(), 200);
    assert_eq!(refreshes(), before + 1, "one refresh");
}
