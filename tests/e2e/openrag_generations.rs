//! What differs between OpenRag generations (issue 16), against the stand-in backend in each:
//! single sign-on into Chainlit (the `openrag_chainlit_token` hand-off of later versions, the
//! sidecar logging the user in to 1.1.8's own Chainlit), and the email conflict at
//! auto-provisioning (found in the users list where it shows emails; 1.1.8's `500
//! [UNEXPECTED_ERROR]` read as the same conflict, remembered so no more user ids are used up).

use crate::oidc_support::*;
use crate::openrag::{callback, seeded, token, world_with, Backend};
use crate::support::*;
use serde_json::json;

/// A GET with the session cookie (and `extra` cookies).
async fn as_session(
    sc: &Sidecar,
    cookie: &str,
    path: &str,
    extra: &str,
) -> http::Response<bytes::Bytes> {
    let c = format!("{}{extra}", session_header(cookie));
    get(&sc.url(path), &[("cookie", &c)]).await.unwrap()
}

/// OpenRag 1.1.8 with alice seeded, her token in the sidecar's token file.
async fn alice_on_1_1_8() -> crate::openrag::World {
    let alice = token(1);
    world_with(
        Backend::start_with(
            json!([seeded("alice", Some(&alice))]),
            &["--generation", "1.1.8"],
        ),
        json!({"alice": alice}),
        &[("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file")],
    )
    .await
}

#[tokio::test]
async fn openrag_1_1_8s_own_chainlit_login_is_done_for_the_user() {
    let (alice, w) = (token(1), alice_on_1_1_8().await);
    let sc = &w.sc.sidecar;
    let l = login(sc, "alice", "/").await;

    // Chainlit's protected route, which 1.1.8 guards with its own session only.
    let r = as_session(sc, &l.cookie, "/chainlit/user", "; access_token=forged").await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    let j = json(&r);
    assert_eq!(j["auth_via"], "chainlit", "{j}");
    assert_eq!(j["user"]["external_user_id"], "alice");
    assert_eq!(j["metadata"]["provider"], "credentials", "{j}");
    assert_eq!(
        j["metadata"]["api_key"], "",
        "Chainlit's copy of the user's token never reaches the browser"
    );
    assert!(!String::from_utf8_lossy(r.body()).contains(&alice));
    // Asked for compressed (as every browser asks): the answer the sidecar must read is not.
    let c = format!("{}; access_token=forged", session_header(&l.cookie));
    let r = get(
        &sc.url("/chainlit/user"),
        &[("cookie", &c), ("accept-encoding", "gzip, deflate, br")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(
        json(&r)["metadata"]["api_key"],
        "",
        "blanked, not compressed past the sidecar"
    );
    assert!(
        r.headers()
            .get_all("set-cookie")
            .iter()
            .all(|v| !v.to_str().unwrap().starts_with("access_token")),
        "Chainlit's session stays with the sidecar"
    );
    // A second request reuses the Chainlit session: one login at Chainlit.
    let r = as_session(sc, &l.cookie, "/chainlit/project/settings", "").await;
    assert_eq!(r.status(), 200);
    let logins = w.backend.requests().await["by_path"]["/chainlit/login"].clone();
    assert_eq!(logins, 1, "{logins}");

    // Chainlit forgets its sessions (a restart): the sidecar logs in again, and the user's
    // OpenRag token is left alone.
    let before = w.backend.user("alice").await.unwrap();
    let _ = send(request(
        "POST",
        &format!("{}/__test/chainlit/forget", w.backend.url()),
        &[],
        body(""),
    ))
    .await;
    let r = as_session(sc, &l.cookie, "/chainlit/user", "").await;
    assert_eq!(r.status(), 401, "Chainlit's own answer reaches the user");
    // The refused session was forgotten; the next request logs in afresh.
    let r = as_session(sc, &l.cookie, "/chainlit/user", "").await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    let logins = w.backend.requests().await["by_path"]["/chainlit/login"].clone();
    assert_eq!(logins, 2, "{logins}");
    assert_eq!(
        w.backend.user("alice").await.unwrap()["token_sha256"],
        before["token_sha256"],
        "Chainlit's refusal never regenerates the user's token"
    );
    let r = as_session(sc, &l.cookie, "/v1/models", "").await;
    assert_eq!(
        json(&r)["auth_via"],
        "bearer",
        "the OpenRag token still works"
    );
}

/// Someone who can write the session store but has not the Fernet key copies alice's sealed
/// Chainlit session under the key of bob's: bob's requests must not become alice's at
/// Chainlit. The value names the key it was sealed for, so the copy is refused and bob gets a
/// Chainlit login of his own.
#[tokio::test]
async fn a_chainlit_session_copied_under_another_users_key_is_refused() {
    let w = world_with(
        Backend::start_with(
            json!([
                seeded("alice", Some(&token(1))),
                seeded("bob", Some(&token(2)))
            ]),
            &["--generation", "1.1.8"],
        ),
        json!({"alice": token(1), "bob": token(2)}),
        &[("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file")],
    )
    .await;
    let sc = &w.sc.sidecar;
    let keys = || w._redis.cli(&["KEYS", "sso-sidecar:chainlit:*"]);
    let alice = login(sc, "alice", "/").await;
    let r = as_session(sc, &alice.cookie, "/chainlit/user", "").await;
    assert_eq!(json(&r)["user"]["external_user_id"], "alice");
    let alices = keys();
    let bob = login(sc, "bob", "/").await;
    let r = as_session(sc, &bob.cookie, "/chainlit/user", "").await;
    assert_eq!(json(&r)["user"]["external_user_id"], "bob");
    let unquote = |k: &str| {
        k.trim()
            .trim_start_matches(|c: char| c.is_ascii_digit() || c == ')' || c == ' ')
            .trim_matches('"')
            .to_owned()
    };
    let alices = unquote(&alices);
    let bobs: Vec<String> = keys()
        .lines()
        .map(unquote)
        .filter(|k| *k != alices)
        .collect();
    assert_eq!(bobs.len(), 1, "{bobs:?}");
    let copied = w._redis.cli(&[
        "EVAL",
        "return redis.call('SET', KEYS[2], redis.call('GET', KEYS[1]), 'KEEPTTL')",
        "2",
        &alices,
        &bobs[0],
    ]);
    assert_eq!(copied, "OK");

    let r = as_session(sc, &bob.cookie, "/chainlit/user", "").await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(
        json(&r)["user"]["external_user_id"],
        "bob",
        "not alice's session"
    );
    let logins = w.backend.requests().await["by_path"]["/chainlit/login"].clone();
    assert_eq!(logins, 3, "bob logged in to Chainlit again: {logins}");
}

/// A later-generation backend with alice (token `alice`, vaulted).
async fn later_with_alice(alice: &str) -> crate::openrag::World {
    world_with(
        Backend::start(json!([seeded("alice", Some(alice))])),
        json!({"alice": alice}),
        &[("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file")],
    )
    .await
}

#[tokio::test]
async fn later_openrag_gets_the_chainlit_token_cookie() {
    let alice = token(2);
    let w = later_with_alice(&alice).await;
    let sc = &w.sc.sidecar;
    let l = login(sc, "alice", "/").await;
    let r = as_session(sc, &l.cookie, "/chainlit/project/settings", "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["auth_via"], "cookie");
    let log = w.backend.requests().await;
    assert!(
        log["by_path"]["/chainlit/login"].is_null(),
        "no Chainlit login: {log}"
    );
}

#[tokio::test]
async fn an_email_taken_by_another_account_gets_the_409_page_before_any_user_is_created() {
    for generation in ["later", "1.1.8"] {
        let backend = Backend::start_with(
            json!([{"display_name": "Old Alice", "external_user_id": "legacy-alice",
                    "email": "alice@example.test", "is_admin": false, "token": token(3)}]),
            &["--generation", generation],
        );
        let w = world_with(backend, json!({}), &[("OIDC_AUTO_PROVISION_LOGIN", "true")]).await;
        let sc = &w.sc.sidecar;
        let dump = |b: &Backend| {
            let url = format!("{}/__test/dump", b.url());
            async move { json(&get(&url, &[]).await.unwrap()) }
        };
        let r = callback(sc, "alice", true).await;
        assert_eq!(r.status(), 409, "{generation}: {:?}", r.body());
        let page = String::from_utf8_lossy(r.body()).into_owned();
        assert!(page.contains("already exists"), "{page}");
        assert!(page.contains("alice"), "the page shows the sub: {page}");
        let after_first = dump(&w.backend).await;
        // Logging in again within the minute: no second attempt at the backend.
        let r = callback(sc, "alice", false).await;
        assert_eq!(r.status(), 409);
        assert_eq!(
            json(&r)["detail"],
            "An account with this email already exists. Ask your administrator to link it to your identity provider login."
        );
        assert_eq!(
            dump(&w.backend).await,
            after_first,
            "{generation}: nothing more used up"
        );
        let posts = w.backend.requests().await;
        let expected = if generation == "1.1.8" { 1 } else { 0 };
        let created: u64 = posts["last"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["method"] == "POST" && e["path"] == "/users/")
            .count() as u64;
        assert_eq!(
            created, expected,
            "{generation}: POST /users/ only where the list cannot show the email"
        );
    }
}

/// The `Set-Cookie` values of a response.
fn set_cookies(r: &http::Response<bytes::Bytes>) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Whether `set` ends cookie `name` on `path`.
fn ends(set: &[String], name: &str, path: &str) -> bool {
    set.iter().any(|c| {
        c.starts_with(&format!("{name}=;"))
            && c.contains(&format!("Path={path};"))
            && c.contains("Max-Age=0")
    })
}

/// Cookies that speak for an OpenRag or Chainlit user, left in a browser whose session here
/// ended (logout, revocation, expiry), speak for nobody: a request without a session reaches
/// the backend without them. And every response that starts or ends a session, or answers the
/// Chainlit hand-off, ends Chainlit's own session in the browser, as OpenRag does, so that the
/// previous user's Chainlit cookie never speaks for the next one.
#[tokio::test]
async fn chainlit_cookies_left_in_a_browser_speak_for_nobody() {
    let alice = token(2);
    let w = later_with_alice(&alice).await;
    let sc = &w.sc.sidecar;
    for cookie in [
        format!("openrag_chainlit_token={alice}"),
        format!("openrag_session={alice}"),
        format!("x=1; openrag_chainlit_token={alice}; access_token=chainlit-jwt"),
    ] {
        let r = get(
            &sc.url("/chainlit/project/settings"),
            &[("cookie", &cookie)],
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 403, "{cookie}: {:?}", r.body());
        assert_eq!(json(&r)["detail"], "Missing token", "{cookie}");
    }

    let l = login(sc, "alice", "/").await;
    let set = set_cookies(&l.callback);
    for path in ["/", "/chainlit"] {
        assert!(ends(&set, "access_token", path), "login, {path}: {set:?}");
    }
    let with_chunk = format!(
        "{}; access_token_0=a; access_token_1=b",
        session_header(&l.cookie)
    );
    let r = send(request(
        "POST",
        &sc.url("/auth/chainlit-session"),
        &[("cookie", &with_chunk)],
        body(""),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    let set = set_cookies(&r);
    for name in ["access_token", "access_token_0", "access_token_1"] {
        for path in ["/", "/chainlit"] {
            assert!(ends(&set, name, path), "hand-off, {name} {path}: {set:?}");
        }
    }
}

/// Until the backend has said which Chainlit hand-off it has, a Chainlit request is refused
/// (502), not sent on the cookie hand-off's assumption: on 1.1.8 that kept the client's own
/// Chainlit cookie and left Chainlit's answers as they were. The backend is asked again after
/// 5 s, not on every request meanwhile; then the login hand-off works.
#[tokio::test]
async fn a_chainlit_request_waits_for_the_backend_to_say_its_hand_off() {
    let w = alice_on_1_1_8().await;
    let sc = &w.sc.sidecar;
    let l = login(sc, "alice", "/").await;
    w.backend.hook("fail-handoff?n=1").await;
    crate::openrag_hardening::reset_log(&w.backend).await;
    for _ in 0..2 {
        let r = as_session(sc, &l.cookie, "/chainlit/user", "; access_token=mine").await;
        assert_eq!(r.status(), 502, "{}", String::from_utf8_lossy(r.body()));
    }
    let log = w.backend.requests().await;
    assert_eq!(
        log["by_path"]["/auth/chainlit-session"], 1,
        "asked once: {log}"
    );
    assert!(log["by_path"].get("/chainlit/user").is_none(), "{log}");
    tokio::time::sleep(std::time::Duration::from_millis(5200)).await;
    let r = as_session(sc, &l.cookie, "/chainlit/user", "; access_token=mine").await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(json(&r)["auth_via"], "chainlit", "the login hand-off");
}

/// The first Chainlit requests of a page arrive together while the backend's hand-off is not
/// known yet: they wait for one probe, instead of each asking the admin API.
#[tokio::test]
async fn a_burst_of_chainlit_requests_waits_for_one_hand_off_probe() {
    let w = alice_on_1_1_8().await;
    let sc = &w.sc.sidecar;
    let l = login(sc, "alice", "/").await;
    w.backend.hook("slow-handoff?ms=700").await;
    crate::openrag_hardening::reset_log(&w.backend).await;
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (url, cookie) = (
            sc.url("/chainlit/project/settings"),
            session_header(&l.cookie),
        );
        burst.spawn(async move { get(&url, &[("cookie", &cookie)]).await.unwrap() });
    }
    for r in burst.join_all().await {
        assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    }
    let log = w.backend.requests().await;
    assert_eq!(
        log["by_path"]["/auth/chainlit-session"], 1,
        "one probe: {log}"
    );
}
