//! The OpenRag bridge keeps the token of each user's account, end to end: a token regenerated
//! through the sidecar (by an administrator for another user, or by a user with a bearer of
//! their own) is the one the account's sessions go on with.

use crate::oidc_support::*;
use crate::openrag::{world, World, ADMIN_TOKEN};
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
