//! Test harness: real processes on free ports. The sidecar binary and the Python upstream are
//! started with port 0 and report the ports they got; nothing is hard-coded. Every process is
//! killed when its handle drops.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub type TestBody = BoxBody<Bytes, Infallible>;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails with an install hint when a tool the tests need is missing (never skips silently).
pub fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(found, "`{tool}` is required by this test: install it with `apt-get install {package}` (or run .ci/run)");
}

/// Polls `check` every 20 ms until it is true or `deadline` passes.
pub async fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Spawns `cmd` (stdout piped), reads the one `READY <port>` line the test servers print, and
/// returns the child and its port. `what` names the server in the failure message.
pub fn spawn_ready(mut cmd: Command, what: &str) -> (Child, u16) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("{what} did not start: {line:?}"))
        .parse()
        .unwrap();
    (child, port)
}

// === the upstream ==========================================================================

pub struct Upstream {
    child: Child,
    pub port: u16,
}

impl Upstream {
    pub fn start() -> Upstream {
        Self::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Upstream {
        require_tool("python3", "python3");
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/support/upstream.py"))
            .args(args)
            .stderr(Stdio::inherit());
        let (child, port) = spawn_ready(cmd, "tests/support/upstream.py");
        Upstream { child, port }
    }

    /// Every request the upstream has routed: `[{method, path}]`.
    pub async fn requests(&self) -> Vec<serde_json::Value> {
        json(
            &get(&format!("{}/__requests", self.url()), &[])
                .await
                .unwrap(),
        )["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The paths of every request the upstream has routed, in order.
    pub async fn paths(&self) -> Vec<String> {
        let requests = self.requests().await;
        let path = |r: &serde_json::Value| r["path"].as_str().unwrap_or_default().to_owned();
        requests.iter().map(path).collect()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === the sidecar ===========================================================================

pub struct Sidecar {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Everything the process wrote (stdout and stderr), for log assertions.
    pub output: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

/// A command for the sidecar binary with an empty environment and a fresh working directory
/// (so no stray `.env` is read).
pub fn sidecar_command(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sso-sidecar"));
    cmd.env_clear()
        .current_dir(dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // OpenRag's rate limits are on by default; tests that send dozens of refused requests
        // from one address are about other things. `access_control.rs` turns them back on.
        .env("RATE_LIMIT_ENABLED", "false")
        .envs(env.iter().copied());
    cmd
}

impl Sidecar {
    /// Starts the sidecar on free ports with `env` on top of test defaults, and waits until
    /// `/readyz` answers 200.
    pub async fn start(env: &[(&str, &str)]) -> Sidecar {
        let sidecar = Self::start_without_readiness(env).await;
        let start = Instant::now();
        loop {
            if let Ok(r) = get(&sidecar.admin_url("/readyz"), &[]).await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sidecar never became ready:\n{}",
                sidecar.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sidecar
    }

    /// Starts the sidecar and returns once it listens, ready or not.
    pub async fn start_without_readiness(env: &[(&str, &str)]) -> Sidecar {
        Self::start_under(&[], env).await
    }

    /// Starts the sidecar through `prefix` (a wrapper such as `prlimit --nofile=1024`), once
    /// it listens.
    pub async fn start_under(prefix: &[&str], env: &[(&str, &str)]) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let mut all: Vec<(&str, &str)> = vec![
            ("SSO_SIDECAR_LISTEN", "127.0.0.1:0"),
            ("SSO_SIDECAR_ADMIN_LISTEN", "127.0.0.1:0"),
            ("RUST_LOG", "info"),
        ];
        all.extend_from_slice(env);
        let mut cmd = sidecar_command(dir.path(), &all);
        if let Some((wrapper, args)) = prefix.split_first() {
            let bin = cmd.get_program().to_owned();
            let mut wrapped = Command::new(wrapper);
            wrapped
                .args(args)
                .arg(bin)
                .env_clear()
                .current_dir(dir.path())
                .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
            cmd = wrapped;
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sso-sidecar");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<(SocketAddr, SocketAddr)>();
        let stdout = child.stdout.take().unwrap();
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("sso-sidecar started") {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        let a = v["listen"].as_str().unwrap_or_default().parse();
                        let b = v["admin"].as_str().unwrap_or_default().parse();
                        if let (Ok(a), Ok(b)) = (a, b) {
                            let _ = tx.send((a, b));
                        }
                    }
                }
                let mut o = out.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
        let stderr = child.stderr.take().unwrap();
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut o = out.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
        let (addr, admin) =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
                .await
                .unwrap()
                .unwrap_or_else(|_| {
                    panic!("sidecar did not start; output:\n{}", output.lock().unwrap())
                });
        Sidecar {
            child,
            addr,
            admin,
            output,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The working directory it runs in (where an implicit `.env` is looked for).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The output once it contains `needle` (polled every 20 ms, for up to 10 s): a log line
    /// reaches `output()` through a reader thread, maybe after the response that followed it
    /// has reached the test.
    pub async fn logged(&self, needle: &str) -> String {
        let deadline = Duration::from_secs(10);
        let start = Instant::now();
        loop {
            let out = self.output();
            if out.contains(needle) {
                return out;
            }
            assert!(
                start.elapsed() < deadline,
                "timed out after {deadline:?} waiting for {needle:?} in the log:\n{out}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Peak resident set size (VmHWM) of the process, in bytes.
    pub fn peak_rss(&self) -> u64 {
        proc_status_kb(self.child.id(), "VmHWM:") * 1024
    }
}

/// A child that must still be running.
pub trait StillRunning {
    fn try_wait_none(&self) -> bool;
}

impl StillRunning for Child {
    fn try_wait_none(&self) -> bool {
        // `try_wait` needs `&mut`; /proc tells without reaping.
        std::path::Path::new(&format!("/proc/{}/status", self.id())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/status", self.id()))
                .unwrap_or_default()
                .contains("State:\tZ")
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls the sidecar's `/readyz` until it answers `status` (probes share a finding for a
/// second, so a change shows within about that); panics after 10 s.
pub async fn readiness_turns(sc: &Sidecar, status: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = get(&sc.admin_url("/readyz"), &[]).await.unwrap().status();
        if got == status {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz still answers {got}, not {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
}

// === headless Chromium =====================================================================

/// Runs one of the test IdP's Playwright scripts (`tests/idp/<script>`, headless Chromium)
/// with `args`, and returns the one JSON line it prints; fails the test with its output if it
/// fails.
pub async fn browser(script: &str, args: &[&str]) -> serde_json::Value {
    require_tool("chromium", "chromium chromium-driver");
    let out = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/idp").join(script))
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{script}: {e}: {stdout}"))
}

// === an HTTP client ========================================================================

pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub fn body(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).boxed()
}

pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    b: TestBody,
) -> Request<TestBody> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(b).unwrap()
}

/// Sends a request and collects the whole response.
pub async fn send(
    req: Request<TestBody>,
) -> Result<Response<Bytes>, hyper_util::client::legacy::Error> {
    let resp = client().request(req).await?;
    let (parts, b) = resp.into_parts();
    let bytes = b.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    Ok(Response::from_parts(parts, bytes))
}

pub async fn get(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Response<Bytes>, hyper_util::client::legacy::Error> {
    send(request("GET", url, headers, body(Bytes::new()))).await
}

pub fn json(resp: &Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(resp.body())
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(resp.body())))
}

// === metrics ===============================================================================

/// The value of the first sample of `text` (Prometheus exposition) that starts with `name`.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The sidecar's `/metrics`.
pub async fn metrics(sc: &Sidecar) -> String {
    String::from_utf8_lossy(get(&sc.admin_url("/metrics"), &[]).await.unwrap().body()).into_owned()
}

// === trickled request bodies ===============================================================

/// A `POST` of a 10-byte body on a connection of its own, of which only the first byte is sent
/// (the rest with [`finish_trickle`]): a body on its way upstream for as long as the test likes.
pub async fn start_trickle(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\nx");
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Sends the rest of a [`start_trickle`] body and returns the response head.
pub async fn finish_trickle(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncWriteExt;
    s.write_all(b"xxxxxxxxx").await.unwrap();
    read_head(s, Duration::from_secs(10))
        .await
        .expect("an answer once the body is through")
}

/// The first bytes of a response on `s` (up to 1 KiB), if any arrive within `wait`.
pub async fn read_head(s: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(wait, s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

/// The connections of `conns` that had no answer in `heads` ([`answered_within`]'s): those
/// still sending their bodies.
pub fn unanswered(
    conns: Vec<tokio::net::TcpStream>,
    heads: &[Option<String>],
) -> Vec<tokio::net::TcpStream> {
    conns
        .into_iter()
        .zip(heads)
        .filter_map(|(s, h)| h.is_none().then_some(s))
        .collect()
}

/// Which of `conns` have a response within `wait`, and its head (the others are still waiting
/// for theirs).
pub async fn answered_within(
    conns: &mut [tokio::net::TcpStream],
    wait: Duration,
) -> Vec<Option<String>> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut heads = Vec::new();
    for s in conns.iter_mut() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        heads.push(read_head(s, left).await);
    }
    heads
}
