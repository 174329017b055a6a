//! Tokens a real IdP will not produce, from the in-process mock IdP: each is refused with the
//! generic 400 and no session; plus discovery failures (issuer mismatch, IdP down).

use crate::mock_idp::*;
use crate::oidc_support::*;
use crate::support::*;
use serde_json::{json, Value};
use std::collections::HashMap;

struct Setup {
    idp: MockIdp,
    key: Key,
    _up: Upstream,
    sc: OidcSidecar,
}

async fn setup(extra: &[(&str, &str)]) -> Setup {
    setup_with(|_| {}, extra).await
}

/// `setup` with the mock IdP prepared by `prepare` before the sidecar reads its discovery.
async fn setup_with(prepare: impl FnOnce(&mut MockState), extra: &[(&str, &str)]) -> Setup {
    let idp = MockIdp::start().await;
    let key = Key::new("k1");
    idp.set(|s| {
        s.jwks = json!({"keys": [key.jwk()]});
        prepare(s);
    });
    let up = Upstream::start();
    let sc = start_oidc_sidecar(free_port(), &idp.issuer(), &up.url(), extra).await;
    Setup {
        idp,
        key,
        _up: up,
        sc,
    }
}

/// Starts a login and returns (state, nonce, state cookie).
async fn begin(sc: &Sidecar) -> (String, String, String) {
    let r = get(&sc.url("/auth/login?next=/done"), &[]).await.unwrap();
    let loc = url::Url::parse(&location(&r)).unwrap();
    let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    (
        q["state"].clone(),
        q["nonce"].clone(),
        set_cookie(&r, "sso_sidecar_session_state").unwrap(),
    )
}

fn claims(issuer: &str, nonce: &str) -> Value {
    let now = sso_sidecar::auth::oidc::now_unix();
    json!({"iss": issuer, "sub": "alice", "aud": CLIENT_ID, "exp": now + 300, "iat": now, "nonce": nonce, "email": "alice@example.test"})
}

/// Completes the login with `id_token` (and `access_token`); returns the callback response.
async fn finish(
    s: &Setup,
    state: &str,
    cookie: &str,
    id_token: &str,
    access_token: &str,
) -> http::Response<bytes::Bytes> {
    s.idp.set(|m| {
        m.token_response = json!({"access_token": access_token, "token_type": "Bearer", "expires_in": 300, "id_token": id_token})
    });
    get(
        &s.sc.sidecar.url(&format!(
            "/auth/callback?code=code-1&state={}",
            urlencode(state)
        )),
        &[("cookie", &format!("sso_sidecar_session_state={cookie}"))],
    )
    .await
    .unwrap()
}

fn refused(r: &http::Response<bytes::Bytes>, message: &str, case: &str) {
    assert_eq!(
        r.status(),
        400,
        "{case}: {}",
        String::from_utf8_lossy(r.body())
    );
    assert_eq!(json(r)["detail"], message, "{case}");
    assert!(
        set_cookie(r, "sso_sidecar_session").is_none(),
        "{case}: no session may be created"
    );
}

#[tokio::test]
async fn forged_and_misaddressed_id_tokens_are_refused() {
    let s = setup(&[]).await;
    let iss = s.idp.issuer();
    let other = Key::new("k1"); // same kid, different key: a forged signature
    type Forge = Box<dyn Fn(&Key, &Key, Value) -> String>;
    let cases: Vec<(&str, Forge)> = vec![
        (
            "wrong iss",
            Box::new(|k, _, mut c| {
                c["iss"] = json!("https://evil.example");
                k.sign(&c)
            }),
        ),
        (
            "wrong aud",
            Box::new(|k, _, mut c| {
                c["aud"] = json!("someone-else");
                k.sign(&c)
            }),
        ),
        (
            "several aud without azp",
            Box::new(|k, _, mut c| {
                c["aud"] = json!([CLIENT_ID, "other"]);
                k.sign(&c)
            }),
        ),
        (
            "foreign azp",
            Box::new(|k, _, mut c| {
                c["azp"] = json!("other");
                k.sign(&c)
            }),
        ),
        (
            "expired",
            Box::new(|k, _, mut c| {
                c["exp"] = json!(sso_sidecar::auth::oidc::now_unix() - 3600);
                k.sign(&c)
            }),
        ),
        (
            "issued in the future",
            Box::new(|k, _, mut c| {
                c["iat"] = json!(sso_sidecar::auth::oidc::now_unix() + 3600);
                k.sign(&c)
            }),
        ),
        (
            "nonce mismatch",
            Box::new(|k, _, mut c| {
                c["nonce"] = json!("another-nonce");
                k.sign(&c)
            }),
        ),
        ("bad signature", Box::new(|_, o, c| o.sign(&c))),
        (
            "alg none",
            Box::new(|_, _, c| {
                format!(
                    "{}.{}.",
                    b64(br#"{"alg":"none","kid":"k1"}"#),
                    b64(c.to_string().as_bytes())
                )
            }),
        ),
        (
            "HS256 keyed with the public key",
            Box::new(|k, _, c| {
                let input = format!(
                    "{}.{}",
                    b64(br#"{"alg":"HS256","kid":"k1"}"#),
                    b64(c.to_string().as_bytes())
                );
                let secret = k.jwk().to_string();
                let tag = ring::hmac::sign(
                    &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()),
                    input.as_bytes(),
                );
                format!("{input}.{}", b64(tag.as_ref()))
            }),
        ),
        (
            "at_hash mismatch",
            Box::new(|k, _, mut c| {
                c["at_hash"] = json!("AAAAAAAAAAAAAAAAAAAAAA");
                k.sign(&c)
            }),
        ),
        ("not a JWT", Box::new(|_, _, _| "garbage".to_string())),
    ];
    for (case, forge) in cases {
        let (state, nonce, cookie) = begin(&s.sc.sidecar).await;
        let token = forge(&s.key, &other, claims(&iss, &nonce));
        let r = finish(&s, &state, &cookie, &token, "opaque-access-token").await;
        refused(&r, "OIDC code exchange failed", case);
    }

    // Missing sub has its own message.
    let (state, nonce, cookie) = begin(&s.sc.sidecar).await;
    let mut c = claims(&iss, &nonce);
    c.as_object_mut().unwrap().remove("sub");
    refused(
        &finish(&s, &state, &cookie, &s.key.sign(&c), "at").await,
        "ID token missing 'sub' claim.",
        "missing sub",
    );

    // And the honest token works, with client_secret_post (the only method this IdP advertises).
    let (state, nonce, cookie) = begin(&s.sc.sidecar).await;
    let mut c = claims(&iss, &nonce);
    c["at_hash"] = json!(sso_sidecar::auth::jwt::half_hash("ES256", "good-access-token").unwrap());
    let r = finish(&s, &state, &cookie, &s.key.sign(&c), "good-access-token").await;
    assert_eq!(r.status(), 302, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(location(&r), "/done");
    let last = s
        .idp
        .state
        .lock()
        .unwrap()
        .token_requests
        .last()
        .cloned()
        .unwrap();
    assert!(
        last.contains("client_secret=") && last.contains("code_verifier="),
        "{last}"
    );
}

#[tokio::test]
async fn an_unknown_kid_triggers_one_rate_limited_jwks_refetch() {
    let s = setup(&[]).await;
    let iss = s.idp.issuer();
    let fetches = || s.idp.state.lock().unwrap().jwks_fetches;
    assert_eq!(fetches(), 1, "fetched once at discovery");

    // The IdP rotates to k2; the sidecar still caches k1.
    let k2 = Key::new("k2");
    s.idp
        .set(|m| m.jwks = json!({"keys": [k2.jwk(), s.key.jwk()]}));
    let (state, nonce, cookie) = begin(&s.sc.sidecar).await;
    let r = finish(&s, &state, &cookie, &k2.sign(&claims(&iss, &nonce)), "at").await;
    assert_eq!(
        r.status(),
        302,
        "rotation handled: {}",
        String::from_utf8_lossy(r.body())
    );
    assert_eq!(fetches(), 2);

    // A flood of unknown kids does not turn into a flood of JWKS fetches: tokens that come
    // while a re-fetch was made lately wait for the next one (the slot opens again 10 s after
    // the last), which serves them all.
    let k3 = Key::new("k3");
    let unknown = || async {
        let (state, nonce, cookie) = begin(&s.sc.sidecar).await;
        finish(&s, &state, &cookie, &k3.sign(&claims(&iss, &nonce)), "at").await
    };
    let (a, b, c) = tokio::join!(unknown(), unknown(), unknown());
    for r in [a, b, c] {
        refused(&r, "OIDC code exchange failed", "unknown kid");
    }
    assert_eq!(fetches(), 3, "one re-fetch for the three");
}

#[tokio::test]
async fn userinfo_must_name_the_same_subject() {
    let s = setup(&[("OIDC_CLAIM_SOURCE", "userinfo")]).await;
    let iss = s.idp.issuer();
    s.idp
        .set(|m| m.userinfo = json!({"sub": "mallory", "email": "mallory@evil"}));
    let (state, nonce, cookie) = begin(&s.sc.sidecar).await;
    let r = finish(
        &s,
        &state,
        &cookie,
        &s.key.sign(&claims(&iss, &nonce)),
        "at",
    )
    .await;
    refused(
        &r,
        "Userinfo sub does not match ID token sub.",
        "userinfo sub mismatch",
    );

    s.idp.set(|m| {
        m.userinfo =
            json!({"sub": "alice", "email": "alice@userinfo.example", "groups": ["g1", "g2"]})
    });
    let (state, nonce, cookie) = begin(&s.sc.sidecar).await;
    let r = finish(
        &s,
        &state,
        &cookie,
        &s.key.sign(&claims(&iss, &nonce)),
        "at",
    )
    .await;
    assert_eq!(r.status(), 302);
    let session = set_cookie(&r, "sso_sidecar_session").unwrap();
    let h = json(
        &get(
            &s.sc.sidecar.url("/echo"),
            &[("cookie", &session_header(&session))],
        )
        .await
        .unwrap(),
    )["headers"]
        .clone();
    assert_eq!(
        h["x-forwarded-email"][0], "alice@userinfo.example",
        "claims come from userinfo"
    );
    assert_eq!(h["x-forwarded-groups"][0], "g1,g2");
}

/// RFC 9207 (mix-up defence): a callback's `iss` must be the issuer; from an IdP whose
/// metadata promises one in every answer, a callback without it is refused too.
#[tokio::test]
async fn the_callbacks_iss_must_be_ours_and_present_when_promised() {
    let s = setup_with(|m| m.iss_parameter = true, &[]).await;
    let ours = format!("&iss={}", urlencode(&s.idp.issuer()));
    // A callback with a login's state cookie.
    let with_state = |url: &str, cookie: &str| {
        let (url, cookie) = (
            s.sc.sidecar.url(url),
            format!("sso_sidecar_session_state={cookie}"),
        );
        async move { get(&url, &[("cookie", &cookie)]).await.unwrap() }
    };
    for (extra, ok) in [
        ("&iss=https%3A%2F%2Fevil.example", false),
        ("", false),
        (ours.as_str(), true),
    ] {
        let (state, nonce, cookie) = begin(&s.sc.sidecar).await;
        let token = s.key.sign(&claims(&s.idp.issuer(), &nonce));
        s.idp.set(|m| {
            m.token_response = json!({"access_token": "at", "token_type": "Bearer", "expires_in": 300, "id_token": token})
        });
        let url = format!(
            "/auth/callback?code=code-1&state={}{extra}",
            urlencode(&state)
        );
        let r = with_state(&url, &cookie).await;
        if ok {
            assert_eq!(r.status(), 302, "{extra}");
            assert!(set_cookie(&r, "sso_sidecar_session").is_some(), "{extra}");
        } else {
            refused(&r, "OIDC code exchange failed", extra);
        }
        // An error response too (RFC 9207 §2.4): another IdP's refusal is not shown as ours.
        let (state, _, cookie) = begin(&s.sc.sidecar).await;
        let url = format!(
            "/auth/callback?error=access_denied&error_description=Mixed+Up&state={}{extra}",
            urlencode(&state)
        );
        let r = with_state(&url, &cookie).await;
        let page = String::from_utf8_lossy(r.body()).into_owned();
        assert_eq!(page.contains("Mixed Up"), ok, "{extra}: {page}");
        if !ok {
            refused(&r, "OIDC code exchange failed", extra);
        }
    }
}

/// A back-channel logout request that announces more than it sends, or more than 64 KiB, holds
/// no connection: 408 once `idp_timeout_secs` has passed, 413 at once, and nothing revoked.
#[tokio::test]
async fn a_slow_or_oversized_backchannel_logout_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup(&[("SSO_SIDECAR_IDP_TIMEOUT_SECS", "1")]).await;
    for (length, status, answer_within) in [(60_000, "408", 5), (100_000, "413", 1)] {
        let mut c = tokio::net::TcpStream::connect(s.sc.sidecar.addr)
            .await
            .unwrap();
        let head = format!(
            "POST /auth/backchannel-logout HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {length}\r\n\r\nlogout_token="
        );
        c.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0; 1024];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(answer_within),
            c.read(&mut buf),
        )
        .await
        .unwrap_or_else(|_| panic!("Content-Length {length}: still waiting for the body"))
        .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        assert!(text.contains("invalid_request"), "{text}");
    }
    // Chunked, so announced nowhere: 413 once past 64 KiB.
    let mut c = tokio::net::TcpStream::connect(s.sc.sidecar.addr)
        .await
        .unwrap();
    let big = "a".repeat(70_000);
    let raw = format!(
        "POST /auth/backchannel-logout HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\r\n{:x}\r\nlogout_token={big}\r\n0\r\n\r\n",
        big.len() + 13
    );
    let _ = c.write_all(raw.as_bytes()).await;
    let mut buf = vec![0; 1024];
    let n = c.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
}

#[tokio::test]
async fn issuer_mismatch_keeps_logins_closed_and_check_explains_it() {
    let idp = MockIdp::start().await;
    let key = Key::new("k1");
    let advertised = format!("{}/", idp.issuer());
    idp.set(|m| {
        m.jwks = json!({"keys": [key.jwk()]});
        m.advertised_issuer = Some(advertised.clone());
    });
    let up = Upstream::start();
    let port = free_port();
    let env_key = sso_sidecar::crypto::generate_key();
    let redirect = format!("http://127.0.0.1:{port}/auth/callback");
    let env = [
        ("AUTH_MODE", "oidc".to_string()),
        ("SSO_SIDECAR_IDENTITY", "headers".to_string()),
        ("SSO_SIDECAR_PATHS__BEARER_PASSTHROUGH", "true".to_string()),
        ("OIDC_ENDPOINT", idp.issuer()),
        ("OIDC_CLIENT_ID", CLIENT_ID.to_string()),
        ("OIDC_CLIENT_SECRET", CLIENT_SECRET.to_string()),
        ("OIDC_REDIRECT_URI", redirect),
        ("OIDC_TOKEN_ENCRYPTION_KEY", env_key),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = sidecar_command(dir.path(), &env);
    cmd.arg("check");
    // Off the runtime's thread: the mock IdP is served by this test's runtime.
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains(&format!(
            "Issuer mismatch: configured \"{}\" but the IdP advertises \"{advertised}\"",
            idp.issuer()
        )),
        "{err}"
    );
    assert!(err.contains("trailing slash"), "{err}");

    let mut all = env.clone();
    let listen = format!("127.0.0.1:{port}");
    let upstream = up.url();
    all.extend([
        ("SSO_SIDECAR_LISTEN", listen.as_str()),
        ("SSO_SIDECAR_UPSTREAM", upstream.as_str()),
    ]);
    let sc = start_unready(&all).await;
    let r = get(&sc.admin_url("/readyz"), &[]).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(String::from_utf8_lossy(r.body()).contains("OIDC discovery has not loaded"));
    let r = get(&sc.url("/auth/login"), &[]).await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        json(&r)["detail"],
        "OIDC discovery failed — see server logs."
    );
    let r = get(&sc.url("/v1/x"), &[("authorization", "Bearer t")])
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "bearer pass-through keeps working");
    // Logged by the background discovery task, and read from the process's output by a thread.
    wait_until(
        "the issuer mismatch to be logged",
        std::time::Duration::from_secs(10),
        || sc.output().contains("Issuer mismatch"),
    )
    .await;
}

#[tokio::test]
async fn an_idp_that_comes_up_late_is_picked_up_with_backoff() {
    let listener_port = free_port();
    let up = Upstream::start();
    let key_env = sso_sidecar::crypto::generate_key();
    let issuer = format!("http://127.0.0.1:{listener_port}");
    let port = free_port();
    let env = [
        ("AUTH_MODE", "oidc".to_string()),
        ("SSO_SIDECAR_IDENTITY", "headers".to_string()),
        ("SSO_SIDECAR_LISTEN", format!("127.0.0.1:{port}")),
        ("SSO_SIDECAR_UPSTREAM", up.url()),
        ("OIDC_ENDPOINT", issuer.clone()),
        ("OIDC_CLIENT_ID", CLIENT_ID.to_string()),
        ("OIDC_CLIENT_SECRET", CLIENT_SECRET.to_string()),
        (
            "OIDC_REDIRECT_URI",
            format!("http://127.0.0.1:{port}/auth/callback"),
        ),
        ("OIDC_TOKEN_ENCRYPTION_KEY", key_env),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sc = start_unready(&env).await;
    assert_eq!(
        get(&sc.url("/auth/login"), &[]).await.unwrap().status(),
        502
    );
    // Seen not ready (and logged so) before the IdP comes up.
    let r = get(&sc.admin_url("/readyz"), &[]).await.unwrap();
    assert_eq!(r.status(), 503);

    let idp = MockIdp::start_on(
        tokio::net::TcpListener::bind(("127.0.0.1", listener_port))
            .await
            .unwrap(),
    )
    .await;
    idp.set(|m| m.jwks = json!({"keys": [Key::new("k").jwk()]}));
    let admin = sc.admin_url("/readyz");
    let start = std::time::Instant::now();
    loop {
        if get(&admin, &[]).await.unwrap().status() == 200 {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "never became ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        get(&sc.url("/auth/login"), &[]).await.unwrap().status(),
        302
    );
    // The log said why it was not ready, with the cause underneath, then that it is (read
    // from the process's output by a thread: waited for).
    wait_until(
        "readiness to be logged",
        std::time::Duration::from_secs(5),
        || sc.output().contains(r#""message":"ready""#),
    )
    .await;
    let out = sc.output();
    assert!(out.contains("OIDC discovery failed"), "{out}");
    assert!(out.contains("os error 111"), "no cause in the log: {out}");
    assert!(out.contains("not ready") && out.contains("OIDC discovery has not loaded"));
    assert!(!out.contains("a login started on a host other"), "{out}");

    // A login on a host the redirect URI does not name cannot end well: the log says so.
    let r = get(&sc.url("/auth/login"), &[("host", "rag.example.com")])
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    wait_until(
        "the host mismatch to be logged",
        std::time::Duration::from_secs(5),
        || {
            sc.output()
                .contains("a login started on a host other than OIDC_REDIRECT_URI's")
        },
    )
    .await;
}

/// Starts a sidecar without waiting for readiness (discovery is expected to fail).
async fn start_unready(env: &[(&str, &str)]) -> Sidecar {
    Sidecar::start_without_readiness(env).await
}

/// A code stolen from one login (its redirect leaked: a log, a referrer, a malicious app on a
/// custom scheme) cannot complete another: the sidecar sends the code verifier of the login
/// named by the state it came back with, which the IdP finds does not match the code's PKCE
/// challenge. The mock IdP checks PKCE as a real one does.
#[tokio::test]
async fn a_code_from_another_login_is_refused_by_its_pkce_challenge() {
    let s = setup(&[]).await;
    let sc = &s.sc.sidecar;
    let (victims, _) = s.idp.callback_for(&s.key, sc, "victim", "sid-v", "").await;
    let (mine, cookie) = s.idp.callback_for(&s.key, sc, "mallory", "sid-m", "").await;
    let param = |path: &str, name: &str| {
        url::Url::parse(&format!("http://x{path}"))
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == name)
            .unwrap()
            .1
            .into_owned()
    };
    let swapped = format!(
        "/auth/callback?code={}&state={}",
        urlencode(&param(&victims, "code")),
        urlencode(&param(&mine, "state"))
    );
    let r = get(&sc.url(&swapped), &[("cookie", &cookie)])
        .await
        .unwrap();
    let page = String::from_utf8_lossy(r.body()).to_string();
    assert_eq!(r.status(), 400, "{page}");
    assert!(page.contains("OIDC code exchange failed"), "{page}");
    assert!(
        set_cookie(&r, "sso_sidecar_session").is_none_or(|v| v.is_empty()),
        "a session cookie was set"
    );
    // The login's state is spent; a new one, with its own code, completes.
    let r = get(&sc.url(&mine), &[("cookie", &cookie)]).await.unwrap();
    assert_eq!(r.status(), 400, "{}", String::from_utf8_lossy(r.body()));
    let (mine, cookie) = s.idp.callback_for(&s.key, sc, "mallory", "sid-m", "").await;
    let r = get(&sc.url(&mine), &[("cookie", &cookie)]).await.unwrap();
    assert_eq!(r.status(), 302, "{}", String::from_utf8_lossy(r.body()));
}

/// `email_verified_required`: an ID token's email without `email_verified: true` meets no
/// email allow-list and is not forwarded; by default only `false` discounts it (as before).
#[tokio::test]
async fn an_email_the_idp_does_not_say_is_verified_counts_only_when_not_required() {
    let domains = ("SSO_SIDECAR_AUTHZ__ALLOWED_EMAIL_DOMAINS", "example.test");
    // `thin`: an ID token without profile claims (LemonLDAP::NG's), completed from userinfo,
    // which says the email is verified: that counts (the ID token, which says nothing of an
    // email, must not mark userinfo's unverified).
    for (required, verified, admitted, thin) in [
        ("false", None, true, false),
        ("true", None, false, false),
        ("true", Some(json!("false")), false, false),
        ("true", Some(json!(true)), true, false),
        ("true", Some(json!(true)), true, true),
    ] {
        let s = setup(&[domains, ("SSO_SIDECAR_EMAIL_VERIFIED_REQUIRED", required)]).await;
        let (state, nonce, cookie) = begin(&s.sc.sidecar).await;
        let mut c = claims(&s.idp.issuer(), &nonce);
        if let Some(v) = verified.as_ref().filter(|_| !thin) {
            c["email_verified"] = v.clone();
        }
        if thin {
            c.as_object_mut().unwrap().remove("email");
            s.idp.set(|m| {
                m.userinfo = json!({"sub": "alice", "email": "alice@example.test",
                                    "email_verified": verified.clone()})
            });
        }
        let r = finish(&s, &state, &cookie, &s.key.sign(&c), "at").await;
        let case = format!("required {required}, email_verified {verified:?}, thin {thin}");
        if !admitted {
            assert_eq!(
                r.status(),
                403,
                "{case}: {}",
                String::from_utf8_lossy(r.body())
            );
            assert!(set_cookie(&r, "sso_sidecar_session").is_none(), "{case}");
            continue;
        }
        assert_eq!(
            r.status(),
            302,
            "{case}: {}",
            String::from_utf8_lossy(r.body())
        );
        let session = set_cookie(&r, "sso_sidecar_session").unwrap();
        let page = get(
            &s.sc.sidecar.url("/echo"),
            &[("cookie", &session_header(&session))],
        )
        .await
        .unwrap();
        assert_eq!(
            json(&page)["headers"]["x-forwarded-email"][0],
            "alice@example.test",
            "{case}"
        );
    }
}

/// A code exchange the IdP refuses as `invalid_client` (a wrong secret, or the secret sent
/// another way than the client is registered for: OpenRag sends it in the form body) says
/// in the log what to check and which setting sends it the other way; the user sees the
/// generic answer, and the secret is logged nowhere.
#[tokio::test]
async fn an_invalid_client_answer_says_what_to_check() {
    for (auth, other) in [
        ("client_secret_basic", "client_secret_post"),
        ("client_secret_post", "client_secret_basic"),
    ] {
        let s = setup(&[("SSO_SIDECAR_TOKEN_ENDPOINT_AUTH", auth)]).await;
        s.idp.set(|m| {
            m.token_status = 401;
            m.token_response = json!({"error": "invalid_client"});
        });
        let (state, _, cookie) = begin(&s.sc.sidecar).await;
        let r = get(
            &s.sc.sidecar.url(&format!(
                "/auth/callback?code=code-1&state={}",
                urlencode(&state)
            )),
            &[("cookie", &format!("sso_sidecar_session_state={cookie}"))],
        )
        .await
        .unwrap();
        refused(&r, "OIDC code exchange failed", auth);
        let hint = format!("SSO_SIDECAR_TOKEN_ENDPOINT_AUTH={other}");
        // The log line may reach the test's reader after the response does.
        wait_until(
            &format!("{auth}: the hint logged"),
            std::time::Duration::from_secs(5),
            || {
                let log = s.sc.sidecar.output();
                log.contains("OIDC_CLIENT_SECRET") && log.contains(&hint)
            },
        )
        .await;
        let log = s.sc.sidecar.output();
        assert!(
            !log.contains(CLIENT_SECRET),
            "{auth}: the secret was logged"
        );
    }
}

/// The login a callback started again: its authorization URL's query, its state, nonce and
/// state cookie (the whole cookie: the logins still in flight in it).
fn begun_again(
    r: &http::Response<bytes::Bytes>,
) -> (HashMap<String, String>, (String, String, String)) {
    let loc = url::Url::parse(&location(r)).unwrap();
    let q: HashMap<_, _> = loc.query_pairs().into_owned().collect();
    let cookie = set_cookie(r, "sso_sidecar_session_state").expect("a state cookie");
    let begun = (q["state"].clone(), q["nonce"].clone(), cookie);
    (q, begun)
}

/// `auth_max_age_secs`: every login asks for `max_age`. An ID token whose `auth_time` is
/// missing or older than that (beyond the 60 s of skew) starts the login again, once, with
/// `prompt=login` (OIDC Core §3.1.3.7, 13); if that one's is too, or it is ahead of the clock,
/// the login is refused with no session, counted and logged with what to check. A recent one
/// (within the skew too) logs in. Without the setting nothing is asked, and no `auth_time` is
/// needed (the other tests' logins).
#[tokio::test]
async fn auth_max_age_asks_for_and_holds_the_idp_to_a_recent_authentication() {
    let s = setup(&[("SSO_SIDECAR_AUTH_MAX_AGE_SECS", "600")]).await;
    let iss = s.idp.issuer();
    let asked = |sc: &Sidecar| {
        let sc = sc.url("/auth/login?next=/");
        async move {
            let r = get(&sc, &[]).await.unwrap();
            let loc = url::Url::parse(&location(&r)).unwrap();
            let max_age = loc.query_pairs().find(|(k, _)| k == "max_age");
            max_age.map(|(_, v)| v.into_owned())
        }
    };
    assert_eq!(asked(&s.sc.sidecar).await.as_deref(), Some("600"));
    let signed = |nonce: &str, auth_time: Option<i64>| {
        let mut c = claims(&iss, nonce);
        if let Some(t) = auth_time {
            c["auth_time"] = json!(t);
        }
        s.key.sign(&c)
    };
    let stale = "The identity provider did not confirm a recent sign-in: sign in again.";
    let now = sso_sidecar::auth::oidc::now_unix;
    // Missing or old: asked again with prompt=login; the same again is refused, a recent one
    // logs in.
    for (case, first, second, logs_in) in [
        ("no auth_time", None, None, false),
        (
            "11 minutes old",
            Some(now() - 665),
            Some(now() - 665),
            false,
        ),
        (
            "11 minutes old, then recent",
            Some(now() - 665),
            Some(now()),
            true,
        ),
    ] {
        let (state, nonce, cookie) = begin(&s.sc.sidecar).await;
        let r = finish(&s, &state, &cookie, &signed(&nonce, first), "at").await;
        let body = String::from_utf8_lossy(r.body()).into_owned();
        assert_eq!(r.status(), 302, "{case}: {body}");
        assert!(set_cookie(&r, "sso_sidecar_session").is_none(), "{case}");
        assert!(location(&r).starts_with(&iss), "{case}: to the IdP");
        let (q, (state, nonce, cookie)) = begun_again(&r);
        let prompt: Vec<_> = q["prompt"].split(' ').collect();
        assert!(prompt.contains(&"login"), "{case}: {prompt:?}");
        assert_eq!(q["max_age"], "600", "{case}");
        let r = finish(&s, &state, &cookie, &signed(&nonce, second), "at").await;
        if logs_in {
            let body = String::from_utf8_lossy(r.body()).into_owned();
            assert_eq!(r.status(), 302, "{case}: {body}");
            assert_eq!(location(&r), "/done", "{case}: to the first login's next");
            assert!(set_cookie(&r, "sso_sidecar_session").is_some(), "{case}");
        } else {
            refused(&r, stale, case);
        }
    }
    s.sc.sidecar
        .logged("asking it to authenticate the user again")
        .await;
    // Another tab's login in flight stays through the second try, and completes after it;
    // the first callback, replayed, gets no session.
    let (a_state, a_nonce, a_cookie) = begin(&s.sc.sidecar).await;
    let b = get(
        &s.sc.sidecar.url("/auth/login?next=/b"),
        &[("cookie", &format!("sso_sidecar_session_state={a_cookie}"))],
    )
    .await
    .unwrap();
    let (b_query, (b_state, b_nonce, both)) = begun_again(&b);
    assert!(!b_query.contains_key("prompt") || !b_query["prompt"].contains("login"));
    let stale_token = signed(&a_nonce, Some(now() - 665));
    let r = finish(&s, &a_state, &both, &stale_token, "at").await;
    assert_eq!(r.status(), 302, "{}", String::from_utf8_lossy(r.body()));
    let (_, (_, _, after)) = begun_again(&r);
    let replayed = finish(&s, &a_state, &after, &stale_token, "at").await;
    assert!(set_cookie(&replayed, "sso_sidecar_session").is_none());
    let r = finish(&s, &b_state, &after, &signed(&b_nonce, Some(now())), "at").await;
    assert_eq!(r.status(), 302, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(location(&r), "/b", "the other tab's login");
    assert!(set_cookie(&r, "sso_sidecar_session").is_some());
    // Ahead of the clock (asking again would not help), or not a NumericDate (the crate
    // refuses the token's claims): refused at once.
    for (case, auth_time, message) in [
        ("ahead of the clock", json!(now() + 3600), stale),
        (
            "a string",
            json!(now().to_string()),
            "OIDC code exchange failed",
        ),
    ] {
        let (state, nonce, cookie) = begin(&s.sc.sidecar).await;
        let mut c = claims(&iss, &nonce);
        c["auth_time"] = auth_time;
        let r = finish(&s, &state, &cookie, &s.key.sign(&c), "at").await;
        refused(&r, message, case);
    }
    let m = metrics(&s.sc.sidecar).await;
    let name = r#"sso_sidecar_logins_refused_total{reason="stale_authentication"}"#;
    assert_eq!(metric(&m, name), 3.0, "{m}");
    // Three second tries above, and the first tab's.
    let again = "sso_sidecar_logins_reauthenticated_total";
    assert_eq!(metric(&m, again), 4.0, "{m}");
    s.sc.sidecar.logged("does it honour max_age").await;

    // Ten minutes ago, ten and a half (within the skew), and a second ago: recent enough.
    for age in [600, 630, 1] {
        let (state, nonce, cookie) = begin(&s.sc.sidecar).await;
        let r = finish(
            &s,
            &state,
            &cookie,
            &signed(&nonce, Some(now() - age)),
            "at",
        )
        .await;
        assert_eq!(
            r.status(),
            302,
            "{age} s: {}",
            String::from_utf8_lossy(r.body())
        );
        assert!(set_cookie(&r, "sso_sidecar_session").is_some(), "{age} s");
    }

    let plain = setup(&[]).await;
    let none = asked(&plain.sc.sidecar).await;
    assert_eq!(none, None, "not asked unless configured");

    // Logins that ask for `prompt=login` already would get the same answer again, and
    // `prompt=none` may not be joined by `login`: refused at once.
    for prompt in ["login consent", "none"] {
        let s = setup(&[
            ("SSO_SIDECAR_AUTH_MAX_AGE_SECS", "600"),
            ("SSO_SIDECAR_PROMPT", prompt),
        ])
        .await;
        let (state, nonce, cookie) = begin(&s.sc.sidecar).await;
        let token = s.key.sign(&claims(&s.idp.issuer(), &nonce));
        let r = finish(&s, &state, &cookie, &token, "at").await;
        refused(&r, stale, prompt);
    }
}
