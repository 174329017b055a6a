//! SIGHUP re-reads the configuration file: a valid change to a reloadable setting applies
//! without dropping a connection, an invalid file is refused and the running one kept, and
//! settings that need a restart are named.

use crate::mock_idp::*;
use crate::oidc_support::*;
use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// One request on an existing keep-alive connection; returns the status.
async fn on_conn(conn: &mut BufReader<tokio::net::TcpStream>, path: &str) -> u16 {
    conn.get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut status_line = String::new();
    conn.read_line(&mut status_line).await.unwrap();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).await.unwrap();
    status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// An OIDC sidecar in front of `up`, with `idp` and the configuration file `toml` (kept in the
/// returned directory, to be rewritten before a SIGHUP).
async fn with_file(idp: &MockIdp, up: &Upstream, toml: &str) -> (tempfile::TempDir, OidcSidecar) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sso.toml");
    std::fs::write(&file, toml).unwrap();
    let cfg = file.to_str().unwrap().to_owned();
    let sc = start_oidc_sidecar(
        free_port(),
        &idp.issuer(),
        &up.url(),
        &[
            ("SSO_SIDECAR_CONFIG", &cfg),
            // Bearer requests reach the upstream here (off by default with identity headers).
            ("SSO_SIDECAR_PATHS__BEARER_PASSTHROUGH", "true"),
        ],
    )
    .await;
    (dir, sc)
}

#[tokio::test]
async fn sighup_applies_valid_changes_live_and_refuses_invalid_ones() {
    let idp = MockIdp::start().await;
    idp.set(|m| m.jwks = json!({"keys": [Key::new("k").jwk()]}));
    let up = Upstream::start();
    let (dir, sc) = with_file(&idp, &up, "upstream_timeout_secs = 1\n").await;
    let file = dir.path().join("sso.toml");
    let sc = &sc.sidecar;

    let mut conn = BufReader::new(tokio::net::TcpStream::connect(sc.addr).await.unwrap());
    assert_eq!(
        on_conn(&mut conn, "/v1/open").await,
        401,
        "an API path needs a session"
    );
    assert_eq!(
        get(&sc.url("/slow?ms=1500"), &[("authorization", "Bearer t")])
            .await
            .unwrap()
            .status(),
        504
    );

    std::fs::write(
        &file,
        "upstream_timeout_secs = 5\npreserve_host = true\nlog_level = \"debug\"\n[paths]\npublic = [\"/health_check\", \"/v1/*\"]\n\
         [[authz.rules]]\npath = \"/admin/*\"\ngroups = [\"a\"]\n[[authz.rules]]\npath = \"/admin\"\ngroups = [\"b\"]\n",
    )
    .unwrap();
    sc.signal("HUP");
    let start = Instant::now();
    while on_conn(&mut conn, "/v1/open").await != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the reload never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Same connection, still open: nothing was dropped.
    assert_eq!(on_conn(&mut conn, "/v1/open").await, 200);
    assert_eq!(
        get(&sc.url("/slow?ms=1500"), &[("authorization", "Bearer t")])
            .await
            .unwrap()
            .status(),
        200,
        "new upstream timeout"
    );
    // Logged once the workers have the new settings: maybe just after the request above.
    let start = Instant::now();
    while !sc.output().contains("configuration reloaded") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no reload logged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = sc.output();
    assert!(
        logs.contains("configuration reloaded") && logs.contains("preserve_host"),
        "{logs}"
    );
    // The warnings start-up would have given this configuration are given by the reload.
    assert!(
        logs.contains("authz.rules[1] ('/admin') comes after authz.rules[0]"),
        "{logs}"
    );
    let reloads = |result: &str| {
        let sc = sc.admin_url("/metrics");
        let line = format!("sso_sidecar_config_reloads_total{{result=\"{result}\"}} ");
        async move {
            let m = get(&sc, &[]).await.unwrap();
            let text = String::from_utf8_lossy(m.body()).into_owned();
            text.lines()
                .find_map(|l| l.strip_prefix(&line).map(str::to_owned))
                .unwrap_or_else(|| panic!("no {line} in {text}"))
        }
    };
    assert_eq!(reloads("applied").await, "1");
    assert_eq!(reloads("refused").await, "0");

    // An invalid file is refused; the running configuration stays.
    std::fs::write(&file, "upstream_timeout_secs = \"soon\"\nlistne = 1\n").unwrap();
    sc.signal("HUP");
    let start = Instant::now();
    while !sc.output().contains("configuration reload refused") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no refusal logged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sc.output().contains("listne"), "the reasons are logged");
    assert_eq!(reloads("refused").await, "1");
    assert_eq!(
        on_conn(&mut conn, "/v1/open").await,
        200,
        "the old configuration is kept"
    );
    assert_eq!(
        get(&sc.admin_url("/healthz"), &[]).await.unwrap().status(),
        200
    );
}

/// `[authz]` is checked again at every refresh against the rules as they are now. An IdP that
/// answers a refresh without a new ID token (many do) brings no new profile: the one kept since
/// the login is checked instead, so an allow-list tightened by SIGHUP still ends the sessions it
/// no longer admits, at their next refresh, and keeps the others.
#[tokio::test]
async fn a_tightened_allow_list_ends_sessions_at_their_next_refresh_without_a_new_id_token() {
    let idp = MockIdp::start().await;
    let key = Key::new("k");
    // 8 s access tokens: a refresh is due in their last quarter.
    idp.set(|m| {
        m.jwks = json!({"keys": [key.jwk()]});
        m.login_expires_in = 8;
    });
    let up = Upstream::start();
    let domains = |d: &str| format!("[authz]\nallowed_email_domains = [{d}]\n");
    let (dir, sc) = with_file(&idp, &up, &domains("\"example.test\", \"other.test\"")).await;
    let file = dir.path().join("sso.toml");
    let sc = &sc.sidecar;
    // The ID token has no email: the profile comes from userinfo, at login only.
    let mut cookies = Vec::new();
    for (sub, email) in [("alice", "alice@example.test"), ("bob", "bob@other.test")] {
        idp.set(|m| m.userinfo = json!({"sub": sub, "email": email, "email_verified": true}));
        cookies.push(session_header(&idp.login(&key, sc, sub, sub).await));
    }
    let status = |cookie: String| async move {
        get(&sc.url("/v1/x"), &[("cookie", &cookie)])
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    for c in &cookies {
        assert_eq!(status(c.clone()).await, 200);
    }
    // From now on refreshes bring a new access token and nothing else.
    idp.set(|m| {
        m.userinfo = json!({});
        m.token_response = json!({"access_token": "at-2", "token_type": "Bearer", "expires_in": 8});
    });
    std::fs::write(&file, domains("\"example.test\"")).unwrap();
    sc.signal("HUP");
    wait_until("the reload", Duration::from_secs(10), || {
        sc.output().contains("configuration reloaded")
    })
    .await;
    let refused = r#"sso_sidecar_logins_refused_total{reason="email"}"#;
    let start = Instant::now();
    while status(cookies[1].clone()).await == 200 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "bob's session outlived its refresh"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = String::from_utf8_lossy(get(&sc.admin_url("/metrics"), &[]).await.unwrap().body())
        .into_owned();
    assert_eq!(metric(&m, refused), 1.0, "{m}");
    assert_eq!(status(cookies[1].clone()).await, 401, "bob stays out");
    // Alice, who logged in first, is due as well: her refresh passes the same check.
    assert_eq!(status(cookies[0].clone()).await, 200, "alice stays in");
    let m = String::from_utf8_lossy(get(&sc.admin_url("/metrics"), &[]).await.unwrap().body())
        .into_owned();
    let refreshed = r#"sso_sidecar_token_refreshes_total{result="ok"}"#;
    assert_eq!(metric(&m, refreshed), 2.0, "bob's refresh and alice's: {m}");
    assert_eq!(metric(&m, refused), 1.0, "{m}");
}

/// An IdP whose ID tokens carry no profile (LemonLDAP::NG's default) and whose userinfo fails
/// at a refresh: the refresh goes on with the profile kept since the login, so a passing
/// userinfo outage neither blanks the email nor ends the session under an email rule.
#[tokio::test]
async fn a_userinfo_outage_at_a_refresh_keeps_the_profile() {
    let idp = MockIdp::start().await;
    let key = Key::new("k");
    idp.set(|m| {
        m.jwks = json!({"keys": [key.jwk()]});
        m.login_expires_in = 8;
        m.userinfo = json!({"sub": "alice", "email": "alice@example.test"});
    });
    let up = Upstream::start();
    let sc = start_oidc_sidecar(
        free_port(),
        &idp.issuer(),
        &up.url(),
        &[
            ("SSO_SIDECAR_AUTHZ__ALLOWED_EMAIL_DOMAINS", "example.test"),
            ("SSO_SIDECAR_IDENTITY", "headers"),
        ],
    )
    .await;
    let sc = &sc.sidecar;
    let cookie = session_header(&idp.login(&key, sc, "alice", "sid-1").await);
    // Refreshes now bring a new ID token (no profile claims), and userinfo fails.
    let now = sso_sidecar::auth::oidc::now_unix();
    let id_token = key.sign(
        &json!({"iss": idp.issuer(), "sub": "alice", "aud": CLIENT_ID,
                                     "exp": now + 600, "iat": now}),
    );
    idp.set(|m| {
        m.userinfo_status = 503;
        m.userinfo = json!({"error": "temporarily_unavailable"});
        m.token_response = json!({"access_token": "at-2", "token_type": "Bearer",
                                  "expires_in": 8, "id_token": id_token, "refresh_token": "rt"});
    });
    let refreshed = r#"sso_sidecar_token_refreshes_total{result="ok"}"#;
    let start = Instant::now();
    loop {
        let r = get(&up_echo(sc), &[("cookie", &cookie)]).await.unwrap();
        assert_eq!(r.status(), 200, "the session lives on: {:?}", r.body());
        let m = String::from_utf8_lossy(get(&sc.admin_url("/metrics"), &[]).await.unwrap().body())
            .into_owned();
        if metric(&m, refreshed) >= 1.0 {
            assert_eq!(
                json(&r)["headers"]["x-forwarded-email"][0],
                "alice@example.test",
                "the email kept"
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "no refresh: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The request after the refresh carries the kept profile too.
    let r = get(&up_echo(sc), &[("cookie", &cookie)]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        json(&r)["headers"]["x-forwarded-email"][0],
        "alice@example.test"
    );
}

fn up_echo(sc: &Sidecar) -> String {
    sc.url("/echo/x")
}

/// A secret changed for a SIGHUP (a rotated admin token or client secret) cannot take effect
/// while running: the reload names it, as any other such setting, and never shows its value.
/// (Secrets print redacted, so they used to compare equal and the reload said nothing.)
#[tokio::test]
async fn a_rotated_secret_is_named_by_the_reload_as_needing_a_restart() {
    let idp = MockIdp::start().await;
    idp.set(|m| m.jwks = json!({"keys": [Key::new("k").jwk()]}));
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join(".env");
    std::fs::write(&env_file, "AUTH_TOKEN=or-first-admin-token\n").unwrap();
    let sc = start_oidc_sidecar(
        free_port(),
        &idp.issuer(),
        &up.url(),
        &[("SSO_SIDECAR_ENV_FILE", env_file.to_str().unwrap())],
    )
    .await;
    let sc = &sc.sidecar;
    std::fs::write(&env_file, "AUTH_TOKEN=or-second-admin-token\n").unwrap();
    sc.signal("HUP");
    let start = Instant::now();
    while !sc.output().contains("configuration reloaded") {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", sc.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = sc
        .output()
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap()
        .to_owned();
    assert!(line.contains("AUTH_TOKEN"), "{line}");
    assert!(
        !sc.output().contains("or-second-admin-token"),
        "never shown"
    );
}

/// A `.env` read implicitly (from the working directory) that is gone at a SIGHUP — deleted,
/// or caught mid-rename — refuses the reload: applied without it, its reloadable settings
/// (an allow-list among them) would be dropped without a word. So does one emptied (truncated
/// and not yet written), which drops its allow-list the same way. The proof is a login: the
/// user outside the allow-list stays out after each refused reload.
#[tokio::test]
async fn a_reload_refuses_to_run_without_the_env_file_it_was_read_from() {
    let idp = MockIdp::start().await;
    let key = Key::new("k");
    idp.set(|m| m.jwks = json!({"keys": [key.jwk()]}));
    let up = Upstream::start();
    let sc = start_oidc_sidecar(free_port(), &idp.issuer(), &up.url(), &[]).await;
    let sc = &sc.sidecar;
    // A user in no group: let in exactly when no allow-list applies.
    let login = || async {
        idp.login_until_callback(&key, sc, "mallory", "s", "")
            .await
            .await
            .status()
            .as_u16()
    };
    assert_eq!(login().await, 302, "no allow-list yet");
    let env_file = sc.dir().join(".env");
    let hup = |n: usize, what: &'static str| async move {
        sc.signal("HUP");
        wait_until(what, Duration::from_secs(10), || {
            sc.output().matches(what).count() == n
        })
        .await;
    };
    std::fs::write(&env_file, "SSO_SIDECAR_AUTHZ__ALLOWED_GROUPS=admins\n").unwrap();
    hup(1, "configuration reloaded").await;
    assert_eq!(login().await, 403, "the allow-list applies");
    std::fs::remove_file(&env_file).unwrap();
    hup(1, "configuration reload refused").await;
    assert!(sc.output().contains("is gone"), "{}", sc.output());
    assert_eq!(login().await, 403, "the allow-list still applies");
    std::fs::write(&env_file, "").unwrap();
    hup(2, "configuration reload refused").await;
    assert!(
        sc.output()
            .contains("removes authz.allowed_groups entirely"),
        "{}",
        sc.output()
    );
    assert_eq!(login().await, 403, "and still");
    assert_eq!(
        sc.output().matches("configuration reloaded").count(),
        1,
        "nothing applied"
    );
}

/// With `reload_watch_secs`, a change to a file the configuration was read from is applied
/// without a signal (in a pod nothing sends one): an allow-list file rewritten whole (renamed
/// into place, as a ConfigMap update does) stops a removed user's logins, and a change to the
/// TOML file itself applies too.
#[tokio::test]
async fn a_changed_file_is_reloaded_without_a_signal_when_watched() {
    let idp = MockIdp::start().await;
    let key = Key::new("k");
    idp.set(|m| m.jwks = json!({"keys": [key.jwk()]}));
    let up = Upstream::start();
    let lists = tempfile::tempdir().unwrap();
    let emails = lists.path().join("emails");
    std::fs::write(&emails, "alice@example.test\nbob@example.test\n").unwrap();
    let toml = |public: &str| {
        format!(
            "reload_watch_secs = 1\n[paths]\npublic = [{public}]\n[authz]\nallowed_emails_file = {:?}\n",
            emails.to_str().unwrap()
        )
    };
    let (dir, sc) = with_file(&idp, &up, &toml("\"/health_check\"")).await;
    let sc = &sc.sidecar;
    idp.set(|m| {
        m.userinfo = json!({"sub": "bob", "email": "bob@example.test", "email_verified": true})
    });
    let (idp, key) = (&idp, &key);
    let login = |sid: &'static str| async move {
        idp.login_until_callback(key, sc, "bob", sid, "")
            .await
            .await
            .status()
    };
    assert_eq!(login("sid-1").await, 302, "bob is on the list");

    let next = lists.path().join("emails.new");
    std::fs::write(&next, "alice@example.test\n").unwrap();
    std::fs::rename(&next, &emails).unwrap();
    wait_until("the reload", Duration::from_secs(10), || {
        sc.output().contains("configuration reloaded")
    })
    .await;
    assert!(sc.output().contains("a configuration file changed"));
    assert_eq!(login("sid-2").await, 403, "bob is off the list");

    assert_eq!(get(&sc.url("/v1/open"), &[]).await.unwrap().status(), 401);
    let file = dir.path().join("sso.toml");
    std::fs::write(&file, toml("\"/health_check\", \"/v1/*\"")).unwrap();
    let start = Instant::now();
    while get(&sc.url("/v1/open"), &[]).await.unwrap().status() != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the TOML change never applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A stream opened without a session on a public path (a WebSocket, an event stream) closes
/// once a reload takes its path out of `paths.public`: the path now needs the login its client
/// never showed. A stream on a path still public stays open. Before, such streams stayed open
/// for as long as their clients liked. A session cookie that opens no session (garbage) makes
/// no difference: that stream was let on by its path alone, and closes likewise.
#[tokio::test]
async fn streams_on_a_path_a_reload_takes_out_of_public_close() {
    let idp = MockIdp::start().await;
    idp.set(|m| m.jwks = json!({"keys": [Key::new("k").jwk()]}));
    let up = Upstream::start();
    let toml = |public: &str| {
        format!("[connections]\nrevocation_check_ms = 200\n[paths]\npublic = [{public}]\n")
    };
    let (dir, sc) = with_file(&idp, &up, &toml("\"/health_check\", \"/ws\", \"/sse\"")).await;
    let sc = &sc.sidecar;

    let open_ws = |extra: &'static str| async move {
        let mut ws = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
        let head = format!(
            "GET /ws HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        ws.write_all(head.as_bytes()).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = ws.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        ws
    };
    let mut ws = open_ws("").await;
    let mut with_garbage = open_ws("Cookie: sso_sidecar_session=garbage.not-a-session\r\n").await;
    // With a bearer credential: the backend's to judge on any path, so not closed.
    let mut with_bearer = open_ws("Authorization: Bearer t\r\n").await;
    let mut buf = [0u8; 1024];
    let sse = client()
        .request(request(
            "GET",
            &sc.url("/sse?n=100000&interval_ms=100"),
            &[],
            body(""),
        ))
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let mut sse = sse.into_body();

    std::fs::write(
        dir.path().join("sso.toml"),
        toml("\"/health_check\", \"/sse\""),
    )
    .unwrap();
    sc.signal("HUP");
    let reloaded = Instant::now();
    for (ws, which) in [(&mut ws, ""), (&mut with_garbage, " with a garbage cookie")] {
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ws.read(&mut buf).await {
                    Ok(0) | Err(_) => return reloaded.elapsed(),
                    Ok(_) => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("the WebSocket{which} on /ws stayed open after /ws stopped being public")
        });
        println!("FIGURE WebSocket{which} closed {closed:?} after the SIGHUP");
    }
    // The event stream's path is still public: it carries on through more checks.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let frame = tokio::time::timeout(
            Duration::from_secs(2),
            http_body_util::BodyExt::frame(&mut sse),
        )
        .await
        .expect("the stream on a path still public stalled");
        assert!(
            frame.is_some_and(|f| f.is_ok()),
            "the stream on a path still public ended"
        );
    }
    // The WebSocket with a bearer is still open: a frame makes the round trip.
    with_bearer
        .write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2])
        .await
        .unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), with_bearer.read_exact(&mut echo))
        .await
        .expect("the WebSocket with a bearer stalled")
        .expect("the WebSocket with a bearer was closed");
    assert_eq!(&echo, &[0x81, 2, b'h', b'i']);
    let m = metrics(sc).await;
    assert_eq!(metric(&m, "sso_sidecar_streams_revoked_total"), 2.0, "{m}");
}
