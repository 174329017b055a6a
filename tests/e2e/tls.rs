//! TLS on the public listener, and an `https://` upstream trusted through a private CA.
//! Certificates are made by the test with the `openssl` command line tool.

use crate::support::*;
use http_body_util::BodyExt;
use std::path::Path;
use std::process::Command;

/// Writes ca.pem, server.pem and server.key (SAN IP:127.0.0.1) into `dir`.
fn make_certs(dir: &Path) {
    require_tool("openssl", "openssl");
    let sh = format!(
        "set -e; cd {d}
         openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem 2>/dev/null
         openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
         printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf
         openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out server.pem 2>/dev/null",
        d = dir.display()
    );
    assert!(
        Command::new("sh")
            .arg("-c")
            .arg(sh)
            .status()
            .unwrap()
            .success(),
        "openssl failed"
    );
}

/// An HTTP/1.1 client over TLS trusting only the CA in `ca`.
fn https_client(
    ca: &Path,
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    TestBody,
> {
    let client_tls = sso_sidecar::tls::client_config(Some(ca)).unwrap();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_tls)
        .https_only()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, TestBody>(connector)
}

#[tokio::test]
async fn tls_listener_and_https_upstream_with_a_private_ca() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();

    let up = Upstream::start_with(&["--tls", &p("server.pem"), &p("server.key")]);
    let sc = Sidecar::start(&[
        (
            "SSO_SIDECAR_UPSTREAM",
            &format!("https://127.0.0.1:{}", up.port),
        ),
        ("SSO_SIDECAR_UPSTREAM_CA_FILE", &p("ca.pem")),
        ("SSO_SIDECAR_TLS__CERT_FILE", &p("server.pem")),
        ("SSO_SIDECAR_TLS__KEY_FILE", &p("server.key")),
    ])
    .await;

    let client = https_client(Path::new(&p("ca.pem")));
    let url = format!("https://127.0.0.1:{}/echo/tls", sc.addr.port());
    let resp = client
        .request(request("GET", &url, &[], body("")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let j: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(j["path"], "/echo/tls");
    assert_eq!(
        j["headers"]["x-forwarded-proto"][0], "https",
        "the listener's scheme is reported"
    );

    // Plain HTTP to the TLS port gets nothing useful.
    assert!(get(&format!("http://{}/echo", sc.addr), &[])
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true));

    // Without the private CA the upstream is not trusted: 502, never a silent downgrade.
    let untrusting = Sidecar::start(&[(
        "SSO_SIDECAR_UPSTREAM",
        &format!("https://127.0.0.1:{}", up.port),
    )])
    .await;
    let r = get(&untrusting.url("/echo"), &[]).await.unwrap();
    assert_eq!(r.status(), 502);
}

/// A client trusting only the CA in `ca`, to the sidecar's TLS port: whether it gets a 200.
async fn trusted_through(ca: &Path, port: u16) -> bool {
    let url = format!("https://127.0.0.1:{port}/echo/tls");
    let r = https_client(ca)
        .request(request("GET", &url, &[], body("")))
        .await;
    r.is_ok_and(|r| r.status() == 200)
}

/// A certificate renewed in place (cert-manager writes the Secret's new files under the same
/// paths) is served from the next connection on, found by `reload_watch_secs`; one that cannot
/// be used (a key for another certificate) is refused and the one served kept. Before, the
/// certificate read at start was served until a restart, expired or not.
#[tokio::test]
async fn a_certificate_renewed_in_place_is_served_without_a_restart() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_certs(first.path());
    make_certs(second.path());
    let served = tempfile::tempdir().unwrap();
    let at = |f: &str| served.path().join(f);
    // Written whole, by rename, as a Secret's volume is updated.
    let put = |from: &Path, to: &str| {
        std::fs::copy(from, at(&format!("{to}.new"))).unwrap();
        std::fs::rename(at(&format!("{to}.new")), at(to)).unwrap();
    };
    put(&first.path().join("server.pem"), "tls.crt");
    put(&first.path().join("server.key"), "tls.key");
    let up = Upstream::start();
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        (
            "SSO_SIDECAR_TLS__CERT_FILE",
            at("tls.crt").to_str().unwrap(),
        ),
        ("SSO_SIDECAR_TLS__KEY_FILE", at("tls.key").to_str().unwrap()),
        ("SSO_SIDECAR_RELOAD_WATCH_SECS", "1"),
    ])
    .await;
    let (ca1, ca2) = (first.path().join("ca.pem"), second.path().join("ca.pem"));
    let port = sc.addr.port();
    assert!(trusted_through(&ca1, port).await);
    assert!(!trusted_through(&ca2, port).await);

    // A key that is not the certificate's: refused, the first pair still served.
    put(&second.path().join("server.pem"), "tls.crt");
    let refused = || sc.output().contains("could not be read again");
    crate::redis_ha::until("the unusable pair refused", 10, refused).await;
    assert!(trusted_through(&ca1, port).await);

    put(&second.path().join("server.key"), "tls.key");
    let started = std::time::Instant::now();
    while !trusted_through(&ca2, port).await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{}",
            sc.output()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        !trusted_through(&ca1, port).await,
        "the old certificate is still served"
    );
}
