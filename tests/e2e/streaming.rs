//! Bodies are streamed, never buffered: 100 MB each way with a small resident set, server-sent
//! events arriving as they are sent, and a WebSocket tunnelled through.

use crate::in_process::InProcess;
use crate::support::*;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MB: u64 = 1024 * 1024;
const HUNDRED_MB: u64 = 100 * MB;

/// A request body that produces `remaining` bytes in 64 KiB chunks with no length announced,
/// so it is sent with chunked transfer encoding.
struct Generated {
    remaining: u64,
    chunk: Bytes,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64);
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[tokio::test]
async fn hundred_megabytes_stream_each_way_in_little_memory() {
    let up = Upstream::start();
    let sc = Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;

    let upload = Generated {
        remaining: HUNDRED_MB,
        chunk: Bytes::from(vec![b'u'; 64 * 1024]),
    };
    let req = request("POST", &sc.url("/upload"), &[], upload.boxed());
    assert!(req.headers().get("content-length").is_none());
    let r = send(req).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        json(&r)["received"],
        HUNDRED_MB,
        "every byte of the chunked upload arrived"
    );

    let resp = client()
        .request(request(
            "GET",
            &sc.url(&format!("/download?size={HUNDRED_MB}")),
            &[],
            body(""),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut b = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = b.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            got += data.len() as u64;
        }
    }
    assert_eq!(got, HUNDRED_MB);

    let peak = sc.peak_rss();
    assert!(
        peak < 64 * MB,
        "peak RSS {} MB is not under 64 MB",
        peak / MB
    );
    eprintln!(
        "sidecar peak RSS after 2 x 100 MB: {:.1} MB",
        peak as f64 / MB as f64
    );
}

#[tokio::test]
async fn server_sent_events_arrive_as_they_are_sent() {
    let up = Upstream::start();
    let sc = InProcess::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;
    let resp = client()
        .request(request(
            "GET",
            &sc.url("/sse?n=4&interval_ms=500"),
            &[("accept", "text/event-stream")],
            body(""),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut b = resp.into_body();
    // Each event as (when the upstream sent it, when it arrived here), in seconds since the Unix
    // epoch: the upstream stamps each event with its own clock, the same as this one.
    let mut events: Vec<(f64, f64)> = Vec::new();
    let mut text = String::new();
    while let Some(frame) = b.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            text.push_str(&String::from_utf8_lossy(&data));
            // Every event completed by this frame ("data: event <i> at <stamp>\n\n").
            let complete = text.matches("\n\n").count();
            for event in text.split("\n\n").take(complete).skip(events.len()) {
                assert!(
                    event.starts_with(&format!("data: event {} at ", events.len())),
                    "{text}"
                );
                let sent: f64 = event.rsplit(' ').next().unwrap().parse().unwrap();
                events.push((sent, now));
            }
        }
    }
    assert_eq!(events.len(), 4, "{text}");
    // The upstream sends the last event 1.5 s after the first one. Streamed, the first arrives
    // before the last is sent, however late the stream started; buffered, only after it. (The
    // stamps are rounded to the millisecond, hence the 1 ms.)
    let first_arrived = events[0].1;
    let last_sent = events[3].0;
    assert!(
        first_arrived < last_sent - 0.001,
        "events were batched: (sent, arrived) {events:?}"
    );
}

/// Sends a WebSocket handshake for `/ws` to `addr` with `extra` header lines; returns the
/// connection and the response head.
async fn ws_open(addr: std::net::SocketAddr, extra: &str) -> (tokio::net::TcpStream, String) {
    ws_to(addr, "/ws", extra).await
}

/// [`ws_open`] for `path`.
pub(crate) async fn ws_to(
    addr: std::net::SocketAddr,
    path: &str,
    extra: &str,
) -> (tokio::net::TcpStream, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let handshake = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    (s, String::from_utf8(head).unwrap())
}

/// Sends `msg` as a masked text frame and reads the upstream's echo.
pub(crate) async fn ws_echo(s: &mut tokio::net::TcpStream, msg: &str) {
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | msg.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(msg.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.unwrap();
    let mut hdr = [0u8; 2];
    s.read_exact(&mut hdr).await.unwrap();
    assert_eq!(hdr[0], 0x81);
    let mut payload = vec![0u8; (hdr[1] & 0x7f) as usize];
    s.read_exact(&mut payload).await.unwrap();
    assert_eq!(String::from_utf8(payload).unwrap(), msg);
}

#[tokio::test]
async fn websocket_echo_is_tunnelled() {
    let up = Upstream::start();
    let sc = InProcess::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;
    let (mut s, head) = ws_open(sc.addr, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    for msg in ["hello through the sidecar", "second message"] {
        ws_echo(&mut s, msg).await;
    }
}

/// Behind an ingress (a trusted proxy) the per-address connection cap sees only the ingress:
/// the tunnels callers without a session may hold are counted by the address the ingress
/// names; a handshake the upstream refuses gives its place back; and a tunnel that carries
/// nothing either way is closed after `tunnel_idle_timeout_secs`, giving its place back.
#[tokio::test]
async fn tunnels_are_capped_per_address_and_closed_when_silent() {
    let up = Upstream::start();
    let sc = InProcess::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("SSO_SIDECAR_CONNECTIONS__MAX_TUNNELS_PER_ADDRESS", "2"),
        ("SSO_SIDECAR_CONNECTIONS__TUNNEL_IDLE_TIMEOUT_SECS", "2"),
    ])
    .await;
    let one = "X-Forwarded-For: 203.0.113.7\r\n";
    let (mut busy, h1) = ws_open(sc.addr, one).await;
    // Its idle clock cannot start before the handshake is sent.
    let opened = std::time::Instant::now();
    let (mut silent, h2) = ws_open(sc.addr, one).await;
    assert!(
        h1.starts_with("HTTP/1.1 101") && h2.starts_with("HTTP/1.1 101"),
        "{h1}{h2}"
    );
    let (_, h3) = ws_open(sc.addr, one).await;
    assert!(
        h3.starts_with("HTTP/1.1 429"),
        "a third tunnel of one client: {h3}"
    );
    assert!(
        h3.to_ascii_lowercase().contains("\r\nretry-after: 5\r\n"),
        "a refused tunnel says when to retry: {h3}"
    );
    // Another client behind the same ingress is not held back by the first.
    let (_other, h4) = ws_open(sc.addr, "X-Forwarded-For: 203.0.113.8\r\n").await;
    assert!(h4.starts_with("HTTP/1.1 101"), "{h4}");
    // Handshakes the upstream refuses hold no place: four in a row, with a cap of two.
    for _ in 0..4 {
        let third = "X-Forwarded-For: 203.0.113.9\r\n";
        let (_, h) = ws_to(sc.addr, "/status?code=403", third).await;
        assert!(h.starts_with("HTTP/1.1 403"), "{h}");
    }

    // The busy tunnel carries a message every 500 ms; the silent one nothing.
    let silent_closed = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
        (n.map(|r| r.unwrap_or(0)), opened.elapsed())
    });
    for i in 0..8 {
        ws_echo(&mut busy, &format!("message {i}")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (n, after) = silent_closed.await.unwrap();
    assert_eq!(
        n.expect("the silent tunnel was never closed"),
        0,
        "closed without data"
    );
    assert!(
        after >= Duration::from_millis(1900) && after < Duration::from_secs(4),
        "closed after {after:?}, with a 2 s idle timeout"
    );
    ws_echo(&mut busy, "still open after 4 s of messages").await;
    // The closed tunnel's place is free again.
    let (_again, h5) = ws_open(sc.addr, one).await;
    assert!(h5.starts_with("HTTP/1.1 101"), "{h5}");
    let m = get(&format!("http://{}/metrics", sc.admin), &[])
        .await
        .unwrap();
    let m = String::from_utf8_lossy(m.body());
    let refused = "sso_sidecar_connections_refused_total{reason=\"max_tunnels\"}";
    let idled = "sso_sidecar_connections_timed_out_total{reason=\"tunnel_idle\"}";
    assert_eq!(metric(&m, refused), 1.0, "{m}");
    assert_eq!(
        metric(&m, idled),
        2.0,
        "the silent tunnel and the other client's: {m}"
    );
}

/// From a peer that is not a trusted proxy, `X-Forwarded-For` is the client's own text: it
/// does not move a tunnel to another address's count.
#[tokio::test]
async fn a_spoofed_forwarded_for_does_not_evade_the_tunnel_cap() {
    let up = Upstream::start();
    let sc = InProcess::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_CONNECTIONS__MAX_TUNNELS_PER_ADDRESS", "1"),
    ])
    .await;
    let (_one, h1) = ws_open(sc.addr, "X-Forwarded-For: 198.51.100.1\r\n").await;
    assert!(h1.starts_with("HTTP/1.1 101"), "{h1}");
    let (_, h2) = ws_open(sc.addr, "X-Forwarded-For: 198.51.100.2\r\n").await;
    assert!(h2.starts_with("HTTP/1.1 429"), "{h2}");
}
