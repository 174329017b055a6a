use super::forwarded::ip_text;
use super::*;
use ipnet::IpNet;
use std::net::IpAddr;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn ip(text: &str) -> std::net::IpAddr {
    text.parse().unwrap()
}

fn peer(trusted: bool) -> Peer {
    Peer {
        ip: "203.0.113.7".parse().unwrap(),
        trusted,
        scheme: crate::tls::Scheme::Http,
    }
}

#[test]
fn hop_by_hop_and_connection_named_headers_are_removed() {
    let mut h = map(&[
        ("connection", "keep-alive, X-Secret-Hop"),
        ("connection", "x-other"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
        ("trailer", "x-t"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("proxy-authorization", "Basic abc"),
        ("x-secret-hop", "1"),
        ("x-other", "2"),
        ("x-kept", "3"),
        ("authorization", "Bearer keep-me"),
        ("connection", "X-Request-Id"),
        ("x-request-id", "the sidecar's own"),
    ]);
    remove_hop_by_hop(&mut h);
    let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        left,
        vec!["x-kept", "authorization", "x-request-id"],
        "a client cannot name the request id away"
    );
}

#[test]
fn malformed_connection_tokens_are_ignored() {
    let mut h = map(&[
        ("connection", "bad header name, x-a"),
        ("x-a", "1"),
        ("x-b", "2"),
    ]);
    remove_hop_by_hop(&mut h);
    assert!(h.get("x-a").is_none());
    assert!(h.get("x-b").is_some());
}

#[test]
fn only_a_valid_websocket_handshake_is_an_upgrade() {
    use http::{Method, Version};
    let key = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    let version = ("sec-websocket-version", "13");
    let ws = |extra: &[(&str, &str)]| {
        let mut pairs = vec![
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            key,
            version,
        ];
        pairs.extend_from_slice(extra);
        map(&pairs)
    };
    assert!(is_websocket_handshake(
        &Method::GET,
        Version::HTTP_11,
        &ws(&[])
    ));
    assert!(!is_websocket_handshake(
        &Method::POST,
        Version::HTTP_11,
        &ws(&[])
    ));
    assert!(!is_websocket_handshake(
        &Method::GET,
        Version::HTTP_10,
        &ws(&[])
    ));
    for bad in [
        map(&[("upgrade", "websocket"), key, version]),
        map(&[("connection", "upgrade"), ("upgrade", "h2c"), key, version]),
        map(&[
            ("connection", "upgrade, http2-settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
        ]),
        map(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket, h2c"),
            key,
            version,
        ]),
        map(&[("connection", "upgrade"), ("upgrade", "websocket"), version]),
        map(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "short"),
            version,
        ]),
        map(&[("connection", "upgrade"), ("upgrade", "websocket"), key]),
    ] {
        assert!(
            !is_websocket_handshake(&Method::GET, Version::HTTP_11, &bad),
            "{bad:?}"
        );
    }
    let mut h = map(&[
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "h2c"),
        ("http2-settings", "x"),
        ("x-kept", "1"),
    ]);
    remove_hop_by_hop(&mut h);
    assert_eq!(
        h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        vec!["x-kept"]
    );
}

#[test]
fn untrusted_forwarding_headers_are_replaced_in_every_spelling() {
    let mut h = map(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("X_Forwarded_For", "5.6.7.8"),
        ("x.forwarded.proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-real-ip", "9.9.9.9"),
        ("forwarded", "for=1.2.3.4"),
        ("x-forwarded-prefix", "//evil.example"),
        ("X_Original_URL", "/admin/users"),
        ("x-rewrite-url", "/admin/users"),
        ("x-original-uri", "/admin/users"),
        ("x-forwarded-uri", "/admin/users"),
        ("x-forwarded-ssl", "on"),
        ("front-end-https", "on"),
        ("x-forwarded-client-cert", "Hash=1;Subject=\"CN=admin\""),
        ("x-forwarded-protocol", "https"),
        ("x-url-scheme", "https"),
        ("true-client-ip", "9.9.9.9"),
        ("x-client-ip", "9.9.9.9"),
        ("client-ip", "9.9.9.9"),
        ("x_cluster_client_ip", "9.9.9.9"),
    ]);
    set_forwarded(
        &mut h,
        peer(false),
        peer(false).ip,
        Some(HeaderValue::from_static("rag.example")),
    );
    assert_eq!(h["x-forwarded-for"], "203.0.113.7");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "rag.example");
    assert_eq!(h.len(), 3, "{h:?}");
}

#[test]
fn a_trusted_proxys_chain_ends_at_the_client_and_its_proto_is_kept() {
    let mut h = map(&[
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "rag.example"),
    ]);
    set_forwarded(
        &mut h,
        peer(true),
        ip("198.51.100.1"),
        Some(HeaderValue::from_static("internal:8000")),
    );
    assert_eq!(h["x-forwarded-for"], "198.51.100.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "rag.example");
    assert_eq!(public_scheme(&h, peer(true)), Scheme::Https);
    assert_eq!(
        public_scheme(&h, peer(false)),
        Scheme::Http,
        "an untrusted claim of https is not believed"
    );
}

#[test]
fn a_trusted_proxys_chain_in_several_lines_is_kept_whole_and_in_order() {
    let mut h = map(&[
        ("x-forwarded-for", "192.0.2.66"),
        ("x-forwarded-for", "198.51.100.1"),
    ]);
    set_forwarded(&mut h, peer(true), ip("198.51.100.1"), None);
    let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
    assert_eq!(all, ["192.0.2.66, 198.51.100.1"]);
    // A line that is not text: nothing left of it can be placed, so only our hop is said.
    let mut h = map(&[("x-forwarded-for", "192.0.2.66")]);
    h.append(
        "x-forwarded-for",
        HeaderValue::from_bytes(b"198.51.100.\xff").unwrap(),
    );
    set_forwarded(&mut h, peer(true), peer(true).ip, None);
    let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
    assert_eq!(all, ["203.0.113.7"]);
}

#[test]
fn url_overrides_and_odd_spellings_are_removed_even_from_a_trusted_proxy() {
    let mut h = map(&[
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-prefix", "/rag"),
        ("x-original-url", "/admin/users"),
        ("X_Rewrite_URL", "/admin/users"),
        ("x.original.uri", "/admin/users"),
        ("x_forwarded_host", "evil.example"),
        ("X_Forwarded_For", "1.2.3.4"),
        ("x_unrelated", "kept"),
    ]);
    set_forwarded(&mut h, peer(true), ip("198.51.100.1"), None);
    let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
    left.sort_unstable();
    assert_eq!(
        left,
        [
            "x-forwarded-for",
            "x-forwarded-prefix",
            "x-forwarded-proto",
            "x_unrelated"
        ]
    );
    assert_eq!(h["x-forwarded-for"], "198.51.100.1");
}

#[test]
fn trusted_proxy_without_headers_gets_ours() {
    let mut h = HeaderMap::new();
    set_forwarded(&mut h, peer(true), peer(true).ip, None);
    assert_eq!(h["x-forwarded-for"], "203.0.113.7");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(h.get("x-forwarded-host").is_none());
}

#[test]
fn request_ids_are_kept_when_sane_and_generated_otherwise() {
    let h = map(&[("x-request-id", "abc-123")]);
    assert_eq!(request_id(&h), "abc-123");
    let h = map(&[("x-request-id", "has space")]);
    assert_ne!(request_id(&h), "has space");
    let long = "a".repeat(129);
    let h = map(&[("x-request-id", &long)]);
    assert_eq!(request_id(&h).len(), 16);
    assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
}

#[test]
fn folding_matches_backend_normalisation() {
    assert_eq!(folded_name("X_Forwarded.User"), "x-forwarded-user");
    let mut h = map(&[
        ("x_forwarded_user", "a"),
        ("x-forwarded-user", "b"),
        ("x-forwarded-users", "c"),
    ]);
    remove_folded(&mut h, &["x-forwarded-user"]);
    assert_eq!(h.len(), 1);
    assert!(h.get("x-forwarded-users").is_some());
}

#[test]
fn addresses_are_written_as_display_writes_them() {
    for ip in [
        "0.0.0.0",
        "255.255.255.255",
        "10.0.100.9",
        "127.0.0.1",
        "192.168.10.99",
        "::1",
        "2001:db8::8a2e:370:7334",
        "::ffff:10.1.2.3",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(ip_text(ip, &mut buf), ip.to_string());
    }
}

#[test]
fn a_detached_head_is_the_same_head_in_memory_of_its_own() {
    // As hyper parses it: every value a slice of the connection's read buffer.
    let wire =
        bytes::Bytes::from_static(b"/chat/stream?q=%C3%A9&x=1app.examplea=1onetwo*/*Bearer t");
    let slice =
        |from: usize, to: usize| HeaderValue::from_maybe_shared(wire.slice(from..to)).unwrap();
    let mut secret = slice(48, 56);
    secret.set_sensitive(true);
    let mut req = http::Request::get("/chat/stream?q=%C3%A9&x=1")
        .body(())
        .unwrap();
    let h = req.headers_mut();
    h.append("host", slice(25, 36));
    h.append("cookie", slice(36, 39));
    h.append("x-multi", slice(39, 42));
    h.append("accept", slice(45, 48));
    h.append("x-multi", slice(42, 45));
    h.append("x-empty", slice(48, 48));
    h.insert(header::AUTHORIZATION, secret);
    let before = req.headers().clone();
    let in_wire = |v: &HeaderValue| {
        let (start, p) = (wire.as_ptr() as usize, v.as_bytes().as_ptr() as usize);
        !v.is_empty() && (start..start + wire.len()).contains(&p)
    };
    assert!(
        before.values().any(in_wire),
        "the test's values share the buffer"
    );

    detach_head(&mut req);
    assert_eq!(req.uri(), "/chat/stream?q=%C3%A9&x=1");
    let h = req.headers();
    assert_eq!(*h, before);
    assert!(
        !h.values().any(in_wire),
        "a value still points into the read buffer"
    );
    let multi: Vec<_> = h.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["one", "two"]);
    assert!(h[header::AUTHORIZATION].is_sensitive());
    assert!(!h["cookie"].is_sensitive());

    // An absolute-form target keeps its scheme and authority; an empty map stays empty.
    let mut req = http::Request::get("http://upstream:8080/a?b")
        .body(())
        .unwrap();
    detach_head(&mut req);
    assert_eq!(req.uri(), "http://upstream:8080/a?b");
    assert!(req.headers().is_empty());
}

#[test]
fn the_client_address_is_read_from_the_right_and_only_from_trusted_hops() {
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let ingress = Peer {
        ip: "10.0.0.1".parse().unwrap(),
        trusted: true,
        scheme: crate::tls::Scheme::Http,
    };
    let ip =
        |pairs: &[(&str, &str)], peer: Peer| client_ip(&map(pairs), peer, &trusted).to_string();
    let xff = |v: &'static str| [("x-forwarded-for", v)];
    // The client's own inventions, left of the address the ingress wrote, are never read:
    // garbage there must not throw the whole chain away (everyone in the ingress's bucket).
    assert_eq!(ip(&xff("x, 198.51.100.9"), ingress), "198.51.100.9");
    assert_eq!(ip(&xff("1.2.3.4, 198.51.100.9"), ingress), "198.51.100.9");
    assert_eq!(ip(&xff("198.51.100.9, 10.1.1.1"), ingress), "198.51.100.9");
    // Several headers are one list, in order.
    let two = [
        ("x-forwarded-for", "x"),
        ("x-forwarded-for", "198.51.100.9, 10.2.2.2"),
    ];
    assert_eq!(ip(&two, ingress), "198.51.100.9");
    // Ports, as some load balancers write them; IPv4-mapped IPv6 as IPv4.
    assert_eq!(ip(&xff("198.51.100.9:4711"), ingress), "198.51.100.9");
    assert_eq!(ip(&xff("[2001:db8::1]:4711"), ingress), "2001:db8::1");
    assert_eq!(ip(&xff("::ffff:198.51.100.9"), ingress), "198.51.100.9");
    // What a trusted hop wrote but cannot be read ends the walk at that hop.
    assert_eq!(
        ip(&xff("198.51.100.9, garbage, 10.1.1.1"), ingress),
        "10.1.1.1"
    );
    assert_eq!(ip(&xff("garbage"), ingress), "10.0.0.1");
    // Only trusted hops: the farthest of them.
    assert_eq!(ip(&xff("10.3.3.3, 10.1.1.1"), ingress), "10.3.3.3");
    assert_eq!(ip(&[], ingress), "10.0.0.1");
    // An untrusted peer's header is not read at all.
    assert_eq!(ip(&xff("198.51.100.9"), peer(false)), "203.0.113.7");
}

#[test]
fn cookie_fields_are_joined_into_one() {
    let mut h = HeaderMap::new();
    join_cookies(&mut h);
    assert!(h.get(header::COOKIE).is_none());
    h.insert(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
    join_cookies(&mut h);
    assert_eq!(h[header::COOKIE], "a=1; b=2");
    h.append(header::COOKIE, HeaderValue::from_static("c=3"));
    h.append(
        header::COOKIE,
        HeaderValue::from_bytes("d=é".as_bytes()).unwrap(),
    );
    join_cookies(&mut h);
    assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
    assert_eq!(
        h[header::COOKIE].as_bytes(),
        "a=1; b=2; c=3; d=é".as_bytes()
    );
}

/// The forwarded chain ends at the client `client_ip` finds, whatever trusted hops came after
/// it: the upstream, trusting only the sidecar, reads the right-most entry as the client.
#[test]
fn the_forwarded_chain_ends_at_the_client_the_sidecar_found() {
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let ingress = Peer {
        ip: ip("10.0.0.1"),
        trusted: true,
        scheme: crate::tls::Scheme::Http,
    };
    let forwarded = |lines: &[&str]| {
        let pairs: Vec<_> = lines.iter().map(|l| ("x-forwarded-for", *l)).collect();
        let mut h = map(&pairs);
        let client = client_ip(&h, ingress, &trusted);
        set_forwarded(&mut h, ingress, client, None);
        let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all.len(), 1, "{all:?}");
        all[0].to_str().unwrap().to_owned()
    };
    assert_eq!(
        forwarded(&["6.6.6.6, 198.51.100.7, 10.2.3.4"]),
        "6.6.6.6, 198.51.100.7"
    );
    assert_eq!(
        forwarded(&["6.6.6.6", "198.51.100.7:4711 ", "10.2.3.4, 10.9.9.9"]),
        "6.6.6.6, 198.51.100.7"
    );
    // Only trusted hops: the farthest is the client.
    assert_eq!(forwarded(&["10.3.3.3, 10.2.3.4"]), "10.3.3.3");
    // A trusted hop's entry that does not read: the walk stopped at the hop after it.
    assert_eq!(
        forwarded(&["198.51.100.7, junk, 10.2.3.4"]),
        "198.51.100.7, junk, 10.2.3.4"
    );
    assert_eq!(forwarded(&["198.51.100.7, junk"]), "10.0.0.1");
    assert_eq!(forwarded(&[]), "10.0.0.1");
}

#[test]
fn a_repeated_content_length_goes_on_as_one_line() {
    let mut h = map(&[("content-length", "5"), ("content-length", "5"), ("x", "y")]);
    one_content_length(&mut h);
    let all: Vec<_> = h.get_all("content-length").iter().collect();
    assert_eq!(all, ["5"]);
    assert_eq!(h["x"], "y");
    let mut h = map(&[("content-length", "7")]);
    one_content_length(&mut h);
    assert_eq!(h.get_all("content-length").iter().count(), 1);
}
