//! Revocations through a Redis Cluster with replicas: with `redis_logout_replicas` set, a logout
//! is answered once the replica of every master has its writes, as through Sentinel.

use crate::mock_idp::*;
use crate::oidc_support::*;
use crate::redis_ha::{cli, cluster_of, logout, signal, status, until};
use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// What `EXISTS key` answers on the replica at `port` (replicas serve reads after `READONLY`,
/// on the same connection).
fn on_replica(port: u16, key: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = format!("READONLY\nEXISTS {key}\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    out.lines().last().unwrap_or_default().trim().to_owned()
}

/// The master port a replica follows, or `None` for a master.
fn master_of(port: u16) -> Option<u16> {
    let info = cli(port, &["info", "replication"]);
    info.lines()
        .find_map(|l| l.trim().strip_prefix("master_port:"))
        .and_then(|p| p.parse().ok())
}

/// A logout through a Cluster with `redis_logout_replicas = 1` waits on every master's replica:
/// held while the replica of the master holding the session is stopped, answered once it is
/// back, by which time that replica has the deletion. A replica away for longer than
/// `redis_logout_wait_ms` (here the replica of another master: the round asks them all) delays
/// the logout that long, no more, and the logout is counted as unreplicated. Before, a Cluster
/// refused the setting, and a failover right after a logout could bring the session back.
#[tokio::test]
async fn a_logout_through_a_cluster_is_answered_once_every_masters_replica_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let (servers, ports) = cluster_of(dir.path(), 1).await;
    let replica_of = |master: u16| {
        ports
            .iter()
            .position(|p| master_of(*p) == Some(master))
            .unwrap_or_else(|| panic!("no replica follows {master}"))
    };
    let masters: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|p| master_of(*p).is_none())
        .collect();
    assert_eq!(masters.len(), 3);
    let nodes = masters
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");

    let idp = MockIdp::start().await;
    let key = Key::new("k1");
    idp.set(|m| m.jwks = json!({"keys": [key.jwk()]}));
    let up = Upstream::start();
    let sc = start_oidc_sidecar(
        free_port(),
        &idp.issuer(),
        &up.url(),
        &[
            ("SSO_SIDECAR_REDIS_MODE", "cluster"),
            ("SSO_SIDECAR_REDIS_NODES", &nodes),
            ("SSO_SIDECAR_REDIS_LOGOUT_REPLICAS", "1"),
            ("SSO_SIDECAR_REDIS_LOGOUT_WAIT_MS", "3000"),
        ],
    )
    .await;
    let sc = &sc.sidecar;
    let unreplicated = || async {
        metric(
            &metrics(sc).await,
            "sso_sidecar_store_revocations_unreplicated_total",
        )
    };

    let id = idp.login(&key, sc, "alice", "sid-1").await;
    let cookie = session_header(&id);
    let stored = format!(
        "sso-sidecar:{}",
        sso_sidecar::session::Sessions::key_of(&id)
    );
    assert_eq!(status(sc, "/v1/x", &[("cookie", &cookie)]).await, 200);
    let holder = *masters
        .iter()
        .find(|m| cli(**m, &["exists", &stored]) == "1")
        .expect("a master holds the session");
    let replica = &servers.0[replica_of(holder)];
    let replica_port = ports[replica_of(holder)];
    until("the replica has the session", 10, || {
        on_replica(replica_port, &stored) == "1"
    })
    .await;

    signal(replica, "STOP");
    let mut out = Box::pin(logout(sc, &cookie));
    assert!(
        tokio::time::timeout(Duration::from_millis(600), &mut out)
            .await
            .is_err(),
        "the logout waits while the replica of the session's master cannot acknowledge it"
    );
    signal(replica, "CONT");
    let code = tokio::time::timeout(Duration::from_secs(5), out)
        .await
        .expect("answered once the replica is back");
    assert_eq!(code, 302);
    assert_eq!(
        on_replica(replica_port, &stored),
        "0",
        "by the time the logout is answered the replica has the deletion"
    );
    assert_eq!(unreplicated().await, 0.0);

    // Another master's replica away for longer than the wait: answered after it, and counted.
    let id = idp.login(&key, sc, "alice", "sid-2").await;
    let cookie = session_header(&id);
    let other = *masters.iter().find(|m| **m != holder).unwrap();
    let away = &servers.0[replica_of(other)];
    signal(away, "STOP");
    let started = Instant::now();
    let code = logout(sc, &cookie).await;
    let took = started.elapsed();
    signal(away, "CONT");
    assert_eq!(code, 302);
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(8),
        "waited the configured 3 s, no more: {took:?}"
    );
    assert_eq!(unreplicated().await, 1.0);
    assert_eq!(status(sc, "/v1/x", &[("cookie", &cookie)]).await, 401);
}
