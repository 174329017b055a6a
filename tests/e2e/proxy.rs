//! Plain forwarding, header rules, error mapping, metrics and log redaction (in process, but
//! for the log test, which reads the binary's output).

use crate::in_process::InProcess;
use crate::support::*;

#[tokio::test]
async fn get_and_post_are_forwarded_with_forwarding_headers_and_a_request_id() {
    let up = Upstream::start();
    let sc = InProcess::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;

    let r = get(
        &sc.url("/echo/a?b=c"),
        &[("authorization", "Bearer abc"), ("cookie", "x=1")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(rid.len(), 16, "a request id is generated");
    let j = json(&r);
    assert_eq!(j["method"], "GET");
    assert_eq!(j["path"], "/echo/a");
    assert_eq!(j["query"], "b=c");
    let h = &j["headers"];
    assert_eq!(
        h["x-request-id"][0],
        rid.as_str(),
        "the upstream sees the same id"
    );
    assert_eq!(
        h["authorization"][0], "Bearer abc",
        "token mode passes credentials through"
    );
    assert_eq!(h["cookie"][0], "x=1");
    assert_eq!(h["x-forwarded-for"][0], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(h["x-forwarded-host"][0], sc.addr.to_string());
    assert_eq!(
        h["host"][0],
        format!("127.0.0.1:{}", up.port),
        "Host is the upstream's"
    );

    let r = send(request(
        "POST",
        &sc.url("/echo/post"),
        &[
            ("x-request-id", "client-id-1"),
            ("content-type", "text/plain"),
        ],
        body("hello body"),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-request-id"],
        "client-id-1",
        "a sane client id is kept"
    );
    let j = json(&r);
    assert_eq!(j["method"], "POST");
    assert_eq!(j["body"], "hello body");

    let r = get(&sc.url("/status?code=418"), &[]).await.unwrap();
    assert_eq!(r.status(), 418, "upstream statuses pass through");
}

#[tokio::test]
async fn hop_by_hop_and_connection_named_headers_never_reach_the_upstream() {
    let up = Upstream::start();
    let sc = InProcess::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;
    let r = get(
        &sc.url("/echo"),
        &[
            ("connection", "keep-alive, X-Drop-Me, x-forwarded-for"),
            ("x-drop-me", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "gzip"),
            ("trailer", "x-t"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-kept", "yes"),
        ],
    )
    .await
    .unwrap();
    let h = json(&r)["headers"].clone();
    for gone in [
        "x-drop-me",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
    ] {
        assert!(h.get(gone).is_none(), "{gone} was forwarded: {h}");
    }
    assert_eq!(h["x-kept"][0], "yes");
    // Naming x-forwarded-for in Connection removes the client's copy, but ours is still written.
    assert_eq!(h["x-forwarded-for"][0], "127.0.0.1");
}

/// Pass-through (`AUTH_MODE=token`) in front of a backend that trusts identity headers: the
/// sidecar authenticates no one, and must not let a client name itself either (a `.env` not
/// found leaves `AUTH_MODE` at `token`): its identity headers are removed in every spelling.
#[tokio::test]
async fn a_pass_through_removes_the_clients_identity_headers_for_a_headers_backend() {
    let up = Upstream::start();
    let sc = InProcess::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_IDENTITY", "headers"),
    ])
    .await;
    let spoof = [
        ("x-forwarded-user", "admin"),
        ("X_Forwarded_Email", "admin@example.test"),
        ("x-forwarded-groups", "admins"),
        ("x-kept", "yes"),
    ];
    let h = json(&get(&sc.url("/echo"), &spoof).await.unwrap())["headers"].clone();
    for name in [
        "x-forwarded-user",
        "x_forwarded_email",
        "x-forwarded-groups",
    ] {
        assert!(h.get(name).is_none(), "{name} reached the backend: {h}");
    }
    assert_eq!(h["x-kept"][0], "yes");
}

#[tokio::test]
async fn forwarding_headers_are_believed_only_from_trusted_proxies() {
    let up = Upstream::start();
    let spoof = [
        ("x-forwarded-for", "198.51.100.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "rag.example.com"),
        ("x_forwarded_for", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6"),
    ];

    let untrusted = InProcess::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;
    let h = json(&get(&untrusted.url("/echo"), &spoof).await.unwrap())["headers"].clone();
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"]),
        "{h}"
    );
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(h["x-forwarded-host"][0], untrusted.addr.to_string());
    assert!(
        h.get("x_forwarded_for").is_none() && h.get("forwarded").is_none(),
        "{h}"
    );

    let trusted = InProcess::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1/32"),
    ])
    .await;
    let h = json(&get(&trusted.url("/echo"), &spoof).await.unwrap())["headers"].clone();
    // Ending at the client: the upstream, trusting only the sidecar, reads the last entry.
    assert_eq!(h["x-forwarded-for"][0], "198.51.100.9");
    assert_eq!(h["x-forwarded-proto"][0], "https");
    assert_eq!(h["x-forwarded-host"][0], "rag.example.com");
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_upstream_is_504() {
    // A port that was free a moment ago and has no listener: connection refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let sc = InProcess::start(&[("SSO_SIDECAR_UPSTREAM", &dead_url)]).await;
    let r = get(&sc.url("/api/x"), &[]).await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        json(&r),
        serde_json::json!({"detail": "Upstream unavailable"})
    );
    assert!(r.headers().contains_key("x-request-id"));
    let r = get(&sc.url("/"), &[("accept", "text/html")]).await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(String::from_utf8_lossy(r.body()).contains("<h1>502 Bad Gateway</h1>"));

    let up = Upstream::start();
    let sc = InProcess::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_UPSTREAM_TIMEOUT_SECS", "2"),
    ])
    .await;
    let r = get(&sc.url("/slow?ms=5000"), &[]).await.unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(
        json(&r),
        serde_json::json!({"detail": "Upstream timed out"})
    );
    let r = get(&sc.url("/slow?ms=10"), &[]).await.unwrap();
    assert_eq!(r.status(), 200, "a fast answer is not affected");

    let metrics = String::from_utf8(
        get(&sc.admin_url("/metrics"), &[])
            .await
            .unwrap()
            .body()
            .to_vec(),
    )
    .unwrap();
    assert!(
        metrics.contains(r#"sso_sidecar_upstream_errors_total{kind="timeout"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"sso_sidecar_http_requests_total{method="GET",status="5xx"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("sso_sidecar_http_requests_in_flight 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn oversized_request_headers_get_431() {
    let up = Upstream::start();
    let sc = InProcess::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_MAX_REQUEST_HEADER_BYTES", "16384"),
    ])
    .await;
    let big = "a".repeat(20_000);
    let r = get(&sc.url("/echo"), &[("x-big", &big)]).await.unwrap();
    assert_eq!(r.status(), 431);
    let r = get(&sc.url("/echo"), &[("x-small", &"a".repeat(4000))])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// An upload that takes longer than the upstream timeout, to a backend that reads the whole
/// body before it answers, succeeds: the timeout runs from the body's last move. A client that
/// stops sending mid-body still gets the 504 one timeout later.
#[tokio::test]
async fn an_upload_longer_than_the_upstream_timeout_gets_its_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start();
    let sc = InProcess::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_UPSTREAM_TIMEOUT_SECS", "2"),
    ])
    .await;
    let upload = |stall_after: Option<usize>| {
        let addr = sc.addr;
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            // Closed after the answer, so the whole answer is read to its end (one read may
            // bring the head alone).
            s.write_all(
                b"POST /upload HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\
                  Transfer-Encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
            // Sixteen chunks of 1 KiB, 250 ms apart: 4 s in all, twice the upstream timeout.
            for i in 0..16 {
                if stall_after == Some(i) {
                    // Stops sending, keeps the connection.
                    let mut answer = Vec::new();
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        s.read_to_end(&mut answer),
                    )
                    .await;
                    return String::from_utf8_lossy(&answer).into_owned();
                }
                s.write_all(format!("400\r\n{}\r\n", "x".repeat(1024)).as_bytes())
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            s.write_all(b"0\r\n\r\n").await.unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                s.read_to_end(&mut answer),
            )
            .await
            .expect("an answer")
            .unwrap();
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let answer = upload(None).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Sent over 4 s (the client's own pauses), twice the upstream timeout.
    assert!(answer.contains(r#""received": 16384"#), "{answer}");
    let answer = upload(Some(2)).await;
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");

    // The moves push the timeout no further than the body's own bound: a trickle that keeps
    // moving gets its 504 there.
    let bounded = InProcess::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_UPSTREAM_TIMEOUT_SECS", "2"),
        ("SSO_SIDECAR_UPSTREAM_BODY_TIMEOUT_SECS", "4"),
    ])
    .await;
    let mut s = tokio::net::TcpStream::connect(bounded.addr).await.unwrap();
    // Before the head is sent, so before the body's bound starts.
    let t0 = std::time::Instant::now();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = loop {
        // A byte every 250 ms, until the sidecar answers.
        let _ = s.write_all(b"1\r\nx\r\n").await;
        match tokio::time::timeout(std::time::Duration::from_millis(250), s.read(&mut answer)).await
        {
            Ok(r) => break r.unwrap(),
            Err(_) => assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "no answer"
            ),
        }
    };
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(3900),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(7),
        "cut at the 4 s bound, not later: {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn http2_prior_knowledge_is_served_and_forwarded_as_http1() {
    let up = Upstream::start();
    let sc = InProcess::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let resp = client
        .request(request("GET", &sc.url("/echo/h2"), &[], body("")))
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    use http_body_util::BodyExt;
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(j["path"], "/echo/h2");
    assert_eq!(
        j["headers"]["x-forwarded-host"][0],
        sc.addr.to_string(),
        ":authority becomes X-Forwarded-Host"
    );
}

#[tokio::test]
async fn admin_endpoints_live_on_their_own_listener() {
    let up = Upstream::start();
    let sc = InProcess::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;
    assert_eq!(
        get(&sc.admin_url("/healthz"), &[]).await.unwrap().status(),
        200
    );
    assert_eq!(
        json(&get(&sc.admin_url("/readyz"), &[]).await.unwrap())["status"],
        "ready"
    );
    // On the public listener /metrics belongs to the backend.
    let r = get(&sc.url("/metrics"), &[]).await.unwrap();
    assert_eq!(json(&r)["path"], "/metrics", "proxied, not shadowed");
    let m = get(&sc.admin_url("/metrics"), &[]).await.unwrap();
    let text = String::from_utf8_lossy(m.body());
    assert!(
        text.contains("sso_sidecar_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains(r#"sso_sidecar_http_requests_total{method="GET",status="2xx"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn no_credential_or_secret_reaches_the_logs() {
    let up = Upstream::start();
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("AUTH_TOKEN", "admin-token-SECRET-0001"),
        ("OIDC_CLIENT_SECRET", "client-secret-SECRET-0002"),
        ("RUST_LOG", "trace"),
    ])
    .await;
    let r = get(
        &sc.url("/static/app.js?token=query-token-SECRET-0003"),
        &[
            ("authorization", "Bearer bearer-SECRET-0004"),
            ("cookie", "openrag_session=cookie-SECRET-0005"),
            ("proxy-authorization", "Basic proxy-SECRET-0006"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    sc.signal("TERM");
    let mut child = sc;
    let status = tokio::task::spawn_blocking(move || {
        let s = child.child.wait().unwrap();
        (s, child)
    })
    .await
    .unwrap();
    let (status, sc) = status;
    assert!(status.success());
    // The access line is there.
    sc.logged(r#""path":"/static/app.js""#).await;
    // The last line the process writes: the secrets are looked for in the whole log.
    let logs = sc.logged(r#""message":"stopped""#).await;
    assert!(logs.contains(r#""status":200"#), "{logs}");
    for secret in [
        "SECRET-0001",
        "SECRET-0002",
        "SECRET-0003",
        "SECRET-0004",
        "SECRET-0005",
        "SECRET-0006",
    ] {
        assert!(!logs.contains(secret), "{secret} reached the logs:\n{logs}");
    }
}

/// A client that leaves before its answer (an HTTP/2 reset: hyper drops the request) is still
/// counted: the in-flight gauge comes back down and the access log has its line, status 499.
#[tokio::test]
async fn a_request_its_client_abandons_is_counted_and_logged() {
    let up = Upstream::start();
    let sc = Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let gauge = "sso_sidecar_http_requests_in_flight";
    let sc = &sc;
    let wait_for = |want: f64| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
        loop {
            let m = metrics(sc).await;
            if metric(&m, gauge) == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{gauge} never {want}: {m}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let abandoned =
        tokio::spawn(h2.request(request("GET", &sc.url("/slow?ms=6000"), &[], body(""))));
    wait_for(1.0).await;
    abandoned.abort();
    // Long before the upstream's answer.
    wait_for(0.0).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !sc.output().contains("\"status\":499") {
        assert!(std::time::Instant::now() < deadline, "{}", sc.output());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        metrics(sc)
            .await
            .contains(r#"sso_sidecar_http_requests_total{method="GET",status="4xx"} 1"#),
        "counted as a 4xx"
    );
}

/// With `upstream_ready_path`, `/readyz` answers 503 while the backend is not up yet (and says
/// why in the log, with the cause), 200 once it answers 2xx there, and 503 again when it
/// answers an error.
#[tokio::test]
async fn readiness_waits_for_the_upstreams_ready_path() {
    let port = crate::oidc_support::free_port();
    let sc = Sidecar::start_without_readiness(&[
        ("SSO_SIDECAR_UPSTREAM", &format!("http://127.0.0.1:{port}")),
        ("SSO_SIDECAR_UPSTREAM_READY_PATH", "/status?code=200"),
    ])
    .await;
    let ready = || async { get(&sc.admin_url("/readyz"), &[]).await.unwrap() };
    let r = ready().await;
    assert_eq!(r.status(), 503);
    assert!(String::from_utf8_lossy(r.body()).contains("upstream not ready"));
    wait_until(
        "the cause to be logged",
        std::time::Duration::from_secs(5),
        || sc.output().contains("os error 111"),
    )
    .await;

    let _up = Upstream::start_with(&["--port", &port.to_string()]);
    readiness_turns(&sc, 200).await;

    let failing = Sidecar::start_without_readiness(&[
        ("SSO_SIDECAR_UPSTREAM", &format!("http://127.0.0.1:{port}")),
        ("SSO_SIDECAR_UPSTREAM_READY_PATH", "/status?code=503"),
    ])
    .await;
    let r = get(&failing.admin_url("/readyz"), &[]).await.unwrap();
    assert_eq!(
        r.status(),
        503,
        "an upstream answering 503 there is not ready"
    );
}

/// `/readyz` is not authenticated: a flood of probes once became as many Redis `PING`s and
/// upstream requests. Probes now share one check a second.
#[tokio::test]
async fn a_flood_of_readiness_probes_asks_the_upstream_once() {
    let up = Upstream::start();
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_UPSTREAM_READY_PATH", "/status?code=200"),
    ])
    .await;
    let asked = |paths: Vec<String>| paths.iter().filter(|p| p.starts_with("/status")).count();
    let before = asked(up.paths().await);
    let mut probes = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let url = sc.admin_url("/readyz");
        probes.spawn(async move { get(&url, &[]).await.unwrap().status() });
    }
    for status in probes.join_all().await {
        assert_eq!(status, 200);
    }
    let during = asked(up.paths().await) - before;
    assert!(during <= 2, "50 probes asked the upstream {during} times");
}

/// An HTTP/2 client may send each cookie as a field of its own (Go's transport does); they
/// reach the HTTP/1.1 upstream as one `Cookie` line (RFC 9113 §8.2.3), where servers read only
/// the first.
#[tokio::test]
async fn http2_cookie_fields_reach_the_upstream_as_one_line() {
    let up = Upstream::start();
    let sc = InProcess::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let mut req = request("GET", &sc.url("/echo/cookies"), &[], body(""));
    for c in ["a=1", "b=2", "c=3"] {
        req.headers_mut()
            .append("cookie", http::HeaderValue::from_static(c));
    }
    let r = h2.request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    let bytes = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(j["headers"]["cookie"], serde_json::json!(["a=1; b=2; c=3"]));
}
