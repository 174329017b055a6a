//! Clients that read their responses slowly ("slow read", slowhttptest's `-X`): each response
//! holds an upstream place until its client has taken it, so beyond a few per address the
//! responses they hold up are cut; a response waiting on its upstream is never counted.

use crate::support::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const CUT: &str = "sso_sidecar_connections_timed_out_total{reason=\"slow_read\"}";

/// A sidecar with one worker, 4 upstream places, and at most 2 responses held up per address
/// (for 1 s). Every client here is one address, which may take every place (no share): the
/// cut alone is under test.
async fn sidecar(up: &Upstream) -> Sidecar {
    sidecar_with(up, "4").await
}

async fn sidecar_with(up: &Upstream, places: &str) -> Sidecar {
    Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_WORKERS", "1"),
        ("SSO_SIDECAR_CONNECTIONS__UPSTREAM_MAX_PER_WORKER", places),
        (
            "SSO_SIDECAR_CONNECTIONS__UPSTREAM_CLIENT_SHARE_PERCENT",
            "100",
        ),
        ("SSO_SIDECAR_CONNECTIONS__MAX_SLOW_READS_PER_ADDRESS", "2"),
        ("SSO_SIDECAR_CONNECTIONS__SLOW_READ_SECS", "1"),
        ("SSO_SIDECAR_UPSTREAM_TIMEOUT_SECS", "30"),
    ])
    .await
}

/// Opens a connection with a small receive buffer and asks for `path`; returns it once the
/// answer's status line is read.
async fn slow_client(sc: &Sidecar, path: &str) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(sc.addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: app\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    s
}

#[tokio::test]
async fn responses_held_up_by_their_clients_are_cut_beyond_the_addresss_cap() {
    let up = Upstream::start();
    let sc = sidecar(&up).await;
    // Four clients with a small receive buffer, taking 64 bytes every 100 ms: progress enough
    // for the send deadline, and every upstream place held. One answer has a length, three are
    // chunked (whose clean end a cut must never fake: one at least is cut).
    const SIZE: usize = 16 << 20;
    let fast = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut readers = Vec::new();
    for path in [
        format!("/download?size={SIZE}"),
        "/sse?type=application/octet-stream&n=200000&interval_ms=0".to_string(),
        "/sse?type=application/octet-stream&n=200000&interval_ms=0".to_string(),
        "/sse?type=application/octet-stream&n=200000&interval_ms=0".to_string(),
    ] {
        let mut s = slow_client(&sc, &path).await;
        let fast = fast.clone();
        readers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            let mut step = 64;
            let notified = fast.notified();
            tokio::pin!(notified);
            loop {
                tokio::select! {
                    _ = &mut notified, if step == 64 => step = buf.len(),
                    _ = tokio::time::sleep(Duration::from_millis(100)), if step == 64 => {}
                    _ = std::future::ready(()), if step > 64 => {}
                }
                match s.read(&mut buf[..step]).await {
                    Ok(0) | Err(_) => return (path, got),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                if got.ends_with(b"0\r\n\r\n") || body_len(&got) >= SIZE {
                    return (path, got);
                }
            }
        }));
    }
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), get(&sc.url("/echo/after"), &[]))
        .await
        .expect("served within 20 s, before the 30 s upstream timeout")
        .unwrap();
    assert_eq!(r.status(), 200);
    println!(
        "FIGURE a request behind 4 slow readers waited {:?}",
        t0.elapsed()
    );
    // One place freed is enough: once requests no longer wait, nothing more is cut (the other
    // held-up answer over the cap, if it was found a sweep later, is left alone).
    let n = cut(&sc).await;
    assert!((1.0..=2.0).contains(&n), "one or two answers cut: {n}");
    // Every client reads fast now: those not cut get their whole answer, those cut a broken
    // one (short of its length, or a chunked body without its last chunk).
    fast.notify_waiters();
    let mut broken = 0;
    for r in readers {
        let (path, got) = match tokio::time::timeout(Duration::from_secs(30), r).await {
            Ok(r) => r.unwrap(),
            Err(_) => panic!("an answer never ended; cut: {}", cut(&sc).await),
        };
        let whole = if path.starts_with("/download") {
            body_len(&got) >= SIZE
        } else {
            got.ends_with(b"0\r\n\r\n")
        };
        broken += usize::from(!whole);
    }
    assert_eq!(
        broken as f64, n,
        "the cut answers, and only they, end broken"
    );
    assert_eq!(cut(&sc).await, n);
}

/// Held-up responses over the address's cap cost nobody anything while no request waits for
/// their places: none is cut (a legitimate slow download beyond the cap is left alone), nor
/// counted as cut, even with every place taken. Before, every place taken was enough. A
/// request that then comes has to wait: for it, one is cut, and it is served.
#[tokio::test]
async fn held_up_responses_are_cut_only_for_a_request_that_waits() {
    let up = Upstream::start();
    let sc = sidecar(&up).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(slow_client(&sc, "/download?size=16777216").await);
    }
    let read_a_little = |clients: &mut Vec<tokio::net::TcpStream>| {
        let clients = std::mem::take(clients);
        async move {
            let mut clients = clients;
            for c in &mut clients {
                let mut buf = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_millis(20), c.read(&mut buf)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            clients
        }
    };
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        clients = read_a_little(&mut clients).await;
    }
    assert_eq!(cut(&sc).await, 0.0, "nothing cut, nothing counted");
    let waiting = tokio::spawn({
        let url = sc.url("/echo/free");
        async move { get(&url, &[]).await.unwrap().status() }
    });
    let until = Instant::now() + Duration::from_secs(10);
    while !waiting.is_finished() {
        assert!(Instant::now() < until, "the waiting request was not served");
        clients = read_a_little(&mut clients).await;
    }
    assert_eq!(waiting.await.unwrap(), 200);
    assert!(cut(&sc).await >= 1.0, "a held-up response was cut for it");
}

/// Answers whose upstream pauses longer than the slow-read time (an LLM thinking between
/// tokens), read at once by their clients, are waiting on the upstream: none is cut.
#[tokio::test]
async fn responses_waiting_on_their_upstream_are_never_cut() {
    let up = Upstream::start();
    let sc = sidecar(&up).await;
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let url = sc.url("/sse?type=application/x-ndjson&n=3&interval_ms=2500");
        all.spawn(async move { get(&url, &[]).await.unwrap() });
    }
    while let Some(r) = all.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            String::from_utf8_lossy(r.body())
                .matches("data: event")
                .count(),
            3
        );
    }
    assert_eq!(cut(&sc).await, 0.0);
}

/// The same over HTTP/2: a client that leaves its flow-control window full holds its
/// responses up as a slow TCP reader does; beyond the address's cap they are cut (the stream
/// reset, never a clean end), and a request waiting for a place is served.
#[tokio::test]
async fn http2_streams_held_up_by_their_window_are_cut_beyond_the_addresss_cap() {
    use http_body_util::BodyExt;
    let up = Upstream::start();
    let sc = sidecar(&up).await;
    // Windows of 64 KiB that grow only as the body is read: not read, they stay full.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .http2_adaptive_window(false)
        .http2_initial_stream_window_size(65_535)
        .http2_initial_connection_window_size(65_535 * 4)
        .build_http::<TestBody>();
    const SIZE: usize = 16 << 20;
    let mut held = Vec::new();
    for _ in 0..4 {
        let r = h2
            .request(request(
                "GET",
                &sc.url(&format!("/download?size={SIZE}")),
                &[],
                body(""),
            ))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), http::Version::HTTP_2);
        held.push(r);
    }
    let r = tokio::time::timeout(Duration::from_secs(20), get(&sc.url("/echo/after"), &[]))
        .await
        .expect("served within 20 s, before the 30 s upstream timeout")
        .unwrap();
    assert_eq!(r.status(), 200);
    let n = cut(&sc).await;
    assert!((1.0..=2.0).contains(&n), "one or two streams cut: {n}");
    // Read now: the cut streams end in an error, the others whole.
    let mut broken = 0;
    for r in held {
        let read = tokio::time::timeout(Duration::from_secs(60), r.into_body().collect())
            .await
            .expect("every stream ends");
        match read {
            Ok(b) => assert_eq!(b.to_bytes().len(), SIZE, "a clean end is a whole body"),
            Err(_) => broken += 1,
        }
    }
    assert_eq!(
        broken as f64, n,
        "the cut streams, and only they, end broken"
    );
}

/// The count of responses cut for their slow clients.
async fn cut(sc: &Sidecar) -> f64 {
    metric(&metrics(sc).await, CUT)
}

/// Bytes of an answer's body read so far (after its head), 0 while the head is not through.
fn body_len(got: &[u8]) -> usize {
    got.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |end| got.len() - end - 4)
}
