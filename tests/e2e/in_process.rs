//! The sidecar run inside the test process: `sso_sidecar::run` on listeners bound to port 0,
//! stopped when the handle drops. For tests that need neither the binary's CLI, its signals nor
//! its log output; it saves a process start per test. Tests of the CLI, signals, reload, TLS
//! files and logs keep using `support::Sidecar`.

use crate::support::get;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub struct InProcess {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// Starts a sidecar configured by `env` (as the binary would read it, with no `.env` file)
    /// and waits until `/readyz` answers 200.
    pub async fn start(env: &[(&str, &str)]) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let config = sso_sidecar::config::load(sso_sidecar::config::Inputs {
            config_file: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            unreadable: Vec::new(),
            cwd: dir.path().to_owned(),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let any = "127.0.0.1:0".parse().unwrap();
        let public = sso_sidecar::server::listen(any, true).unwrap();
        let admin = sso_sidecar::server::listen(any, false).unwrap();
        let (addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listeners = sso_sidecar::Listeners { public, admin };
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = sso_sidecar::run(config, listeners, shutdown).await {
                panic!("the in-process sidecar did not start: {e}");
            }
        });
        let start = Instant::now();
        loop {
            let url = format!("http://{admin_addr}/readyz");
            if get(&url, &[]).await.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "never ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        InProcess {
            addr,
            admin: admin_addr,
            stop: Some(stop),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
