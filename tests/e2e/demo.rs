//! The README's first command, `scripts/demo`, as a person runs it: it starts, and a browser
//! signs in through it and lands on the backend as the user it names. Both of its backends:
//! the stand-in OpenRag (the default, with the identity bridge) and the echo backend.

use crate::oidc_support::free_port;
use crate::support::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running `scripts/demo` in its own process group, all of which goes when it drops.
struct Demo {
    child: Child,
    port: u16,
    output: Arc<Mutex<String>>,
}

impl Demo {
    /// Starts the demo with `env` besides free ports and the test build's binary, and waits
    /// for the lines that say it is running.
    async fn start(env: &[(&str, &str)]) -> Demo {
        require_tool("node", "nodejs npm");
        require_tool("python3", "python3");
        let (port, admin, idp) = (free_port(), free_port(), free_port());
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("scripts/demo"))
            .env("DEMO_BIN", env!("CARGO_BIN_EXE_sso-sidecar"))
            .env("DEMO_PORT", port.to_string())
            .env("DEMO_ADMIN_PORT", admin.to_string())
            .env("DEMO_IDP_PORT", idp.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().expect("spawn bash scripts/demo");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        let mut demo = Demo {
            child,
            port,
            output,
        };
        // Its first run installs the IdP's npm packages when .ci/run has not.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !demo.output().contains("sso-sidecar demo is running") {
            if let Ok(Some(status)) = demo.child.try_wait() {
                panic!("scripts/demo exited ({status}):\n{}", demo.output());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "scripts/demo never said it was running:\n{}",
                demo.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        demo
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // Ctrl-C's way: the script's trap stops the IdP, the backend and the sidecar.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-INT", "--", &group]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_demo_runs_and_a_browser_signs_in_through_it_to_the_openrag_stand_in() {
    let token = "demo-admin-test-0123456789";
    let demo = Demo::start(&[("DEMO_ADMIN_TOKEN", token)]).await;
    let out = demo.output();
    assert!(
        out.contains(&format!("Open      {}", demo.url("/"))),
        "{out}"
    );

    let r = browser("login.mjs", &[&demo.url("/"), "alice"]).await;
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["url"], demo.url("/"), "{r}");
    let body = r["body"].as_str().unwrap_or_default();
    let page: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    // The bridge made alice an OpenRag user and sent her own token, not a session cookie.
    assert_eq!(page["user"]["external_user_id"], "alice", "{page}");
    assert_eq!(page["auth_via"], "bearer", "{page}");
    assert!(
        !body.contains("sso_sidecar_session"),
        "the sidecar's cookie reached the backend: {body}"
    );

    // The commands the demo prints: a bearer goes through untouched, nothing else does.
    let bearer = format!("Bearer {token}");
    let users = get(&demo.url("/users/"), &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(users.status(), 200, "{:?}", users.body());
    assert!(
        String::from_utf8_lossy(users.body()).contains("alice"),
        "the users API lists the user the login made: {:?}",
        users.body()
    );
    let bare = get(&demo.url("/v1/models"), &[]).await.unwrap();
    assert_eq!(bare.status(), 401);
}

#[tokio::test]
async fn the_demo_with_the_echo_backend_shows_the_identity_headers() {
    let demo = Demo::start(&[("DEMO_BACKEND", "echo")]).await;
    let r = browser("login.mjs", &[&demo.url("/"), "eve"]).await;
    assert_eq!(r["status"], 200, "{r}");
    let body = r["body"].as_str().unwrap_or_default().to_ascii_lowercase();
    assert!(body.contains("x-forwarded-user"), "{body}");
    assert!(body.contains("\"eve\""), "{body}");
    assert!(!body.contains("sso_sidecar_session"), "{body}");
}
