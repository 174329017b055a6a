//! Redis in production: the store conformance suite on a real 3-master Cluster and a real
//! Sentinel set-up, TLS with a private CA, an outage of a single server, and a Sentinel failover
//! under load — all spawned by the tests on free ports.

use crate::mock_idp::*;
use crate::oidc_support::*;
use crate::support::*;
use serde_json::json;
use sso_sidecar::store::redis::{RedisOptions, RedisStore, Topology};
use sso_sidecar::store::Store;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn store(topology: Topology<'_>, ca_pem: Option<Vec<u8>>) -> Store {
    Store::Redis(
        RedisStore::new(RedisOptions {
            topology,
            key_prefix: "conformance:",
            username: None,
            password: None,
            sentinel_username: None,
            sentinel_password: None,
            ca_pem,
            timeout: Duration::from_secs(2),
            connections: 1,
            client_cache: Some(64),
            logout_replicas: 0,
            logout_wait: Duration::from_secs(1),
        })
        .unwrap(),
    )
}

pub(crate) fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Returns once a replica of the master on `port` has acknowledged every write the master took
/// so far (or after 5 s): `WAIT` covers only the writes of its own connection, so it follows a
/// write of its own, which comes after all earlier ones in the replication stream. The answer
/// is the number of replicas that acknowledged.
pub(crate) async fn replicated(port: u16) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // One connection: redis-cli runs the lines it reads from a pipe in order.
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"SET test:replication-mark 1 EX 60\nWAIT 1 5000\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        out.lines().last().unwrap_or_default().trim().to_owned()
    })
    .await
    .unwrap()
}

pub(crate) async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// redis-server processes killed on drop.
pub(crate) struct Servers(pub(crate) Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn redis_server(dir: &Path, args: &[&str]) -> Child {
    require_tool("redis-server", "redis-server");
    std::fs::create_dir_all(dir).unwrap();
    Command::new("redis-server")
        .args(args)
        .args(["--bind", "127.0.0.1", "--save", ""])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Starts a sentinel listening on 127.0.0.1, `dir` its working directory, configured by
/// `conf` (its port, what it monitors…).
fn sentinel(dir: &Path, conf: &str) -> Child {
    require_tool("redis-server", "redis-server");
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("sentinel.conf");
    let all = format!("bind 127.0.0.1\ndir {}\n{conf}", dir.display());
    std::fs::write(&path, all).unwrap();
    Command::new("redis-server")
        .arg(&path)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn cluster(dir: &Path) -> (Servers, Vec<String>) {
    let (servers, ports) = cluster_of(dir, 0).await;
    (
        servers,
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect(),
    )
}

/// A Cluster of 3 masters with `replicas` replicas each, ready (every replica in sync): its
/// servers and their ports.
pub(crate) async fn cluster_of(dir: &Path, replicas: usize) -> (Servers, Vec<u16>) {
    let ports: Vec<u16> = (0..3 * (1 + replicas)).map(|_| free_port()).collect();
    let mut servers = Servers(Vec::new());
    for p in &ports {
        let d = dir.join(format!("cl-{p}"));
        let conf = d.join("nodes.conf");
        std::fs::create_dir_all(&d).unwrap();
        // The bus port is named, not left at port + 10000, which free_port may hand out.
        let bus = free_port().to_string();
        servers.0.push(redis_server(
            &d,
            &[
                "--cluster-port",
                &bus,
                "--port",
                &p.to_string(),
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
                "--cluster-config-file",
                conf.to_str().unwrap(),
            ],
        ));
    }
    for p in &ports {
        until("cluster node", 10, || cli(*p, &["ping"]) == "PONG").await;
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cluster create: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for p in &ports {
        until("cluster_state:ok", 20, || {
            cli(*p, &["cluster", "info"]).contains("cluster_state:ok")
        })
        .await;
        until("replica in sync", 20, || {
            let role = cli(*p, &["info", "replication"]);
            role.contains("role:master") || role.contains("master_link_status:up")
        })
        .await;
    }
    (servers, ports)
}

/// A master, one replica and three sentinels watching `mymaster`.
struct SentinelSet {
    servers: Servers,
    master: u16,
    replica: u16,
    sentinels: Vec<u16>,
}

async fn sentinel_set(dir: &Path) -> SentinelSet {
    let (master, replica) = (free_port(), free_port());
    let mut servers = Servers(Vec::new());
    servers.0.push(redis_server(
        &dir.join("master"),
        &["--port", &master.to_string(), "--appendonly", "no"],
    ));
    servers.0.push(redis_server(
        &dir.join("replica"),
        &[
            "--port",
            &replica.to_string(),
            "--appendonly",
            "no",
            "--replicaof",
            "127.0.0.1",
            &master.to_string(),
        ],
    ));
    until("master", 10, || cli(master, &["ping"]) == "PONG").await;
    until("replica in sync", 20, || {
        cli(replica, &["info", "replication"]).contains("master_link_status:up")
    })
    .await;
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        let port = free_port();
        servers.0.push(sentinel(
            &dir.join(format!("sentinel-{port}")),
            &format!(
                "port {port}\nsentinel monitor mymaster 127.0.0.1 {master} 2\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n"
            ),
        ));
        sentinels.push(port);
    }
    for s in &sentinels {
        until("sentinel quorum", 20, || {
            cli(*s, &["sentinel", "ckquorum", "mymaster"]).starts_with("OK")
        })
        .await;
    }
    SentinelSet {
        servers,
        master,
        replica,
        sentinels,
    }
}

impl SentinelSet {
    fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }
}

#[tokio::test]
async fn the_store_conformance_suite_passes_on_a_real_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (_servers, nodes) = cluster(dir.path()).await;
    sso_sidecar::store::conformance::run(&store(Topology::Cluster { nodes: &nodes }, None)).await;
}

#[tokio::test]
async fn the_store_conformance_suite_passes_through_sentinel() {
    let dir = tempfile::tempdir().unwrap();
    let set = sentinel_set(dir.path()).await;
    let urls = set.urls();
    let s = store(
        Topology::Sentinel {
            sentinels: &urls,
            master: "mymaster",
            tls: false,
        },
        None,
    );
    sso_sidecar::store::conformance::run(&s).await;
    // A master that pauses for under the store's timeout (2 s here; a fork for BGSAVE) fails
    // nothing: commands through the sentinels' master were cut at the crate's 0.5 s before.
    assert_eq!(cli(set.master, &["client", "pause", "900", "all"]), "OK");
    let started = std::time::Instant::now();
    s.put("paused", b"1", Duration::from_secs(10))
        .await
        .expect("a command waits out a pause shorter than the timeout");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "no pause seen"
    );
    assert!(
        cli(set.replica, &["dbsize"]).parse::<u64>().is_ok(),
        "the replica is there"
    );
    drop(set.servers);
}

/// Writes a private CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it
/// (`srv.pem`, `srv.key`) into `dir`; returns the arguments that make a redis-server (or a
/// sentinel) speak only TLS with them on `port`.
fn private_ca(dir: &Path) -> impl Fn(u16) -> Vec<String> {
    require_tool("openssl", "openssl");
    let d = dir.display().to_string();
    let sh = format!(
        "set -e; cd {d}
         openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=redis-test-ca -keyout ca.key -out ca.pem 2>/dev/null
         openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout srv.key -out srv.csr 2>/dev/null
         printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf
         openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out srv.pem 2>/dev/null"
    );
    assert!(Command::new("sh")
        .arg("-c")
        .arg(sh)
        .status()
        .unwrap()
        .success());
    move |port| {
        let p = |f: &str| format!("{d}/{f}");
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &p("srv.pem"),
            "--tls-key-file",
            &p("srv.key"),
            "--tls-ca-cert-file",
            &p("ca.pem"),
            "--tls-auth-clients",
            "no",
        ]
        .map(String::from)
        .to_vec()
    }
}

#[tokio::test]
async fn tls_to_redis_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let tls_args = private_ca(dir.path());
    let port = free_port();
    let p = |f: &str| format!("{d}/{f}");
    let mut args = tls_args(port);
    args.extend(["--appendonly", "no"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _server = Servers(vec![redis_server(&dir.path().join("data"), &args)]);
    until("TLS redis", 10, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let url = format!("rediss://127.0.0.1:{port}");
    let ca = std::fs::read(p("ca.pem")).unwrap();
    sso_sidecar::store::conformance::run(&store(Topology::Single { url: &url }, Some(ca))).await;

    // Without the private CA the server is not trusted: the store fails closed.
    let untrusting = store(Topology::Single { url: &url }, None);
    assert!(untrusting.ping().await.is_err());

    // And the sidecar itself, configured through its variables, reaches it.
    let idp = MockIdp::start().await;
    idp.set(|m| m.jwks = json!({"keys": [Key::new("k").jwk()]}));
    let up = Upstream::start();
    let ca_file = p("ca.pem");
    let sc = start_oidc_sidecar(
        free_port(),
        &idp.issuer(),
        &up.url(),
        &[
            ("SSO_SIDECAR_REDIS_URL", &url),
            ("SSO_SIDECAR_REDIS_CA_FILE", &ca_file),
        ],
    )
    .await;
    assert_eq!(
        get(&sc.sidecar.admin_url("/readyz"), &[])
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Sentinels that require a password: given in `redis_sentinel_password`, or inline in their
/// URLs; without it nothing is reached. The data servers' own credentials are apart.
#[tokio::test]
async fn sentinels_with_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let (master, sentinel_port) = (free_port(), free_port());
    let port = master.to_string();
    let mut servers = Servers(vec![redis_server(
        &dir.path().join("master"),
        &["--port", &port, "--appendonly", "no"],
    )]);
    servers.0.push(sentinel(
        &dir.path().join("sentinel"),
        &format!(
            "port {sentinel_port}\nrequirepass sentinel-secret\n\
             sentinel monitor mymaster 127.0.0.1 {master} 1\n"
        ),
    ));
    until("the sentinel sees its master", 20, || {
        cli(
            sentinel_port,
            &[
                "-a",
                "sentinel-secret",
                "--no-auth-warning",
                "sentinel",
                "ckquorum",
                "mymaster",
            ],
        )
        .starts_with("OK")
    })
    .await;
    let through = |url: String, password: Option<&str>| {
        let urls = [url];
        Store::Redis(
            RedisStore::new(RedisOptions {
                topology: Topology::Sentinel {
                    sentinels: &urls,
                    master: "mymaster",
                    tls: false,
                },
                key_prefix: "conformance:",
                username: None,
                password: None,
                sentinel_username: None,
                sentinel_password: password,
                ca_pem: None,
                timeout: Duration::from_secs(2),
                connections: 1,
                client_cache: Some(64),
                logout_replicas: 0,
                logout_wait: Duration::from_secs(1),
            })
            .unwrap(),
        )
    };
    let plain = format!("redis://127.0.0.1:{sentinel_port}");
    let inline = format!("redis://:sentinel-secret@127.0.0.1:{sentinel_port}");
    sso_sidecar::store::conformance::run(&through(plain.clone(), Some("sentinel-secret"))).await;
    assert!(
        through(inline, None).ping().await.is_ok(),
        "inline in the URL"
    );
    assert!(
        through(plain, None).ping().await.is_err(),
        "no password: no master"
    );
}

/// Sentinel over TLS with a private CA (`redis_ca_file`): the sentinels and the master they
/// name are trusted through it, both `rediss://`; without it, nothing is trusted.
#[tokio::test]
async fn sentinel_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let tls_args = private_ca(dir.path());
    let (master, sentinel_port) = (free_port(), free_port());
    let mut args = tls_args(master);
    args.extend(["--appendonly", "no", "--tls-replication", "yes"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut servers = Servers(vec![redis_server(&dir.path().join("master"), &args)]);
    let mut conf = String::new();
    for pair in tls_args(sentinel_port).chunks(2) {
        conf += &format!("{} {}\n", pair[0].trim_start_matches('-'), pair[1]);
    }
    conf += &format!("tls-replication yes\nsentinel monitor mymaster 127.0.0.1 {master} 1\n");
    servers
        .0
        .push(sentinel(&dir.path().join("sentinel"), &conf));
    let ca_file = dir.path().join("ca.pem");
    until("the TLS sentinel sees its master", 20, || {
        Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(&ca_file)
            .args(["-h", "127.0.0.1", "-p", &sentinel_port.to_string()])
            .args(["sentinel", "ckquorum", "mymaster"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("OK"))
    })
    .await;
    let urls = [format!("rediss://127.0.0.1:{sentinel_port}")];
    let through = |ca: Option<Vec<u8>>| {
        store(
            Topology::Sentinel {
                sentinels: &urls,
                master: "mymaster",
                tls: true,
            },
            ca,
        )
    };
    let ca = std::fs::read(&ca_file).unwrap();
    sso_sidecar::store::conformance::run(&through(Some(ca))).await;
    assert!(
        through(None).ping().await.is_err(),
        "the system roots do not trust a private CA"
    );
}

/// A mock IdP signing with `key`, an upstream, and an OIDC sidecar whose sessions are in
/// Redis through `set`'s sentinels, with `extra` set.
async fn through_sentinel(
    set: &SentinelSet,
    extra: (&str, &str),
) -> (MockIdp, Key, Upstream, OidcSidecar) {
    let idp = MockIdp::start().await;
    let key = Key::new("k1");
    idp.set(|m| m.jwks = json!({"keys": [key.jwk()]}));
    let up = Upstream::start();
    let nodes = set.urls().join(",");
    let sc = start_oidc_sidecar(
        free_port(),
        &idp.issuer(),
        &up.url(),
        &[
            ("SSO_SIDECAR_REDIS_MODE", "sentinel"),
            ("SSO_SIDECAR_REDIS_NODES", &nodes),
            ("SSO_SIDECAR_REDIS_SENTINEL_MASTER", "mymaster"),
            extra,
        ],
    )
    .await;
    (idp, key, up, sc)
}

pub(crate) async fn mock_login(idp: &MockIdp, key: &Key, sc: &Sidecar, sub: &str) -> String {
    session_header(&idp.login(key, sc, sub, "sid-1").await)
}

pub(crate) async fn status(sc: &Sidecar, path: &str, headers: &[(&str, &str)]) -> u16 {
    get(&sc.url(path), headers)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_redis_outage_fails_closed_and_recovers_with_the_old_session() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args = [
        "--port",
        &port.to_string(),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ];
    let mut server = Servers(vec![redis_server(dir.path(), &args)]);
    until("redis", 10, || cli(port, &["ping"]) == "PONG").await;
    let idp = MockIdp::start().await;
    let key = Key::new("k1");
    idp.set(|m| m.jwks = json!({"keys": [key.jwk()]}));
    let up = Upstream::start();
    let url = format!("redis://127.0.0.1:{port}");
    let sc = start_oidc_sidecar(
        free_port(),
        &idp.issuer(),
        &up.url(),
        &[
            ("SSO_SIDECAR_REDIS_URL", &url),
            ("SSO_SIDECAR_PATHS__BEARER_PASSTHROUGH", "true"),
        ],
    )
    .await;
    let sc = &sc.sidecar;
    let cookie = mock_login(&idp, &key, sc, "alice").await;
    assert_eq!(status(sc, "/v1/x", &[("cookie", &cookie)]).await, 200);

    let mut redis = server.0.pop().unwrap();
    redis.kill().unwrap(); // SIGKILL: Redis is gone
    redis.wait().unwrap();
    let r = get(&sc.url("/v1/x"), &[("cookie", &cookie)]).await.unwrap();
    assert_eq!(r.status(), 503, "session paths fail closed");
    assert_eq!(
        json(&r)["detail"],
        "Session store unavailable, please retry shortly"
    );
    assert_eq!(
        status(sc, "/", &[("cookie", &cookie), ("accept", "text/html")]).await,
        503,
        "never let through, never a login loop"
    );
    assert_eq!(
        status(sc, "/v1/x", &[("authorization", "Bearer t")]).await,
        200,
        "bearer pass-through keeps working"
    );
    assert_eq!(
        status(sc, "/health_check", &[]).await,
        200,
        "public paths keep working"
    );
    readiness_turns(sc, 503).await;
    assert!(sc.child.try_wait_none(), "the process is still running");

    let _server = Servers(vec![redis_server(dir.path(), &args)]);
    let back = Instant::now();
    let mut ok = false;
    while back.elapsed() < Duration::from_secs(15) {
        if status(sc, "/v1/x", &[("cookie", &cookie)]).await == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the old session works again once Redis is back");
    eprintln!(
        "session usable again {:?} after Redis restarted",
        back.elapsed()
    );
    readiness_turns(sc, 200).await;
}

#[tokio::test]
async fn a_sentinel_failover_fails_closed_only_for_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = sentinel_set(dir.path()).await;
    let (idp, key, _up, sc) = through_sentinel(&set, ("SSO_SIDECAR_REDIS_TIMEOUT_MS", "500")).await;
    let sc = &sc.sidecar;
    let cookie = mock_login(&idp, &key, sc, "alice").await;
    assert_eq!(status(sc, "/v1/x", &[("cookie", &cookie)]).await, 200);
    // Let the replica receive the session before the master dies.
    assert_eq!(
        replicated(set.master).await,
        "1",
        "the replica has the session"
    );

    let old_master = set.master;
    set.servers.0.remove(0).kill().unwrap(); // the master dies
    let start = Instant::now();
    let (mut failures, mut recovered_at) = (0, None);
    while start.elapsed() < Duration::from_secs(30) {
        match status(sc, "/v1/x", &[("cookie", &cookie)]).await {
            200 if failures > 0 => {
                recovered_at = Some(start.elapsed());
                break;
            }
            200 => {}
            503 => failures += 1,
            other => panic!(
                "during failover a session request got {other}: only 200 or 503 are acceptable"
            ),
        }
        assert_eq!(
            status(sc, "/v1/anon", &[]).await,
            401,
            "never let anyone through"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered = recovered_at.expect("requests succeed again after the failover");
    assert!(failures > 0, "the failover window was observed");
    let new_master = cli(
        set.sentinels[0],
        &["sentinel", "get-master-addr-by-name", "mymaster"],
    );
    assert!(
        !new_master.contains(&old_master.to_string()),
        "the sentinels promoted the replica: {new_master}"
    );
    eprintln!("failover: {failures} requests refused with 503, same cookie works again after {recovered:?}");
    assert!(sc.child.try_wait_none(), "the process never exits");
}

#[tokio::test]
async fn acl_credentials_are_read_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("acl.conf");
    std::fs::write(
        &conf,
        "user default off\nuser sidecar on >acl-password-0123 ~* &* +@all\n",
    )
    .unwrap();
    // The configuration file comes first: redis-server reads it before the other options.
    let args = [
        conf.to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--appendonly",
        "no",
    ];
    let _server = Servers(vec![redis_server(&dir.path().join("data"), &args)]);
    until("redis with ACL", 10, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let secret = dir.path().join("redis-password");
    std::fs::write(&secret, "acl-password-0123\n").unwrap();
    let idp = MockIdp::start().await;
    let key = Key::new("k1");
    idp.set(|m| m.jwks = json!({"keys": [key.jwk()]}));
    let up = Upstream::start();
    let url = format!("redis://127.0.0.1:{port}");
    let sc = start_oidc_sidecar(
        free_port(),
        &idp.issuer(),
        &up.url(),
        &[
            ("SSO_SIDECAR_REDIS_URL", &url),
            ("SSO_SIDECAR_REDIS_USERNAME", "sidecar"),
            ("SSO_SIDECAR_REDIS_PASSWORD_FILE", secret.to_str().unwrap()),
        ],
    )
    .await;
    let cookie = mock_login(&idp, &key, &sc.sidecar, "alice").await;
    assert_eq!(
        status(&sc.sidecar, "/v1/x", &[("cookie", &cookie)]).await,
        200
    );
    // The request's access line, so the log is read up to it.
    sc.sidecar.logged(r#""path":"/v1/x""#).await;
    assert!(
        !sc.sidecar.output().contains("acl-password-0123"),
        "the password never reaches the logs"
    );

    // Wrong credentials: the store is unreachable, sessions fail closed, /readyz says so.
    std::fs::write(&secret, "wrong").unwrap();
    let bad = Sidecar::start_without_readiness(&[
        ("AUTH_MODE", "oidc"),
        ("SSO_SIDECAR_IDENTITY", "headers"),
        ("OIDC_ENDPOINT", &idp.issuer()),
        ("OIDC_CLIENT_ID", CLIENT_ID),
        ("OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ("OIDC_REDIRECT_URI", "http://127.0.0.1:1/auth/callback"),
        (
            "OIDC_TOKEN_ENCRYPTION_KEY",
            &sso_sidecar::crypto::generate_key(),
        ),
        ("SSO_SIDECAR_REDIS_URL", &url),
        ("SSO_SIDECAR_REDIS_USERNAME", "sidecar"),
        ("SSO_SIDECAR_REDIS_PASSWORD_FILE", secret.to_str().unwrap()),
    ])
    .await;
    let r = get(&bad.admin_url("/readyz"), &[]).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(String::from_utf8_lossy(r.body()).contains("session store unreachable"));
    // And the log says so once, at start, without anyone asking /readyz (outside Kubernetes
    // nothing does).
    let started = Instant::now();
    while !bad.output().contains("Redis does not answer") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no warning at start: {}",
            bad.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(bad.output().contains("SSO_SIDECAR_REDIS_URL"));
}

/// A Redis that takes connections but never answers (a blackholed node): connections are made
/// one at a time, yet no request queued behind them waits longer than about two attempts (here
/// 2 × 300 ms) for its 503, however many are queued.
#[tokio::test]
async fn requests_queued_behind_a_silent_redis_fail_in_bounded_time() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap(); // never accepts
    let url = format!("redis://{}", silent.local_addr().unwrap());
    let idp = MockIdp::start().await;
    idp.set(|m| m.jwks = json!({"keys": [Key::new("k1").jwk()]}));
    let up = Upstream::start();
    let key = sso_sidecar::crypto::generate_key();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let redirect = format!("http://127.0.0.1:{port}/auth/callback");
    let sc = Sidecar::start_without_readiness(&[
        ("AUTH_MODE", "oidc"),
        ("SSO_SIDECAR_IDENTITY", "headers"),
        ("SSO_SIDECAR_LISTEN", &listen),
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("OIDC_ENDPOINT", &idp.issuer()),
        ("OIDC_CLIENT_ID", CLIENT_ID),
        ("OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ("OIDC_REDIRECT_URI", &redirect),
        ("OIDC_TOKEN_ENCRYPTION_KEY", &key),
        ("SSO_SIDECAR_REDIS_URL", &url),
        ("SSO_SIDECAR_REDIS_TIMEOUT_MS", "300"),
        ("SSO_SIDECAR_WORKERS", "1"),
    ])
    .await;
    let cookie = format!("sso_sidecar_session={}", "a".repeat(43));
    let started = Instant::now();
    let queued: Vec<_> = (0..8)
        .map(|_| {
            let (url, cookie) = (sc.url("/v1/x"), cookie.clone());
            tokio::spawn(async move {
                let r = get(&url, &[("cookie", &cookie)]).await.unwrap();
                (r.status().as_u16(), started.elapsed())
            })
        })
        .collect();
    for q in queued {
        let (status, after) = q.await.unwrap();
        assert_eq!(status, 503, "fails closed");
        assert!(
            after < Duration::from_millis(2500),
            "answered after {after:?}"
        );
    }
}

/// Sends `sig` (`STOP`, `CONT`) to a redis-server.
pub(crate) fn signal(server: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &server.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} redis-server");
}

/// The user's own logout (the confirmation page's button).
pub(crate) async fn logout(sc: &Sidecar, cookie: &str) -> u16 {
    let r = send(request(
        "POST",
        &sc.url("/auth/logout"),
        &[("cookie", cookie), ("sec-fetch-site", "same-origin")],
        body(""),
    ))
    .await
    .unwrap();
    r.status().as_u16()
}

/// A logout through Sentinel is answered once the replica has it (`WAIT`, on by default with
/// Sentinel): a failover right after the answer cannot bring the session back. A replica that
/// stays away longer than `redis_logout_wait_ms` delays the logout that long, no more, and the
/// logout is counted as unreplicated.
#[tokio::test]
async fn a_logout_through_sentinel_is_answered_once_the_replica_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let set = sentinel_set(dir.path()).await;
    let (idp, key, _up, sc) =
        through_sentinel(&set, ("SSO_SIDECAR_REDIS_LOGOUT_WAIT_MS", "3000")).await;
    let sc = &sc.sidecar;
    let replica = &set.servers.0[1];
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
    assert_eq!(replicated(set.master).await, "1");
    assert_eq!(
        cli(set.replica, &["exists", &stored]),
        "1",
        "the replica has the session"
    );

    signal(replica, "STOP");
    let mut out = Box::pin(logout(sc, &cookie));
    assert!(
        tokio::time::timeout(Duration::from_millis(600), &mut out)
            .await
            .is_err(),
        "the logout waits while the replica cannot acknowledge it"
    );
    signal(replica, "CONT");
    let code = tokio::time::timeout(Duration::from_secs(5), out)
        .await
        .expect("answered once the replica is back");
    assert_eq!(code, 302);
    assert_eq!(
        cli(set.replica, &["exists", &stored]),
        "0",
        "by the time the logout is answered the replica has the deletion"
    );
    assert_eq!(unreplicated().await, 0.0);

    // The replica away for longer than the wait: answered after it, and counted.
    let id = idp.login(&key, sc, "alice", "sid-2").await;
    let cookie = session_header(&id);
    assert_eq!(replicated(set.master).await, "1");
    signal(replica, "STOP");
    let started = Instant::now();
    let code = logout(sc, &cookie).await;
    let took = started.elapsed();
    signal(replica, "CONT");
    assert_eq!(code, 302);
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(8),
        "waited the configured 3 s, no more: {took:?}"
    );
    assert_eq!(unreplicated().await, 1.0);
    assert_eq!(status(sc, "/v1/x", &[("cookie", &cookie)]).await, 401);
}

/// A refresh that rotates the refresh token is answered once the replica has the new one: a
/// failover right after would otherwise bring back the spent token, and the session's next
/// refresh would be refused (the user logged out).
#[tokio::test]
async fn a_rotating_refresh_through_sentinel_is_answered_once_the_replica_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let set = sentinel_set(dir.path()).await;
    let (idp, key, _up, sc) =
        through_sentinel(&set, ("SSO_SIDECAR_REDIS_LOGOUT_WAIT_MS", "3000")).await;
    let sc = &sc.sidecar;
    idp.set(|s| s.login_expires_in = 2);
    let id = idp.login(&key, sc, "alice", "sid-1").await;
    let expires = sso_sidecar::auth::oidc::now_unix() + 2;
    let cookie = session_header(&id);
    let stored = format!(
        "sso-sidecar:{}",
        sso_sidecar::session::Sessions::key_of(&id)
    );
    idp.set(|s| {
        s.token_response = json!({"access_token": "at-2", "token_type": "Bearer",
            "expires_in": 600, "refresh_token": "rt-2"});
    });
    wait_until("the access token expired", Duration::from_secs(5), || {
        sso_sidecar::auth::oidc::now_unix() > expires
    })
    .await;
    assert_eq!(replicated(set.master).await, "1");
    let replica = &set.servers.0[1];
    signal(replica, "STOP");
    let headers = [("cookie", cookie.as_str())];
    let mut out = Box::pin(status(sc, "/v1/x", &headers));
    assert!(
        tokio::time::timeout(Duration::from_millis(600), &mut out)
            .await
            .is_err(),
        "the refreshed request waits while the replica cannot acknowledge it"
    );
    signal(replica, "CONT");
    let code = tokio::time::timeout(Duration::from_secs(5), out)
        .await
        .expect("answered once the replica is back");
    assert_eq!(code, 200);
    assert_eq!(
        idp.state.lock().unwrap().token_requests.len(),
        2,
        "one refresh"
    );
    assert_eq!(
        cli(set.replica, &["get", &stored]),
        cli(set.master, &["get", &stored]),
        "the replica has the refreshed session"
    );
}

/// Logouts at once share their waits for the replica: a burst costs a couple of `WAIT`s, not
/// one each (a logout waits for the first round begun after it asked).
#[tokio::test]
async fn logouts_at_once_share_their_wait_for_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let set = sentinel_set(dir.path()).await;
    let urls = set.urls();
    let s = std::sync::Arc::new(Store::Redis(
        RedisStore::new(RedisOptions {
            topology: Topology::Sentinel {
                sentinels: &urls,
                master: "mymaster",
                tls: false,
            },
            key_prefix: "settle-test:",
            username: None,
            password: None,
            sentinel_username: None,
            sentinel_password: None,
            ca_pem: None,
            timeout: Duration::from_secs(2),
            connections: 1,
            client_cache: None,
            logout_replicas: 1,
            logout_wait: Duration::from_secs(10),
        })
        .unwrap(),
    ));
    use sso_sidecar::store::redis::settle::Settled;
    assert_eq!(s.after_revocation().await, Settled::Replicated);
    // Its connection killed (as a failover's `CLIENT KILL` does, or Redis's idle `timeout`),
    // the next round makes it again instead of answering short.
    let killed = cli(set.master, &["client", "kill", "type", "normal"]);
    assert!(killed.parse::<u32>().is_ok_and(|n| n >= 1), "{killed}");
    assert_eq!(s.after_revocation().await, Settled::Replicated);
    assert_eq!(s.short_settles(), Some(0));
    let calls = |cmd: &str| {
        let stats = cli(set.master, &["info", "commandstats"]);
        stats
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (waits, dels) = (calls("wait"), calls("del"));
    signal(&set.servers.0[1], "STOP");
    let mut all = tokio::task::JoinSet::new();
    for i in 0..20 {
        let s = s.clone();
        all.spawn(async move {
            s.delete(&format!("k{i}")).await.unwrap();
            s.after_revocation().await
        });
    }
    let blocked = || {
        cli(set.master, &["info", "clients"])
            .lines()
            .any(|l| l.trim() == "blocked_clients:1")
    };
    // Every logout has written, and a round waits for the replica, before it comes back.
    until("20 deletions and a WAIT blocked", 10, || {
        calls("del") == dels + 20 && blocked()
    })
    .await;
    signal(&set.servers.0[1], "CONT");
    while let Some(r) = all.join_next().await {
        assert_eq!(r.unwrap(), Settled::Replicated);
    }
    // The round under way, and one for everyone who asked during it (a third only if a
    // logout's deletion was answered but it had not asked yet when the second began).
    let rounds = calls("wait") - waits;
    assert!(rounds <= 3, "20 logouts took {rounds} WAIT rounds");

    // A logout whose deletion is answered while a round is under way is not answered by that
    // round (it may have been sent before the deletion): it waits for the next one.
    let waits = calls("wait");
    signal(&set.servers.0[1], "STOP");
    let first = {
        let s = s.clone();
        tokio::spawn(async move {
            s.delete("early").await.unwrap();
            s.after_revocation().await
        })
    };
    until("the first round blocked", 10, blocked).await;
    let second = {
        let s = s.clone();
        tokio::spawn(async move {
            s.delete("late").await.unwrap();
            s.after_revocation().await
        })
    };
    until("the second deletion", 10, || calls("del") == dels + 22).await;
    signal(&set.servers.0[1], "CONT");
    assert_eq!(first.await.unwrap(), Settled::Replicated);
    assert_eq!(second.await.unwrap(), Settled::Replicated);
    assert_eq!(
        calls("wait") - waits,
        2,
        "the later logout had a round of its own"
    );
}

/// A master that refuses writes (full, `noeviction`) has answered them: its connection is
/// kept. Before, every refused write dropped it, and the next request made a sentinel query
/// and a new connection (every request queued behind that while Redis stayed full).
#[tokio::test]
async fn a_full_master_behind_sentinel_keeps_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let set = sentinel_set(dir.path()).await;
    let (idp, key, _up, sc) = through_sentinel(&set, ("RUST_LOG", "info")).await;
    let sc = &sc.sidecar;
    let cookie = mock_login(&idp, &key, sc, "alice").await;
    assert_eq!(status(sc, "/v1/x", &[("cookie", &cookie)]).await, 200);
    let received = || {
        let stats = cli(set.master, &["info", "stats"]);
        let line = stats
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"));
        line.and_then(|n| n.trim().parse::<u64>().ok()).unwrap()
    };
    cli(
        set.master,
        &["config", "set", "maxmemory-policy", "noeviction"],
    );
    cli(set.master, &["config", "set", "maxmemory", "1"]);
    let before = received();
    for i in 0..5 {
        let sid = format!("sid-{i}");
        let r = idp
            .login_until_callback(&key, sc, "bob", &sid, "")
            .await
            .await;
        assert_eq!(r.status(), 503, "{}", String::from_utf8_lossy(r.body()));
    }
    // One more for this count's own connection; none for the sidecar.
    let made = received() - before;
    assert!(made <= 2, "{made} connections for 5 refused writes");
    cli(set.master, &["config", "set", "maxmemory", "0"]);
    assert_eq!(status(sc, "/v1/x", &[("cookie", &cookie)]).await, 200);
    mock_login(&idp, &key, sc, "bob").await;
}
