//! A failover behind one address (a Kubernetes Service, a VIP, a managed primary endpoint):
//! the old master is demoted to a replica but keeps its clients, so a connection made before
//! the failover now answers every write with `READONLY`. The sidecar must connect again rather
//! than fail its logouts for good (its connection manager reconnects only on a broken
//! connection).

use crate::mock_idp::*;
use crate::oidc_support::*;
use crate::redis_ha::{cli, logout, mock_login, redis_server, status, until, Servers};
use crate::support::*;
use serde_json::json;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A TCP forwarder on a free port whose target can be switched: connections made before a
/// switch stay with the server they reached, as with a Service or a VIP.
struct Forwarder {
    port: u16,
    target: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU16::new(target));
        let to = target.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let port = to.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Forwarder { port, target, task }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn link_up(port: u16) -> bool {
    cli(port, &["info", "replication"]).contains("master_link_status:up")
}

#[tokio::test]
async fn a_failover_behind_one_address_is_followed_by_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (free_port(), free_port());
    let (a_s, b_s) = (a.to_string(), b.to_string());
    let _servers = Servers(vec![
        redis_server(&dir.path().join("a"), &["--port", &a_s]),
        redis_server(
            &dir.path().join("b"),
            &["--port", &b_s, "--replicaof", "127.0.0.1", &a_s],
        ),
    ]);
    until("the replica's link", 15, || link_up(b)).await;
    let address = Forwarder::start(a).await;

    let idp = MockIdp::start().await;
    let key = Key::new("k1");
    idp.set(|m| m.jwks = json!({"keys": [key.jwk()]}));
    let up = Upstream::start();
    let url = format!("redis://127.0.0.1:{}", address.port);
    let sc = start_oidc_sidecar(
        free_port(),
        &idp.issuer(),
        &up.url(),
        &[("SSO_SIDECAR_REDIS_URL", &url)],
    )
    .await;
    let sc = &sc.sidecar;
    let alice = mock_login(&idp, &key, sc, "alice").await;
    let bob = mock_login(&idp, &key, sc, "bob").await;
    assert_eq!(status(sc, "/v1/x", &[("cookie", &alice)]).await, 200);
    assert_eq!(status(sc, "/v1/x", &[("cookie", &bob)]).await, 200);

    // The failover: B promoted, A demoted under it (its clients stay connected), the address
    // now leads to B.
    assert_eq!(cli(b, &["replicaof", "no", "one"]), "OK");
    assert_eq!(cli(a, &["replicaof", "127.0.0.1", &b_s]), "OK");
    address.target.store(b, Ordering::SeqCst);
    until("the demoted master's link", 15, || link_up(a)).await;

    // A logout is a write: at most the one that finds the demoted server fails (503); the
    // sidecar connects again and the next one ends the session.
    let start = Instant::now();
    let mut codes = Vec::new();
    loop {
        let code = logout(sc, &alice).await;
        codes.push(code);
        if code == 302 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "logouts still fail after the failover: {codes:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        codes.iter().filter(|&&c| c != 302).count() <= 2,
        "one failed write per worker at most: {codes:?}"
    );
    for _ in 0..6 {
        assert_eq!(
            status(sc, "/v1/x", &[("cookie", &alice)]).await,
            401,
            "the session ended"
        );
    }
    assert_eq!(
        status(sc, "/v1/x", &[("cookie", &bob)]).await,
        200,
        "the other session is on the new master"
    );
}
