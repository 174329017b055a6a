//! Clients that read their responses slowly ("slow read", slowhttptest's `-X`): each response
//! holds an upstream place until its client has taken it, so beyond a few per address the
//! responses they hold up are cut; a response waiting on its upstream is never counted.

use crate::support::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const CUT: &str = "sso_sidecar_connections_timed_out_total{reason=\"slow_read\"}";

/// A sidecar with one worker, 4 upstream places, and at most 2 responses held up per address
/// (for 1 s).
async fn sidecar(up: &Upstream) -> Sidecar {
    Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_WORKERS", "1"),
        ("SSO_SIDECAR_CONNECTIONS__UPSTREAM_MAX_PER_WORKER", "4"),
        ("SSO_SIDECAR_CONNECTIONS__MAX_SLOW_READS_PER_ADDRESS", "2"),
        ("SSO_SIDECAR_CONNECTIONS__SLOW_READ_SECS", "1"),
        ("SSO_SIDECAR_UPSTREAM_TIMEOUT_SECS", "30"),
    ])
    .await
}

#[tokio::test]
async fn responses_held_up_by_their_clients_are_cut_beyond_the_addresss_cap() {
    let up = Upstream::start();
    let sc = sidecar(&up).await;
    // Four clients with a small receive buffer, taking 64 bytes every 100 ms of a 64 MiB
    // answer: progress enough for the send deadline, and every upstream place held.
    let mut readers = Vec::new();
    for _ in 0..4 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(sc.addr).await.unwrap();
        s.write_all(b"GET /download?size=67108864 HTTP/1.1\r\nHost: app\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        readers.push(tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if matches!(s.read(&mut buf).await, Ok(0) | Err(_)) {
                    return;
                }
            }
        }));
    }
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(8), get(&sc.url("/echo/after"), &[]))
        .await
        .expect("served within 8 s, long before the 30 s upstream timeout")
        .unwrap();
    assert_eq!(r.status(), 200);
    println!(
        "FIGURE a request behind 4 slow readers waited {:?}",
        t0.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while cut(&sc).await != 2.0 {
        assert!(
            Instant::now() < deadline,
            "two responses cut: {}",
            cut(&sc).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The two within the cap go on: nothing more is cut while they are read slowly.
    let later = Instant::now() + Duration::from_secs(3);
    while Instant::now() < later {
        assert_eq!(cut(&sc).await, 2.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(readers.iter().filter(|r| !r.is_finished()).count() >= 2);
    for r in readers {
        r.abort();
    }
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

/// The count of responses cut for their slow clients.
async fn cut(sc: &Sidecar) -> f64 {
    metric(&metrics(sc).await, CUT)
}
