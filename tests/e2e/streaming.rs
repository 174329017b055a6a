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
use std::time::{SystemTime, UNIX_EPOCH};
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

#[tokio::test]
async fn websocket_echo_is_tunnelled() {
    let up = Upstream::start();
    let sc = InProcess::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;
    let mut s = tokio::net::TcpStream::connect(sc.addr).await.unwrap();
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        sc.addr
    );
    s.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );

    for msg in ["hello through the sidecar", "second message"] {
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
}
