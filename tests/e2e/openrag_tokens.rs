//! The OpenRag bridge keeps the token of each user's account, end to end: a token regenerated
//! through the sidecar (by an administrator for another user, or by a user with a bearer of
//! their own) is the one the account's sessions go on with; and a user whose creation lost its
//! one-time token (the backend committed, the answer never came back) gets in at the next login,
//! under the default `deny` policy too.

use crate::oidc_support::*;
use crate::openrag::{callback, world, world_with, Backend, World, ADMIN_TOKEN};
use crate::support::*;
use serde_json::{json, Value};

/// A request through the sidecar as the session `cookie` (a session header value).
async fn as_session(
    w: &World,
    cookie: &str,
    method: &str,
    path: &str,
) -> http::Response<bytes::Bytes> {
    let sc = &w.sc.sidecar;
    send(request(
        method,
        &sc.url(path),
        &[("cookie", cookie)],
        body(""),
    ))
    .await
    .unwrap()
}

/// Whether the backend itself accepts `token` (`GET /users/info` with it, not through the sidecar).
async fn backend_accepts(w: &World, token: &str) -> bool {
    let url = format!("{}/users/info", w.backend.url());
    let r = get(&url, &[("authorization", &format!("Bearer {token}"))])
        .await
        .unwrap();
    r.status() == 200
}

/// The id of the backend user linked to `sub`.
async fn id_of(w: &World, sub: &str) -> u64 {
    w.backend.user(sub).await.unwrap()["id"].as_u64().unwrap()
}

/// Who the backend says a session request acts as, and its status.
async fn whoami(w: &World, cookie: &str) -> (u16, Value) {
    let r = as_session(w, cookie, "GET", "/v1/whoami").await;
    (
        r.status().as_u16(),
        json(&r)["user"]["external_user_id"].clone(),
    )
}

/// Under `deny` (the default), an administrator signed in through the sidecar regenerates bob's
/// token in the Admin UI; then bob, from a script, regenerates his own with that token as a
/// bearer. After each, bob's session goes on with the new token (before, the sidecar kept the
/// dead one in its vault: bob's next request got 403 and `deny` locked him out), nothing is
/// regenerated behind the caller's back (the token just handed over still works), and a new
/// login of bob's finds the newest token in the vault.
#[tokio::test]
async fn a_token_regenerated_through_the_sidecar_is_the_one_the_accounts_sessions_use() {
    let w = world(
        json!([]),
        json!({}),
        &[("OIDC_AUTO_PROVISION_LOGIN", "true")],
    )
    .await;
    let sc = &w.sc.sidecar;
    let root = session_header(&login(sc, "root", "/").await.cookie);
    let bob = session_header(&login(sc, "bob", "/").await.cookie);
    // root becomes an administrator (the sidecar provisions plain users only).
    let make_admin = send(request(
        "PATCH",
        &format!("{}/users/{}", w.backend.url(), id_of(&w, "root").await),
        &[
            ("authorization", &format!("Bearer {ADMIN_TOKEN}")),
            ("content-type", "application/json"),
        ],
        body(json!({"is_admin": true}).to_string()),
    ))
    .await
    .unwrap();
    assert_eq!(make_admin.status(), 200);
    assert_eq!(whoami(&w, &bob).await, (200, json!("bob")));

    let path = format!("/users/{}/regenerate_token", id_of(&w, "bob").await);
    let r = as_session(&w, &root, "POST", &path).await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    let handed = json(&r);
    assert_eq!(
        handed["external_user_id"], "bob",
        "the answer reaches the admin: {handed}"
    );
    let first = handed["token"].as_str().unwrap().to_owned();
    assert_eq!(
        whoami(&w, &bob).await,
        (200, json!("bob")),
        "bob's session goes on"
    );
    assert!(
        backend_accepts(&w, &first).await,
        "the token the admin handed over is not rotated again"
    );

    // bob, from a script, with that token as a bearer: his own regeneration.
    let r = send(request(
        "POST",
        &sc.url(&path),
        &[("authorization", &format!("Bearer {first}"))],
        body(""),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    let second = json(&r)["token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(
        whoami(&w, &bob).await,
        (200, json!("bob")),
        "bob's session goes on"
    );
    assert!(backend_accepts(&w, &second).await);

    // A new login under `deny`: the vault has the newest token.
    let again = session_header(&login(sc, "bob", "/").await.cookie);
    assert_eq!(whoami(&w, &again).await, (200, json!("bob")));
    assert!(backend_accepts(&w, &second).await);
    assert_eq!(whoami(&w, &root).await, (200, json!("root")));
}

/// Under `deny`, the backend commits a new user but its answer to `POST /users/` never arrives
/// in time (slower than `admin_timeout`), or arrives broken: the first login fails (502), and
/// the next one gets in, the sidecar regenerating the token it never received (before, the
/// user was found with no token in the vault: 403 at every login).
#[tokio::test]
async fn a_user_whose_creation_lost_its_token_gets_in_at_the_next_login() {
    let w = world(
        json!([]),
        json!({}),
        &[
            ("OIDC_AUTO_PROVISION_LOGIN", "true"),
            ("SSO_SIDECAR_OPENRAG__ADMIN_TIMEOUT_SECS", "2"),
        ],
    )
    .await;
    let sc = &w.sc.sidecar;
    let backend = w.backend.url();
    let hook = |path: &str| {
        let url = format!("{backend}{path}");
        async move {
            let r = send(request("POST", &url, &[], body(""))).await.unwrap();
            assert_eq!(r.status(), 204);
        }
    };
    for (sub, lose, restore) in [
        (
            "amy",
            "/__test/slow-create?ms=4000",
            "/__test/slow-create?ms=0",
        ),
        (
            "ben",
            "/__test/broken-create?on=1",
            "/__test/broken-create?on=0",
        ),
    ] {
        hook(lose).await;
        let r = callback(sc, sub, false).await;
        assert_eq!(
            r.status(),
            502,
            "{sub}: {}",
            String::from_utf8_lossy(r.body())
        );
        assert!(set_cookie(&r, "sso_sidecar_session").is_none());
        assert!(
            w.backend.user(sub).await.is_some(),
            "{sub}: the backend committed the user"
        );
        hook(restore).await;

        let r = callback(sc, sub, false).await;
        assert_eq!(
            r.status(),
            302,
            "{sub}: {}",
            String::from_utf8_lossy(r.body())
        );
        let second = session_header(&set_cookie(&r, "sso_sidecar_session").unwrap());
        assert_eq!(whoami(&w, &second).await, (200, json!(sub)));
        // Regenerated once: a third login finds the token in the vault (a second regeneration
        // would have killed the second login's token: 403 under `deny`).
        let cookie = session_header(&login(sc, sub, "/").await.cookie);
        assert_eq!(whoami(&w, &cookie).await, (200, json!(sub)));
        assert_eq!(whoami(&w, &second).await, (200, json!(sub)));
        let users = w.backend.users().await;
        let n = users
            .iter()
            .filter(|u| u["external_user_id"] == sub)
            .count();
        assert_eq!(n, 1, "{sub}: created once");
    }
}

/// Two first logins of one new user at once, under `deny`, the backend taking 2.5 s to answer
/// the winning `POST /users/` (its user visible meanwhile), within `admin_timeout` (10 s): the
/// other login waits for the token as long as the creation may take (before, 2 s: it then got
/// 403 "No OpenRag token").
#[tokio::test]
async fn a_login_waits_for_a_concurrent_creation_as_long_as_it_may_take() {
    let w = world_with(
        Backend::start_with(json!([]), &["--conflict-status", "409"]),
        json!({}),
        &[("OIDC_AUTO_PROVISION_LOGIN", "true")],
    )
    .await;
    let slow = format!("{}/__test/slow-create?ms=2500", w.backend.url());
    let slow = send(request("POST", &slow, &[], body(""))).await.unwrap();
    assert_eq!(slow.status(), 204);
    for r in crate::openrag::burst_of_logins(&w, &["dan"; 2], "ms=0").await {
        assert!(
            r.status().is_redirection() && set_cookie(&r, "sso_sidecar_session").is_some(),
            "{} {}",
            r.status(),
            String::from_utf8_lossy(r.body())
        );
    }
    let users = w.backend.users().await;
    let n = users
        .iter()
        .filter(|u| u["external_user_id"] == "dan")
        .count();
    assert_eq!(n, 1, "one user created");
}
