//! The upstream connection pool, seen from the upstream's side: connections are reused across
//! every kind of response, closed when idle, never reused after the upstream closed them or
//! after a client left mid-response.
//!
//! The upstream here is a small raw HTTP/1.1 server on a real socket, because these tests need
//! what an ordinary server hides: how many connections it accepted, when each one was closed,
//! and the freedom to close a keep-alive connection the moment it has answered.

use crate::support::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How the raw upstream treats a connection after each response.
#[derive(Clone, Copy)]
enum After {
    KeepAlive,
    /// Closes the socket right after the response, without saying so (`Connection: close` is
    /// not sent), as a server whose keep-alive timeout fires at that moment does.
    SilentClose,
}

struct RawUpstream {
    port: u16,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl RawUpstream {
    async fn start(after: After) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                tokio::spawn(async move {
                    serve(sock, after).await;
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        RawUpstream {
            port,
            accepted,
            closed,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Serves requests on one connection until the peer closes it (or `after` says to close).
/// The path picks the response: `/chunked`, `/empty` (204), `/not-modified` (304), `/big`
/// (1 MiB, written slowly), `/early` (413 before the body is read), anything else a short
/// sized body.
async fn serve(sock: tokio::net::TcpStream, after: After) {
    let mut sock = BufReader::new(sock);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match sock.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push_str(&line),
            }
        }
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        if target == "/early-deaf" {
            // Answers before reading the body, then reads nothing more, keeping the socket.
            let answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n";
            let _ = sock.get_mut().write_all(answer).await;
            std::future::pending::<()>().await;
        }
        if target == "/early" {
            // Answers before reading the body (as a 405 or 413 does), then drains it.
            let answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n";
            if sock.get_mut().write_all(answer).await.is_err() {
                return;
            }
        }
        let mut body = vec![0; len];
        if sock.read_exact(&mut body).await.is_err() {
            return;
        }
        if target == "/early" {
            continue;
        }
        let w = sock.get_mut();
        let wrote = match (head.starts_with("HEAD"), target.as_str()) {
            (true, _) => {
                w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
                    .await
            }
            (_, "/chunked") => {
                w.write_all(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                )
                .await
            }
            (_, "/empty") => w.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await,
            (_, "/not-modified") => w.write_all(b"HTTP/1.1 304 Not Modified\r\n\r\n").await,
            (_, "/big") => {
                let r = w
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n")
                    .await;
                for _ in 0..256 {
                    if r.is_err() || w.write_all(&[b'x'; 4096]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                r
            }
            (_, path) => {
                let body = format!("path={path}");
                w.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await
            }
        };
        if wrote.is_err() {
            return;
        }
        if let After::SilentClose = after {
            return;
        }
    }
}

/// A sidecar with one worker (so one pool) and a cap of `cap` upstream connections, all of
/// which one client may take (every client here is one address): the cap alone is under test.
async fn capped(up: &Upstream, cap: usize) -> Sidecar {
    Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_WORKERS", "1"),
        (
            "SSO_SIDECAR_CONNECTIONS__UPSTREAM_MAX_PER_WORKER",
            &cap.to_string(),
        ),
        (
            "SSO_SIDECAR_CONNECTIONS__UPSTREAM_CLIENT_SHARE_PERCENT",
            "100",
        ),
    ])
    .await
}

/// A sidecar with one worker (so one pool) and a 4 s idle timeout, in front of `up`. An idle
/// connection is closed after between half the idle timeout and the whole of it: 2 s is far
/// more than a pause between two requests on a loaded machine.
async fn sidecar(up: &RawUpstream) -> Sidecar {
    Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_WORKERS", "1"),
        ("SSO_SIDECAR_UPSTREAM_IDLE_TIMEOUT_SECS", "4"),
    ])
    .await
}

#[tokio::test]
async fn one_connection_serves_every_kind_of_response_then_closes_when_idle() {
    let up = RawUpstream::start(After::KeepAlive).await;
    let sc = sidecar(&up).await;
    for round in 0..5 {
        let r = get(&sc.url(&format!("/sized/{round}")), &[]).await.unwrap();
        assert_eq!(
            (r.status().as_u16(), r.body().as_ref()),
            (200, format!("path=/sized/{round}").as_bytes())
        );
        let r = get(&sc.url("/chunked"), &[]).await.unwrap();
        assert_eq!(
            (r.status().as_u16(), r.body().as_ref()),
            (200, &b"hello"[..])
        );
        let r = get(&sc.url("/empty"), &[]).await.unwrap();
        assert_eq!((r.status().as_u16(), r.body().len()), (204, 0));
        let r = get(&sc.url("/not-modified"), &[]).await.unwrap();
        assert_eq!((r.status().as_u16(), r.body().len()), (304, 0));
        let r = send(request("HEAD", &sc.url("/head"), &[], body("")))
            .await
            .unwrap();
        assert_eq!((r.status().as_u16(), r.body().len()), (200, 0));
        let r = send(request("POST", &sc.url("/post"), &[], body("some body")))
            .await
            .unwrap();
        assert_eq!(r.body().as_ref(), b"path=/post");
    }
    assert_eq!(
        up.accepted(),
        1,
        "30 requests in sequence, whatever their response, share one upstream connection"
    );
    assert_eq!(up.closed(), 0);
    // Idle for longer than the 4 s idle timeout with no request to notice: the sidecar closes it.
    wait_until(
        "the idle upstream connection is closed",
        Duration::from_secs(12),
        || up.closed() == 1,
    )
    .await;
    let r = get(&sc.url("/after-idle"), &[]).await.unwrap();
    assert_eq!(r.body().as_ref(), b"path=/after-idle");
    assert_eq!(
        up.accepted(),
        2,
        "a new connection after the idle one was closed"
    );
}

/// The upstream answers a request before reading its body, and the client trickles the rest:
/// the connection is busy sending that body for as long as the client likes, so it must not
/// stall the next request that finds it idle in the pool.
#[tokio::test]
async fn a_connection_still_sending_a_trickled_body_does_not_stall_the_next_request() {
    let up = RawUpstream::start(After::KeepAlive).await;
    let sc = sidecar(&up).await;
    let mut slow = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
    slow.write_all(b"POST /early HTTP/1.1\r\nHost: app\r\nContent-Length: 100000\r\n\r\nx")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut head))
        .await
        .expect("the early answer")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    // The connection that carried it went back to the pool, still sending the body.
    let r = tokio::time::timeout(Duration::from_secs(5), get(&sc.url("/next"), &[]))
        .await
        .expect("the next request is not stalled behind the trickled body")
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.body().as_ref(), b"path=/next");
    assert_eq!(up.accepted(), 2, "a second connection was opened");
    drop(slow);
}

/// Upstreams that answer before reading the body (a 401, a 413) let the request's place under
/// the cap go with the response while the client went on sending the body: one client could
/// keep any number of upstream connections busy past the cap, as long as it liked. Now the
/// place stays taken until the body is through, and a body that stalls for the upstream
/// timeout after the answer is cut, which closes its connection.
#[tokio::test]
async fn early_answers_keep_their_place_under_the_cap_until_the_body_is_cut() {
    let up = RawUpstream::start(After::KeepAlive).await;
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_WORKERS", "1"),
        ("SSO_SIDECAR_CONNECTIONS__UPSTREAM_MAX_PER_WORKER", "2"),
        // One client (one address) may take both places: the cap alone is under test.
        (
            "SSO_SIDECAR_CONNECTIONS__UPSTREAM_CLIENT_SHARE_PERCENT",
            "100",
        ),
        ("SSO_SIDECAR_UPSTREAM_TIMEOUT_SECS", "2"),
    ])
    .await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
        c.write_all(b"POST /early HTTP/1.1\r\nHost: app\r\nContent-Length: 100000\r\n\r\nx")
            .await
            .unwrap();
        clients.push(c);
    }
    // Every client gets an answer in time: the early one, or a 504 for a request that found
    // no place within the upstream timeout; the upstream never has more than the cap's two
    // connections open meanwhile.
    let (mut most, mut early) = (0, 0);
    for c in &mut clients {
        let mut head = [0u8; 64];
        let read = c.read(&mut head);
        let mut read = std::pin::pin!(read);
        let n = loop {
            tokio::select! {
                n = &mut read => break n.unwrap(),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    most = most.max(up.accepted() - up.closed());
                }
            }
        };
        let head = String::from_utf8_lossy(&head[..n]);
        assert!(
            head.starts_with("HTTP/1.1 413") || head.starts_with("HTTP/1.1 504"),
            "{head}"
        );
        early += usize::from(head.starts_with("HTTP/1.1 413"));
        most = most.max(up.accepted() - up.closed());
    }
    assert!(
        most <= 2,
        "{most} upstream connections open at once, over the cap of 2"
    );
    assert!(early >= 2, "{early} early answers");
    wait_until(
        "the stalled bodies are cut",
        Duration::from_secs(15),
        || up.accepted() == up.closed(),
    )
    .await;
    let r = tokio::time::timeout(Duration::from_secs(5), get(&sc.url("/next"), &[]))
        .await
        .expect("a place under the cap again")
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(clients);
}

/// Callers without a session hold at most `max_uploads_per_address` bodies on their way
/// upstream per client address, read through `trusted_proxies` (behind an ingress the
/// connection's own address is everyone's): the one beyond is answered 429 before the upstream
/// sees it, while another address, or the same one once a body is through, is served.
#[tokio::test]
async fn an_address_holds_at_most_its_cap_of_bodies_on_their_way_upstream() {
    let up = Upstream::start();
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("SSO_SIDECAR_CONNECTIONS__MAX_UPLOADS_PER_ADDRESS", "2"),
    ])
    .await;
    let mallory = [("X-Forwarded-For", "203.0.113.7")];
    let mut uploads = Vec::new();
    for _ in 0..3 {
        uploads.push(start_trickle(sc.addr, "/upload", &mallory).await);
    }
    let heads = answered_within(&mut uploads, Duration::from_secs(3)).await;
    let refused: Vec<&String> = heads.iter().flatten().collect();
    assert_eq!(refused.len(), 1, "one of three answered at once: {heads:?}");
    assert!(refused[0].starts_with("HTTP/1.1 429"), "{}", refused[0]);
    let other = [("X-Forwarded-For", "203.0.113.8")];
    let mut theirs = start_trickle(sc.addr, "/upload", &other).await;
    assert!(finish_trickle(&mut theirs)
        .await
        .starts_with("HTTP/1.1 200"));
    let mut sending = unanswered(uploads, &heads);
    assert!(finish_trickle(&mut sending[0])
        .await
        .starts_with("HTTP/1.1 200"));
    let mut next = start_trickle(sc.addr, "/upload", &mallory).await;
    assert!(finish_trickle(&mut next).await.starts_with("HTTP/1.1 200"));
    assert!(metrics(&sc)
        .await
        .contains("sso_sidecar_connections_refused_total{reason=\"max_uploads\"} 1"));
    assert!(finish_trickle(&mut sending[1])
        .await
        .starts_with("HTTP/1.1 200"));
    // A body counts until it is through, not until its answer: two requests whose bodies are
    // sent and whose answers take seconds leave room for a third.
    // (The last upload's share may come back a moment after its answer: its body is through
    // before the upstream answers, but the sidecar lets go of it as the exchange ends.)
    let mut slow = Vec::new();
    let started = std::time::Instant::now();
    while slow.len() < 2 {
        let mut s = start_trickle(sc.addr, "/slow?ms=10000", &mallory).await;
        s.write_all(b"xxxxxxxxx").await.unwrap();
        match read_head(&mut s, Duration::from_secs(2)).await {
            None => slow.push(s),
            Some(head) => {
                assert!(head.starts_with("HTTP/1.1 429"), "{head}");
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "a finished upload held its share"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Once the sidecar has sent those bodies on (a moment after they were written), a third
    // upload is taken, seconds before the slow answers come.
    let started = std::time::Instant::now();
    loop {
        let mut third = start_trickle(sc.addr, "/upload", &mallory).await;
        let head = finish_trickle(&mut third).await;
        if head.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(head.starts_with("HTTP/1.1 429"), "{head}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the bodies through still held their shares"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let heads = answered_within(&mut slow, Duration::from_secs(15)).await;
    assert!(
        heads
            .iter()
            .all(|h| h.as_deref().is_some_and(|h| h.starts_with("HTTP/1.1 200"))),
        "{heads:?}"
    );
}

/// While every upstream place is taken, the requests waiting for one hold their heads (an
/// HTTP/2 connection may queue 128 of up to 32 KiB): past `upstream_queue_kib` a request is
/// answered 503 at once instead of queueing, and those queued are served once a place frees.
#[tokio::test]
async fn the_heads_waiting_for_a_place_are_held_to_their_budget() {
    let up = Upstream::start();
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_WORKERS", "1"),
        ("SSO_SIDECAR_CONNECTIONS__UPSTREAM_MAX_PER_WORKER", "1"),
        ("SSO_SIDECAR_CONNECTIONS__UPSTREAM_QUEUE_KIB", "64"),
        // Every client here is one address: the whole budget is its (no share).
        (
            "SSO_SIDECAR_CONNECTIONS__UPSTREAM_CLIENT_SHARE_PERCENT",
            "100",
        ),
    ])
    .await;
    let slow_url = sc.url("/slow?ms=10000");
    let slow = tokio::spawn(async move { get(&slow_url, &[]).await });
    while !up.paths().await.iter().any(|p| p == "/slow") {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let big = "x".repeat(30_000);
    let queued = |n: f64| {
        let sc = &sc;
        async move {
            let name = "sso_sidecar_upstream_queued_total";
            while metric(&metrics(sc).await, name) < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let mut waiting = Vec::new();
    for n in 1..=2 {
        let url = sc.url("/echo");
        let big = big.clone();
        waiting.push(tokio::spawn(async move {
            get(&url, &[("x-big", big.as_str())])
                .await
                .unwrap()
                .status()
        }));
        queued(f64::from(n)).await;
    }
    let started = std::time::Instant::now();
    let r = get(&sc.url("/echo"), &[("x-big", big.as_str())])
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    for w in waiting {
        assert_eq!(w.await.unwrap(), 200, "a queued request is served");
    }
    let r = get(&sc.url("/echo"), &[("x-big", big.as_str())])
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the budget is given back");
}

/// The same, with an upstream that stops reading after its early answer but keeps the socket
/// open: the sidecar's writes block, the body stops moving, and the connection is closed from
/// the sidecar's side once that lasts the upstream timeout, which gives its place back.
#[tokio::test]
async fn an_upstream_that_stops_reading_after_an_early_answer_gives_its_place_back() {
    let up = RawUpstream::start(After::KeepAlive).await;
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_WORKERS", "1"),
        ("SSO_SIDECAR_CONNECTIONS__UPSTREAM_MAX_PER_WORKER", "1"),
        ("SSO_SIDECAR_UPSTREAM_TIMEOUT_SECS", "2"),
    ])
    .await;
    let mut c = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
    c.write_all(b"POST /early-deaf HTTP/1.1\r\nHost: app\r\nContent-Length: 100000000\r\n\r\n")
        .await
        .unwrap();
    let (mut rd, mut wr) = c.into_split();
    // The body, as fast as the sidecar takes it, until it stops taking it.
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        while wr.write_all(&chunk).await.is_ok() {}
    });
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut head))
        .await
        .expect("the early answer")
        .unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 413"));
    // Its place (the only one) comes back after the stall: a request is served again (those
    // that found no place within the upstream timeout got 504 meanwhile).
    let mut served = false;
    for _ in 0..6 {
        let r = get(&sc.url("/next"), &[]).await.unwrap();
        if r.status() == 200 {
            served = true;
            break;
        }
        assert_eq!(r.status(), 504, "{}", String::from_utf8_lossy(r.body()));
    }
    assert!(served, "the place under the cap never came back");
    writer.abort();
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_not_used_again() {
    let up = RawUpstream::start(After::SilentClose).await;
    let sc = sidecar(&up).await;
    for i in 0..20 {
        let r = get(&sc.url(&format!("/n/{i}")), &[]).await.unwrap();
        assert_eq!(
            (r.status().as_u16(), r.body().as_ref()),
            (200, format!("path=/n/{i}").as_bytes()),
            "request {i} after the upstream closed the previous connection"
        );
    }
    assert_eq!(up.accepted(), 20, "one connection per request");
}

#[tokio::test]
async fn a_client_leaving_mid_response_does_not_leave_its_connection_in_the_pool() {
    let up = RawUpstream::start(After::KeepAlive).await;
    let sc = sidecar(&up).await;
    let resp = client()
        .request(request("GET", &sc.url("/big"), &[], body("")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp); // before the body has arrived
    wait_until(
        "the abandoned upstream connection is closed",
        Duration::from_secs(5),
        || up.closed() == 1,
    )
    .await;
    // The next request gets its own answer, not the rest of the abandoned body.
    let r = get(&sc.url("/next"), &[]).await.unwrap();
    assert_eq!(r.body().as_ref(), b"path=/next");
    assert_eq!(up.accepted(), 2);
}

/// Under load (more than 64 requests in flight on a worker: here 200 on one worker, held by an
/// upstream cap of 2) the sidecar copies each request's head out of its connection's read
/// buffer. What reaches the upstream must be the same request: target, repeated
/// headers in order, a client's request id, its credentials.
#[tokio::test]
async fn requests_copied_under_load_reach_the_upstream_unchanged() {
    let up = Upstream::start();
    let sc = capped(&up, 2).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let url = format!("http://{}/echo/item-{i}/%C3%A9?n={i}&q=a%20b", sc.addr);
            tokio::spawn(async move {
                let rid = format!("client-{i}");
                let token = format!("Bearer token-{i}");
                let r = get(
                    &url,
                    &[
                        ("x-multi", "first"),
                        ("x-multi", &format!("second-{i}")),
                        ("x-request-id", &rid),
                        ("authorization", &token),
                    ],
                )
                .await
                .unwrap();
                (i, r)
            })
        })
        .collect();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert_eq!(r.status(), 200);
        let j = json(&r);
        assert_eq!(j["path"], format!("/echo/item-{i}/%C3%A9"));
        assert_eq!(j["query"], format!("n={i}&q=a%20b"));
        let h = &j["headers"];
        assert_eq!(
            h["x-multi"],
            serde_json::json!(["first", format!("second-{i}")])
        );
        assert_eq!(h["x-request-id"][0], format!("client-{i}"));
        assert_eq!(h["authorization"][0], format!("Bearer token-{i}"));
        assert_eq!(r.headers()["x-request-id"], format!("client-{i}").as_str());
    }
    let m = metrics(&sc).await;
    assert!(
        metric(&m, "sso_sidecar_upstream_queued_total") >= 1.0,
        "the cap of 2 made requests wait: {m}"
    );
}

/// Opens an event stream through `sc` and reads its first event; the rest is left to come.
async fn event_stream(sc: &Sidecar, path: &str) -> hyper::body::Incoming {
    let resp = client()
        .request(request(
            "GET",
            &sc.url(path),
            &[("accept", "text/event-stream")],
            body(""),
        ))
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.into_body();
    let first = http_body_util::BodyExt::frame(&mut stream)
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_data(), "the first event");
    stream
}

/// An event stream (a chat answer, a progress feed) holds its upstream connection for as long
/// as it runs, but not a place under the cap: with a cap of one connection and a stream open,
/// an ordinary request is still sent at once instead of waiting for the stream to end. Streams
/// have an allowance of their own, bounded, so one client's HTTP/2 streams cannot open
/// upstream connections without limit.
#[tokio::test]
async fn an_event_stream_does_not_hold_a_place_under_the_cap() {
    let up = Upstream::start();
    let sc = capped(&up, 1).await;
    let mut stream = event_stream(&sc, "/sse?n=2&interval_ms=1500").await;

    let r = get(&sc.url("/echo/while-streaming"), &[]).await.unwrap();
    assert_eq!(r.status(), 200);
    // A request that waits for a place under the cap is counted, however short its wait.
    let m = metrics(&sc).await;
    assert_eq!(
        metric(&m, "sso_sidecar_upstream_queued_total"),
        0.0,
        "a request waited for a place under the cap: {m}"
    );
    // Read to its end: its place is free again.
    while let Some(frame) = http_body_util::BodyExt::frame(&mut stream).await {
        frame.unwrap();
    }

    // The allowance for streams is bounded (16 per place under the cap): with it full, the
    // next stream keeps its place under the cap, and an ordinary request waits for it. The
    // streams would last 10 s, far longer than opening them all takes on a loaded machine; they
    // end when they are dropped below.
    let mut open = Vec::new();
    for _ in 0..=sso_sidecar::proxy::STREAMS_PER_PLACE {
        open.push(event_stream(&sc, "/sse?n=2&interval_ms=10000").await);
    }
    let waiting = tokio::spawn({
        let url = sc.url("/echo/after-the-streams");
        async move { get(&url, &[]).await.unwrap().status() }
    });
    let start = std::time::Instant::now();
    while metric(&metrics(&sc).await, "sso_sidecar_upstream_queued_total") < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "17 streams under a cap of one with room for 16: a request should wait"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(open);
    assert_eq!(waiting.await.unwrap(), 200);

    // Ordinary requests still respect the cap: two at once with a cap of one, one waits.
    let slow = sc.url("/slow?ms=500");
    let (a, b) = tokio::join!(get(&slow, &[]), get(&slow, &[]));
    assert_eq!(a.unwrap().status(), 200);
    assert_eq!(b.unwrap().status(), 200);
    let m = metrics(&sc).await;
    assert_eq!(metric(&m, "sso_sidecar_upstream_queued_total"), 2.0, "{m}");
}

/// With every place under the cap taken, an authenticated request waits for one before its
/// identity is built, and then goes as its user; the upstream timeout runs from the start of
/// that wait, not again once the place is found.
#[tokio::test]
async fn an_authenticated_request_waits_for_a_place_within_the_upstream_timeout() {
    let (_idp, up, sc) = crate::oidc_support::memory_world(&[
        ("SSO_SIDECAR_WORKERS", "1"),
        ("SSO_SIDECAR_CONNECTIONS__UPSTREAM_MAX_PER_WORKER", "1"),
        ("SSO_SIDECAR_UPSTREAM_TIMEOUT_SECS", "4"),
    ])
    .await;
    let sc = &sc.sidecar;
    let l = crate::oidc_support::login(sc, "erin", "/").await;
    let cookie = crate::oidc_support::session_header(&l.cookie);
    // Waits until the upstream has seen `n` requests for `/slow`.
    let slow_routed = |n: usize| {
        let up = &up;
        async move {
            let start = std::time::Instant::now();
            while up
                .requests()
                .await
                .iter()
                .filter(|r| r["path"] == "/slow")
                .count()
                < n
            {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "/slow never arrived"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let spawn_get = |path: &str| {
        let (url, cookie) = (sc.url(path), cookie.clone());
        tokio::spawn(async move {
            let start = std::time::Instant::now();
            let r = get(&url, &[("cookie", &cookie)]).await.unwrap();
            (r, start.elapsed())
        })
    };

    // The only place is taken by a slow request; the next one waits, then goes as erin.
    let slow = spawn_get("/slow?ms=1500");
    slow_routed(1).await;
    let (r, waited) = spawn_get("/echo/queued").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["headers"]["x-forwarded-user"][0], "erin");
    assert!(slow.await.unwrap().0.status() == 200);
    assert!(
        waited >= Duration::from_millis(100),
        "it did not wait: {waited:?}"
    );
    let m = metrics(sc).await;
    assert_eq!(metric(&m, "sso_sidecar_upstream_queued_total"), 1.0, "{m}");

    // A request that waits for the place until the holder times out (4 s) has spent its own
    // timeout too: 504 about then, not 4 s later.
    let hold = spawn_get("/slow?ms=6000");
    slow_routed(2).await;
    let (r, waited) = spawn_get("/slow?ms=6001").await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(
        waited < Duration::from_millis(5500),
        "the upstream timeout started again after the wait: 504 after {waited:?}"
    );
    assert_eq!(hold.await.unwrap().0.status(), 504);
}

/// The OpenRag bridge replays a request whose token the backend refused. Under a cap of one,
/// the replay needs the place the refused response held: the response, read to its end, must
/// have given it back, or the replay waits for it until the upstream timeout.
#[tokio::test]
async fn a_replay_after_a_refused_token_gets_a_place_under_a_cap_of_one() {
    use crate::openrag::{seeded, token, world};
    let w = world(
        serde_json::json!([seeded("gina", Some(&token(7)))]),
        serde_json::json!({}),
        &[
            ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "regenerate"),
            ("SSO_SIDECAR_WORKERS", "1"),
            ("SSO_SIDECAR_CONNECTIONS__UPSTREAM_MAX_PER_WORKER", "1"),
            ("SSO_SIDECAR_UPSTREAM_TIMEOUT_SECS", "15"),
        ],
    )
    .await;
    let sc = &w.sc.sidecar;
    let cookie = crate::oidc_support::session_header(
        &crate::oidc_support::login(sc, "gina", "/").await.cookie,
    );
    w.backend.regenerate_behind("gina").await;
    let start = std::time::Instant::now();
    let r = get(&sc.url("/v1/b"), &[("cookie", &cookie)]).await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "recovered and replayed after {:?}: {}",
        start.elapsed(),
        String::from_utf8_lossy(r.body())
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the replay waited {:?} for a place",
        start.elapsed()
    );
}

/// A sidecar with one worker and `cap` upstream places, which believes the `X-Forwarded-For`
/// of its clients here (so each test client is whom it says), and `extra`.
async fn shared_out(up: &Upstream, cap: &str, extra: &[(&str, &str)]) -> Sidecar {
    let mut env = vec![
        ("SSO_SIDECAR_UPSTREAM", up.url()),
        ("SSO_SIDECAR_WORKERS", "1".into()),
        ("SSO_SIDECAR_TRUSTED_PROXIES", "127.0.0.1/32".into()),
        (
            "SSO_SIDECAR_CONNECTIONS__UPSTREAM_MAX_PER_WORKER",
            cap.into(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Sidecar::start(&env).await
}

/// Sends `path` as the client at `address`, in the background.
fn as_client(
    sc: &Sidecar,
    path: &str,
    address: &'static str,
) -> tokio::task::JoinHandle<http::StatusCode> {
    let url = sc.url(path);
    tokio::spawn(async move {
        get(&url, &[("x-forwarded-for", address)])
            .await
            .unwrap()
            .status()
    })
}

/// Until the sidecar has made `n` requests wait for a place in all (30 s at most).
async fn queued(sc: &Sidecar, n: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waited = metric(&metrics(sc).await, "sso_sidecar_upstream_queued_total");
        if waited >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{waited} requests waited for a place, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Until the upstream has seen `n` requests for `path` (30 s at most).
async fn seen(up: &Upstream, path: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while up.paths().await.iter().filter(|p| *p == path).count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{path} not seen {n} times"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One client whose requests the backend answers slowly (or an attacker asking for such
/// answers) holds at most its share of the upstream places (75 % by default: 3 of 4): its
/// requests beyond wait, the place left stays free, and another client's request is served at
/// once rather than behind requests that take minutes.
#[tokio::test]
async fn a_client_holds_at_most_its_share_of_the_upstream_places() {
    let up = Upstream::start();
    let sc = shared_out(&up, "4", &[]).await;
    let hog: Vec<_> = (0..5)
        .map(|i| as_client(&sc, &format!("/slow?ms=60000&i={i}"), "10.1.0.1"))
        .collect();
    seen(&up, "/slow", 3).await;
    queued(&sc, 2.0).await;
    let started = std::time::Instant::now();
    let r = get(&sc.url("/echo"), &[("x-forwarded-for", "10.2.0.1")])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "served at once, not after the other client's minute"
    );
    let slow = up.paths().await.iter().filter(|p| *p == "/slow").count();
    assert_eq!(slow, 3, "the first client's others still wait");
    // The same client from another address of its IPv6 /64 is the same client.
    let sc6 = shared_out(&up, "4", &[]).await;
    let hog6: Vec<_> = (0..4)
        .map(|i| as_client(&sc6, &format!("/slow?ms=60000&v6={i}"), "2001:db8:1:2::a"))
        .collect();
    queued(&sc6, 1.0).await;
    let _more = as_client(&sc6, "/slow?ms=60000&v6=more", "2001:db8:1:2::b");
    queued(&sc6, 2.0).await;
    let r = get(&sc6.url("/echo"), &[("x-forwarded-for", "2001:db8:9::1")])
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "another /64 is another client");
    for h in hog.into_iter().chain(hog6) {
        h.abort();
    }
}

/// While every place is taken, requests wait in turn by client: one client's queued requests
/// do not put another's behind them. Client A holds both places and queues three more; B
/// queues one after them. When A's two end, the first place goes to A's first waiting request
/// and the second to B's, before A's others (one line, first come first served, would have
/// served A's three first). No share here, to see the turns alone.
#[tokio::test]
async fn waiting_requests_are_served_in_turn_by_client() {
    let up = Upstream::start();
    let share = [(
        "SSO_SIDECAR_CONNECTIONS__UPSTREAM_CLIENT_SHARE_PERCENT",
        "100",
    )];
    let sc = shared_out(&up, "2", &share).await;
    let mut all: Vec<_> = (0..2)
        .map(|i| as_client(&sc, &format!("/slow?ms=1500&held={i}"), "10.1.0.1"))
        .collect();
    seen(&up, "/slow", 2).await;
    for i in 0..3 {
        all.push(as_client(&sc, &format!("/echo/a{i}"), "10.1.0.1"));
        queued(&sc, f64::from(i + 1)).await;
    }
    all.push(as_client(&sc, "/echo/b", "10.2.0.1"));
    queued(&sc, 4.0).await;
    for h in all {
        assert_eq!(h.await.unwrap(), 200);
    }
    let order: Vec<String> = up
        .paths()
        .await
        .into_iter()
        .filter(|p| p.starts_with("/echo/"))
        .collect();
    // Two places are given a moment apart, and their requests may reach the upstream in
    // either order: B's is among the first two, A's others come after.
    assert_eq!(order.len(), 4, "{order:?}");
    assert!(order[..2].contains(&"/echo/b".to_owned()), "{order:?}");
}

/// Behind an ingress missing from `trusted_proxies`, every caller without a session is one
/// client (the ingress's address) for the upstream shares too: with 2 places, one caller's
/// slow request holds its share, and another's waits for it. The operator is told, once, when
/// a request comes while requests could have to wait.
#[tokio::test]
async fn an_unlisted_ingress_is_warned_about_when_its_callers_share_one_client_share() {
    let up = Upstream::start();
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_WORKERS", "1"),
        ("SSO_SIDECAR_CONNECTIONS__UPSTREAM_MAX_PER_WORKER", "2"),
    ])
    .await;
    let warning = "is not in trusted_proxies";
    let slow = as_client(&sc, "/slow?ms=2000", "10.1.0.1");
    seen(&up, "/slow", 1).await;
    assert!(!sc.output().contains(warning), "{}", sc.output());
    let r = get(&sc.url("/echo"), &[("x-forwarded-for", "10.2.0.1")])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(slow.await.unwrap(), 200);
    wait_until("the warning", Duration::from_secs(10), || {
        sc.output().contains(warning)
    })
    .await;
    assert!(
        sc.output()
            .contains("per-client share of upstream connections"),
        "{}",
        sc.output()
    );
    assert_eq!(sc.output().matches(warning).count(), 1);
}
