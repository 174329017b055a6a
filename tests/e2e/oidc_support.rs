//! Harness for the OIDC tests: the real IdP (oidc-provider, node), a real `redis-server`, an
//! OIDC-mode sidecar, and a login driven without a browser (tests/idp/flow.py).

use crate::support::*;
use bytes::Bytes;
use http::Response;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CLIENT_ID: &str = "rp";
pub const CLIENT_SECRET: &str = "rp-secret-0123456789-0123456789-0123";

/// A port that was free a moment ago, for servers whose address must be known before they
/// start (an IdP's issuer names its port; a sidecar's redirect URI names its own).
///
/// Taken below the kernel's ephemeral range (which is where every `bind(0)` and outgoing
/// connection gets its port), and never twice in this process: between this check and the
/// server's own bind, nothing else can be handed the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let (low, _) = ephemeral_range();
    // Start somewhere in [10000, low) so two test runs at once rarely meet.
    let span = low.saturating_sub(10_000).max(1);
    let _ = NEXT.compare_exchange(
        0,
        10_000 + (std::process::id() as u16 % span),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let p = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = if p >= low { 10_000 + p % span } else { p };
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// The kernel's ephemeral port range (Linux), or the IANA one.
pub fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((49152, 65535))
}

#[test]
fn free_ports_cannot_race_with_other_binds() {
    let (low, _) = ephemeral_range();
    let ports: Vec<u16> = (0..300).map(|_| free_port()).collect();
    let unique: std::collections::HashSet<_> = ports.iter().collect();
    assert_eq!(unique.len(), ports.len(), "a port handed out twice");
    assert!(
        ports.iter().all(|p| *p < low),
        "outside the ephemeral range, which port 0 draws from"
    );
    // What bind(0) hands out meanwhile is never one of them.
    for _ in 0..300 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!ports.contains(&l.local_addr().unwrap().port()));
    }
}

// === the IdP ================================================================================

pub struct Idp {
    child: Child,
    pub port: u16,
}

impl Idp {
    /// Starts tests/idp/server.mjs with `env`; `port` 0 lets it choose.
    pub fn start(port: u16, env: &[(&str, &str)]) -> Idp {
        require_tool("node", "nodejs");
        let dir = repo_root().join("tests/idp");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "the test IdP's packages are missing: run `npm ci --prefix tests/idp` (or .ci/run)"
        );
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("server.mjs"))
            .env("PORT", port.to_string())
            .envs(env.iter().copied())
            .stderr(Stdio::null());
        let (child, port) = spawn_ready(cmd, "the test IdP (node tests/idp/server.mjs)");
        Idp { child, port }
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn events(&self) -> serde_json::Value {
        json(
            &get(&format!("{}/__test/events", self.issuer()), &[])
                .await
                .unwrap(),
        )
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === Redis ==================================================================================

pub struct Redis {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub async fn start() -> Redis {
        require_tool("redis-server", "redis-server");
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Redis {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut c = child;
            let _ = c.kill();
        }
        panic!("redis-server did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` output for a command, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--no-raw"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// [`Redis::cli`] awaited instead of blocking the runtime's thread, so the test's other
    /// tasks (a store's health checks) keep running meanwhile.
    pub async fn cli_async(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--no-raw"])
            .args(args)
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Every key with its raw value (strings) or members (sets, sorted sets with their scores).
    pub fn dump(&self) -> String {
        let mut all = String::new();
        for key in self.cli(&["--raw", "KEYS", "*"]).lines() {
            let t = self.cli(&["TYPE", key]);
            let v = if t.contains("zset") {
                self.cli(&["--raw", "ZRANGE", key, "0", "-1", "WITHSCORES"])
            } else if t.contains("set") {
                self.cli(&["--raw", "SMEMBERS", key])
            } else {
                self.cli(&["--raw", "GET", key])
            };
            // One line per key, whatever the number of members.
            let v = v.lines().collect::<Vec<_>>().join(" ");
            all.push_str(&format!("{key} => {v}\n"));
        }
        all
    }
}

impl Redis {
    /// Sends `sig` (`STOP`, `CONT`…) to the server.
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} redis-server");
    }

    /// Kills the server now (its connections see EOF at once).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === an OIDC-mode sidecar ==================================================================

pub struct OidcSidecar {
    pub sidecar: Sidecar,
    pub key: String,
}

/// Starts a sidecar in `AUTH_MODE=oidc`, headers identity, on `port`, against `issuer`.
pub async fn start_oidc_sidecar(
    port: u16,
    issuer: &str,
    upstream: &str,
    extra: &[(&str, &str)],
) -> OidcSidecar {
    let key = sso_sidecar::crypto::generate_key();
    start_oidc_sidecar_with_key(&key, port, issuer, upstream, extra).await
}

/// The same with a given Fernet key (replicas of one deployment share it).
pub async fn start_oidc_sidecar_with_key(
    key: &str,
    port: u16,
    issuer: &str,
    upstream: &str,
    extra: &[(&str, &str)],
) -> OidcSidecar {
    let key = key.to_owned();
    let listen = format!("127.0.0.1:{port}");
    let redirect = format!("http://127.0.0.1:{port}/auth/callback");
    let mut env: Vec<(&str, &str)> = vec![
        ("AUTH_MODE", "oidc"),
        ("SSO_SIDECAR_IDENTITY", "headers"),
        ("SSO_SIDECAR_LISTEN", &listen),
        ("SSO_SIDECAR_UPSTREAM", upstream),
        ("OIDC_ENDPOINT", issuer),
        ("OIDC_CLIENT_ID", CLIENT_ID),
        ("OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ("OIDC_REDIRECT_URI", &redirect),
        ("OIDC_TOKEN_ENCRYPTION_KEY", &key),
        // oidc-provider grants offline_access (a refresh token) only with prompt=consent.
        ("SSO_SIDECAR_PROMPT", "consent"),
    ];
    env.extend_from_slice(extra);
    let sidecar = Sidecar::start(&env).await;
    OidcSidecar { sidecar, key }
}

/// The value of cookie `name` in a response's `Set-Cookie` headers.
pub fn set_cookie(resp: &Response<Bytes>, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("")[name.len() + 1..].to_owned())
}

pub fn location(resp: &Response<Bytes>) -> String {
    resp.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Runs tests/idp/flow.py: logs `login` in at the IdP from an authorization URL and returns
/// the callback URL the IdP redirects to.
pub async fn idp_login(auth_url: &str, login: &str) -> String {
    flow(&["login", auth_url, login]).await
}

/// Runs tests/idp/flow.py with `args`; returns its one-line output (a URL).
pub async fn flow(args: &[&str]) -> String {
    let out = tokio::process::Command::new("python3")
        .arg(repo_root().join("tests/idp/flow.py"))
        .args(args)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && text.starts_with("http"),
        "flow.py failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The outcome of a full login.
pub struct Login {
    pub cookie: String,
    pub callback: Response<Bytes>,
}

/// Logs `user` in through the sidecar and returns its session cookie value.
pub async fn login(sc: &Sidecar, user: &str, next: &str) -> Login {
    login_with_jar(sc, user, next, None).await
}

/// The same, keeping the IdP's cookies in `jar` (for a later logout at the IdP).
pub async fn login_with_jar(sc: &Sidecar, user: &str, next: &str, jar: Option<&str>) -> Login {
    let cb = callback_of(sc, user, next, jar).await;
    assert_eq!(
        cb.status(),
        302,
        "callback failed: {}",
        String::from_utf8_lossy(cb.body())
    );
    let cookie = set_cookie(&cb, "sso_sidecar_session").expect("session cookie");
    Login {
        cookie,
        callback: cb,
    }
}

/// Logs `user` in at the IdP and returns the sidecar's answer to the callback, whatever it is.
pub async fn callback_of(
    sc: &Sidecar,
    user: &str,
    next: &str,
    jar: Option<&str>,
) -> http::Response<Bytes> {
    let start = get(
        &sc.url(&format!("/auth/login?next={}", urlencode(next))),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(start.status(), 302, "{:?}", start.body());
    let state_cookie = set_cookie(&start, "sso_sidecar_session_state").expect("state cookie");
    let auth_url = location(&start);
    let mut args = vec!["login", auth_url.as_str(), user];
    if let Some(j) = jar {
        args.extend(["--jar", j]);
    }
    let callback_url = flow(&args).await;
    get(
        &callback_url,
        &[(
            "cookie",
            &format!("sso_sidecar_session_state={state_cookie}"),
        )],
    )
    .await
    .unwrap()
}

pub fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn session_header(cookie: &str) -> String {
    format!("sso_sidecar_session={cookie}")
}

/// The test IdP, an upstream and an OIDC sidecar with sessions in memory (no Redis).
pub async fn memory_world(extra: &[(&str, &str)]) -> (Idp, Upstream, OidcSidecar) {
    let port = free_port();
    let idp = Idp::start(
        0,
        &[(
            "RP_REDIRECT_URIS",
            &format!("http://127.0.0.1:{port}/auth/callback"),
        )],
    );
    let up = Upstream::start();
    let sc = start_oidc_sidecar(port, &idp.issuer(), &up.url(), extra).await;
    (idp, up, sc)
}
