//! Sessions under attack: a revoked session's live WebSocket tunnel and event stream, held on
//! one replica while the logout happens on another; cookie tossing (a planted second session
//! cookie) and the `__Host-` names over https that no sibling host can plant.

use crate::lifecycle::{alive, mock_login, mock_pair};
use crate::mock_idp::{Key, MockIdp};
use crate::oidc_support::*;
use crate::support::*;
use http_body_util::BodyExt;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// While Redis cannot be reached nothing confirms a session, and a logout made meanwhile (on
/// any replica, or at the IdP) cannot be seen: its live WebSocket stays open for the outage
/// grace, `revocation_outage_secs`, then closes, though no logout was seen. Before, it stayed
/// open for as long as the outage lasted.
#[tokio::test]
async fn streams_close_when_their_session_goes_unconfirmed_too_long() {
    let m = mock_pair(&[
        ("SSO_SIDECAR_CONNECTIONS__REVOCATION_CHECK_MS", "200"),
        ("SSO_SIDECAR_CONNECTIONS__REVOCATION_OUTAGE_SECS", "2"),
        ("SSO_SIDECAR_REDIS_TIMEOUT_MS", "300"),
    ])
    .await;
    // Sixteen sessions with a stream each: the grace must not grow with their number (asking
    // a silent store about each in turn would take 16 x 300 ms a pass).
    let mut streams = Vec::new();
    for i in 0..16 {
        let cookie = mock_login(&m, &m.a.sidecar, &format!("user-{i}"), &format!("sid-{i}")).await;
        streams.push(open_websocket(m.a.sidecar.addr, &session_header(&cookie)).await);
    }
    m.redis.signal("STOP");
    let stopped = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for mut ws in streams {
        readers.spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                match ws.read(&mut buf).await {
                    Ok(0) | Err(_) => return stopped.elapsed(),
                    Ok(_) => {}
                }
            }
        });
    }
    let closed = tokio::time::timeout(Duration::from_secs(20), readers.join_all()).await;
    m.redis.signal("CONT");
    let closed = closed.expect("a WebSocket stayed open through the outage");
    let (first, last) = (closed.iter().min().unwrap(), closed.iter().max().unwrap());
    println!("FIGURE 16 streams closed {first:?} to {last:?} into the Redis outage (grace 2 s)");
    // The grace runs from the last confirmation, which may precede the STOP by a check.
    assert!(
        *first >= Duration::from_millis(1700),
        "closed before the grace: {first:?}"
    );
    assert!(
        *last < Duration::from_secs(4),
        "the grace stretched: {last:?}"
    );
}

/// Sends a WebSocket handshake with `cookie` to `addr`; returns the socket and what the first
/// read got (the response head).
async fn handshake(addr: std::net::SocketAddr, cookie: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: app\r\nCookie: {cookie}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    (s, String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Opens a WebSocket through the sidecar at `addr` with `cookie`; returns the socket after the
/// 101 and a round trip of one frame.
async fn open_websocket(addr: std::net::SocketAddr, cookie: &str) -> TcpStream {
    let (mut s, resp) = handshake(addr, cookie).await;
    assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
    // A masked text frame "hi"; the upstream echoes it unmasked.
    s.write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2])
        .await
        .unwrap();
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, &[0x81, 2, b'h', b'i']);
    s
}

#[tokio::test]
async fn a_revoked_session_closes_its_streams_on_the_replica_that_holds_them() {
    let m = mock_pair(&[]).await;
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let header = session_header(&cookie);
    let a = &m.a.sidecar;

    let mut ws = open_websocket(a.addr, &header).await;
    let sse = client()
        .request(request(
            "GET",
            &a.url("/sse?n=100000&interval_ms=100"),
            &[("cookie", &header)],
            body(""),
        ))
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let mut sse = sse.into_body();
    // Both live through more than one revocation check while the session is valid.
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        let frame = sse.frame().await.unwrap().unwrap();
        assert!(frame.is_data());
    }
    ws.write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2])
        .await
        .unwrap();
    let mut echo = [0u8; 4];
    ws.read_exact(&mut echo).await.unwrap();

    // Logout on the other replica.
    let r = send(request(
        "POST",
        &m.b.sidecar.url("/auth/logout"),
        &[
            ("cookie", &header),
            ("sec-fetch-site", "same-origin"),
            ("origin", &m.b.sidecar.url("")),
        ],
        body(""),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 302);
    let revoked = Instant::now();
    let ws_closed = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            match ws.read(&mut buf).await {
                Ok(0) | Err(_) => return revoked.elapsed(),
                Ok(_) => {}
            }
        }
    });
    let sse_closed = tokio::spawn(async move {
        loop {
            match sse.frame().await {
                Some(Ok(_)) => {}
                _ => return revoked.elapsed(),
            }
        }
    });
    let ws_after = tokio::time::timeout(Duration::from_secs(10), ws_closed)
        .await
        .expect("the WebSocket stays open")
        .unwrap();
    let sse_after = tokio::time::timeout(Duration::from_secs(10), sse_closed)
        .await
        .expect("the event stream stays open")
        .unwrap();
    println!("FIGURE revocation on replica B -> closed on replica A: WebSocket {ws_after:?}, SSE {sse_after:?}");
    assert!(ws_after <= Duration::from_secs(5), "{ws_after:?}");
    assert!(sse_after <= Duration::from_secs(5), "{sse_after:?}");
    let metrics = String::from_utf8_lossy(get(&a.admin_url("/metrics"), &[]).await.unwrap().body())
        .into_owned();
    assert!(
        metrics.contains("sso_sidecar_streams_revoked_total 2"),
        "{metrics}"
    );
}

/// An event stream the upstream answers before it has the request body (a POST whose answer
/// streams at once), its session then revoked while the client still owes most of the body:
/// the stream ends, and its upstream connection is closed at once, not left open (holding its
/// place, with nothing watching the body) for as long as the client leaves the body unfinished.
/// The sidecar aborts the connection; hyper's client also closes it by itself once the
/// response body is dropped unfinished, so this holds the behaviour rather than the abort.
#[tokio::test]
async fn a_revoked_event_stream_closes_its_upstream_connection_with_its_body_unfinished() {
    // The upstream answers an event stream before reading anything of the body, then writes an
    // event every 100 ms; it reports when the sidecar closes the connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = format!("http://{}", listener.local_addr().unwrap());
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request head");
            head.extend_from_slice(&buf[..n]);
        }
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                       transfer-encoding: chunked\r\n\r\n";
        sock.write_all(answer).await.unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                r = sock.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { break },
                _ = tick.tick() => if sock.write_all(b"7\r\ndata:x\n\r\n").await.is_err() { break },
            }
        }
        let _ = closed_tx.send(());
    });
    let idp = MockIdp::start().await;
    let key = Key::new("k1");
    idp.set(|m| m.jwks = json!({"keys": [key.jwk()]}));
    let sc = start_oidc_sidecar(
        free_port(),
        &idp.issuer(),
        &up,
        &[("SSO_SIDECAR_CONNECTIONS__REVOCATION_CHECK_MS", "200")],
    )
    .await;
    let sc = &sc.sidecar;
    let cookie = idp.login(&key, sc, "alice", "sid-1").await;

    let mut client = TcpStream::connect(sc.addr).await.unwrap();
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: app\r\nCookie: {}\r\nSec-Fetch-Site: same-origin\r\n\
         Content-Length: 100000\r\n\r\nx",
        session_header(&cookie)
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data:x") {
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
            .await
            .expect("the event stream's first event")
            .unwrap();
        assert!(n > 0, "closed before the first event");
        seen.extend_from_slice(&buf[..n]);
    }
    let seen = String::from_utf8_lossy(&seen).into_owned();
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("text/event-stream"), "{seen}");

    crate::lifecycle::log_out(sc, &cookie).await;
    let revoked = Instant::now();
    // The client keeps its connection and never sends the rest of the body.
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the upstream connection stayed open after the stream's session was revoked")
        .unwrap();
    println!(
        "FIGURE upstream connection closed {:?} after the revocation",
        revoked.elapsed()
    );
    drop(client);
}

/// With `session_idle_timeout_secs`, a WebSocket's messages are use of its session: a user who
/// only chats over an open WebSocket stays logged in past the timeout, on every replica. Its
/// heartbeats are not: once only they flow (an unattended tab), the session ends after the
/// timeout and the tunnel closes.
#[tokio::test]
async fn websocket_messages_keep_an_idle_session_alive_and_heartbeats_do_not() {
    let m = mock_pair(&[("SSO_SIDECAR_SESSION_IDLE_TIMEOUT_SECS", "10")]).await;
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let mut ws = open_websocket(m.a.sidecar.addr, &session_header(&cookie)).await;
    // A masked text frame of `len` bytes; the upstream echoes it unmasked.
    async fn round_trip(ws: &mut TcpStream, len: usize) -> std::io::Result<Vec<u8>> {
        let mut frame = vec![0x81, 0x80 | len as u8, 1, 2, 3, 4];
        frame.extend((0..len).map(|i| b'm' ^ [1, 2, 3, 4][i % 4]));
        ws.write_all(&frame).await?;
        let mut echo = vec![0u8; 2 + len];
        ws.read_exact(&mut echo).await.map(|_| echo)
    }
    // A 40-byte message every second for 16 s (more than the timeout plus an eighth), and no
    // HTTP request.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(16) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let echo = round_trip(&mut ws, 40).await;
        assert!(
            echo.is_ok_and(|e| e[..2] == [0x81, 40]),
            "the tunnel closed at {:?}",
            start.elapsed()
        );
    }
    assert!(
        alive(&m.b.sidecar, &cookie).await,
        "the WebSocket's use reached the other replica"
    );
    // Then only heartbeats (2-byte frames, 8 bytes a read) every second: the session ends
    // between the timeout and an eighth more (plus a check), and the tunnel closes with it.
    let idle = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if round_trip(&mut ws, 2).await.is_err() {
                return idle.elapsed();
            }
        }
    })
    .await
    .expect("heartbeats kept an idle session's tunnel open");
    assert!(
        closed >= Duration::from_secs(10),
        "closed early: {closed:?}"
    );
    assert!(
        !alive(&m.b.sidecar, &cookie).await,
        "the idle session ended"
    );
}

#[tokio::test]
async fn a_planted_second_session_cookie_makes_the_request_unauthenticated() {
    let m = mock_pair(&[]).await;
    let sc = &m.a.sidecar;
    let cookie = mock_login(&m, sc, "alice", "sid-1").await;
    let planted = mock_login(&m, sc, "mallory", "sid-2").await;
    let ok = get(&sc.url("/echo/x"), &[("cookie", &session_header(&cookie))])
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    for both in [
        format!("sso_sidecar_session={planted}; sso_sidecar_session={cookie}"),
        format!("sso_sidecar_session={cookie}; a=1; sso_sidecar_session={planted}"),
    ] {
        let r = get(&sc.url("/echo/x"), &[("cookie", &both)]).await.unwrap();
        assert_eq!(r.status(), 401, "{both}: trust neither copy");
    }
    // A name that only decodes to ours is not ours (browsers check cookie prefixes on the
    // name as sent): ignored beside the real one, and alone no session.
    let encoded = format!("sso_sidecar_session={cookie}; sso%5Fsidecar%5Fsession={planted}");
    let r = get(&sc.url("/echo/x"), &[("cookie", &encoded)])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = String::from_utf8_lossy(r.body()).to_string();
    assert!(
        seen.contains("alice") && !seen.contains("mallory"),
        "{seen}"
    );
    assert!(
        !seen.contains(&planted),
        "stripped before the upstream: {seen}"
    );
    let alone = format!("sso%5Fsidecar%5Fsession={planted}");
    let r = get(&sc.url("/echo/x"), &[("cookie", &alone)])
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn over_https_the_cookies_carry_the_host_prefix() {
    let idp = MockIdp::start().await;
    let key = Key::new("k1");
    idp.set(|s| s.jwks = json!({"keys": [key.jwk()]}));
    let up = Upstream::start();
    let port = free_port();
    let redirect = format!("https://127.0.0.1:{port}/auth/callback");
    let sc = start_oidc_sidecar(
        port,
        &idp.issuer(),
        &up.url(),
        &[("OIDC_REDIRECT_URI", &redirect)],
    )
    .await;
    let sc = &sc.sidecar;
    let start = get(&sc.url("/auth/login?next=/"), &[]).await.unwrap();
    let state = start
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("__Host-sso_sidecar_session_state="))
        .expect("a __Host- state cookie");
    for attr in ["Secure", "Path=/", "HttpOnly"] {
        assert!(state.contains(attr), "{attr}: {state}");
    }
    assert!(!state.contains("Domain"), "{state}");

    let id = idp.login_named(&key, sc, "alice", "sid-1", "__Host-").await;
    let echo = get(
        &sc.url("/echo/x"),
        &[("cookie", &format!("__Host-sso_sidecar_session={id}"))],
    )
    .await
    .unwrap();
    assert_eq!(echo.status(), 200);
    assert!(
        !String::from_utf8_lossy(echo.body()).contains(&id),
        "the session cookie never reaches the upstream"
    );
    // What a sibling subdomain can plant (no prefix, or the prefix percent-encoded, which
    // browsers accept with a Domain) is not a session here.
    for planted in [
        format!("sso_sidecar_session={id}"),
        format!("__Host%2Dsso_sidecar_session={id}"),
    ] {
        let r = get(&sc.url("/echo/x"), &[("cookie", &planted)])
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{planted}");
    }
    // A name behind a Unicode space (U+2000) does not start with `__Host-` for the browser,
    // so a sibling may plant it with a Domain ("cookie chaos"): neither a session here, nor a
    // login state that would let an attacker's half-done login finish in the victim's browser.
    let with_raw_cookie = |path: &str, cookie: String| {
        let mut req = request("GET", &sc.url(path), &[], body(bytes::Bytes::new()));
        let v = http::HeaderValue::from_bytes(cookie.as_bytes()).unwrap();
        req.headers_mut().insert("cookie", v);
        req
    };
    let planted = format!("\u{2000}__Host-sso_sidecar_session={id}");
    let r = send(with_raw_cookie("/echo/x", planted)).await.unwrap();
    assert_eq!(r.status(), 401, "a session cookie behind a Unicode space");
    let (raw_state, _) = state.split_once(';').unwrap();
    let planted_state = format!("\u{2000}{raw_state}");
    let r = send(with_raw_cookie(
        "/auth/callback?code=c&state=s",
        planted_state,
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        String::from_utf8_lossy(r.body()).contains("OIDC state cookie missing."),
        "a login state behind a Unicode space is not ours: {:?}",
        r.body()
    );
}

/// Front-channel logout (LemonLDAP::NG's only kind): by `sid` on every replica, never for
/// another issuer, never by user id unless opted in, and the browser's own session only when
/// the request names it.
#[tokio::test]
async fn front_channel_logout_ends_sessions_on_every_replica() {
    let m = mock_pair(&[]).await;
    let (a, b) = (&m.a.sidecar, &m.b.sidecar);
    let alice = mock_login(&m, a, "alice", "sid-1").await;
    let bob = mock_login(&m, a, "bob", "sid-2").await;
    let alive = |sc: &Sidecar, cookie: &str| {
        let url = sc.url("/echo/x");
        let header = session_header(cookie);
        async move { get(&url, &[("cookie", &header)]).await.unwrap().status() == 200 }
    };
    let issuer = m.idp.issuer();
    let forged = get(
        &b.url(&format!(
            "/auth/frontchannel-logout?iss={}&sid=sid-1",
            urlencode("https://evil.example")
        )),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(forged.status(), 400);
    assert!(
        alive(a, &alice).await,
        "another issuer's logout ends nothing"
    );
    let without_iss = get(&b.url("/auth/frontchannel-logout?sid=sid-1"), &[])
        .await
        .unwrap();
    assert_eq!(without_iss.status(), 400, "a sid without its issuer");
    assert!(alive(a, &alice).await, "ends nothing");

    let r = get(
        &b.url(&format!(
            "/auth/frontchannel-logout?iss={}&sid=sid-1",
            urlencode(&issuer)
        )),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.body().is_empty());
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    let idp_origin = url::Url::parse(&issuer)
        .unwrap()
        .origin()
        .ascii_serialization();
    assert!(
        csp.contains(&format!("frame-ancestors {idp_origin}")),
        "{csp}"
    );
    assert!(
        !alive(a, &alice).await,
        "ended on the replica that holds it"
    );
    assert!(alive(a, &bob).await, "another user's session stays");

    // The request carries no proof: a user id sent as sid ends nothing unless the operator
    // opted in (for an IdP that sends the user id there).
    let by_sub = format!(
        "/auth/frontchannel-logout?iss={}&sid=bob",
        urlencode(&issuer)
    );
    let r = get(&b.url(&by_sub), &[]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(alive(a, &bob).await, "not by user id by default");

    // A request that names no session of this browser ends nothing of it, however it is
    // loaded: a link or image from anywhere, or a frame on a sibling site (same-site: the
    // cookie goes along; before, a framed bare URL logged the visitor out).
    let bare = b.url("/auth/frontchannel-logout");
    for (dest, mode, site) in [
        ("document", "navigate", "cross-site"),
        ("image", "no-cors", "cross-site"),
        ("iframe", "navigate", "same-site"),
        ("iframe", "navigate", "cross-site"),
    ] {
        let r = get(
            &bare,
            &[
                ("cookie", &session_header(&bob)),
                ("sec-fetch-dest", dest),
                ("sec-fetch-mode", mode),
                ("sec-fetch-site", site),
            ],
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("set-cookie").is_none(),
            "{dest} {site}: the cookie is kept"
        );
        assert!(alive(a, &bob).await, "{dest} {site}: the session stays");
    }
    // Named (its sid) and framed, as the IdP's logout page does: it ends, and the cookie goes.
    let named = b.url(&format!(
        "/auth/frontchannel-logout?iss={}&sid=sid-2",
        urlencode(&issuer)
    ));
    let r = get(
        &named,
        &[
            ("cookie", &session_header(&bob)),
            ("sec-fetch-dest", "iframe"),
            ("sec-fetch-site", "cross-site"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let cleared = r.headers().get_all("set-cookie").iter().count();
    assert_eq!(cleared, 1, "the browser's cookie is cleared");
    assert!(!alive(a, &bob).await, "named: the browser's session ends");
}

/// `frontchannel_logout_by_sub` on (LemonLDAP::NG, whose ID tokens carry no `sid`, sends the
/// user id as `sid`): when no session carries the `sid`, the sessions of that `sub` end, on
/// every replica, and only those.
#[tokio::test]
async fn front_channel_logout_by_user_id_is_opt_in() {
    let m = mock_pair(&[("SSO_SIDECAR_FRONTCHANNEL_LOGOUT_BY_SUB", "true")]).await;
    let (a, b) = (&m.a.sidecar, &m.b.sidecar);
    let alice = mock_login(&m, a, "alice", "sid-1").await;
    let bob = mock_login(&m, a, "bob", "sid-2").await;
    let alive = |cookie: &str| {
        let url = b.url("/echo/x");
        let header = session_header(cookie);
        async move { get(&url, &[("cookie", &header)]).await.unwrap().status() == 200 }
    };
    let r = get(
        &b.url(&format!(
            "/auth/frontchannel-logout?iss={}&sid=bob",
            urlencode(&m.idp.issuer())
        )),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!alive(&bob).await, "the sessions of that sub end");
    assert!(alive(&alice).await, "another user's stay");
}

/// An ID token with only a `sub` (LemonLDAP::NG's default): the profile comes from userinfo,
/// when userinfo names the same subject.
#[tokio::test]
async fn a_bare_id_token_gets_its_profile_from_userinfo() {
    let m = mock_pair(&[]).await;
    m.idp.set(|s| {
        s.userinfo =
            serde_json::json!({"sub": "alice", "email": "alice@example.test", "name": "Alice"})
    });
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let r = get(
        &m.a.sidecar.url("/echo/x"),
        &[("cookie", &session_header(&cookie))],
    )
    .await
    .unwrap();
    assert_eq!(
        json(&r)["headers"]["x-forwarded-email"][0],
        "alice@example.test"
    );
    // A userinfo that names someone else is not believed.
    m.idp
        .set(|s| s.userinfo = serde_json::json!({"sub": "mallory", "email": "m@evil.example"}));
    let cookie = mock_login(&m, &m.a.sidecar, "bob", "sid-2").await;
    let r = get(
        &m.a.sidecar.url("/echo/x"),
        &[("cookie", &session_header(&cookie))],
    )
    .await
    .unwrap();
    assert!(json(&r)["headers"].get("x-forwarded-email").is_none());
    m.a.sidecar.logged("userinfo names another subject").await;
}

/// A session holds at most `max_uploads_per_session` request bodies on their way upstream at
/// once: one user trickling bodies (on HTTP/2, as many streams as the connection allows) cannot
/// hold every upstream place for as long as the bodies' bound. The request beyond is answered
/// 429 before the upstream sees it; another user at the same address is not held back; a body
/// that is through gives its place back (before its answer ends: `pool.rs`'s
/// `an_address_holds_at_most_its_cap_of_bodies_on_their_way_upstream` shows that).
#[tokio::test]
async fn a_session_holds_at_most_its_cap_of_bodies_on_their_way_upstream() {
    let m = mock_pair(&[("SSO_SIDECAR_CONNECTIONS__MAX_UPLOADS_PER_SESSION", "2")]).await;
    let a = &m.a.sidecar;
    let alice = session_header(&mock_login(&m, a, "alice", "sid-1").await);
    let bob = session_header(&mock_login(&m, a, "bob", "sid-2").await);
    let mut uploads = Vec::new();
    for _ in 0..3 {
        uploads.push(start_trickle(a.addr, "/upload", &[("Cookie", &alice)]).await);
    }
    let heads = answered_within(&mut uploads, Duration::from_secs(3)).await;
    let refused: Vec<usize> = (0..3).filter(|&i| heads[i].is_some()).collect();
    assert_eq!(refused.len(), 1, "one of three answered at once: {heads:?}");
    let refusal = heads[refused[0]].as_deref().unwrap_or_default();
    assert!(refusal.starts_with("HTTP/1.1 429"), "{refusal}");
    assert!(
        refusal.to_ascii_lowercase().contains("retry-after: 5"),
        "{refusal}"
    );
    // Another user at the same address uploads meanwhile.
    let mut bobs = start_trickle(a.addr, "/upload", &[("Cookie", &bob)]).await;
    assert!(finish_trickle(&mut bobs).await.starts_with("HTTP/1.1 200"));
    // One of Alice's bodies through: her next upload is taken.
    let mut sending = unanswered(uploads, &heads);
    assert!(finish_trickle(&mut sending[0])
        .await
        .starts_with("HTTP/1.1 200"));
    let mut next = start_trickle(a.addr, "/upload", &[("Cookie", &alice)]).await;
    assert!(finish_trickle(&mut next).await.starts_with("HTTP/1.1 200"));
    // Alice's two, Bob's and her next: never the refused one.
    let upstream_saw = m.up.paths().await;
    assert_eq!(
        upstream_saw.iter().filter(|p| *p == "/upload").count(),
        4,
        "{upstream_saw:?}"
    );
    drop(sending);
}

/// A user holds at most `max_streams_per_session` event streams on a replica, all their
/// sessions together: a stream leaves the upstream cap once its answer begins, so without a
/// cap of its own one user's HTTP/2 streams could hold every upstream connection. The stream
/// beyond is answered 429; another user is not held back; a closed stream gives its place back.
#[tokio::test]
async fn a_session_holds_at_most_its_cap_of_event_streams() {
    let m = mock_pair(&[("SSO_SIDECAR_CONNECTIONS__MAX_STREAMS_PER_SESSION", "2")]).await;
    let a = &m.a.sidecar;
    let alice = session_header(&mock_login(&m, a, "alice", "sid-1").await);
    let bob = session_header(&mock_login(&m, a, "bob", "sid-2").await);
    let open = |cookie: String| async move {
        let mut s = TcpStream::connect(a.addr).await.unwrap();
        let head = format!(
            "GET /sse?n=100&interval_ms=1000 HTTP/1.1\r\nHost: app\r\nCookie: {cookie}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let answer = read_head(&mut s, Duration::from_secs(10))
            .await
            .unwrap_or_default();
        (s, answer)
    };
    let (one, head) = open(alice.clone()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_two, head) = open(alice.clone()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_, head) = open(alice.clone()).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 5"),
        "{head}"
    );
    // Signing in again does not double the share: it is the user's.
    let again = session_header(&mock_login(&m, a, "alice", "sid-3").await);
    let (_, head) = open(again).await;
    assert!(
        head.starts_with("HTTP/1.1 429"),
        "a second session of alice: {head}"
    );
    let (_bobs, head) = open(bob).await;
    assert!(head.starts_with("HTTP/1.1 200"), "another user: {head}");
    drop(one);
    // The closed stream's place comes back once the sidecar has seen it close.
    let reopened = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (s, head) = open(alice.clone()).await;
            if head.starts_with("HTTP/1.1 200") {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "a closed stream kept its place");
}

/// A session holds at most `max_tunnels_per_session` tunnels on a replica: one user cannot fill
/// the connection cap with idle WebSockets. The cap is the session's, not the address's: a
/// second user at the same address (behind the same NAT) opens theirs.
#[tokio::test]
async fn a_session_holds_at_most_its_cap_of_tunnels() {
    let m = mock_pair(&[("SSO_SIDECAR_CONNECTIONS__MAX_TUNNELS_PER_SESSION", "2")]).await;
    let a = &m.a.sidecar;
    let alice = session_header(&mock_login(&m, a, "alice", "sid-1").await);
    let bob = session_header(&mock_login(&m, a, "bob", "sid-2").await);
    let _one = open_websocket(a.addr, &alice).await;
    let _two = open_websocket(a.addr, &alice).await;
    let (_, third) = handshake(a.addr, &alice).await;
    assert!(third.starts_with("HTTP/1.1 429"), "{third}");
    let _bobs = open_websocket(a.addr, &bob).await;
    drop(_one);
    // The closed tunnel's place comes back once the sidecar has seen it close.
    let reopened = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (s, head) = handshake(a.addr, &alice).await;
            if head.starts_with("HTTP/1.1 101") {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "a closed tunnel kept its place");
}

/// The upstream cannot set the sidecar's own cookies (a backend that reflects a name and value,
/// or is made to, would plant another person's session in the browser: `__Host-` does not stop
/// a same-origin response); its other cookies reach the browser. With a session, and on a
/// public path without one.
#[tokio::test]
async fn the_upstream_cannot_set_the_sidecars_own_cookies() {
    let m = mock_pair(&[("SSO_SIDECAR_PATHS__PUBLIC", "/public/*")]).await;
    let cookie = session_header(&mock_login(&m, &m.a.sidecar, "alice", "sid-1").await);
    let query = "c=sso_sidecar_session%3Dplanted%3B%20Path%3D%2F&c=theme%3Ddark&c=sso_sidecar_session_state%3Dx";
    for (path, headers) in [
        ("/set-cookies", vec![("cookie", cookie.as_str())]),
        ("/public/set-cookies", vec![]),
    ] {
        let r = get(&m.a.sidecar.url(&format!("{path}?{query}")), &headers)
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let set: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
        assert_eq!(set, ["theme=dark"], "{path}");
    }
}

/// A WebSocket a path rule let through is judged again at each stream check: once a reload
/// rules its path for a group the user is not in, it closes at the next check, while the same
/// session's stream on a path still allowed stays open. It stayed open until the session
/// ended (a week).
#[tokio::test]
async fn a_stream_no_longer_allowed_by_the_path_rules_closes() {
    let idp = MockIdp::start().await;
    let key = Key::new("k1");
    idp.set(|m| m.jwks = json!({"keys": [key.jwk()]}));
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sso.toml");
    let rule =
        |path: &str| format!("[[authz.rules]]\npath = \"{path}\"\ngroups = [\"admins\"]\n\n");
    std::fs::write(&file, rule("/admin/*")).unwrap();
    let cfg = file.to_str().unwrap().to_owned();
    let sc = start_oidc_sidecar(
        free_port(),
        &idp.issuer(),
        &up.url(),
        &[
            ("SSO_SIDECAR_CONFIG", &cfg),
            ("SSO_SIDECAR_CONNECTIONS__REVOCATION_CHECK_MS", "200"),
        ],
    )
    .await;
    let sc = &sc.sidecar;
    let cookie = format!(
        "Cookie: {}\r\n",
        session_header(&idp.login(&key, sc, "alice", "sid-1").await)
    );
    let open = |path: &'static str| {
        let cookie = cookie.clone();
        async move {
            let (mut s, head) = crate::streaming::ws_to(sc.addr, path, &cookie).await;
            assert!(head.starts_with("HTTP/1.1 101"), "{path}: {head}");
            crate::streaming::ws_echo(&mut s, "hi").await;
            s
        }
    };
    let mut ruled = open("/ws").await;
    let mut other = open("/chat/ws").await;

    std::fs::write(&file, format!("{}{}", rule("/admin/*"), rule("/ws"))).unwrap();
    sc.signal("HUP");
    assert!(
        closes_within(&mut ruled, Duration::from_secs(5)).await,
        "the stream on the newly ruled path stayed open"
    );
    crate::streaming::ws_echo(&mut other, "still here").await;
    let met = metrics(sc).await;
    assert_eq!(
        metric(&met, "sso_sidecar_streams_revoked_total"),
        1.0,
        "{met}"
    );
    let (_, head) = crate::streaming::ws_to(sc.addr, "/ws", &cookie).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

/// The other way a path rule stops admitting a stream: the user leaves the group at the IdP.
/// A refresh on replica B (claims from userinfo) writes the session's new groups; replica A,
/// which holds the session's WebSocket on the ruled path, closes it at its next check.
#[tokio::test]
async fn a_stream_closes_on_another_replica_once_a_refresh_drops_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sso.toml");
    std::fs::write(
        &file,
        "[[authz.rules]]\npath = \"/ws\"\ngroups = [\"admins\"]\n",
    )
    .unwrap();
    let cfg = file.to_str().unwrap().to_owned();
    let m = mock_pair(&[
        ("SSO_SIDECAR_CONFIG", &cfg),
        ("OIDC_CLAIM_SOURCE", "userinfo"),
        ("SSO_SIDECAR_CONNECTIONS__REVOCATION_CHECK_MS", "200"),
    ])
    .await;
    let info = |groups: serde_json::Value| json!({"sub": "alice", "groups": groups});
    m.idp.set(|s| {
        s.login_expires_in = 4;
        s.userinfo = info(json!(["admins"]));
    });
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let header = format!("Cookie: {}\r\n", session_header(&cookie));
    let (mut ws, head) = crate::streaming::ws_to(m.a.sidecar.addr, "/ws", &header).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    crate::streaming::ws_echo(&mut ws, "hi").await;

    m.idp.set(|s| {
        s.token_response = json!({"access_token": "at-2", "token_type": "Bearer",
            "expires_in": 600, "refresh_token": "rt-2"});
        s.userinfo = info(json!(["alumni"]));
    });
    let refreshed = || m.idp.state.lock().unwrap().token_requests.len() > 1;
    let start = Instant::now();
    while !refreshed() {
        assert!(alive(&m.b.sidecar, &cookie).await, "no global allow-list");
        assert!(start.elapsed() < Duration::from_secs(10), "no refresh on B");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        closes_within(&mut ws, Duration::from_secs(5)).await,
        "the stream outlived the group its rule asks for"
    );
    assert!(
        alive(&m.b.sidecar, &cookie).await,
        "the session itself lives on"
    );
}

/// Whether the sidecar closes `s` within `limit` (whatever it sends meanwhile is read).
async fn closes_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    let closed = async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    };
    tokio::time::timeout(limit, closed).await.is_ok()
}
