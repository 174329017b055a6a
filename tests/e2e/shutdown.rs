//! Graceful shutdown: an in-flight request finishes, new connections are refused, exit 0.

use crate::support::*;
use std::time::Duration;

fn in_flight(metrics: &str) -> Option<i64> {
    metrics
        .lines()
        .find(|l| l.starts_with("sso_sidecar_http_requests_in_flight "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let up = Upstream::start();
    let mut sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_SHUTDOWN_TIMEOUT_SECS", "20"),
    ])
    .await;
    let url = sc.url("/slow?ms=6000");
    let slow = tokio::spawn(async move { get(&url, &[]).await });

    // Readiness poll on the request being in flight, rather than a sleep.
    let admin = sc.admin_url("/metrics");
    let start = std::time::Instant::now();
    loop {
        let m = get(&admin, &[]).await.unwrap();
        if in_flight(&String::from_utf8_lossy(m.body())) == Some(1) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the slow request never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    sc.signal("TERM");
    let addr = sc.addr;
    wait_until("the listener to close", Duration::from_secs(5), || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    assert!(
        !slow.is_finished(),
        "the slow request must still be running while new connections are refused"
    );
    // The admin listener stays up through the drain: not ready, still alive, still counting.
    let r = get(&sc.admin_url("/readyz"), &[]).await.unwrap();
    assert_eq!(r.status(), 503, "{:?}", r.body());
    assert!(String::from_utf8_lossy(r.body()).contains("shutting down"));
    assert_eq!(
        get(&sc.admin_url("/healthz"), &[]).await.unwrap().status(),
        200
    );
    let m = get(&admin, &[]).await.unwrap();
    assert_eq!(in_flight(&String::from_utf8_lossy(m.body())), Some(1));
    assert!(
        !slow.is_finished(),
        "all of that while the request is in flight"
    );

    let r = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["slept_ms"], 6000);

    let status = tokio::task::spawn_blocking(move || sc.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
}

#[tokio::test]
async fn the_drain_deadline_bounds_shutdown() {
    let up = Upstream::start();
    let mut sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_SHUTDOWN_TIMEOUT_SECS", "1"),
    ])
    .await;
    let url = sc.url("/slow?ms=30000");
    let _stuck = tokio::spawn(async move { get(&url, &[]).await });
    let admin = sc.admin_url("/metrics");
    let start = std::time::Instant::now();
    while in_flight(&String::from_utf8_lossy(
        get(&admin, &[]).await.unwrap().body(),
    )) != Some(1)
    {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t0 = std::time::Instant::now();
    sc.signal("INT");
    let status = tokio::task::spawn_blocking(move || sc.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        t0.elapsed()
    );
}

/// A WebSocket open at SIGTERM is in flight like a request: its messages still pass while the
/// listener drains (the connection that opened it has ended already; its tunnel had been cut
/// at once), and it is closed at the deadline, which bounds the exit.
#[tokio::test]
async fn sigterm_lets_an_open_websocket_carry_on_until_the_deadline() {
    use tokio::io::AsyncReadExt;
    let up = Upstream::start();
    let mut sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_SHUTDOWN_TIMEOUT_SECS", "3"),
    ])
    .await;
    let (mut ws, head) = crate::streaming::ws_to(sc.addr, "/ws", "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    crate::streaming::ws_echo(&mut ws, "before the signal").await;

    let t0 = std::time::Instant::now();
    sc.signal("TERM");
    let addr = sc.addr;
    wait_until("the listener to close", Duration::from_secs(5), || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    crate::streaming::ws_echo(&mut ws, "while the listener drains").await;

    let status = tokio::task::spawn_blocking(move || sc.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(10),
        "the drain waits for the tunnel, up to the deadline: {waited:?}"
    );
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), ws.read(&mut buf))
        .await
        .expect("the tunnel is closed once the process has exited");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// A second SIGTERM or SIGINT during the drain ends the process at once, exit 1 (someone at a
/// terminal pressing Ctrl-C again); the first alone waits for the request in flight.
#[tokio::test]
async fn a_second_signal_exits_without_waiting_for_the_drain() {
    let up = Upstream::start();
    let mut sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_SHUTDOWN_TIMEOUT_SECS", "30"),
    ])
    .await;
    let url = sc.url("/slow?ms=30000");
    let _stuck = tokio::spawn(async move { get(&url, &[]).await });
    let admin = sc.admin_url("/metrics");
    let start = std::time::Instant::now();
    while in_flight(&String::from_utf8_lossy(
        get(&admin, &[]).await.unwrap().body(),
    )) != Some(1)
    {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sc.signal("INT");
    let addr = sc.addr;
    wait_until("the listener to close", Duration::from_secs(5), || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    assert!(
        sc.child.try_wait().unwrap().is_none(),
        "the first signal waits for the request in flight"
    );
    sc.signal("INT");
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(status) = sc.child.try_wait().unwrap() {
            break status;
        }
        if t0.elapsed() > Duration::from_secs(5) {
            let _ = sc.child.kill();
            panic!("a second signal must end the process at once");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(1));
}
