//! Two attacks on the OpenRag identity bridge, end to end (the real IdP, redis-server and the
//! stand-in backend of tests/support/openrag_backend.py, through `openrag::world`):
//!
//! * A route's own refusal taken for the backend refusing the user's token. Chainlit answers 401
//!   "Invalid authentication token", a route relaying a provider may answer 403 "Invalid token":
//!   if the sidecar took either as a dead token it would regenerate it (every other session and
//!   script of that user breaks) or, with `token_policy = deny`, drop it from the vault and lock
//!   the user out — at will of whoever can make a route answer that. Only the backend's 403
//!   "Invalid token", confirmed by a `GET /users/info` probe with the token, counts; and a user's
//!   token is recovered at most once a minute, so a token revoked again and again cannot make
//!   the sidecar regenerate in a loop. The stand-in's `/__test/refuse/<code>` hook plays the route.
//! * The injected token leaking through a redirect: OpenRag's `/static` mount redirects `/static`
//!   to `/static/` keeping the query, which holds the token the sidecar injected there.

use crate::oidc_support::*;
use crate::openrag::{seeded, token, world, world_with, Backend};
use crate::support::*;
use serde_json::{json, Value};

pub(crate) async fn reset_log(backend: &Backend) {
    let r = send(request(
        "DELETE",
        &format!("{}/__test/requests", backend.url()),
        &[],
        body(""),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
}

/// The entries of the backend's request log whose path satisfies `pick`.
async fn logged(backend: &Backend, pick: impl Fn(&str) -> bool) -> Vec<Value> {
    backend.requests().await["last"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| pick(e["path"].as_str().unwrap_or_default()))
        .cloned()
        .collect()
}

fn regenerations(path: &str) -> bool {
    path.ends_with("/regenerate_token")
}

async fn token_sha(backend: &Backend, sub: &str) -> Value {
    backend.user(sub).await.unwrap()["token_sha256"].clone()
}

/// `GET path` with the session; asserts a 200 from the backend as `sub` and returns the
/// `Authorization` the backend saw (the injected token).
async fn ok_as(sc: &Sidecar, cookie: &str, path: &str, sub: &str) -> String {
    let r = get(&sc.url(path), &[("cookie", cookie)]).await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "{path}: {}",
        String::from_utf8_lossy(r.body())
    );
    let j = json(&r);
    assert_eq!(j["user"]["external_user_id"], sub, "{j}");
    j["headers"]["authorization"][0]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A route of the backend answering `status` `{"detail": detail}` to an authenticated user.
fn refusing_route(status: u16, detail: &str) -> String {
    format!("/__test/refuse/{status}?detail={}", urlencode(detail))
}

/// The sealed vault entry of the only user (Fernet: rewritten = different bytes).
fn vault(redis: &Redis) -> String {
    let keys = redis.cli(&["--raw", "KEYS", "*vault:*"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    redis.cli(&["--raw", "GET", keys[0]])
}

#[tokio::test]
async fn a_routes_own_401_or_403_does_not_regenerate_the_users_token() {
    let w = world(
        json!([seeded("kate", Some(&token(0x21)))]),
        json!({}),
        &[("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "regenerate")],
    )
    .await;
    let sc = &w.sc.sidecar;
    let cookie = session_header(&login(sc, "kate", "/").await.cookie);
    let bearer = ok_as(sc, &cookie, "/v1/x", "kate").await;
    let sha = token_sha(&w.backend, "kate").await;
    let kate = w.backend.user("kate").await.unwrap()["id"].clone();

    // Chainlit's 401 is never the token middleware's answer: not even worth a probe. A 403
    // "Invalid token" may be, so one probe asks the backend about the token itself — it works.
    for (status, detail, probes) in [
        (401, "Invalid authentication token", 0),
        (403, "Invalid token", 1),
    ] {
        reset_log(&w.backend).await;
        let r = get(
            &sc.url(&refusing_route(status, detail)),
            &[("cookie", &cookie)],
        )
        .await
        .unwrap();
        assert_eq!(r.status(), status, "the route's answer reaches the client");
        assert_eq!(json(&r), json!({"detail": detail}));

        let probe = logged(&w.backend, |p| p == "/users/info").await;
        assert_eq!(probe.len(), probes, "{status}: {probe:?}");
        for e in &probe {
            assert_eq!(e["status"], 200, "the backend accepts kate's token: {e}");
            assert_eq!(e["user_id"], kate, "probed with kate's own token: {e}");
        }
        let regenerated = logged(&w.backend, regenerations).await;
        assert!(regenerated.is_empty(), "{status}: {regenerated:?}");
        assert_eq!(
            token_sha(&w.backend, "kate").await,
            sha,
            "{status}: kate's token at the backend is unchanged"
        );
        assert_eq!(
            ok_as(sc, &cookie, "/v1/x", "kate").await,
            bearer,
            "{status}: the next request goes on with the same token"
        );
    }
}

#[tokio::test]
async fn with_deny_a_routes_401_does_not_lock_the_user_out() {
    // deny: a token dropped from the vault could never come back, so a wrong drop is a lockout.
    let w = world(
        json!([]),
        json!({}),
        &[
            ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "deny"),
            ("OIDC_AUTO_PROVISION_LOGIN", "true"),
        ],
    )
    .await;
    let sc = &w.sc.sidecar;
    let cookie = session_header(&login(sc, "lou", "/").await.cookie);
    let bearer = ok_as(sc, &cookie, "/v1/x", "lou").await;

    let detail = "Invalid authentication token";
    let r = get(
        &sc.url(&refusing_route(401, detail)),
        &[("cookie", &cookie)],
    )
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        401,
        "the route's answer, not the bridge's: {}",
        String::from_utf8_lossy(r.body())
    );
    assert_eq!(json(&r), json!({"detail": detail}));

    assert_eq!(ok_as(sc, &cookie, "/v1/x", "lou").await, bearer);
    // A new login still finds the token in the vault (`login` asserts the 302 and the cookie).
    let again = session_header(&login(sc, "lou", "/").await.cookie);
    assert_eq!(ok_as(sc, &again, "/v1/y", "lou").await, bearer);
}

#[tokio::test]
async fn a_token_revoked_again_within_a_minute_is_not_recovered_again() {
    let w = world(
        json!([seeded("mia", Some(&token(0x22)))]),
        json!({}),
        &[("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "regenerate")],
    )
    .await;
    let sc = &w.sc.sidecar;
    let cookie = session_header(&login(sc, "mia", "/").await.cookie);
    let first = ok_as(sc, &cookie, "/v1/a", "mia").await;
    let sealed = vault(&w._redis);

    // A real refusal: an admin regenerates mia's token behind the sidecar's back. Recovered once.
    w.backend.regenerate_behind("mia").await;
    reset_log(&w.backend).await;
    let second = ok_as(sc, &cookie, "/v1/b", "mia").await;
    assert_ne!(second, first, "a new token");
    let log = w.backend.requests().await;
    assert_eq!(
        logged(&w.backend, regenerations).await.len(),
        1,
        "the sidecar regenerated once: {log}"
    );
    let recovered = vault(&w._redis);
    assert_ne!(recovered, sealed, "the vault holds the new token");

    // Again within the minute: whoever can get mia's token revoked at will must not make the
    // sidecar regenerate it at will. The backend's refusal reaches the client; nothing changes.
    w.backend.regenerate_behind("mia").await;
    reset_log(&w.backend).await;
    let r = get(&sc.url("/v1/c"), &[("cookie", &cookie)]).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(json(&r), json!({"detail": "Invalid token"}));
    let log = w.backend.requests().await;
    assert_eq!(log["by_path"]["/v1/c"], 1, "not replayed: {log}");
    let regenerated = logged(&w.backend, regenerations).await;
    assert!(regenerated.is_empty(), "no second regeneration: {log}");
    // Not even probed: each probe of a dead token is a failed authentication the backend
    // charges to the sidecar's own address, and a session sends one request after another.
    let probe = logged(&w.backend, |p| p == "/users/info").await;
    assert!(probe.is_empty(), "no probe within the minute: {log}");
    assert_eq!(
        vault(&w._redis),
        recovered,
        "the vault entry is left as it was"
    );
}

#[tokio::test]
async fn a_static_slash_redirect_does_not_hand_out_the_injected_token() {
    let nina = token(0x23);
    let w = world(
        json!([seeded("nina", Some(&nina))]),
        json!({"nina": nina}),
        &[("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file")],
    )
    .await;
    let sc = &w.sc.sidecar;
    let cookie = session_header(&login(sc, "nina", "/").await.cookie);
    reset_log(&w.backend).await;

    let r = get(&sc.url("/static?tab=1"), &[("cookie", &cookie)])
        .await
        .unwrap();
    assert_eq!(r.status(), 307, "{:?}", r.headers());
    // The backend did authenticate nina from the query and redirect with her token in it.
    let seen = logged(&w.backend, |p| p == "/static").await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["status"], 307);
    assert_eq!(seen[0]["auth_via"], "query");

    let loc = url::Url::parse(&location(&r)).unwrap();
    assert_eq!(loc.path(), "/static/");
    let pairs: Vec<(String, String)> = loc.query_pairs().into_owned().collect();
    assert_eq!(
        pairs,
        vec![("tab".to_owned(), "1".to_owned())],
        "the client's query kept, the token gone: {loc}"
    );
    for (name, value) in r.headers() {
        assert!(
            !String::from_utf8_lossy(value.as_bytes()).contains(&nina),
            "{name} carries the token"
        );
    }
}

/// OpenRag 1.1.8 with alice and bob seeded, alice's token in the sidecar's token file.
async fn alice_and_bob_on_1_1_8() -> crate::openrag::World {
    let users = json!([
        seeded("alice", Some(&token(1))),
        seeded("bob", Some(&token(2)))
    ]);
    world_with(
        Backend::start_with(users, &["--generation", "1.1.8"]),
        json!({"alice": token(1)}),
        &[("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file")],
    )
    .await
}

/// OpenRag 1.1.8 lets any user regenerate — and receive — any user's token. Through the sidecar,
/// a session regenerates only its own (unless its user is an administrator), and then keeps
/// working with the new token at once.
#[tokio::test]
async fn a_user_cannot_regenerate_another_users_token_and_their_own_is_adopted_at_once() {
    let w = alice_and_bob_on_1_1_8().await;
    let sc = &w.sc.sidecar;
    let cookie = session_header(&login(sc, "alice", "/").await.cookie);
    let id = |u: &Value| u["id"].as_u64().unwrap();
    let bob = w.backend.user("bob").await.unwrap();
    let alice = w.backend.user("alice").await.unwrap();
    reset_log(&w.backend).await;

    // Bob's id, and other spellings of it that the backend decodes or routes the same.
    let bob_id = id(&bob);
    let digit = |d: u64| format!("%{:X}", b'0' + u8::try_from(d % 10).unwrap());
    for path in [
        format!("/users/{bob_id}/regenerate_token"),
        format!("/users/{}/regenerate_token", digit(bob_id)),
        format!("/users/{bob_id}/regenerate_toke%6E"),
        format!("//users//{bob_id}/regenerate_token"),
        format!("/users/0{bob_id}/regenerate_token"),
        format!("/users/+{bob_id}/regenerate_token"),
    ] {
        let r = send(request(
            "POST",
            &sc.url(&path),
            &[("cookie", &cookie)],
            body(""),
        ))
        .await
        .unwrap();
        // A spelling that is no plain number is refused whoever asks (400).
        let (status, detail) = if path.contains("/+") {
            (400, "The user id must be a plain number")
        } else {
            (403, "Admin privileges or self-access required")
        };
        assert_eq!(
            r.status(),
            status,
            "{path}: {}",
            String::from_utf8_lossy(r.body())
        );
        assert_eq!(json(&r)["detail"], detail);
    }
    assert!(
        bob_id < 10,
        "the single-digit spelling above is bob's whole id"
    );
    let r = send(request(
        "POST",
        &sc.url(&format!("/users/{bob_id}/regenerate_token")),
        &[("cookie", &cookie)],
        body(""),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        !String::from_utf8_lossy(r.body()).contains("or-"),
        "no token handed out"
    );
    assert_eq!(
        w.backend.user("bob").await.unwrap()["token_sha256"],
        bob["token_sha256"],
        "bob's token is untouched"
    );
    assert!(
        logged(&w.backend, |p| p.ends_with("/regenerate_token"))
            .await
            .is_empty(),
        "the request never reached the backend"
    );

    let r = regenerate(sc, id(&alice), ("cookie", &cookie)).await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    let fresh = json(&r)["token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, token(1));
    reset_log(&w.backend).await;
    let next = get(&sc.url("/v1/after"), &[("cookie", &cookie)])
        .await
        .unwrap();
    assert_eq!(
        next.status(),
        200,
        "{}",
        String::from_utf8_lossy(next.body())
    );
    assert_eq!(json(&next)["user"]["external_user_id"], "alice");
    let seen: Vec<Value> = logged(&w.backend, |p| p == "/v1/after").await;
    assert_eq!(seen.len(), 1, "no refusal, no recovery: {seen:?}");
    assert!(
        logged(&w.backend, |p| p == "/users/info").await.is_empty(),
        "no probe needed"
    );

    // The token handed back is a bearer of alice's own: without a session, it still regenerates
    // only alice's token, never bob's nor the administrator's (user 1).
    let bearer = format!("Bearer {fresh}");
    let admin = w.backend.admin("GET", "/users/1").await;
    for other in [bob_id, 1] {
        let r = regenerate(sc, other, ("authorization", &bearer)).await;
        assert_eq!(r.status(), 403, "{}", String::from_utf8_lossy(r.body()));
    }
    assert_eq!(
        w.backend.user("bob").await.unwrap()["token_sha256"],
        bob["token_sha256"],
        "bob's token is untouched"
    );
    assert_eq!(
        w.backend.admin("GET", "/users/1").await,
        admin,
        "AUTH_TOKEN still works"
    );
    let r = regenerate(sc, id(&alice), ("authorization", &bearer)).await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
}

/// An administrator moves a backend account to another IdP user while the old user's session
/// lives on (until its next refresh). That session may not regenerate the account's token any
/// more: it would hand a bearer of someone else's account to the old user, and the new token
/// would land in the new owner's vault.
#[tokio::test]
async fn a_session_from_before_a_relink_cannot_regenerate_the_accounts_token() {
    let w = alice_and_bob_on_1_1_8().await;
    let sc = &w.sc.sidecar;
    let cookie = session_header(&login(sc, "alice", "/").await.cookie);
    let account = w.backend.user("alice").await.unwrap();
    let id = account["id"].as_u64().unwrap();
    w.backend.link(id, "carol").await;
    reset_log(&w.backend).await;

    let r = regenerate(sc, id, ("cookie", &cookie)).await;
    assert_eq!(r.status(), 403, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(
        json(&r)["detail"],
        "Your account has been changed: sign in again"
    );
    assert!(
        logged(&w.backend, |p| p.ends_with("/regenerate_token"))
            .await
            .is_empty(),
        "the request never reached the backend"
    );
    assert_eq!(
        w.backend.user("carol").await.unwrap()["token_sha256"],
        account["token_sha256"],
        "the account's token is untouched"
    );
}

/// `POST /users/{id}/regenerate_token` through the sidecar, with one credential header.
async fn regenerate(
    sc: &Sidecar,
    id: u64,
    credential: (&str, &str),
) -> http::Response<bytes::Bytes> {
    let path = format!("/users/{id}/regenerate_token");
    send(request("POST", &sc.url(&path), &[credential], body("")))
        .await
        .unwrap()
}

/// OpenRag 1.1.8's users list has no email, so "differs from the backend" cannot be told from
/// it: the sidecar remembers what it last wrote and writes again only when the claim changed.
#[tokio::test]
async fn claims_are_written_only_when_they_changed_even_without_email_in_the_users_list() {
    let dave = token(4);
    let w = world_with(
        Backend::start_with(
            json!([seeded("dave", Some(&dave))]),
            &["--generation", "1.1.8"],
        ),
        json!({"dave": dave}),
        &[
            ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file"),
            ("OIDC_CLAIM_MAPPING", "display_name:name,email:email"),
        ],
    )
    .await;
    let crate::openrag::World {
        idp,
        _redis: redis,
        backend,
        sc,
        _dir: dir,
    } = w;
    let patches = || async {
        logged(&backend, |p| p.starts_with("/users/"))
            .await
            .into_iter()
            .filter(|e| e["method"] == "PATCH")
            .count()
    };
    login(&sc.sidecar, "dave", "/").await;
    assert_eq!(patches().await, 1, "the first login syncs");
    reset_log(&backend).await;
    // A restarted sidecar (same port, key and Redis; nothing in memory) logs dave in again.
    let (port, key) = (sc.sidecar.addr.port(), sc.key.clone());
    drop(sc);
    let token_file = dir.path().join("tokens.json");
    let env = [
        ("SSO_SIDECAR_IDENTITY", "openrag".to_string()),
        ("AUTH_TOKEN", crate::openrag::ADMIN_TOKEN.to_string()),
        ("SSO_SIDECAR_REDIS_URL", redis.url()),
        (
            "SSO_SIDECAR_OPENRAG__TOKEN_FILE",
            token_file.to_str().unwrap().to_string(),
        ),
        ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file".to_string()),
        (
            "OIDC_CLAIM_MAPPING",
            "display_name:name,email:email".to_string(),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let again = start_oidc_sidecar_with_key(&key, port, &idp.issuer(), &backend.url(), &env).await;
    login(&again.sidecar, "dave", "/").await;
    assert_eq!(
        patches().await,
        0,
        "nothing changed since the last write (the users list shows no email): nothing written"
    );
}

/// A token file written before a link moved (or with a typo) maps a user to another account's
/// token: it is not used, and the user never acts as that account.
#[tokio::test]
async fn a_token_file_entry_holding_another_accounts_token_is_not_used() {
    let users = json!([
        seeded("alice", Some(&token(1))),
        seeded("bob", Some(&token(2)))
    ]);
    let w = world_with(
        Backend::start_with(users, &[]),
        json!({"alice": token(2)}),
        &[("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file")],
    )
    .await;
    let r = callback_of(&w.sc.sidecar, "alice", "/", None).await;
    assert_eq!(r.status(), 403, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(
        json(&r)["detail"],
        "No OpenRag token is available for this user"
    );
    assert!(
        set_cookie(&r, "sso_sidecar_session").is_none(),
        "no session"
    );
}

/// An operator who links their own IdP account to the administrator's OpenRag account (user 1,
/// whose token is `AUTH_TOKEN`) must not cut the sidecar off: its token is never regenerated,
/// not by the policy at login, nor by a request of that session or its bearer.
#[tokio::test]
async fn the_token_of_the_account_auth_token_belongs_to_is_never_regenerated() {
    let w = world_with(
        Backend::start_with(json!([]), &["--generation", "1.1.8"]),
        json!({}),
        &[("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "regenerate")],
    )
    .await;
    w.backend.link(1, "root").await;
    let before = w.backend.admin("GET", "/users/1").await;
    let sc = &w.sc.sidecar;
    let l = login(sc, "root", "/").await;
    let cookie = session_header(&l.cookie);
    let me = get(&sc.url("/users/info"), &[("cookie", &cookie)])
        .await
        .unwrap();
    assert_eq!(json(&me)["id"], 1, "{}", String::from_utf8_lossy(me.body()));
    for credential in [
        ("cookie", cookie.as_str()),
        ("authorization", "Bearer admin-token-for-tests-0123456789"),
    ] {
        let r = regenerate(sc, 1, credential).await;
        assert_eq!(r.status(), 403, "{}", String::from_utf8_lossy(r.body()));
        // Spellings the backend reads as 1 (pydantic) and a plain comparison does not.
        for spelling in ["+1", "%2B1", "1_0", "-0"] {
            let path = format!("/users/{spelling}/regenerate_token");
            let r = send(request("POST", &sc.url(&path), &[credential], body("")))
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                400,
                "{spelling}: {}",
                String::from_utf8_lossy(r.body())
            );
        }
    }
    let after = w.backend.admin("GET", "/users/1").await;
    assert_eq!(after["id"], 1, "AUTH_TOKEN still works: {after}");
    assert_eq!(before, after);
}

/// The regenerate route's bearer is checked by asking the backend whose token it is: a junk
/// bearer's refusal is a failed authentication the backend charges to the address it sees.
/// Charged to the client (its address sent as `X-Forwarded-For`), not to the sidecar, whose
/// admin calls (every login) share its own budget: four junk bearers from four addresses once
/// made the backend answer the sidecar 429, and every login failed.
#[tokio::test]
async fn junk_bearers_on_the_regenerate_route_do_not_spend_the_sidecars_own_failure_budget() {
    let alice = token(1);
    let w = world_with(
        Backend::start_with(
            json!([seeded("alice", Some(&alice))]),
            &["--auth-failure-limit", "3"],
        ),
        json!({"alice": alice}),
        &[
            ("SSO_SIDECAR_TRUSTED_PROXIES", "127.0.0.1/32"),
            ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file"),
        ],
    )
    .await;
    let sc = &w.sc.sidecar;
    for i in 1..=4 {
        let (bearer, xff) = (format!("Bearer or-junk{i}"), format!("203.0.113.{i}"));
        let r = send(request(
            "POST",
            &sc.url("/users/2/regenerate_token"),
            &[("authorization", &bearer), ("x-forwarded-for", &xff)],
            body(""),
        ))
        .await
        .unwrap();
        assert_eq!(r.status(), 401, "{}", String::from_utf8_lossy(r.body()));
    }
    let cb = crate::openrag::callback(sc, "alice", false).await;
    assert_eq!(cb.status(), 302, "{}", String::from_utf8_lossy(cb.body()));
}

/// Behind an ingress (a trusted proxy), the chain sent upstream ends at the client, not at the
/// ingress: the backend trusts only the sidecar and reads the right-most entry as the client.
/// When the ingress was there, four junk bearers from four clients were four failed
/// authentications the backend charged to the ingress, and every user behind it got 429.
#[tokio::test]
async fn junk_bearers_behind_an_ingress_are_charged_to_their_clients_not_to_the_ingress() {
    let alice = token(2);
    let w = world_with(
        Backend::start_with(
            json!([seeded("alice", Some(&alice))]),
            &["--auth-failure-limit", "3"],
        ),
        json!({"alice": alice}),
        &[
            ("SSO_SIDECAR_TRUSTED_PROXIES", "127.0.0.2/32"),
            ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file"),
        ],
    )
    .await;
    let sc = &w.sc.sidecar;
    let via_ingress = |client: &str, auth: &str| {
        format!(
            "GET /v1/models HTTP/1.1\r\nHost: {}\r\n{auth}\r\nX-Forwarded-For: {client}\r\nConnection: close\r\n\r\n",
            sc.addr
        )
    };
    for i in 1..=4 {
        let raw = via_ingress(
            &format!("203.0.113.{i}"),
            &format!("Authorization: Bearer or-junk{i}"),
        );
        let r = crate::hardening::exchange_from("127.0.0.2", sc.addr, raw.as_bytes()).await;
        assert!(r.starts_with("HTTP/1.1 401"), "the backend refused it: {r}");
    }
    let cookie = session_header(&login(sc, "alice", "/").await.cookie);
    let raw = via_ingress("198.51.100.1", &format!("Cookie: {cookie}"));
    let r = crate::hardening::exchange_from("127.0.0.2", sc.addr, raw.as_bytes()).await;
    assert!(
        r.starts_with("HTTP/1.1 200"),
        "a user behind the ingress was refused: {r}"
    );
}

/// A login writes the user's changed claims to the backend (here slowly) between reading the
/// vaulted token and vaulting it again; a regeneration through another session meanwhile
/// vaults a newer token (the one read is dead now). The login takes the newer one: it used to
/// write the dead one back over it, and under `file` its session then got 403 for good.
#[tokio::test]
async fn a_login_does_not_write_back_a_token_regenerated_while_it_wrote_the_claims() {
    let alice = token(0x31);
    let w = world_with(
        Backend::start(json!([seeded("alice", Some(&alice))])),
        json!({"alice": alice}),
        &[
            ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file"),
            ("OIDC_CLAIM_MAPPING", "email:email"),
        ],
    )
    .await;
    let sc = &w.sc.sidecar;
    let first = session_header(&login(sc, "alice", "/").await.cookie);
    let id = w.backend.user("alice").await.unwrap()["id"]
        .as_u64()
        .unwrap();
    // The next login has a claim to write, and the backend takes 2 s to write it.
    let account = format!("{}/__test/account?sub=alice", w.idp.issuer());
    let claims = json!({"email": "alice@new.example", "email_verified": true}).to_string();
    let r = send(request(
        "POST",
        &account,
        &[("content-type", "application/json")],
        body(claims),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    w.backend.hook("slow-patch?ms=2000").await;
    let slow = format!("{}/__test/slow-patch", w.backend.url());
    let begun = || async { json(&get(&slow, &[]).await.unwrap())["begun"].as_u64() };
    let before = begun().await.unwrap();
    let regenerate_meanwhile = async {
        wait_for(|| async { begun().await == Some(before + 1) }).await;
        let r = regenerate(sc, id, ("cookie", &first)).await;
        assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
        json(&r)["token"].as_str().unwrap().to_owned()
    };
    let (second, regenerated) = tokio::join!(login(sc, "alice", "/"), regenerate_meanwhile);
    let second = session_header(&second.cookie);
    let want = format!("Bearer {regenerated}");
    assert_eq!(ok_as(sc, &second, "/v1/b", "alice").await, want);
    assert_eq!(ok_as(sc, &first, "/v1/a", "alice").await, want);
}

/// Polls `check` every 50 ms for up to 10 s.
async fn wait_for<F, Fut>(check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "never happened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// OpenRag takes `?token=` on `/static*` (its only credential there): a script's link to a
/// file, without a session, reaches the backend to be judged, as a bearer does elsewhere,
/// instead of being sent to the login.
#[tokio::test]
async fn a_static_link_with_its_own_token_is_judged_by_the_backend_without_a_session() {
    let alice = token(1);
    let w = world(json!([seeded("alice", Some(&alice))]), json!({}), &[]).await;
    let sc = &w.sc.sidecar;
    let r = get(&sc.url(&format!("/static/a.pdf?token={alice}")), &[])
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(json(&r)["user"]["external_user_id"], "alice");
    let r = get(&sc.url("/static/a.pdf?token=or-not-a-token"), &[])
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "refused by the backend: 401, no login");
    // Without one, as before: the page of a browser, sent to the login.
    let r = get(&sc.url("/static/a.pdf"), &[]).await.unwrap();
    assert_eq!(r.status(), 302);
}

/// An IdP with self-registration lets anyone claim any email, unverified: Mallory signing in
/// first with Alice's address once got a backend account holding it (found by it, and Alice's
/// first login refused as "email taken", 409). An unverified email is never written now.
#[tokio::test]
async fn an_unverified_email_is_not_written_to_the_backend_and_blocks_no_one() {
    let w = crate::openrag::world_in(
        &[(
            "ACCOUNTS_JSON",
            &json!({"mallory": {"email": "alice@example.test", "email_verified": false}})
                .to_string(),
        )],
        Backend::start(json!([])),
        json!({}),
        &[
            ("OIDC_AUTO_PROVISION_LOGIN", "true"),
            ("OIDC_CLAIM_MAPPING", "email:email"),
        ],
    )
    .await;
    let sc = &w.sc.sidecar;
    login(sc, "mallory", "/").await;
    let m = w
        .backend
        .user("mallory")
        .await
        .expect("mallory was created");
    assert!(m["email"].is_null(), "an unverified email was written: {m}");
    let r = crate::openrag::callback(sc, "alice", false).await;
    assert_eq!(r.status(), 302, "{}", String::from_utf8_lossy(r.body()));
    let a = w.backend.user("alice").await.expect("alice was created");
    assert_eq!(a["email"], "alice@example.test");
}
