//! The OpenRag identity bridge end to end: the real IdP, a real redis-server, and a stand-in of
//! the OpenRag backend (tests/support/openrag_backend.py, token mode) that only trusts its own
//! per-user tokens.

use crate::oidc_support::*;
use crate::support::*;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};

pub(crate) const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

pub struct Backend {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Backend {
    pub fn start(users: Value) -> Backend {
        Self::start_with(users, &[])
    }

    /// The same with more arguments for the stand-in (`--generation 1.1.8`…).
    pub fn start_with(users: Value, args: &[&str]) -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("users.json");
        std::fs::write(&seed, users.to_string()).unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/support/openrag_backend.py"))
            .args(["--test-hooks", "--users-file", seed.to_str().unwrap()])
            .args(args)
            .env("AUTH_TOKEN", ADMIN_TOKEN)
            .stderr(Stdio::inherit());
        let (child, port) = spawn_ready(cmd, "tests/support/openrag_backend.py");
        Backend {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn users(&self) -> Vec<Value> {
        json(
            &get(&format!("{}/__test/users", self.url()), &[])
                .await
                .unwrap(),
        )["users"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub async fn user(&self, sub: &str) -> Option<Value> {
        self.users()
            .await
            .into_iter()
            .find(|u| u["external_user_id"] == sub)
    }

    /// An admin links backend user `id` to the IdP subject `sub` (its `external_user_id`).
    pub async fn link(&self, id: u64, sub: &str) {
        let r = send(request(
            "PATCH",
            &format!("{}/users/{id}", self.url()),
            &[
                ("authorization", &format!("Bearer {ADMIN_TOKEN}")),
                ("content-type", "application/json"),
            ],
            body(json!({ "external_user_id": sub }).to_string()),
        ))
        .await
        .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.body());
    }

    /// An admin regenerates `sub`'s token at the backend, behind the sidecar's back.
    pub async fn regenerate_behind(&self, sub: &str) {
        let id = self.user(sub).await.unwrap()["id"].as_u64().unwrap();
        self.admin("POST", &format!("/users/{id}/regenerate_token"))
            .await;
    }

    /// Sets one of the stand-in's test hooks: `POST /__test/{hook}` (e.g.
    /// `fail-get-user?n=1`), which answers 204.
    pub async fn hook(&self, hook: &str) {
        let url = format!("{}/__test/{hook}", self.url());
        let r = send(request("POST", &url, &[], body(""))).await.unwrap();
        assert_eq!(r.status(), 204, "{hook}");
    }

    pub async fn requests(&self) -> Value {
        json(
            &get(&format!("{}/__test/requests", self.url()), &[])
                .await
                .unwrap(),
        )
    }

    /// As the admin, through the backend's own API.
    pub async fn admin(&self, method: &str, path: &str) -> Value {
        let r = send(request(
            method,
            &format!("{}{path}", self.url()),
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            body(""),
        ))
        .await
        .unwrap();
        json(&r)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn token(n: u8) -> String {
    format!("or-{}", format!("{n:02x}").repeat(16))
}

pub(crate) struct World {
    pub(crate) idp: Idp,
    pub(crate) _redis: Redis,
    pub(crate) backend: Backend,
    pub(crate) sc: OidcSidecar,
    pub(crate) _dir: tempfile::TempDir,
}

/// `users` seed the backend; `files` is the token file (sub → token); `env` tunes the sidecar.
pub(crate) async fn world(users: Value, files: Value, env: &[(&str, &str)]) -> World {
    world_with(Backend::start(users), files, env).await
}

/// `world` in front of a given stand-in backend.
pub(crate) async fn world_with(backend: Backend, files: Value, env: &[(&str, &str)]) -> World {
    world_in(&[], backend, files, env).await
}

/// `world_with`, the IdP started with `idp_env` too (its accounts, token lifetimes).
pub(crate) async fn world_in(
    idp_env: &[(&str, &str)],
    backend: Backend,
    files: Value,
    env: &[(&str, &str)],
) -> World {
    let port = free_port();
    let redirect = format!("http://127.0.0.1:{port}/auth/callback");
    let mut idp_env = idp_env.to_vec();
    idp_env.push(("RP_REDIRECT_URIS", &redirect));
    let idp = Idp::start(0, &idp_env);
    let redis = Redis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("tokens.json");
    std::fs::write(&token_file, files.to_string()).unwrap();
    let mut all = vec![
        ("SSO_SIDECAR_IDENTITY", "openrag".to_string()),
        ("AUTH_TOKEN", ADMIN_TOKEN.to_string()),
        ("SSO_SIDECAR_REDIS_URL", redis.url()),
        (
            "SSO_SIDECAR_OPENRAG__TOKEN_FILE",
            token_file.to_str().unwrap().to_string(),
        ),
    ];
    all.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
    let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sc = start_oidc_sidecar(port, &idp.issuer(), &backend.url(), &all).await;
    World {
        idp,
        _redis: redis,
        backend,
        sc,
        _dir: dir,
    }
}

pub(crate) fn seeded(sub: &str, tok: Option<&str>) -> Value {
    json!({"display_name": format!("Seeded {sub}"), "external_user_id": sub, "email": format!("{sub}@old.example"), "is_admin": false, "token": tok})
}

/// Starts a login and returns the callback response (the session cookie is in it on success).
pub(crate) async fn callback(
    sc: &Sidecar,
    user: &str,
    accept_html: bool,
) -> http::Response<bytes::Bytes> {
    let start = get(&sc.url("/auth/login?next=/"), &[]).await.unwrap();
    let state = set_cookie(&start, "sso_sidecar_session_state").unwrap();
    let cb = idp_login(&location(&start), user).await;
    let cookie = format!("sso_sidecar_session_state={state}");
    let mut headers = vec![("cookie", cookie.as_str())];
    if accept_html {
        headers.push(("accept", "text/html"));
    }
    get(&cb, &headers).await.unwrap()
}

#[tokio::test]
async fn a_pre_provisioned_user_gets_their_token_injected_on_every_carrier() {
    let alice = token(1);
    let w = world(
        json!([seeded("alice", Some(&alice))]),
        json!({"alice": alice}),
        &[("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file")],
    )
    .await;
    let sc = &w.sc.sidecar;
    let l = login(sc, "alice", "/").await;
    let cookie = format!("{}; theme=dark", session_header(&l.cookie));

    let r = get(
        &sc.url("/v1/models"),
        &[("cookie", &cookie), ("authorization", "Bearer forged")],
    )
    .await
    .unwrap();
    let j = json(&r);
    assert_eq!(j["user"]["external_user_id"], "alice", "{j}");
    assert_eq!(j["auth_via"], "bearer");
    assert_eq!(
        j["headers"]["authorization"][0],
        format!("Bearer {alice}"),
        "the session wins over a client bearer"
    );
    assert_eq!(
        j["cookies"],
        json!(["theme"]),
        "the backend never sees the sidecar's cookie"
    );

    let r = get(
        &sc.url("/static/app.js?v=2&token=forged"),
        &[("cookie", &cookie)],
    )
    .await
    .unwrap();
    let j = json(&r);
    assert_eq!(j["auth_via"], "query");
    assert_eq!(j["user"]["external_user_id"], "alice");
    assert_eq!(
        j["query"],
        format!("v=2&token={alice}"),
        "the client's token parameter is replaced"
    );

    let r = get(
        &sc.url("/chainlit/project/settings"),
        &[(
            "cookie",
            &format!("{cookie}; openrag_chainlit_token=forged"),
        )],
    )
    .await
    .unwrap();
    let j = json(&r);
    assert_eq!(j["auth_via"], "cookie", "{j}");
    assert_eq!(j["user"]["external_user_id"], "alice");
    assert_eq!(j["cookies"], json!(["theme", "openrag_chainlit_token"]));
    // The same over HTTP/2, where a client may send each cookie in a field of its own (RFC
    // 9113 §8.2.3): the forged ones are found in whichever field they come.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let mut req = request("GET", &sc.url("/chainlit/project/settings"), &[], body(""));
    for c in [
        "openrag_chainlit_token=forged",
        cookie.as_str(),
        "openrag_session=forged",
    ] {
        req.headers_mut()
            .append("cookie", http::HeaderValue::from_str(c).unwrap());
    }
    let r = h2.request(req).await.unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2);
    let b = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(j["auth_via"], "cookie", "{j}");
    assert_eq!(j["user"]["external_user_id"], "alice");
    assert_eq!(
        j["cookies"],
        json!(["theme", "openrag_chainlit_token"]),
        "{j}"
    );
    // A client naming the carriers hop-by-hop (`Connection: authorization, cookie`) does not
    // take the user's token away with them: it is written after hop-by-hop removal.
    let hop = [
        ("cookie", cookie.as_str()),
        ("connection", "authorization, cookie"),
    ];
    let j = json(&get(&sc.url("/v1/models"), &hop).await.unwrap());
    assert_eq!(j["auth_via"], "bearer", "{j}");
    assert_eq!(j["user"]["external_user_id"], "alice");
    let j = json(
        &get(&sc.url("/chainlit/project/settings"), &hop)
            .await
            .unwrap(),
    );
    assert_eq!(j["auth_via"], "cookie", "{j}");
    assert_eq!(j["user"]["external_user_id"], "alice");

    let me = json(
        &get(&sc.url("/auth/me"), &[("cookie", &cookie)])
            .await
            .unwrap(),
    );
    assert_eq!(me["sub"], "alice");
    assert_eq!(me["user_id"], 2);

    // The chainlit hand-off is answered by the sidecar: no token ever lands in a browser cookie.
    let before = w.backend.requests().await["total"].as_u64().unwrap();
    for m in ["POST", "DELETE"] {
        let r = send(request(
            m,
            &sc.url("/auth/chainlit-session"),
            &[("cookie", &cookie)],
            body(""),
        ))
        .await
        .unwrap();
        assert_eq!(r.status(), 204, "{m}");
        // Only Chainlit's own session ended (as OpenRag does there), nothing set.
        for c in r.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap();
            assert!(c.starts_with("access_token") && c.contains("=;"), "{c}");
            assert!(c.contains("Max-Age=0"), "{c}");
        }
    }
    assert_eq!(
        w.backend.requests().await["total"].as_u64().unwrap(),
        before
    );
}

#[tokio::test]
async fn an_unregistered_user_is_refused_with_no_session() {
    let w = world(json!([]), json!({}), &[]).await;
    let sc = &w.sc.sidecar;
    let r = callback(sc, "bob", false).await;
    assert_eq!(r.status(), 403);
    assert_eq!(json(&r), json!({"detail": "User not registered"}));
    assert!(
        set_cookie(&r, "sso_sidecar_session").is_none(),
        "no session"
    );
    let page = callback(sc, "bob", true).await;
    assert_eq!(page.status(), 403);
    let text = String::from_utf8_lossy(page.body()).to_string();
    assert!(text.contains("Ask an OpenRag administrator"), "{text}");
    // What the person gives to an administrator, and a way back.
    let request_id = page.headers()["x-request-id"].to_str().unwrap();
    assert!(
        text.contains("<code>bob</code>"),
        "the sub is shown: {text}"
    );
    assert!(
        text.contains(&format!("<code>{request_id}</code>")),
        "{text}"
    );
    assert!(text.contains("<a href=\"/\">"), "{text}");
    // The sub and the level are on the refusal's line.
    let logs = sc.logged("user not registered").await;
    let line = logs
        .lines()
        .find(|l| l.contains("user not registered"))
        .unwrap_or_default();
    assert!(
        line.contains(r#""sub":"bob""#) && line.contains("WARN"),
        "{logs}"
    );
    assert!(w.backend.user("bob").await.is_none(), "nothing was created");
}

#[tokio::test]
async fn auto_provisioning_creates_a_non_admin_user_whose_requests_carry_the_new_token() {
    let w = world(
        json!([]),
        json!({}),
        &[("OIDC_AUTO_PROVISION_LOGIN", "true")],
    )
    .await;
    let sc = &w.sc.sidecar;
    let l = login(sc, "carol", "/").await;
    let u = w.backend.user("carol").await.expect("carol was created");
    assert_eq!(u["display_name"], "Test carol");
    assert_eq!(u["email"], "carol@example.test");
    assert_eq!(u["is_admin"], false);
    assert!(
        u["file_quota"].is_null(),
        "the backend's default quota, not the request model's 10"
    );
    assert!(
        u["token_sha256"].as_str().unwrap().len() == 64,
        "the backend keeps only a hash: {u}"
    );
    let r = get(
        &sc.url("/search/q"),
        &[("cookie", &session_header(&l.cookie))],
    )
    .await
    .unwrap();
    assert_eq!(json(&r)["user"]["external_user_id"], "carol");
    // A second login reuses the vaulted token: no second user, no regeneration.
    let l2 = login(sc, "carol", "/").await;
    let r = get(
        &sc.url("/search/q"),
        &[("cookie", &session_header(&l2.cookie))],
    )
    .await
    .unwrap();
    assert_eq!(json(&r)["user"]["external_user_id"], "carol");
    assert_eq!(
        w.backend
            .users()
            .await
            .iter()
            .filter(|u| u["external_user_id"] == "carol")
            .count(),
        1
    );
    assert_eq!(
        w.backend.user("carol").await.unwrap()["token_sha256"],
        u["token_sha256"]
    );
}

#[tokio::test]
async fn claim_mapping_syncs_changed_claims_at_each_login() {
    let dave = token(4);
    let w = world(
        json!([seeded("dave", Some(&dave))]),
        json!({"dave": dave}),
        &[
            ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file"),
            ("OIDC_CLAIM_MAPPING", "display_name:name,email:email"),
        ],
    )
    .await;
    assert_eq!(
        w.backend.user("dave").await.unwrap()["display_name"],
        "Seeded dave"
    );
    login(&w.sc.sidecar, "dave", "/").await;
    let u = w.backend.user("dave").await.unwrap();
    assert_eq!(u["display_name"], "Test dave");
    assert_eq!(u["email"], "dave@example.test");
    assert_eq!(u["is_admin"], false, "never written from claims");
}

#[tokio::test]
async fn deny_and_regenerate_policies() {
    let old = token(5);
    let w = world(
        json!([seeded("erin", Some(&old)), seeded("frank", Some(&token(6)))]),
        json!({}),
        &[],
    )
    .await;
    // deny (the default): a 403 that says what the admin must do, and no session.
    let r = callback(&w.sc.sidecar, "frank", true).await;
    assert_eq!(r.status(), 403);
    assert!(
        String::from_utf8_lossy(r.body()).contains("token_policy"),
        "{:?}",
        r.body()
    );
    assert!(set_cookie(&r, "sso_sidecar_session").is_none());

    // regenerate: a new token is minted, and the user's previous one stops working.
    let port = free_port();
    let idp = Idp::start(
        0,
        &[(
            "RP_REDIRECT_URIS",
            &format!("http://127.0.0.1:{port}/auth/callback"),
        )],
    );
    let sc = start_oidc_sidecar(
        port,
        &idp.issuer(),
        &w.backend.url(),
        &[
            ("SSO_SIDECAR_IDENTITY", "openrag"),
            ("AUTH_TOKEN", ADMIN_TOKEN),
            ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "regenerate"),
        ],
    )
    .await;
    let l = login(&sc.sidecar, "erin", "/").await;
    let r = get(
        &sc.sidecar.url("/v1/x"),
        &[("cookie", &session_header(&l.cookie))],
    )
    .await
    .unwrap();
    assert_eq!(json(&r)["user"]["external_user_id"], "erin");
    let direct = get(
        &format!("{}/v1/x", w.backend.url()),
        &[("authorization", &format!("Bearer {old}"))],
    )
    .await
    .unwrap();
    assert_eq!(
        direct.status(),
        403,
        "the previous token was invalidated by the regeneration"
    );
}

#[tokio::test]
async fn a_token_revoked_at_the_backend_is_recovered_once_without_a_loop() {
    let w = world(
        json!([seeded("gina", Some(&token(7)))]),
        json!({}),
        &[("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "regenerate")],
    )
    .await;
    let sc = &w.sc.sidecar;
    let l = login(sc, "gina", "/").await;
    let cookie = session_header(&l.cookie);
    assert_eq!(
        get(&sc.url("/v1/a"), &[("cookie", &cookie)])
            .await
            .unwrap()
            .status(),
        200
    );

    // An admin regenerates gina's token behind the sidecar's back.
    w.backend.regenerate_behind("gina").await;
    send(request(
        "DELETE",
        &format!("{}/__test/requests", w.backend.url()),
        &[],
        body(""),
    ))
    .await
    .unwrap();

    let r = get(&sc.url("/v1/b"), &[("cookie", &cookie)]).await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "recovered and replayed: {}",
        String::from_utf8_lossy(r.body())
    );
    assert_eq!(json(&r)["user"]["external_user_id"], "gina");
    let log = w.backend.requests().await;
    let statuses: Vec<u64> = log["last"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"] == "/v1/b")
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        statuses,
        vec![403, 200],
        "one refusal, one recovery, no loop: {log}"
    );
    assert_eq!(
        get(&sc.url("/v1/c"), &[("cookie", &cookie)])
            .await
            .unwrap()
            .status(),
        200,
        "the new token sticks"
    );

    // A token file whose token the backend does not know (typo, since revoked).
    let port = free_port();
    let idp = Idp::start(
        0,
        &[(
            "RP_REDIRECT_URIS",
            &format!("http://127.0.0.1:{port}/auth/callback"),
        )],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.json");
    std::fs::write(
        &file,
        json!({"gina": "or-00000000000000000000000000000000"}).to_string(),
    )
    .unwrap();
    let _ = &w.idp;
    let sc2 = start_oidc_sidecar(
        port,
        &idp.issuer(),
        &w.backend.url(),
        &[
            ("SSO_SIDECAR_IDENTITY", "openrag"),
            ("AUTH_TOKEN", ADMIN_TOKEN),
            ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file"),
            ("SSO_SIDECAR_OPENRAG__TOKEN_FILE", file.to_str().unwrap()),
        ],
    )
    .await;
    // The file's token is no token of the backend's (whose it is is asked first): the login is
    // refused at once with a clear 403, rather than a session whose every request is refused.
    send(request(
        "DELETE",
        &format!("{}/__test/requests", w.backend.url()),
        &[],
        body(""),
    ))
    .await
    .unwrap();
    let r = callback_of(&sc2.sidecar, "gina", "/", None).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        json(&r)["detail"],
        "No OpenRag token is available for this user"
    );
    let log = w.backend.requests().await;
    assert!(
        log["by_path"]["/v1/d"].is_null(),
        "nothing forwarded with it: {log}"
    );
}

#[tokio::test]
async fn bearer_pass_through_and_unauthenticated_requests() {
    let w = world(json!([]), json!({}), &[]).await;
    let sc = &w.sc.sidecar;
    let r = get(
        &sc.url("/v1/models"),
        &[("authorization", "Bearer or-not-a-real-token")],
    )
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        401,
        "the backend's 403 Invalid token becomes 401, as OpenRag does in OIDC mode"
    );
    assert_eq!(json(&r), json!({"detail": "Unauthenticated"}));
    let r = get(
        &sc.url("/v1/models"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "programmatic access with a backend token");
    assert_eq!(json(&r)["user"]["id"], 1);

    send(request(
        "DELETE",
        &format!("{}/__test/requests", w.backend.url()),
        &[],
        body(""),
    ))
    .await
    .unwrap();
    for (m, p) in [
        ("GET", "/v1/models"),
        ("POST", "/indexer/partition/x"),
        ("DELETE", "/users/2"),
        ("GET", "/"),
    ] {
        let r = send(request(m, &sc.url(p), &[], body("x"))).await.unwrap();
        assert!(
            r.status() == 401 || r.status() == 302,
            "{m} {p}: {}",
            r.status()
        );
    }
    assert_eq!(
        w.backend.requests().await["total"],
        0,
        "unauthenticated requests never reach the backend"
    );
    assert_eq!(
        get(&sc.url("/health_check"), &[]).await.unwrap().status(),
        200,
        "public paths do"
    );
}

#[tokio::test]
async fn a_browser_login_lands_in_the_backend_as_the_right_user() {
    let ivy = token(9);
    let w = world(
        json!([seeded("ivy", Some(&ivy))]),
        json!({"ivy": ivy}),
        &[("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file")],
    )
    .await;
    let result = browser("login.mjs", &[&w.sc.sidecar.url("/"), "ivy"]).await;
    let page: Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
    assert_eq!(page["user"]["external_user_id"], "ivy");
    assert_eq!(page["auth_via"], "bearer");
}

/// An administrator moves the `external_user_id` link of `alice` to another account after she
/// logged in once. Her next login lands in the account the link names now, with a token of
/// that account: not in the one the sidecar remembered, nor through the old account's token in
/// the vault, whether the sidecar still remembers the old link or (another user's login made it
/// list the users again, as a restart or another replica would) not.
#[tokio::test]
async fn a_login_follows_a_link_moved_to_another_account() {
    let w = world(
        json!([
            seeded("alice", Some(&token(7))),
            seeded("spare", Some(&token(8))),
            seeded("bob", Some(&token(9))),
            seeded("spare2", Some(&token(10)))
        ]),
        json!({}),
        &[("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "regenerate")],
    )
    .await;
    let sc = &w.sc.sidecar;
    let whoami = |cookie: String| async move {
        let r = get(&sc.url("/v1/x"), &[("cookie", &session_header(&cookie))])
            .await
            .unwrap();
        json(&r)["user"].clone()
    };
    let first = whoami(login(sc, "alice", "/").await.cookie).await;
    assert_eq!(first["external_user_id"], "alice", "{first}");
    let (old_id, new_id) = (
        first["id"].as_u64().unwrap(),
        w.backend.user("spare").await.unwrap()["id"]
            .as_u64()
            .unwrap(),
    );
    assert_ne!(old_id, new_id);
    for (id, link) in [(old_id, "alice-before"), (new_id, "alice")] {
        w.backend.link(id, link).await;
    }
    let second = whoami(login(sc, "alice", "/").await.cookie).await;
    assert_eq!(second["id"].as_u64(), Some(new_id), "{second}");
    assert_eq!(second["external_user_id"], "alice");

    // Moved again, and this time bob's first login lists the users (the new link is known)
    // before alice comes back: only the vault still holds the previous account's token.
    let third_id = w.backend.user("spare2").await.unwrap()["id"]
        .as_u64()
        .unwrap();
    for (id, link) in [(new_id, "alice-between"), (third_id, "alice")] {
        w.backend.link(id, link).await;
    }
    let bob = whoami(login(sc, "bob", "/").await.cookie).await;
    assert_eq!(bob["external_user_id"], "bob");
    let third = whoami(login(sc, "alice", "/").await.cookie).await;
    assert_eq!(third["id"].as_u64(), Some(third_id), "{third}");
}

/// A session that began before an administrator moved its link (and revoked the old account's
/// token) recovers into the account the link names now, and then acts as that account: it may
/// not regenerate the old account's token as if it were its own. OpenRag 1.1.8, whose
/// regeneration route checks nothing, so only the sidecar's guard stands in the way.
#[tokio::test]
async fn a_session_recovered_after_a_moved_link_acts_as_the_new_account() {
    let w = world_with(
        Backend::start_with(
            json!([
                seeded("alice", Some(&token(7))),
                seeded("spare", Some(&token(8)))
            ]),
            &["--generation", "1.1.8"],
        ),
        json!({}),
        &[("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "regenerate")],
    )
    .await;
    let sc = &w.sc.sidecar;
    let cookie = session_header(&login(sc, "alice", "/").await.cookie);
    let as_alice = |method: &'static str, path: String| {
        let cookie = cookie.clone();
        async move {
            send(request(
                method,
                &sc.url(&path),
                &[("cookie", &cookie)],
                body(""),
            ))
            .await
            .unwrap()
        }
    };
    let old_id = json(&as_alice("GET", "/v1/a".into()).await)["user"]["id"]
        .as_u64()
        .unwrap();
    let new_id = w.backend.user("spare").await.unwrap()["id"]
        .as_u64()
        .unwrap();
    for (id, link) in [(old_id, "alice-before"), (new_id, "alice")] {
        w.backend.link(id, link).await;
    }
    w.backend
        .admin("POST", &format!("/users/{old_id}/regenerate_token"))
        .await;
    // Alice logs in again meanwhile, in another browser: the new account and a token of its.
    let other = session_header(&login(sc, "alice", "/").await.cookie);
    let as_other = || async {
        let r = get(&sc.url("/v1/other"), &[("cookie", &other)])
            .await
            .unwrap();
        (r.status(), json(&r)["user"]["id"].as_u64())
    };
    assert_eq!(as_other().await, (http::StatusCode::OK, Some(new_id)));
    let token_of_new = w.backend.user("alice").await.unwrap()["token_sha256"].clone();

    let r = as_alice("GET", "/v1/b".into()).await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(
        json(&r)["user"]["id"].as_u64(),
        Some(new_id),
        "recovered as the new account"
    );
    // ... with the token the other login stored: not regenerated from under that session.
    assert_eq!(
        w.backend.user("alice").await.unwrap()["token_sha256"],
        token_of_new
    );
    assert_eq!(as_other().await, (http::StatusCode::OK, Some(new_id)));
    let r = as_alice("POST", format!("/users/{old_id}/regenerate_token")).await;
    assert_eq!(r.status(), 403, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(
        json(&r)["detail"],
        "Admin privileges or self-access required",
        "the sidecar's refusal"
    );
    let r = as_alice("GET", "/v1/c".into()).await;
    assert_eq!(json(&r)["user"]["id"].as_u64(), Some(new_id));
}

/// OpenRag's users API has no search: a login of a user the sidecar does not know yet lists
/// every user. At a roll-out many first logins come at once, and the list can be long; they
/// share listings instead of each fetching it. Six first logins — three users the backend has,
/// three it has not (auto-provisioned) — whose callbacks arrive together while the backend
/// takes 700 ms to list its users: at most two listings (the one under way may have begun
/// before some of them asked; the next one answers all who waited, the new users included),
/// and every login lands, the new users created once each.
#[tokio::test]
async fn a_burst_of_first_logins_shares_the_listing_of_every_user() {
    let known = ["ann", "ben", "cat"];
    let subs = ["ann", "ben", "cat", "dan", "eve", "fay"];
    let users: Vec<Value> = (1u8..)
        .zip(known)
        .map(|(n, s)| seeded(s, Some(&token(n))))
        .collect();
    let tokens: serde_json::Map<String, Value> = (1u8..)
        .zip(known)
        .map(|(n, s)| (s.to_string(), Value::String(token(n))))
        .collect();
    let w = world(
        Value::Array(users),
        Value::Object(tokens),
        &[
            ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file"),
            ("OIDC_AUTO_PROVISION_LOGIN", "true"),
        ],
    )
    .await;
    for r in burst_of_logins(&w, &subs, "ms=700").await {
        assert!(
            r.status().is_redirection() && set_cookie(&r, "sso_sidecar_session").is_some(),
            "{} {:?}",
            r.status(),
            r.body()
        );
    }
    let calls = users_calls(&w).await;
    assert!(
        (1..=2).contains(&calls("GET")),
        "six first logins listed the users {} times",
        calls("GET")
    );
    assert_eq!(calls("POST"), 3, "each new user created once");
    for sub in subs {
        assert!(w.backend.user(sub).await.is_some(), "{sub}");
    }
}

/// Each login through the IdP up to its callback, then every callback at once, the backend's
/// list of users slowed (and perhaps failing) by `hook` (`/__test/slow-list?{hook}`).
pub(crate) async fn burst_of_logins(
    w: &World,
    subs: &[&str],
    hook: &str,
) -> Vec<http::Response<bytes::Bytes>> {
    let sc = &w.sc.sidecar;
    let mut held = Vec::new();
    for sub in subs {
        let start = get(&sc.url("/auth/login?next=/"), &[]).await.unwrap();
        let state = set_cookie(&start, "sso_sidecar_session_state").unwrap();
        held.push((idp_login(&location(&start), sub).await, state));
    }
    let backend = w.backend.url();
    let slow = format!("{backend}/__test/slow-list?{hook}");
    let slow = send(request("POST", &slow, &[], body(""))).await.unwrap();
    assert_eq!(slow.status(), 204);
    let reset = format!("{backend}/__test/requests");
    send(request("DELETE", &reset, &[], body("")))
        .await
        .unwrap();
    let callbacks: Vec<_> = held
        .into_iter()
        .map(|(cb, state)| {
            tokio::spawn(async move {
                let cookie = format!("sso_sidecar_session_state={state}");
                get(&cb, &[("cookie", cookie.as_str())]).await.unwrap()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for c in callbacks {
        answers.push(c.await.unwrap());
    }
    answers
}

/// How many calls of a method on `/users/` the backend logged since the burst.
async fn users_calls(w: &World) -> impl Fn(&str) -> usize {
    let log = w.backend.requests().await;
    assert!(
        log["total"].as_u64().unwrap() < 50,
        "the log keeps the last 50: {log}"
    );
    move |method: &str| {
        let last = log["last"].as_array().unwrap();
        let of = |e: &&Value| e["method"] == method && e["path"] == "/users/";
        last.iter().filter(of).count()
    }
}

/// A listing that fails answers the logins that waited for it with its failure: three first
/// logins whose callbacks arrive while a 700 ms listing fails list at most twice (not once
/// each, one after another, each paying the wait), are refused 502, and create nothing.
#[tokio::test]
async fn logins_that_waited_for_a_failed_listing_share_its_failure() {
    let w = world(
        json!([]),
        json!({}),
        &[("OIDC_AUTO_PROVISION_LOGIN", "true")],
    )
    .await;
    for r in burst_of_logins(&w, &["gus", "hal", "ian"], "ms=700&fail=1").await {
        assert_eq!(r.status(), 502, "{:?}", r.body());
    }
    let calls = users_calls(&w).await;
    assert!(
        (1..=2).contains(&calls("GET")),
        "three first logins listed the users {} times",
        calls("GET")
    );
    assert_eq!(calls("POST"), 0, "nothing created");
}

/// An administrator who moves a user's link to another `sub` (or deletes the user) ends the
/// sessions acting as that account at their next refresh. Before, a session kept acting as the
/// account, refreshing normally, for the rest of `session_lifetime` (7 days by default).
#[tokio::test]
async fn a_session_ends_at_its_refresh_once_its_account_is_linked_elsewhere() {
    let alice = token(11);
    let w = world_in(
        &[("ACCESS_TOKEN_TTL", "4")],
        Backend::start(json!([seeded("alice", Some(&alice))])),
        json!({"alice": alice}),
        &[("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file")],
    )
    .await;
    let sc = &w.sc.sidecar;
    let cookie = session_header(&login(sc, "alice", "/").await.cookie);
    let whoami = || async { get(&sc.url("/v1/x"), &[("cookie", &cookie)]).await.unwrap() };
    let r = whoami().await;
    assert_eq!(json(&r)["user"]["external_user_id"], "alice");
    let id = json(&r)["user"]["id"].as_u64().unwrap();
    w.backend.link(id, "someone-else").await;
    // The refresh is due a quarter of the token's lifetime before it expires.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = whoami().await;
        if r.status() == 401 {
            break;
        }
        assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
        assert!(
            std::time::Instant::now() < deadline,
            "the session still acts as an account linked elsewhere"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// First logins of one new user at once, under `deny`: a login that finds the user created by
/// another (its own create answered 409, or the listing already shows it) before that login
/// vaulted the token waits for the token, instead of refusing itself (`deny`; before, 403 "No
/// OpenRag token") or replacing the other's token (`regenerate`).
#[tokio::test]
async fn two_first_logins_of_one_user_at_once_both_get_in() {
    let w = world_with(
        Backend::start_with(json!([]), &["--conflict-status", "409"]),
        json!({}),
        &[
            ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "deny"),
            ("OIDC_AUTO_PROVISION_LOGIN", "true"),
        ],
    )
    .await;
    // The create that wins answers late, its user visible meanwhile: the others find the user
    // (by their own 409, or in the listing) before its token is in the vault.
    let slow = format!("{}/__test/slow-create?ms=600", w.backend.url());
    let slow = send(request("POST", &slow, &[], body(""))).await.unwrap();
    assert_eq!(slow.status(), 204);
    for r in burst_of_logins(&w, &["dan"; 3], "ms=0").await {
        assert!(
            r.status().is_redirection() && set_cookie(&r, "sso_sidecar_session").is_some(),
            "{} {}",
            r.status(),
            String::from_utf8_lossy(r.body())
        );
    }
    let dans = w.backend.users().await;
    let dans = dans.iter().filter(|u| u["external_user_id"] == "dan");
    assert_eq!(dans.count(), 1, "one user created");
}
