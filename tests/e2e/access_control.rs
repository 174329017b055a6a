//! Access control end to end (issue 13): group → partition sync against the stand-in OpenRag
//! backend's partition API, who may log in (`[authz]` allow-lists, at the callback and at every
//! refresh), path rules, and OpenRag's rate limits shared by two replicas on one Redis. The real
//! IdP (oidc-provider) issues the groups claim; its `/__test/account` hook changes a user's
//! claims between a login and a refresh.

use crate::oidc_support::*;
use crate::openrag::{callback, token, world_in, Backend, World};
use crate::support::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Past the refresh point of a 4 s access token (refreshed in its last quarter).
const PAST_DUE: Duration = Duration::from_millis(3300);

/// The real IdP (`accounts` as its ACCOUNTS_JSON, 4 s access tokens), Redis, `backend`, and an
/// OpenRag-identity sidecar with `env`; users' tokens come from a token file (`tokens`).
async fn world(accounts: Value, backend: Backend, tokens: Value, env: &[(&str, &str)]) -> World {
    let accounts = accounts.to_string();
    let mut all = vec![("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file")];
    all.extend_from_slice(env);
    world_in(
        &[("ACCOUNTS_JSON", &accounts), ("ACCESS_TOKEN_TTL", "4")],
        backend,
        tokens,
        &all,
    )
    .await
}

/// Merges `claims` into the IdP account `sub` (the next token carries them).
async fn set_account(idp: &Idp, sub: &str, claims: Value) {
    let r = send(request(
        "POST",
        &format!("{}/__test/account?sub={sub}", idp.issuer()),
        &[("content-type", "application/json")],
        body(claims.to_string()),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.body());
}

/// `partition → role` of backend user `id`, as `GET /users/{id}` reports them.
async fn memberships(b: &Backend, id: u64) -> Vec<(String, String)> {
    let u = b.admin("GET", &format!("/users/{id}")).await;
    let mut out: Vec<(String, String)> = u["memberships"]
        .as_array()
        .unwrap_or_else(|| panic!("no memberships in {u}"))
        .iter()
        .map(|m| {
            (
                m["partition"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// A request with the session that refreshes it once its access token is due.
async fn refreshed(sc: &Sidecar, cookie: &str) -> u16 {
    tokio::time::sleep(PAST_DUE).await;
    get(
        &sc.url("/v1/after-refresh"),
        &[("cookie", &session_header(cookie))],
    )
    .await
    .unwrap()
    .status()
    .as_u16()
}

async fn dump(b: &Backend) -> String {
    String::from_utf8(
        get(&format!("{}/__test/dump", b.url()), &[])
            .await
            .unwrap()
            .body()
            .to_vec(),
    )
    .unwrap()
}

/// A backend with `partitions` and alice (holding `memberships`), an IdP that gives her
/// `groups`, and group sync with pruning on; alice's backend id.
async fn alice_with_groups(memberships: Value, partitions: &str, groups: Value) -> (World, u64) {
    let alice_token = token(1);
    let backend = Backend::start_with(
        json!([{
            "display_name": "Alice", "external_user_id": "alice", "email": "alice@example.test",
            "is_admin": false, "token": alice_token, "memberships": memberships
        }]),
        &["--partitions", partitions],
    );
    let w = world(
        json!({"alice": {"groups": groups}}),
        backend,
        json!({"alice": alice_token}),
        &[
            ("OIDC_CLAIM_GROUPS", "groups"),
            ("OIDC_GROUP_SYNC_PRUNE", "true"),
        ],
    )
    .await;
    let alice = w.backend.user("alice").await.unwrap()["id"]
        .as_u64()
        .unwrap();
    (w, alice)
}

#[tokio::test]
async fn groups_become_partition_memberships_and_follow_every_refresh() {
    let groups = json!([
        "/openrag/finance/viewer",
        "/openrag/finance/editor",
        "/openrag/hr/owner",
        "/openrag/missing/viewer",
        "staff",
        "/openrag/hr/admin"
    ]);
    let (w, alice) = alice_with_groups(json!({"legal": "owner"}), "finance,hr,legal", groups).await;
    let sc = &w.sc.sidecar;

    let l = login(sc, "alice", "/").await;
    assert_eq!(
        memberships(&w.backend, alice).await,
        pairs(&[("finance", "editor"), ("hr", "owner")]),
        "added with the highest role, the unknown partition skipped, legal pruned"
    );
    // The log reaches `output()` through a reader thread, maybe after the login's answer.
    wait_until(
        "the missing partition to be logged",
        Duration::from_secs(10),
        || sc.output().contains("no such partition"),
    )
    .await;

    // The IdP changes the groups: the next refresh brings them.
    set_account(&w.idp, "alice", json!({"groups": ["/openrag/hr/viewer"]})).await;
    assert_eq!(refreshed(sc, &l.cookie).await, 200);
    assert_eq!(
        memberships(&w.backend, alice).await,
        pairs(&[("hr", "viewer")]),
        "updated and pruned after the refresh"
    );

    // A missing claim never prunes.
    set_account(&w.idp, "alice", json!({"groups": null})).await;
    assert_eq!(refreshed(sc, &l.cookie).await, 200);
    assert_eq!(
        memberships(&w.backend, alice).await,
        pairs(&[("hr", "viewer")])
    );

    // An explicit empty list does.
    set_account(&w.idp, "alice", json!({"groups": []})).await;
    assert_eq!(refreshed(sc, &l.cookie).await, 200);
    assert_eq!(memberships(&w.backend, alice).await, pairs(&[]));
    let admin = w.backend.admin("GET", "/users/1").await;
    assert_eq!(admin["is_admin"], true, "nothing else changed");
    assert_eq!(
        w.backend.user("alice").await.unwrap()["is_admin"],
        false,
        "is_admin is never derived from groups"
    );
}

#[tokio::test]
async fn without_super_admin_mode_the_sync_is_refused_and_the_login_goes_on() {
    let alice_token = token(2);
    let backend = Backend::start_with(
        json!([{"display_name": "Alice", "external_user_id": "alice", "email": "a@example.test",
                "is_admin": false, "token": alice_token}]),
        &["--partitions", "finance", "--super-admin-mode", "false"],
    );
    let w = world(
        json!({"alice": {"groups": ["/openrag/finance/viewer"]}}),
        backend,
        json!({"alice": alice_token}),
        &[("OIDC_CLAIM_GROUPS", "groups")],
    )
    .await;
    let sc = &w.sc.sidecar;
    let l = login(sc, "alice", "/").await;
    let r = get(&sc.url("/v1/x"), &[("cookie", &session_header(&l.cookie))])
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the login works");
    let alice = w.backend.user("alice").await.unwrap()["id"]
        .as_u64()
        .unwrap();
    assert!(memberships(&w.backend, alice).await.is_empty());
    // A second login: the refusal is logged at WARN once per partition.
    login(sc, "alice", "/").await;
    // The group sync's lines come before the login's own success line: both logins' are in.
    wait_until("both logins logged", Duration::from_secs(10), || {
        sc.output().matches("OIDC login success").count() >= 2
    })
    .await;
    let out = sc.logged("SUPER_ADMIN_MODE=true").await;
    assert_eq!(
        out.matches("SUPER_ADMIN_MODE=true").count(),
        1,
        "one warning per partition: {out}"
    );
}

#[tokio::test]
async fn refused_logins_get_a_page_no_session_and_leave_the_backend_untouched() {
    let backend = Backend::start_with(
        json!([{"display_name": "Frank", "external_user_id": "frank", "email": "old@example.test",
                "is_admin": false, "token": token(6)}]),
        &[],
    );
    let w = world(
        json!({
            "carol": {"groups": ["other"]},
            "dave": {"email": "dave@evil.example"},
            "erin": {"email_verified": false},
            "frank": {"email": "new@example.test"},
        }),
        backend,
        json!({}),
        &[
            ("SSO_SIDECAR_AUTHZ__ALLOWED_GROUPS", "staff"),
            ("SSO_SIDECAR_AUTHZ__ALLOWED_EMAIL_DOMAINS", "example.test"),
            ("OIDC_AUTO_PROVISION_LOGIN", "true"),
            ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "deny"),
        ],
    )
    .await;
    let sc = &w.sc.sidecar;
    let before = dump(&w.backend).await;
    for (user, reason) in [
        ("carol", "group"),
        ("dave", "email"),
        ("erin", "email_unverified"),
    ] {
        let r = callback(sc, user, true).await;
        assert_eq!(r.status(), 403, "{user}");
        let page = String::from_utf8_lossy(r.body()).into_owned();
        assert!(page.contains("not allowed"), "{user}: {page}");
        assert!(page.contains(user), "the page shows the sub: {page}");
        assert!(page.contains("Request id"), "{page}");
        assert!(
            set_cookie(&r, "sso_sidecar_session").is_none_or(|c| c.is_empty()),
            "no session for {user}"
        );
        let m = metrics(sc).await;
        assert_eq!(
            metric(
                &m,
                &format!("sso_sidecar_logins_refused_total{{reason=\"{reason}\"}}")
            ),
            1.0,
            "{m}"
        );
    }
    // An existing user refused for want of a token (policy deny): no claim synced either.
    let r = callback(sc, "frank", true).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        dump(&w.backend).await,
        before,
        "the backend's users table is unchanged, byte for byte"
    );
    // And an allowed user gets in (auto-provisioned).
    let r = callback(sc, "alice", false).await;
    assert_eq!(r.status(), 302, "{:?}", r.body());
    assert!(w.backend.user("alice").await.is_some());
}

#[tokio::test]
async fn a_user_removed_from_the_allowed_group_loses_the_session_at_the_next_refresh() {
    let alice_token = token(3);
    let backend = Backend::start_with(
        json!([{"display_name": "Alice", "external_user_id": "alice", "email": "alice@example.test",
                "is_admin": false, "token": alice_token}]),
        &[],
    );
    let w = world(
        json!({}),
        backend,
        json!({"alice": alice_token}),
        &[("SSO_SIDECAR_AUTHZ__ALLOWED_GROUPS", "staff")],
    )
    .await;
    let sc = &w.sc.sidecar;
    let l = login(sc, "alice", "/").await;
    assert_eq!(refreshed(sc, &l.cookie).await, 200, "still in the group");
    set_account(&w.idp, "alice", json!({"groups": ["alumni"]})).await;
    assert_eq!(refreshed(sc, &l.cookie).await, 401, "the session ended");
    let r = get(&sc.url("/v1/x"), &[("cookie", &session_header(&l.cookie))])
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "and stays ended");
    let m = metrics(sc).await;
    assert_eq!(
        metric(&m, "sso_sidecar_logins_refused_total{reason=\"group\"}"),
        1.0
    );
}

#[tokio::test]
async fn path_rules_refuse_before_the_upstream_and_reload_on_sighup() {
    let idp_port = free_port();
    let port = free_port();
    let idp = Idp::start(
        idp_port,
        &[(
            "RP_REDIRECT_URIS",
            &format!("http://127.0.0.1:{port}/auth/callback"),
        )],
    );
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sso.toml");
    let rules = |admin_groups: &str| {
        format!(
            "[[authz.rules]]\npath = \"/admin/*\"\ngroups = [{admin_groups}]\n\n\
             [[authz.rules]]\npath = \"/v1/*\"\nmethods = [\"POST\", \"DELETE\"]\ngroups = [\"writers\"]\n"
        )
    };
    let bearer_passes = "[authz]\nbearer_on_ruled_paths = \"pass\"\n\n";
    std::fs::write(&file, rules("\"admins\"")).unwrap();
    let cfg = file.to_str().unwrap().to_owned();
    let sc = start_oidc_sidecar(
        port,
        &idp.issuer(),
        &up.url(),
        &[
            ("SSO_SIDECAR_CONFIG", &cfg),
            ("SSO_SIDECAR_PATHS__BEARER_PASSTHROUGH", "true"),
            ("SSO_SIDECAR_TRUSTED_ORIGINS", "https://ui.example.test"),
            ("SSO_SIDECAR_FORWARD_PREFLIGHTS", "true"),
        ],
    )
    .await;
    let sc = &sc.sidecar;
    let l = login(sc, "alice", "/").await; // groups: staff, alice-group
    let cookie = session_header(&l.cookie);
    let call = |method: &'static str, path: &'static str, html: bool| {
        let cookie = cookie.clone();
        async move {
            let mut h = vec![("cookie", cookie.as_str())];
            if html {
                h.push(("accept", "text/html"));
            }
            send(request(method, &sc.url(path), &h, body("")))
                .await
                .unwrap()
        }
    };

    let r = call("GET", "/admin/users", false).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        json(&r),
        json!({"detail": "Forbidden"}),
        "the sidecar's answer"
    );
    let r = call("GET", "/admin/users", true).await;
    assert_eq!(r.status(), 403);
    assert!(String::from_utf8_lossy(r.body()).contains("<h1>403"));
    let r = call("POST", "/v1/chat", false).await;
    assert_eq!(r.status(), 403, "POST is ruled");
    // As a backend may read them: the method in lower case, a method named in a header, the
    // path in another case, with a trailing slash, or decoded twice.
    for (method, path) in [
        ("delete", "/v1/chat"),
        ("GET", "/admin"),
        ("GET", "/Admin.json"),
        ("GET", "/ADMIN/users"),
        ("GET", "/admin/users/"),
        ("GET", "/%2561dmin/users"),
    ] {
        assert_eq!(
            call(method, path, false).await.status(),
            403,
            "{method} {path}"
        );
    }
    let override_header = [
        ("cookie", cookie.as_str()),
        ("x-http-method-override", "DELETE"),
    ];
    let r = send(request(
        "GET",
        &sc.url("/v1/chat"),
        &override_header,
        body(""),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 403, "GET naming DELETE is ruled as a DELETE");
    // Nor a WebSocket opened there.
    let (_, head) =
        crate::streaming::ws_to(sc.addr, "/admin/ws", &format!("Cookie: {cookie}\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    // A list in one field, whose first name Express's `method-override` takes.
    let r = send(request(
        "POST",
        &sc.url("/v1/models"),
        &[
            ("cookie", cookie.as_str()),
            ("x-http-method-override", "DELETE, GET"),
        ],
        body(""),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 403, "POST naming DELETE first");
    // And one naming it in the query, as Rails, Laravel and Symfony read it.
    for path in ["/v1/chat?_method=DELETE", "/v1/chat?a=1&%5Fmethod=delete"] {
        let r = call("GET", path, false).await;
        assert_eq!(r.status(), 403, "{path}");
    }
    let r = call("GET", "/v1/models", false).await;
    assert_eq!(r.status(), 200, "GET is not");
    assert_eq!(json(&r)["path"], "/v1/models", "forwarded");
    let r = call("GET", "/elsewhere", false).await;
    assert_eq!(r.status(), 200, "no rule: allowed");
    // Other spellings of a ruled path, which the backend reads as the ruled path (it decodes
    // `%61`, merges slashes, drops `;` parameters, runs GET for HEAD): refused the same.
    for (method, path) in [
        ("GET", "/%61dmin/users"),
        ("GET", "//admin/users"),
        ("GET", "/admin;x/users"),
        ("HEAD", "/admin/users"),
        ("POST", "/%761/chat"),
        ("POST", "//v1//chat"),
    ] {
        let r = call(method, path, false).await;
        assert_eq!(r.status(), 403, "{method} {path}");
    }
    // A `%` that starts no escape could make one once the rest is decoded: refused.
    for path in ["/%6%31dmin/users", "/%%36%31dmin/users"] {
        let r = call("GET", path, false).await;
        assert_eq!(r.status(), 400, "{path}");
    }
    // The canonical form is what the upstream gets.
    let r = call("GET", "/%65lsewhere//x%7e", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["path"], "/elsewhere/x~", "forwarded as decoded");
    // A bearer without a session cannot show its groups, and any user can mint a backend
    // token: not forwarded where a rule applies (in any reading), forwarded elsewhere.
    let bearer = |method: &'static str, path: &'static str| async move {
        let h = [("authorization", "Bearer minted-by-alice")];
        send(request(method, &sc.url(path), &h, body("")))
            .await
            .unwrap()
            .status()
    };
    assert_eq!(bearer("GET", "/admin/users").await, 403);
    assert_eq!(bearer("GET", "/Admin/users.json").await, 403);
    assert_eq!(bearer("DELETE", "/v1/chat").await, 403);
    assert_eq!(bearer("GET", "/v1/models").await, 200, "no rule for GET");
    assert_eq!(bearer("GET", "/elsewhere").await, 200);
    // Nor beside a session the request may not use (a cross-site request carries the cookie
    // but goes on as its bearer alone).
    let h = [
        ("cookie", cookie.as_str()),
        ("sec-fetch-site", "cross-site"),
        ("authorization", "Bearer minted-by-alice"),
    ];
    let r = send(request("GET", &sc.url("/admin/users"), &h, body("")))
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "cross-site with a bearer");
    assert_eq!(
        json(&r),
        json!({"detail": "Forbidden"}),
        "refused as a bearer on a ruled path (a cross-site refusal says so)"
    );
    // Nor dressed as a trusted origin's CORS preflight (which goes on without identity): a
    // browser's never carries a bearer, nor names a method of its own.
    let preflight = |extra: (&'static str, &'static str), path: &'static str| async move {
        let h = [
            ("origin", "https://ui.example.test"),
            ("access-control-request-method", "DELETE"),
            extra,
        ];
        send(request("OPTIONS", &sc.url(path), &h, body("")))
            .await
            .unwrap()
    };
    let r = preflight(("sec-fetch-mode", "cors"), "/elsewhere").await;
    assert_eq!(
        r.status(),
        200,
        "a browser's preflight reaches the upstream"
    );
    assert_eq!(json(&r)["method"], "OPTIONS");
    // A browser's preflight has the real request's URL: one with `?_method=` goes on without
    // it (a backend overriding OPTIONS would run it unauthenticated as that method).
    let r = preflight(
        ("sec-fetch-mode", "cors"),
        "/elsewhere?a=1&_method=DELETE&b=2",
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["query"], "a=1&b=2", "{}", json(&r));
    let r = preflight(("authorization", "Bearer minted-by-alice"), "/admin/users").await;
    assert_eq!(r.status(), 403, "a bearer on a ruled path");
    let r = preflight(("x-http-method-override", "DELETE"), "/v1/chat").await;
    assert_eq!(r.status(), 401, "a DELETE without a session");
    // Nor beside a session cookie that names no session: forged, or ended by a logout.
    let ended = login(sc, "alice", "/").await.cookie;
    crate::lifecycle::log_out(sc, &ended).await;
    let r = get(
        &sc.url("/elsewhere"),
        &[("cookie", &session_header(&ended))],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401, "the session ended");
    for cookie in [
        session_header(&ended),
        "sso_sidecar_session=forged-value".to_owned(),
    ] {
        let with = |path: &'static str| {
            let cookie = cookie.clone();
            async move {
                let h = [
                    ("cookie", cookie.as_str()),
                    ("authorization", "Bearer minted-by-alice"),
                ];
                send(request("GET", &sc.url(path), &h, body("")))
                    .await
                    .unwrap()
                    .status()
            }
        };
        assert_eq!(with("/admin/users").await, 403, "{cookie}");
        assert_eq!(
            with("/elsewhere").await,
            200,
            "a bearer elsewhere: {cookie}"
        );
    }
    let seen = up.paths().await;
    assert!(
        !seen.iter().any(|p| {
            let p = p.to_ascii_lowercase();
            p.contains("admin") || p.contains("chat") || p.contains("%")
        }),
        "refused requests never reach the upstream: {seen:?}"
    );

    let reloaded = format!("{bearer_passes}{}", rules("\"admins\", \"staff\""));
    std::fs::write(&file, reloaded).unwrap();
    sc.signal("HUP");
    let start = std::time::Instant::now();
    while call("GET", "/admin/users", false).await.status() != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the reloaded rule was not applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        bearer("GET", "/admin/users").await,
        200,
        "bearer_on_ruled_paths = \"pass\": the backend judges it"
    );
}

/// Two replicas on one Redis, both behind a trusted proxy (127.0.0.1).
async fn limited_pair(extra: &[(&str, &str)]) -> (Idp, Redis, Upstream, OidcSidecar, OidcSidecar) {
    let (pa, pb) = (free_port(), free_port());
    let idp = Idp::start(
        0,
        &[(
            "RP_REDIRECT_URIS",
            &format!("http://127.0.0.1:{pa}/auth/callback,http://127.0.0.1:{pb}/auth/callback"),
        )],
    );
    let redis = Redis::start().await;
    let up = Upstream::start();
    let url = redis.url();
    let mut env = vec![
        ("SSO_SIDECAR_REDIS_URL", url.as_str()),
        ("RATE_LIMIT_ENABLED", "true"),
    ];
    env.extend_from_slice(extra);
    let key = sso_sidecar::crypto::generate_key();
    let a = start_oidc_sidecar_with_key(&key, pa, &idp.issuer(), &up.url(), &env).await;
    let b = start_oidc_sidecar_with_key(&key, pb, &idp.issuer(), &up.url(), &env).await;
    (idp, redis, up, a, b)
}

fn limited_429(r: &http::Response<bytes::Bytes>, what: &str) {
    assert_eq!(r.status(), 429, "{what}");
    assert_eq!(
        String::from_utf8_lossy(r.body()),
        r#"{"detail":"Rate limit exceeded. Please retry later.","extra":{}}"#,
        "OpenRag's body"
    );
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
}

#[tokio::test]
async fn rate_limits_are_shared_by_replicas_and_believe_only_trusted_proxies() {
    let (_idp, _redis, _up, a, b) =
        limited_pair(&[("SSO_SIDECAR_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let (a, b) = (&a.sidecar, &b.sidecar);
    let from = |ip: &'static str| [("x-forwarded-for", ip)];

    // /auth/*: 60 a minute, whichever replica answers.
    for i in 0..60 {
        let sc = if i % 2 == 0 { a } else { b };
        let r = get(&sc.url("/auth/login?next=/"), &from("198.51.100.1"))
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "request {}", i + 1);
    }
    limited_429(
        &get(&a.url("/auth/login"), &from("198.51.100.1"))
            .await
            .unwrap(),
        "the 61st /auth/* request",
    );
    limited_429(
        &get(&b.url("/auth/chainlit-session"), &from("198.51.100.1"))
            .await
            .unwrap(),
        "any /auth/* path, not only the sidecar's own routes",
    );
    let r = get(&b.url("/auth/login"), &from("198.51.100.2"))
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "another client has its own budget");

    // Failed authentications: 20 a minute.
    for i in 0..20 {
        let sc = if i % 2 == 0 { a } else { b };
        let r = get(&sc.url("/v1/x"), &from("198.51.100.3")).await.unwrap();
        assert_eq!(r.status(), 401, "failure {}", i + 1);
    }
    limited_429(
        &get(&b.url("/v1/x"), &from("198.51.100.3")).await.unwrap(),
        "the 21st failure",
    );
    let r = get(&a.url("/health_check"), &from("198.51.100.3"))
        .await
        .unwrap();
    assert_ne!(r.status(), 429, "a public path is not what it guesses at");
    let m = format!("{}{}", metrics(a).await, metrics(b).await);
    assert!(
        m.contains("sso_sidecar_rate_limited_total{kind=\"auth\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("sso_sidecar_rate_limited_total{kind=\"failure\"} 1"),
        "{m}"
    );
    for sc in [a, b] {
        assert!(
            !sc.output().contains("is not in trusted_proxies"),
            "a trusted proxy is not warned about: {}",
            sc.output()
        );
    }
}

#[tokio::test]
async fn an_untrusted_peer_cannot_spread_its_failures_over_forged_addresses() {
    let (_idp, _redis, _up, a, _b) = limited_pair(&[]).await;
    let a = &a.sidecar;
    for i in 0..20 {
        let ip = format!("203.0.113.{i}");
        let r = get(&a.url("/v1/x"), &[("x-forwarded-for", &ip)])
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "failure {}", i + 1);
    }
    limited_429(
        &get(&a.url("/v1/x"), &[("x-forwarded-for", "203.0.113.99")])
            .await
            .unwrap(),
        "X-Forwarded-For from an untrusted peer is ignored",
    );
    // An ingress left out of `trusted_proxies` would look like this peer: the operator is told,
    // once, whatever the number of such requests, when they log in (where budgets are spent).
    let warning = "is not in trusted_proxies";
    // Every API request above is in the log (its access line) before the absence is judged.
    wait_until(
        "the API requests' access lines",
        Duration::from_secs(10),
        || a.output().matches("/v1/x").count() >= 21,
    )
    .await;
    assert!(!a.output().contains(warning), "not for API requests");
    for i in 0..3 {
        let ip = format!("203.0.113.{i}");
        let r = get(&a.url("/auth/login?next=/"), &[("x-forwarded-for", &ip)])
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
    }
    wait_until(
        "the untrusted-forwarder warning",
        Duration::from_secs(10),
        || a.output().contains(warning),
    )
    .await;
    assert_eq!(a.output().matches(warning).count(), 1, "{}", a.output());
}

#[tokio::test]
async fn rate_limit_enabled_false_turns_both_off() {
    let (_idp, _redis, _up, a, _b) = limited_pair(&[("RATE_LIMIT_ENABLED", "false")]).await;
    let a = &a.sidecar;
    for _ in 0..70 {
        assert_eq!(get(&a.url("/auth/login"), &[]).await.unwrap().status(), 302);
    }
    for _ in 0..30 {
        assert_eq!(get(&a.url("/v1/x"), &[]).await.unwrap().status(), 401);
    }
}

#[tokio::test]
async fn an_unregistered_sub_is_remembered_for_a_minute() {
    let w = world(json!({}), Backend::start(json!([])), json!({}), &[]).await;
    let sc = &w.sc.sidecar;
    for _ in 0..3 {
        assert_eq!(callback(sc, "nobody", false).await.status(), 403);
    }
    let log = w.backend.requests().await;
    assert_eq!(
        log["by_path"]["/users/"], 1,
        "the users table was listed once: {log}"
    );
}

/// At a refresh, groups are written only to an account known to be the user's: with
/// `GET /users/{id}` failing, the link cannot be confirmed (the account may have been moved to
/// someone else meanwhile), so the session lives on but nothing is synced to that account.
#[tokio::test]
async fn groups_are_not_synced_at_a_refresh_that_cannot_confirm_the_accounts_link() {
    let groups = json!(["/openrag/finance/viewer"]);
    let (w, alice) = alice_with_groups(json!({}), "finance,hr", groups).await;
    let sc = &w.sc.sidecar;
    let l = login(sc, "alice", "/").await;
    assert_eq!(
        memberships(&w.backend, alice).await,
        pairs(&[("finance", "viewer")])
    );
    // The account moved to bob; then the admin API cannot say whose it is, once. Alice's groups
    // changed meanwhile: synced, they would add hr and prune finance from bob's account.
    w.backend.link(alice, "bob").await;
    set_account(&w.idp, "alice", json!({"groups": ["/openrag/hr/viewer"]})).await;
    w.backend.hook("fail-get-user?n=1").await;
    crate::openrag_hardening::reset_log(&w.backend).await;
    assert_eq!(refreshed(sc, &l.cookie).await, 200, "the session lives on");
    let log = w.backend.requests().await;
    let recent = log["last"].as_array().unwrap();
    assert!(
        recent
            .iter()
            .any(|r| r["path"] == format!("/users/{alice}")),
        "the link was asked about: {log}"
    );
    assert!(
        !recent
            .iter()
            .any(|r| r["path"].as_str().unwrap().starts_with("/partition/")),
        "nothing synced: {log}"
    );
    assert_eq!(
        memberships(&w.backend, alice).await,
        pairs(&[("finance", "viewer")]),
        "bob's memberships untouched"
    );
}
