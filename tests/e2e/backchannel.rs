//! The back-channel logout route's bounds: it spends no rate-limit budget (an IdP ending many
//! sessions at once must not be turned away, and IdPs do not retry), so what others may hold
//! there is bounded, in pools of their own, and the route may be closed to all but the IdP.

use crate::lifecycle::{alive, logout_claims, mock_login, mock_pair, post_logout};
use crate::mock_idp::*;
use crate::oidc_support::*;
use crate::support::*;
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// A back-channel logout posted to `url` as if from `from` (the sidecar trusting 127.0.0.1 as
/// a proxy); its status.
pub(crate) async fn post_logout_from(url: String, from: impl AsRef<str>, token: String) -> u16 {
    let form = format!("logout_token={}", urlencode(&token));
    let headers = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("x-forwarded-for", from.as_ref()),
    ];
    send(request("POST", &url, &headers, body(form)))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The back-channel route spends no rate-limit budget, so what one address may hold there is
/// capped: a client holding slow logout forms from one address (8 at most) cannot take the
/// replica's slots, and the IdP's logouts from its own address still get through.
#[tokio::test]
async fn one_address_cannot_take_every_back_channel_slot() {
    let m = mock_pair(&[("SSO_SIDECAR_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let a = &m.a.sidecar;
    let cookie = mock_login(&m, a, "alice", "sid-1").await;
    let mut forms = slow_forms(a, 9, |_| "203.0.113.9".into()).await;
    // Whichever came ninth (two workers accept them) is refused at once; the others wait for
    // the rest of their forms.
    let heads = answered_within(&mut forms, Duration::from_secs(3)).await;
    let answered: Vec<&String> = heads.iter().flatten().collect();
    assert_eq!(answered.len(), 1, "{heads:?}");
    assert!(answered[0].starts_with("HTTP/1.1 503"), "{}", answered[0]);
    let url = a.url("/auth/backchannel-logout");
    let genuine = m.key.sign(&logout_claims(&m));
    assert_eq!(
        post_logout_from(url, "203.0.113.10", genuine).await,
        200,
        "the IdP's logout"
    );
    assert!(!alive(a, &cookie).await);
    drop(forms);
}

/// Logout tokens with invented keys wait for the next JWKS re-fetch (up to 15 s): one address
/// may have at most 32 logouts on the route at once (the 33rd is refused at once), and the
/// IdP's logouts from its own address go through meanwhile.
#[tokio::test]
async fn tokens_waiting_for_a_key_cannot_hold_every_back_channel_slot() {
    let m = mock_pair(&[("SSO_SIDECAR_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let a = &m.a.sidecar;
    let cookie = mock_login(&m, a, "alice", "sid-1").await;
    let post_from = |from, token| post_logout_from(a.url("/auth/backchannel-logout"), from, token);
    let invented = Key::new("invented");
    let forged = || invented.sign(&logout_claims(&m));
    // The first takes the logout tokens' re-fetch: answered at once.
    assert_eq!(post_from("203.0.113.9", forged()).await, 400);
    // The next ones wait for the next re-fetch; past 32 from one address, refused at once.
    let waiting: Vec<_> = (0..33)
        .map(|_| tokio::spawn(post_from("203.0.113.9", forged())))
        .collect();
    let started = std::time::Instant::now();
    let mut refused_at_once = 0;
    while refused_at_once == 0 && started.elapsed() < Duration::from_secs(5) {
        refused_at_once = waiting.iter().filter(|w| w.is_finished()).count();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refused_at_once, 1, "one over the address's share, at once");
    // Meanwhile the IdP's own logout is handled.
    let genuine = m.key.sign(&logout_claims(&m));
    assert_eq!(post_from("203.0.113.10", genuine).await, 200);
    assert!(!alive(a, &cookie).await);
    let mut statuses = Vec::new();
    for w in waiting {
        statuses.push(w.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 503).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 400).count(),
        32,
        "{statuses:?}"
    );
}

/// Logout tokens with invented `kid`s, one every ten seconds, took the JWKS re-fetch slot: a
/// genuine logout signed with a key the IdP had just rotated in was refused (400, not retried,
/// the session lived on). Now it waits for the next re-fetch; and a login's re-fetch has a slot
/// of its own.
#[tokio::test]
async fn invented_kids_do_not_hold_off_a_logout_signed_with_a_new_key() {
    let m = mock_pair(&[]).await;
    let a = &m.a.sidecar;
    let cookie = mock_login(&m, a, "alice", "sid-1").await;
    let fetches = || m.idp.state.lock().unwrap().jwks_fetches;
    let before = fetches();
    let invented = Key::new("invented");
    assert_eq!(
        post_logout(a, &invented.sign(&logout_claims(&m)))
            .await
            .status(),
        400
    );
    assert_eq!(fetches(), before + 1, "the invented kid was looked up");
    let k2 = Key::new("k2");
    m.idp
        .set(|s| s.jwks = json!({"keys": [k2.jwk(), m.key.jwk()]}));
    let started = std::time::Instant::now();
    let r = post_logout(a, &k2.sign(&logout_claims(&m))).await;
    assert_eq!(r.status(), 200, "{:?}", r.body());
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(!alive(a, &cookie).await);
    assert_eq!(fetches(), before + 2, "one re-fetch each");
}

/// The IdP's back-channel logouts spend no rate-limit budget: an IdP ending many sessions at
/// once, or sharing its address with clients over their budget, is never turned away (which
/// would leave the sessions alive: IdPs do not retry). A refused logout token spends the
/// failure budget, so guessing is still bounded.
#[tokio::test]
async fn back_channel_logouts_are_not_turned_away_by_the_auth_budget() {
    let m = mock_pair(&[
        ("RATE_LIMIT_ENABLED", "true"),
        ("RATE_LIMIT_AUTH", "20/minute"),
        ("RATE_LIMIT_AUTH_FAILURE", "5/minute"),
    ])
    .await;
    let a = &m.a.sidecar;
    let mut cookies = Vec::new();
    for i in 0..3 {
        cookies.push(mock_login(&m, a, &format!("user-{i}"), &format!("sid-{i}")).await);
    }
    // This address spends the rest of its budget on logins.
    let mut spent = 0;
    while get(&a.url("/auth/login"), &[]).await.unwrap().status() != 429 {
        spent += 1;
        assert!(spent < 20, "the auth budget never ran out");
    }
    for i in 0..3 {
        let mut c = logout_claims(&m);
        c["sid"] = json!(format!("sid-{i}"));
        c["sub"] = json!(format!("user-{i}"));
        let token = m.key.sign_with_header(
            &json!({"alg": "ES256", "typ": "logout+jwt", "kid": "k1"}),
            &c,
        );
        let r = post_logout(a, &token).await;
        assert_eq!(r.status(), 200, "{:?}", r.body());
    }
    for c in &cookies {
        assert!(!alive(a, c).await, "a logged-out session lives on");
    }
    // A token that cannot be judged now (a new key, and the IdP's JWKS unreadable) is not
    // refused: 503, with nothing of the sidecar's inside in the answer.
    let b = &m.b.sidecar;
    let saved = m.idp.state.lock().unwrap().jwks.clone();
    m.idp.set(|s| s.jwks = json!("unreadable"));
    let k2 = Key::new("k2");
    let r = post_logout(b, &k2.sign(&logout_claims(&m))).await;
    assert_eq!(r.status(), 503);
    assert_eq!(json(&r)["error"], "temporarily_unavailable");
    assert!(!String::from_utf8_lossy(r.body()).contains("http"));
    m.idp.set(|s| s.jwks = saved);
    // Refused tokens spend the failure budget (shared through Redis), as the three 401s just
    // did: two 400s, then 429.
    for _ in 0..2 {
        assert_eq!(post_logout(b, "not.a.token").await.status(), 400);
    }
    assert_eq!(post_logout(b, "not.a.token").await.status(), 429);
}

/// Logout tokens with invented keys, from several addresses, wait for a re-fetch in a pool of
/// their own: more of them than the 64 places verified logouts are handled in (which they all
/// held before), and the IdP's logout, signed with a key the sidecar has, is handled at once.
#[tokio::test]
async fn tokens_waiting_for_a_key_from_many_addresses_leave_the_idps_logouts_alone() {
    let m = mock_pair(&[("SSO_SIDECAR_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let a = &m.a.sidecar;
    let cookie = mock_login(&m, a, "alice", "sid-1").await;
    let url = || a.url("/auth/backchannel-logout");
    // 3 × 30 wait for the next re-fetch (10 s away), each address under its cap of 32.
    let waiting = waiting_for_a_key(&m, 90, |i| format!("203.0.113.{}", i % 3)).await;
    // All of them in: none answered yet, and the route's refusals count none.
    let refused = r#"sso_sidecar_connections_refused_total{reason="max_backchannel"}"#;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(waiting.iter().filter(|w| w.is_finished()).count(), 0);
    assert_eq!(metric(&metrics(a).await, refused), 0.0);
    let started = std::time::Instant::now();
    let genuine = m.key.sign(&logout_claims(&m));
    assert_eq!(post_logout_from(url(), "203.0.113.50", genuine).await, 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(!alive(a, &cookie).await);
    for w in waiting {
        assert_eq!(w.await.unwrap(), 400, "an invented key, once looked up");
    }
}

/// Slow logout forms from several addresses, each under its cap of 8, are read in a pool of
/// their own: more of them than the 64 places verified logouts are handled in (which they all
/// held before), and the IdP's logout is handled at once.
#[tokio::test]
async fn slow_forms_from_many_addresses_leave_the_idps_logouts_alone() {
    let m = mock_pair(&[("SSO_SIDECAR_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let a = &m.a.sidecar;
    let cookie = mock_login(&m, a, "alice", "sid-1").await;
    let mut forms = slow_forms(a, 72, |i| format!("198.51.100.{}", i % 9)).await;
    let heads = answered_within(&mut forms, Duration::from_secs(1)).await;
    assert!(
        heads.iter().all(Option::is_none),
        "all being read: {heads:?}"
    );
    let started = std::time::Instant::now();
    let genuine = m.key.sign(&logout_claims(&m));
    let url = a.url("/auth/backchannel-logout");
    assert_eq!(post_logout_from(url, "198.51.100.50", genuine).await, 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(!alive(a, &cookie).await);
    drop(forms);
}

/// `backchannel_logout_from` closes the route to all but the IdP's addresses (read through
/// `trusted_proxies`): a logout from elsewhere, even a valid one, is refused before its form
/// is read, and ends nothing.
#[tokio::test]
async fn back_channel_logouts_come_only_from_the_listed_networks() {
    let m = mock_pair(&[
        ("SSO_SIDECAR_TRUSTED_PROXIES", "127.0.0.1/32"),
        (
            "SSO_SIDECAR_BACKCHANNEL_LOGOUT_FROM",
            "203.0.113.0/24, 192.0.2.7",
        ),
    ])
    .await;
    let a = &m.a.sidecar;
    let cookie = mock_login(&m, a, "alice", "sid-1").await;
    let url = || a.url("/auth/backchannel-logout");
    let genuine = || m.key.sign(&logout_claims(&m));
    for elsewhere in ["198.51.100.7", "192.0.2.8", "2001:db8::1"] {
        assert_eq!(
            post_logout_from(url(), elsewhere, genuine()).await,
            403,
            "{elsewhere}"
        );
    }
    assert!(alive(a, &cookie).await, "nothing ended");
    assert_eq!(post_logout_from(url(), "192.0.2.7", genuine()).await, 200);
    assert!(!alive(a, &cookie).await);
    let cookie = mock_login(&m, a, "bob", "sid-2").await;
    let mut c = logout_claims(&m);
    (c["sid"], c["sub"]) = (json!("sid-2"), json!("bob"));
    assert_eq!(
        post_logout_from(url(), "203.0.113.200", m.key.sign(&c)).await,
        200
    );
    assert!(!alive(a, &cookie).await);
}

/// An IPv6 customer holds 65,536 /64s in its /48: one /48 may be sending 64 forms at once,
/// whatever its /64s, so it cannot fill the reading pool alone (nor, therefore, shut the
/// IdP's logouts out).
#[tokio::test]
async fn slow_forms_from_one_ipv6_site_are_capped_together() {
    let m = mock_pair(&[("SSO_SIDECAR_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let a = &m.a.sidecar;
    let cookie = mock_login(&m, a, "alice", "sid-1").await;
    let mut forms = slow_forms(a, 72, |i| format!("2001:db8:7:{}::1", i % 9)).await;
    let heads = answered_within(&mut forms, Duration::from_secs(2)).await;
    let answered: Vec<&String> = heads.iter().flatten().collect();
    assert_eq!(answered.len(), 8, "72 forms, 64 for the site: {heads:?}");
    assert!(
        answered.iter().all(|h| h.starts_with("HTTP/1.1 503")),
        "{answered:?}"
    );
    let genuine = m.key.sign(&logout_claims(&m));
    let url = a.url("/auth/backchannel-logout");
    assert_eq!(post_logout_from(url, "2001:db8:8::1", genuine).await, 200);
    assert!(!alive(a, &cookie).await);
    drop(forms);
}

/// Tokens waiting for a key have a pool of 256: past it, from any number of addresses, they
/// are refused at once (503, to be sent again), while a logout signed with a known key, which
/// waits for nothing, is handled.
#[tokio::test]
async fn tokens_waiting_for_a_key_beyond_their_pool_are_refused_at_once() {
    let m = mock_pair(&[("SSO_SIDECAR_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let a = &m.a.sidecar;
    let cookie = mock_login(&m, a, "alice", "sid-1").await;
    let url = || a.url("/auth/backchannel-logout");
    // 9 addresses × 29: 261 waiting, 5 over the pool.
    let waiting = waiting_for_a_key(&m, 261, |i| format!("198.51.100.{}", i % 9)).await;
    let started = std::time::Instant::now();
    while waiting.iter().filter(|w| w.is_finished()).count() < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "none refused at once"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let genuine = m.key.sign(&logout_claims(&m));
    assert_eq!(post_logout_from(url(), "198.51.100.50", genuine).await, 200);
    assert!(!alive(a, &cookie).await);
    let mut statuses = Vec::new();
    for w in waiting {
        statuses.push(w.await.unwrap());
    }
    let count = |s: u16| statuses.iter().filter(|&&x| x == s).count();
    assert_eq!((count(503), count(400)), (5, 256), "{statuses:?}");
}

/// `n` logout forms begun on `sc` and never finished, the `i`th as if from `from(i)` (the
/// sidecar trusting 127.0.0.1 as a proxy): 100 bytes announced, 13 sent.
async fn slow_forms(
    sc: &Sidecar,
    n: usize,
    from: impl Fn(usize) -> String,
) -> Vec<tokio::net::TcpStream> {
    let mut forms = Vec::new();
    for i in 0..n {
        let slow_form = format!(
            "POST /auth/backchannel-logout HTTP/1.1\r\nHost: app\r\nX-Forwarded-For: {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n\
             logout_token=",
            from(i)
        );
        let mut s = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
        s.write_all(slow_form.as_bytes()).await.unwrap();
        forms.push(s);
    }
    forms
}

/// `n` logout tokens signed with an invented key posted to replica A, the `i`th as if from
/// `from(i)`, once a first one has taken the logout tokens' JWKS re-fetch (answered 400 at
/// once): they wait for the next re-fetch, 10 s away. Their statuses, to be awaited.
async fn waiting_for_a_key(
    m: &crate::lifecycle::MockPair,
    n: usize,
    from: impl Fn(usize) -> String,
) -> Vec<tokio::task::JoinHandle<u16>> {
    let url = || m.a.sidecar.url("/auth/backchannel-logout");
    let invented = Key::new("invented");
    let forged = || invented.sign(&logout_claims(m));
    assert_eq!(post_logout_from(url(), "192.0.2.99", forged()).await, 400);
    (0..n)
        .map(|i| tokio::spawn(post_logout_from(url(), from(i), forged())))
        .collect()
}
