//! The door under attack: silent and idle connections, connection floods under a lowered
//! open-file limit, smuggled upgrades (h2c), path tricks other backends resolve, `CONNECT` and
//! `Host` games, oversized `next`, the headers of the sidecar's own pages, and one HTTP/2 client
//! trying to open an upstream connection per stream. Each test reproduces the attack on the
//! real binary; the figures they print are the ones quoted in the closing note.

use crate::mock_idp::{Key, MockIdp};
use crate::oidc_support::*;
use crate::support::*;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Writes `raw` on a new connection from `from` and reads until the peer closes (or 5 s).
pub(crate) async fn exchange_from(from: &str, to: SocketAddr, raw: &[u8]) -> String {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(to).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) async fn exchange(to: SocketAddr, raw: &[u8]) -> String {
    exchange_from("127.0.0.1", to, raw).await
}

/// Reads one HTTP/1.1 response (head and a `Content-Length` body) from `s`.
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .unwrap();
        if n == 0 {
            return String::from_utf8_lossy(&out).into_owned();
        }
        out.extend_from_slice(&buf[..n]);
    }
}
fn status_of(response: &str) -> &str {
    response.split(' ').nth(1).unwrap_or("")
}

/// This test process needs thousands of sockets of its own.
fn raise_own_fd_limit() {
    let n = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        n >= 4096,
        "the tests need `ulimit -n` of at least 4096 (hard limit {n})"
    );
}

/// When the peer closes `s` (EOF or reset), counted from `since`; `None` after 15 s.
async fn closed_at(mut s: TcpStream, since: Instant) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), read_all)
        .await
        .ok()
}

/// Whether the peer has closed `s` (EOF or reset), without waiting.
fn closed(s: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match s.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_by_their_deadlines() {
    raise_own_fd_limit();
    let up = Upstream::start();
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_CONNECTIONS__FIRST_BYTE_TIMEOUT_SECS", "1"),
        ("SSO_SIDECAR_CONNECTIONS__IDLE_TIMEOUT_SECS", "2"),
        // Only the idle deadline may close the HTTP/2 connections below (they answer no ping).
        ("SSO_SIDECAR_CONNECTIONS__HTTP2_PING_INTERVAL_SECS", "0"),
        ("SSO_SIDECAR_CONNECTIONS__MAX_PER_IP", "0"),
    ])
    .await;
    let start = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..3000 {
        silent.push(TcpStream::connect(sc.addr).await.unwrap());
    }
    // h2c by prior knowledge: the preface and an empty SETTINGS frame, then nothing.
    let mut idle_h2 = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(sc.addr).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .unwrap();
        idle_h2.push(s);
    }
    let opened = Instant::now();
    // Each socket watched by a task of its own: the time its peer closed it.
    let watch = |sockets: Vec<TcpStream>| {
        sockets
            .into_iter()
            .map(|s| tokio::spawn(closed_at(s, opened)))
            .collect::<Vec<_>>()
    };
    let (silent, idle_h2) = (watch(silent), watch(idle_h2));
    let latest = |tasks: Vec<tokio::task::JoinHandle<Option<Duration>>>| async move {
        let mut latest = Duration::ZERO;
        for t in tasks {
            let closed = t
                .await
                .unwrap()
                .expect("a connection still open after 15 s");
            latest = latest.max(closed);
        }
        latest
    };
    let silent_closed_after = latest(silent).await;
    let idle_closed_after = latest(idle_h2).await;
    println!(
        "FIGURE silent sockets: 3000 opened in {:?}, all closed {:?} after (deadline 1 s), 0 held; \
         300 idle h2c connections closed {:?} after (idle deadline 2 s)",
        opened - start,
        silent_closed_after,
        idle_closed_after
    );
    assert!(
        idle_closed_after >= Duration::from_secs(2),
        "not before the idle deadline: {idle_closed_after:?}"
    );
    let m = metrics(&sc).await;
    assert!(
        metric(
            &m,
            "sso_sidecar_connections_timed_out_total{reason=\"first_byte\"}"
        ) >= 3000.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "sso_sidecar_connections_timed_out_total{reason=\"idle\"}"
        ) >= 300.0
    );
    let r = get(&sc.url("/echo/after"), &[]).await.unwrap();
    assert_eq!(r.status(), 200, "the listener still serves");
}

/// Clients that ask for a response and take none of it — an HTTP/1.1 reader that stops
/// reading, an HTTP/2 client that leaves its stream window at zero — are cut off after the
/// send timeout, and the upstream places their responses held go back to everyone else.
#[tokio::test]
async fn clients_that_stop_reading_are_cut_off_and_free_their_upstream_places() {
    let up = Upstream::start();
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_WORKERS", "1"),
        ("SSO_SIDECAR_CONNECTIONS__UPSTREAM_MAX_PER_WORKER", "2"),
        ("SSO_SIDECAR_CONNECTIONS__SEND_TIMEOUT_SECS", "1"),
        ("SSO_SIDECAR_UPSTREAM_TIMEOUT_SECS", "30"),
    ])
    .await;
    // HTTP/1.1: 64 MiB asked for, the head read, then nothing.
    let mut h1 = TcpStream::connect(sc.addr).await.unwrap();
    h1.write_all(b"GET /download?size=67108864 HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    h1.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // HTTP/2: a stream window of zero, and the body never asked for.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .http2_initial_stream_window_size(0)
        .build_http::<TestBody>();
    let stalled = h2
        .request(request(
            "GET",
            &sc.url("/download?size=1048576"),
            &[],
            body(""),
        ))
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);

    // Both places under the cap of 2 are held; a third request is served once they are freed.
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), get(&sc.url("/echo/after"), &[]))
        .await
        .expect("served within 10 s, long before the 30 s upstream timeout")
        .unwrap();
    assert_eq!(r.status(), 200);
    println!(
        "FIGURE the third request waited {:?} (send timeout 1 s)",
        t0.elapsed()
    );
    // One freed place served it; the other stalled connection goes within a check or two.
    let cut = "sso_sidecar_connections_timed_out_total{reason=\"send\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = metrics(&sc).await;
        if metric(&m, cut) == 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both stalled connections cut: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The HTTP/1.1 connection was closed: what is left in its socket ends.
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match h1.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "the stalled HTTP/1.1 connection was closed"
    );
    drop(stalled);
}

/// HTTP/2: the send deadline is each stream's. A stream whose window the client leaves at zero
/// is reset, while its neighbours on the same connection carry on: an event stream that keeps
/// moving (which used to hide the stalled stream for ever) and a slow answer not yet begun
/// (which a connection-wide deadline cut with the stalled stream).
#[tokio::test]
async fn a_stalled_http2_stream_is_reset_and_its_neighbours_carry_on() {
    use http_body_util::BodyExt;
    let up = Upstream::start();
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_CONNECTIONS__SEND_TIMEOUT_SECS", "1"),
    ])
    .await;
    // One connection for all three streams; 64 KiB per stream let in, the connection's window
    // wide enough that the stalled stream does not close it for the others.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .http2_initial_stream_window_size(65_535)
        .http2_initial_connection_window_size(16 << 20)
        .build_http::<TestBody>();
    let on = |path: &str| request("GET", &sc.url(path), &[], body(""));
    // 4 MiB asked for, the first 64 KiB let in, then nothing read.
    let stalled = h2.request(on("/download?size=4194304")).await.unwrap();
    assert_eq!(stalled.status(), 200);
    // An answer that begins after 5 s, long after the stalled stream's deadline.
    let slow = tokio::spawn(h2.request(on("/slow?ms=5000")));
    // Events every 100 ms for 8 s, read as they come.
    let events = h2.request(on("/sse?n=80&interval_ms=100")).await.unwrap();
    assert_eq!(events.status(), 200);
    let events = tokio::spawn(async move {
        let b = events.into_body().collect().await.map(|c| c.to_bytes());
        b.map(|b| String::from_utf8_lossy(&b).matches("data: event").count())
    });

    let cut = "sso_sidecar_connections_timed_out_total{reason=\"send\"}";
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let m = metrics(&sc).await;
        if metric(&m, cut) >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled stream was reset while the event stream moved: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!events.is_finished(), "the event stream still runs");
    // What was let in is there; the rest never comes: the stream was reset, not finished.
    let rest = tokio::time::timeout(Duration::from_secs(10), stalled.into_body().collect())
        .await
        .expect("the stalled stream ends");
    assert!(rest.is_err(), "the stalled stream was reset");
    // The neighbours, on the same connection, were served in full.
    let slow = slow.await.unwrap().expect("the slow answer came");
    assert_eq!(slow.status(), 200);
    assert_eq!(events.await.unwrap().expect("every event"), 80);
    assert_eq!(
        metric(&metrics(&sc).await, cut),
        1.0,
        "nothing else was cut"
    );
}

/// The admin listener (probes, metrics) holds at most `connections.admin_max` connections: the
/// ones beyond are closed as soon as they are accepted, and probes go on once the holders leave.
#[tokio::test]
async fn the_admin_listener_caps_its_connections() {
    let up = Upstream::start();
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_CONNECTIONS__ADMIN_MAX", "4"),
    ])
    .await;
    // Each held connection proves it was admitted by being served (kept alive afterwards). A
    // refused one is retried: the readiness probe's connection may still be counted until the
    // sidecar sees it close, and counting it is the cap working, not failing.
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "4 connections admitted within 10 s"
        );
        let mut s = TcpStream::connect(sc.admin).await.unwrap();
        // A refused connection may fail the write or the read with a reset: that is a retry.
        let probe = b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n";
        let mut got = [0u8; 512];
        let served = match s.write_all(probe).await {
            Ok(()) => tokio::time::timeout(Duration::from_secs(5), s.read(&mut got))
                .await
                .ok()
                .and_then(Result::ok)
                .is_some_and(|n| got[..n].starts_with(b"HTTP/1.1 200")),
            Err(_) => false,
        };
        if served {
            held.push(s);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for i in 0..4 {
        let mut extra = TcpStream::connect(sc.admin).await.unwrap();
        let mut b = [0u8; 1];
        // Closed at once, not after the 10 s first-byte deadline that ends an admitted one.
        let r = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut b)).await;
        assert!(
            matches!(r, Ok(Ok(0) | Err(_))),
            "connection {} over the cap closed at once: {r:?}",
            i + 5
        );
    }
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(r) = get(&sc.admin_url("/healthz"), &[]).await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the admin listener serves again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Counted apart from the public listener's refusals.
    let m = metrics(&sc).await;
    let refused = "sso_sidecar_connections_refused_total{reason=\"admin_max_connections\"}";
    assert!(metric(&m, refused) >= 4.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "sso_sidecar_connections_refused_total{reason=\"max_connections\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn legitimate_clients_are_served_while_an_attacker_holds_connections() {
    raise_own_fd_limit();
    let up = Upstream::start();
    // A common container limit; the sidecar cannot raise a hard limit of 1024.
    let sc = Sidecar::start_under(
        &["prlimit", "--nofile=1024:1024"],
        &[("SSO_SIDECAR_UPSTREAM", &up.url())],
    )
    .await;
    sc.logged("the open-file limit caps client connections")
        .await;
    // The attacker (127.0.0.1) opens 1,100 connections and keeps each one busy enough to pass
    // the first-byte deadline: one byte of a request head, then nothing.
    let mut held = Vec::new();
    for _ in 0..1100 {
        let mut s = TcpStream::connect(sc.addr).await.unwrap();
        let _ = s.write_all(b"G").await;
        held.push(s);
    }
    // Legitimate clients come from another address while the attacker holds on.
    let mut ok = 0;
    for i in 0..100 {
        let raw = format!("GET /echo/legit/{i} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
        let r = exchange_from("127.0.0.2", sc.addr, raw.as_bytes()).await;
        if status_of(&r) == "200" {
            ok += 1;
        }
    }
    let open = held.iter().filter(|s| !closed(s)).count();
    println!(
        "FIGURE fd limit 1024: attacker holds {open} of 1100 connections, legitimate success {ok}/100"
    );
    assert_eq!(ok, 100, "every legitimate request succeeds");
    assert!(open <= 512, "the per-address cap holds: {open}");
    let m = metrics(&sc).await;
    assert!(
        metric(
            &m,
            "sso_sidecar_connections_refused_total{reason=\"max_connections_per_ip\"}"
        ) >= 500.0,
        "{m}"
    );
    sc.logged("connections refused: a connection cap is reached")
        .await;
}

/// A sidecar in OIDC mode (headers identity) in front of the test upstream, with a mock IdP.
async fn oidc_world(extra: &[(&str, &str)]) -> (MockIdp, Upstream, OidcSidecar) {
    let idp = MockIdp::start().await;
    idp.set(|m| m.jwks = json!({"keys": [Key::new("k1").jwk()]}));
    let up = Upstream::start();
    let sc = start_oidc_sidecar(free_port(), &idp.issuer(), &up.url(), extra).await;
    (idp, up, sc)
}

#[tokio::test]
async fn only_a_websocket_handshake_is_tunnelled() {
    let (_idp, _up, sc) = oidc_world(&[("SSO_SIDECAR_PATHS__BEARER_PASSTHROUGH", "true")]).await;
    let sc = &sc.sidecar;
    // The review's attack: an h2c upgrade on a public path, then a request inside the tunnel
    // claiming to be admin.
    let mut s = TcpStream::connect(sc.addr).await.unwrap();
    s.write_all(
        b"GET /assets/x HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await
    .unwrap();
    let first = read_response(&mut s).await;
    assert_eq!(status_of(&first), "200", "answered as plain HTTP: {first}");
    let echoed = first.to_ascii_lowercase();
    assert!(
        !echoed.contains("\"upgrade\"") && !echoed.contains("http2-settings"),
        "the upstream saw no upgrade: {first}"
    );
    s.write_all(b"GET /echo/inside HTTP/1.1\r\nHost: app\r\nX-Forwarded-User: admin\r\n\r\n")
        .await
        .unwrap();
    let second = read_response(&mut s).await;
    assert!(!second.contains("TUNNELLED"), "no tunnel: {second}");
    assert_eq!(
        status_of(&second),
        "401",
        "the next request goes through the gate: {second}"
    );

    // An upstream that switches protocols unasked is not relayed.
    let r = exchange(
        sc.addr,
        b"GET /assets/../x HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), "400");
    let r = exchange(
        sc.addr,
        b"GET /switch HTTP/1.1\r\nHost: app\r\nAuthorization: Bearer x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), "502", "{r}");
}

#[tokio::test]
async fn traversal_forms_other_backends_resolve_are_refused() {
    let (_idp, _up, sc) = oidc_world(&[]).await;
    let sc = &sc.sidecar;
    for path in [
        "/assets/..;/v1/models",
        "/assets/..;jsessionid=x/v1/models",
        "/assets/%252e%252e/v1/models",
        "/assets/%252E%252E%252Fv1/models",
        "/assets/%c0%ae%c0%ae/v1/models",
        "/assets/%c0%ae%c0%ae%c0%afv1/models",
        "/assets/%e0%80%ae%e0%80%ae/v1/models",
        "/assets/%u002e%u002e/v1/models",
        "/assets/..%255c..%255cv1/models",
    ] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
        let r = exchange(sc.addr, raw.as_bytes()).await;
        assert_eq!(status_of(&r), "400", "{path}: {r}");
        assert!(r.contains("Invalid request path"), "{path}: {r}");
    }
    // Ordinary public paths still pass.
    let r = get(&sc.url("/assets/app.js"), &[]).await.unwrap();
    assert_eq!(r.status(), 200);
    // A trusted origin's CORS preflight (with `forward_preflights`, forwarded without a
    // session) is no way around it.
    let (_idp, _up, sc) = oidc_world(&[
        ("SSO_SIDECAR_TRUSTED_ORIGINS", "https://ui.example.test"),
        ("SSO_SIDECAR_FORWARD_PREFLIGHTS", "true"),
    ])
    .await;
    let preflight = |path: &str| {
        format!(
            "OPTIONS {path} HTTP/1.1\r\nHost: app\r\nOrigin: https://ui.example.test\r\n\
             Access-Control-Request-Method: DELETE\r\nConnection: close\r\n\r\n"
        )
    };
    let r = exchange(
        sc.sidecar.addr,
        preflight("/assets/..;/admin/users").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&r), "400", "{r}");
    let r = exchange(sc.sidecar.addr, preflight("/echo/preflight").as_bytes()).await;
    assert_eq!(status_of(&r), "200", "{r}");
}

#[tokio::test]
async fn connect_and_host_games_are_refused() {
    let up = Upstream::start();
    let token = Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;
    let idp = MockIdp::start().await;
    idp.set(|m| m.jwks = json!({"keys": [Key::new("k1").jwk()]}));
    let oidc = start_oidc_sidecar(free_port(), &idp.issuer(), &up.url(), &[]).await;
    for sc in [&token, &oidc.sidecar] {
        let before = json(&get(&format!("{}/__conns", up.url()), &[]).await.unwrap());
        let r = exchange(
            sc.addr,
            b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nAuthorization: Bearer x\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&r), "405", "{r}");
        // TRACE would echo the credentials the sidecar adds; refused in any case, like CONNECT.
        for method in ["TRACE", "trace", "TRACK", "connect"] {
            let raw =
                format!("{method} /echo/x HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
            let r = exchange(sc.addr, raw.as_bytes()).await;
            assert_eq!(status_of(&r), "405", "{method}: {r}");
        }
        // Targets without a path: no path rule sees them, so none may reach the upstream's `/`.
        for raw in [
            &b"POST app HTTP/1.1\r\nHost: app\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
                [..],
            b"GET app:80 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
        ] {
            let r = exchange(sc.addr, raw).await;
            assert_eq!(status_of(&r), "400", "{r}");
            assert!(r.contains("Unsupported request target"), "{r}");
        }
        let r = exchange(
            sc.addr,
            b"GET /assets/a HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&r), "400", "no Host: {r}");
        let r = exchange(
            sc.addr,
            b"GET /assets/a HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&r), "400", "two Hosts: {r}");
        let after = json(&get(&format!("{}/__conns", up.url()), &[]).await.unwrap());
        assert_eq!(
            after["connections"].as_u64().unwrap(),
            before["connections"].as_u64().unwrap() + 1,
            "nothing but our own /__conns reached the upstream"
        );
    }
    let r = exchange(token.addr, b"GET /echo/old HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&r), "200", "HTTP/1.0 needs no Host: {r}");
}

#[tokio::test]
async fn own_pages_carry_security_headers_and_an_overlong_next_is_dropped() {
    let (_idp, _up, sc) = oidc_world(&[]).await;
    let sc = &sc.sidecar;
    for (path, headers) in [
        ("/auth/me", vec![("accept", "text/html")]),
        ("/v1/x", vec![]),
        ("/auth/logout", vec![("accept", "text/html")]),
    ] {
        let r = get(&sc.url(path), &headers).await.unwrap();
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        // The logout confirmation page is the one exception: its button's POST must carry
        // its Origin (browser_logins.rs).
        let policy = if path == "/auth/logout" {
            "same-origin"
        } else {
            "no-referrer"
        };
        assert_eq!(h["referrer-policy"], policy, "{path}");
        assert_eq!(
            h["content-security-policy"],
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            "{path}"
        );
    }
    let long = format!("/{}", "a".repeat(20 * 1024));
    let r = get(&sc.url(&format!("/auth/login?next={long}")), &[])
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.len())
        .max()
        .unwrap();
    assert!(
        cookie < 4096,
        "the state cookie fits in a browser: {cookie} bytes"
    );
}

#[tokio::test]
async fn many_http2_streams_share_a_few_upstream_connections() {
    let up = Upstream::start();
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_WORKERS", "1"),
        ("SSO_SIDECAR_CONNECTIONS__UPSTREAM_MAX_PER_WORKER", "8"),
    ])
    .await;
    let conns = || async {
        json(&get(&format!("{}/__conns", up.url()), &[]).await.unwrap())["connections"]
            .as_u64()
            .unwrap()
    };
    let before = conns().await;
    // One client connection, 150 concurrent streams on it.
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(sc.addr).await.unwrap());
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for i in 0..150 {
        let mut c = sender.clone();
        let req = http::Request::builder()
            .uri(format!("http://{}/slow?ms=200&i={i}", sc.addr))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let r = c.send_request(req).await.unwrap();
            let status = r.status();
            // Read to the end: a body dropped early closes its upstream connection.
            http_body_util::BodyExt::collect(r.into_body())
                .await
                .unwrap();
            status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let opened = conns().await - before - 1;
    println!("FIGURE 150 HTTP/2 streams of one client: {opened} upstream connections (cap 8)");
    let m = metrics(&sc).await;
    assert!(
        opened <= 8,
        "{opened} upstream connections: {m}\n{}",
        sc.output()
    );
    assert!(
        metric(&m, "sso_sidecar_upstream_queued_total") >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn the_authorization_request_carries_no_prompt_unless_configured() {
    for (prompt, expected) in [
        ("", None),
        ("consent", Some("consent")),
        ("login consent", Some("login consent")),
    ] {
        let (_idp, _up, sc) = oidc_world(&[("SSO_SIDECAR_PROMPT", prompt)]).await;
        let r = get(&sc.sidecar.url("/auth/login?next=/"), &[])
            .await
            .unwrap();
        let loc = url::Url::parse(&location(&r)).unwrap();
        let got = loc
            .query_pairs()
            .find(|(k, _)| k == "prompt")
            .map(|(_, v)| v.into_owned());
        assert_eq!(got.as_deref(), expected, "prompt {prompt:?}");
    }
}

/// `session_cookie_persistent = false`: the session cookie comes without `Max-Age` or
/// `Expires` (the browser drops it when it closes), and still signs its requests in; by
/// default it carries the session's remaining lifetime.
#[tokio::test]
async fn a_session_cookie_is_a_browser_session_cookie_when_configured() {
    for (persistent, max_age) in [("true", true), ("false", false)] {
        let idp = MockIdp::start().await;
        let key = Key::new("k1");
        idp.set(|m| m.jwks = json!({"keys": [key.jwk()]}));
        let up = Upstream::start();
        let env = [("SSO_SIDECAR_SESSION_COOKIE_PERSISTENT", persistent)];
        let sc = start_oidc_sidecar(free_port(), &idp.issuer(), &up.url(), &env).await;
        let cb = idp
            .login_until_callback(&key, &sc.sidecar, "alice", "s1", "")
            .await
            .await;
        assert_eq!(cb.status(), 302, "{}", String::from_utf8_lossy(cb.body()));
        let set: Vec<_> = cb
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .filter(|v| v.starts_with("sso_sidecar_session="))
            .collect();
        assert_eq!(set.len(), 1, "{set:?}");
        let attrs = set[0].to_ascii_lowercase();
        assert_eq!(attrs.contains("max-age="), max_age, "{persistent}: {attrs}");
        assert!(!attrs.contains("expires="), "{persistent}: {attrs}");
        assert!(
            attrs.contains("httponly") && attrs.contains("samesite=lax"),
            "{attrs}"
        );
        let cookie = set_cookie(&cb, "sso_sidecar_session").unwrap();
        let r = get(
            &sc.sidecar.url("/echo/x"),
            &[("cookie", &session_header(&cookie))],
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200, "{persistent}");
    }
}

/// With a generic backend (`identity = "headers"`), a browser opening any gated page is sent to
/// the login; API calls still get 401, never a redirect.
#[tokio::test]
async fn in_headers_mode_a_browser_navigation_is_sent_to_the_login() {
    let (_idp, _up, sc) = oidc_world(&[]).await;
    let sc = &sc.sidecar;
    for headers in [
        vec![("accept", "text/html,application/xhtml+xml")],
        vec![("sec-fetch-mode", "navigate")],
    ] {
        let r = get(&sc.url("/some/page?x=1"), &headers).await.unwrap();
        assert_eq!(r.status(), 302, "{headers:?}");
        assert_eq!(location(&r), "/auth/login?next=%2Fsome%2Fpage%3Fx%3D1");
        // A cache in front must not keep it: the same URL serves the page once logged in.
        assert_eq!(r.headers()["cache-control"], "no-store", "{headers:?}");
    }
    let api = get(&sc.url("/some/page"), &[("accept", "application/json")])
        .await
        .unwrap();
    assert_eq!(api.status(), 401, "an API call is never redirected");
    let post = send(request(
        "POST",
        &sc.url("/some/page"),
        &[("accept", "text/html")],
        body(""),
    ))
    .await
    .unwrap();
    assert_eq!(post.status(), 401, "only a GET is a navigation");
    // Turned off, only the UI paths redirect, as with OpenRag.
    let (_idp2, _up2, off) = oidc_world(&[("SSO_SIDECAR_PATHS__BROWSER_LOGIN", "false")]).await;
    let r = get(&off.sidecar.url("/some/page"), &[("accept", "text/html")])
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// The first SETTINGS frame a server sends on an h2c connection by prior knowledge, as
/// (identifier, value) pairs.
async fn server_settings(addr: SocketAddr) -> Vec<(u16, u32)> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The client preface and an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 0x4, "the server's first frame is SETTINGS");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    payload
        .chunks(6)
        .map(|p| {
            let id = u16::from_be_bytes([p[0], p[1]]);
            (id, u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
        })
        .collect()
}

/// HTTP/2 clients are told how many streams a connection may have open at once
/// (`connections.http2_max_streams`, 128 by default, as nginx): each may hold an upstream place;
/// and how much request body they may send ahead (`connections.http2_window_kib`, 256 KiB, not
/// hyper's 1 MiB: what each idle connection can make the sidecar hold).
#[tokio::test]
async fn http2_connections_announce_their_stream_cap_and_window() {
    const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    const INITIAL_WINDOW_SIZE: u16 = 0x4;
    let up = Upstream::start();
    let sc = Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;
    let settings = server_settings(sc.addr).await;
    assert!(
        settings.contains(&(MAX_CONCURRENT_STREAMS, 128)),
        "{settings:?}"
    );
    // The admin listener serves probes and scrapes, one request at a time: 8 streams, not 128
    // readiness checks in flight per connection.
    let admin = server_settings(sc.admin).await;
    assert!(admin.contains(&(MAX_CONCURRENT_STREAMS, 8)), "{admin:?}");
    assert!(
        settings.contains(&(INITIAL_WINDOW_SIZE, 256 * 1024)),
        "{settings:?}"
    );
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_CONNECTIONS__HTTP2_MAX_STREAMS", "7"),
        ("SSO_SIDECAR_CONNECTIONS__HTTP2_WINDOW_KIB", "64"),
    ])
    .await;
    let settings = server_settings(sc.addr).await;
    assert!(
        settings.contains(&(MAX_CONCURRENT_STREAMS, 7)),
        "{settings:?}"
    );
    assert!(
        settings.contains(&(INITIAL_WINDOW_SIZE, 64 * 1024)),
        "{settings:?}"
    );
}

/// Client connections carry TCP keepalive: a quiet tunnel or event stream whose client has
/// vanished still ends. The kernel's table shows the keepalive timer on the sidecar's side.
#[tokio::test]
async fn client_connections_have_tcp_keepalive() {
    let up = Upstream::start();
    let sc = Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;
    let s = TcpStream::connect(sc.addr).await.unwrap();
    let (client, server) = (s.local_addr().unwrap().port(), sc.addr.port());
    let port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap(), 16).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        // `sl local rem st tx:rx tr:when ...`: timer 02 is keepalive.
        let timer = table.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (port(f[1]) == server && port(f[2]) == client).then(|| f[5][..2].to_owned())
        });
        if timer.as_deref() == Some("02") {
            break;
        }
        assert!(Instant::now() < deadline, "sidecar side's timer: {timer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// HTTP/2 "rapid reset" (CVE-2023-44487): a client opening streams and resetting each at once
/// costs the server work per stream while never counting against the concurrent-stream limit.
/// Past a few resets not yet accepted, the connection is closed with GOAWAY
/// (ENHANCE_YOUR_CALM), and the upstream sees few of the requests.
#[tokio::test]
async fn http2_rapid_reset_closes_the_connection() {
    let up = Upstream::start();
    let sc = Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;
    let mut s = TcpStream::connect(sc.addr).await.unwrap();
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    };
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    const STREAMS: u32 = 1000;
    for i in 0..STREAMS {
        let id = 2 * i + 1;
        // HEADERS (END_STREAM | END_HEADERS): GET, http, / from HPACK's static table.
        out.extend(frame(0x1, 0x5, id, &[0x82, 0x86, 0x84]));
        out.extend(frame(0x3, 0, id, &8u32.to_be_bytes())); // RST_STREAM (CANCEL)
    }
    // The server may close mid-write: what it answered is what counts.
    let _ = s.write_all(&out).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    // Its frames: the GOAWAY's error code.
    let mut goaway = None;
    let mut at = 0;
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        if got[at + 3] == 0x7 && at + 9 + 8 <= got.len() {
            let p = &got[at + 9..];
            goaway = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        at += 9 + len;
    }
    assert_eq!(
        goaway,
        Some(0xb),
        "GOAWAY (ENHANCE_YOUR_CALM), from {} bytes",
        got.len()
    );
    let seen = up.requests().await.len();
    println!("FIGURE rapid reset: {seen} of {STREAMS} streams reached the upstream");
    assert!(
        seen < 100,
        "{seen} of {STREAMS} streams reached the upstream"
    );
    // And the sidecar serves the next client.
    assert_eq!(
        get(&sc.url("/echo/after"), &[]).await.unwrap().status(),
        200
    );
}

/// Slowloris: a request head sent a byte at a time, each in time for every other deadline, is
/// closed once `header_read_timeout_secs` is over, not when the client is done trickling.
#[tokio::test]
async fn a_request_head_trickled_past_its_deadline_is_closed() {
    let up = Upstream::start();
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_CONNECTIONS__HEADER_READ_TIMEOUT_SECS", "2"),
    ])
    .await;
    let mut s = TcpStream::connect(sc.addr).await.unwrap();
    s.write_all(b"GET /echo/slow HTTP/1.1\r\nHost: app\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed_at = None;
    while started.elapsed() < Duration::from_secs(10) {
        if s.write_all(b"X-Slow: a\r\n").await.is_err() {
            closed_at = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 512];
        // An answer (408) or the end of the connection: either way, closed.
        let read = tokio::time::timeout(Duration::from_millis(400), s.read(&mut buf));
        if read.await.is_ok() {
            closed_at = Some(started.elapsed());
            break;
        }
    }
    let at = closed_at.expect("the trickled head was read for 10 s");
    assert!(
        at >= Duration::from_millis(1500),
        "closed too early: {at:?}"
    );
    assert!(at < Duration::from_secs(5), "closed late: {at:?}");
    // A head sent at once is served on a new connection.
    let r = exchange(
        sc.addr,
        b"GET /echo/ok HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&r), "200", "{r}");
}
