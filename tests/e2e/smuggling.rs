//! Request smuggling and identity spoofing through HTTP/1.1's framing: what a client hides in
//! a chunked body's trailer, in a request framed two ways at once, in a folded header line or
//! behind an absolute-form target never reaches the upstream as something else. The upstream
//! here records the raw bytes it receives, so nothing the upstream's own parser would tidy up
//! is missed.

use crate::hardening::exchange;
use crate::mock_idp::{Key, MockIdp};
use crate::oidc_support::*;
use crate::support::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An upstream that records every byte it receives on each connection, and answers each
/// request it recognises (by the blank line ending a head, then a chunked body's last chunk or
/// the length it gave) with a short 200.
struct Recorder {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let all = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let all = all.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    let mut buf = [0u8; 8192];
                    loop {
                        let Ok(n) = sock.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        all.lock().unwrap().extend_from_slice(&buf[..n]);
                        mine.extend_from_slice(&buf[..n]);
                        if complete(&mine) {
                            mine.clear();
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if sock.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Recorder { url, seen }
    }

    fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).to_ascii_lowercase()
    }
}

/// Whether `bytes` hold a whole request: a head, and its chunked or sized body.
fn complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes).to_ascii_lowercase();
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let head = &text[..end];
    if head.contains("transfer-encoding: chunked") {
        return text[end..].contains("\r\n0\r\n") && text.ends_with("\r\n\r\n");
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    bytes.len() >= end + 4 + length
}

/// A chunked request's trailer may name any field: an identity header there would reach a
/// backend that merges trailers into its headers. The sidecar sends none on.
#[tokio::test]
async fn a_trailer_carries_no_identity_upstream() {
    let up = Recorder::start().await;
    let sc = Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &up.url)]).await;
    let r = exchange(
        sc.addr,
        b"POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\
          Trailer: X-Forwarded-User\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n0\r\nX-Forwarded-User: admin\r\nX-Forwarded-Email: admin@corp\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let seen = up.seen();
    assert!(seen.contains("hello"), "the body went on: {seen}");
    assert!(!seen.contains("admin"), "a trailer went on: {seen}");
    assert!(!seen.contains("trailer:"), "{seen}");
}

/// A request framed both by `Content-Length` and by chunks is read by its chunks, and its
/// connection is closed after the answer: bytes a front end and a back end would split
/// differently never become a second request upstream.
#[tokio::test]
async fn a_request_framed_two_ways_smuggles_nothing() {
    let up = Recorder::start().await;
    let sc = Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &up.url)]).await;
    let r = exchange(
        sc.addr,
        b"POST /first HTTP/1.1\r\nHost: app\r\nContent-Length: 4\r\n\
          Transfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n",
    )
    .await;
    // Read by its chunks (RFC 9112 §6.3), answered once and closed: never a second request.
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(r.matches("HTTP/1.1 ").count(), 1, "{r}");
    let seen = up.seen();
    assert!(!seen.contains("/smuggled"), "{seen}");
    assert!(
        !seen.contains("content-length: 4"),
        "the length that lied went on: {seen}"
    );
}

/// A header line folded onto the next (obs-fold) is refused: a backend that unfolds it would
/// read `X-Forwarded-User: a admin` where the sidecar saw another field.
#[tokio::test]
async fn a_folded_header_line_is_refused() {
    let up = Recorder::start().await;
    let sc = Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &up.url)]).await;
    let r = exchange(
        sc.addr,
        b"GET /x HTTP/1.1\r\nHost: app\r\nX-Note: a\r\n X-Forwarded-User: admin\r\n\
          Connection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(!up.seen().contains("admin"), "{}", up.seen());
}

/// An absolute-form target (`GET http://other/admin/users`) is judged by its path like any
/// other: a `[[authz.rules]]` path is refused to a bearer without a session, and the request
/// goes to the configured upstream in origin form.
#[tokio::test]
async fn an_absolute_form_target_is_judged_by_its_path() {
    let up = Recorder::start().await;
    let idp = MockIdp::start().await;
    idp.set(|m| m.jwks = json!({"keys": [Key::new("k1").jwk()]}));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sso.toml");
    std::fs::write(
        &file,
        "[[authz.rules]]\npath = \"/admin/*\"\ngroups = [\"admins\"]\n",
    )
    .unwrap();
    let cfg = file.to_str().unwrap().to_owned();
    let sc = start_oidc_sidecar(
        free_port(),
        &idp.issuer(),
        &up.url,
        &[
            ("SSO_SIDECAR_CONFIG", &cfg),
            ("SSO_SIDECAR_PATHS__BEARER_PASSTHROUGH", "true"),
        ],
    )
    .await;
    let r = exchange(
        sc.sidecar.addr,
        b"GET http://other.example/admin/users HTTP/1.1\r\nHost: app\r\n\
          Authorization: Bearer minted\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = exchange(
        sc.sidecar.addr,
        b"GET http://other.example/elsewhere HTTP/1.1\r\nHost: app\r\n\
          Authorization: Bearer minted\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let seen = up.seen();
    assert!(!seen.contains("/admin"), "{seen}");
    assert!(
        seen.starts_with("get /elsewhere http/1.1"),
        "origin form: {seen}"
    );
}

/// `Connection: content-length` names the length as hop-by-hop: removed with the hop-by-hop
/// fields, the body would reach the upstream unframed and be read as the start of the next
/// request. The upstream gets the body framed, and the client's next request as its own.
#[tokio::test]
async fn a_length_named_hop_by_hop_still_frames_the_body_upstream() {
    let up = Recorder::start().await;
    let sc = Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &up.url)]).await;
    let r = exchange(
        sc.addr,
        b"POST /first HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\
          Connection: content-length\r\n\r\nhello\
          GET /second HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.matches("HTTP/1.1 200").count(), 2, "{r}");
    let seen = up.seen();
    let first = &seen[..seen.find("\r\n\r\n").expect("a head")];
    assert!(first.starts_with("post /first"), "{seen}");
    assert!(
        first.contains("content-length: 5") || first.contains("transfer-encoding: chunked"),
        "the body went on unframed: {seen}"
    );
    let second = seen
        .find("get /second")
        .expect("the second request went on");
    assert!(
        seen[..second].ends_with("hello") || seen[..second].ends_with("0\r\n\r\n"),
        "{seen}"
    );
}

/// HTTP/2 request trailers naming identity fields: the upstream (HTTP/1.1) gets the body and
/// never the trailers.
#[tokio::test]
async fn http2_trailers_carry_no_identity_upstream() {
    use http_body_util::BodyExt;
    let up = Recorder::start().await;
    let sc = Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &up.url)]).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-forwarded-user", "admin".parse().unwrap());
    trailers.insert("x-forwarded-email", "admin@corp".parse().unwrap());
    let frames = Frames(
        [
            hyper::body::Frame::data(bytes::Bytes::from("hello")),
            hyper::body::Frame::trailers(trailers),
        ]
        .into(),
    );
    // Declared, as hyper's HTTP/1.1 side sends only the trailers a `Trailer` field names.
    let req = http::Request::post(sc.url("/upload"))
        .header("trailer", "x-forwarded-user, x-forwarded-email")
        .body(frames.boxed())
        .unwrap();
    let r = h2.request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_2);
    let _ = r.into_body().collect().await;
    let seen = up.seen();
    assert!(seen.contains("hello"), "the body went on: {seen}");
    assert!(!seen.contains("admin"), "a trailer went on: {seen}");
    assert!(!seen.contains("trailer:"), "{seen}");
}

/// A request body of the frames given, trailers included.
struct Frames(std::collections::VecDeque<hyper::body::Frame<bytes::Bytes>>);

impl http_body::Body for Frames {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// An upstream that answers every request with `raw`, on every connection.
async fn answering(raw: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if complete(&seen) {
                        seen.clear();
                        if sock.write_all(raw).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    url
}

/// A response framed both ways (`Transfer-Encoding: chunked` and a `Content-Length`): the
/// transfer coding wins (RFC 9112 §6.3) and the length is dropped, so the client gets the whole
/// body; before, the length went on and the answer was cut short. A coding besides `chunked`
/// (taken off with this hop's framing, its bytes would be garbage) gets 502.
#[tokio::test]
async fn a_response_framed_two_ways_reaches_the_client_whole() {
    let body: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 10\r\n\r\n\
             1388\r\n{}\r\n0\r\n\r\n",
            "a".repeat(5000)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let sc = Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &answering(body).await)]).await;
    let r = get(&sc.url("/x"), &[]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.body().len(), 5000, "cut short");
    assert!(r
        .headers()
        .get("content-length")
        .is_none_or(|v| v == "5000"));
    let gzip = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let sc = Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &answering(gzip).await)]).await;
    let r = get(&sc.url("/x"), &[]).await.unwrap();
    assert_eq!(r.status(), 502);
}
