//! The admin listener: `/healthz` (the process is alive), `/readyz` (it should get traffic:
//! discovery loaded, the store reachable and, when configured, the upstream answering its
//! `upstream_ready_path`) and `/metrics` (Prometheus text). It never shares a port with the
//! public listener, so it cannot shadow the backend's own `/metrics` or `/health_check`.

use crate::metrics::Metrics;
use crate::proxy::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What `/readyz` reports: not draining, OIDC discovery loaded, session store reachable.
#[derive(Default)]
pub struct Readiness {
    draining: AtomicBool,
    pub provider: Option<Arc<crate::auth::oidc::Provider>>,
    pub store: Option<Arc<crate::store::Store>>,
    pub upstream: Option<UpstreamCheck>,
    /// The reasons the latest check found (none: ready), and when it began, so that a change
    /// is logged once, with its cause, rather than at every probe or never.
    last: std::sync::Mutex<Option<(u64, Vec<&'static str>)>>,
    /// Numbers the checks in the order they begin: concurrent probes finish in any order, and
    /// one that began earlier must not log its older finding over a newer one.
    checks: std::sync::atomic::AtomicU64,
    /// The store and upstream checks' latest finding, and the check in progress. Probes wait
    /// for the check in progress and share a finding for [`FINDING_LIFE`]: `/readyz` is not
    /// authenticated, and a flood of probes must not become a flood of Redis `PING`s and
    /// upstream requests.
    findings: std::sync::Mutex<Findings>,
}

#[derive(Default)]
struct Findings {
    latest: Option<(tokio::time::Instant, Finding)>,
    /// The check in progress: its finding, once made, reaches every probe waiting for it.
    running: Option<tokio::sync::watch::Receiver<Option<Finding>>>,
}

/// What the dependencies' check found: its number ([`Readiness::checks`]), the reasons and
/// their causes.
type Finding = (u64, Vec<&'static str>, Vec<String>);

/// How long a readiness finding answers other probes (kubelet probes every few seconds).
const FINDING_LIFE: std::time::Duration = std::time::Duration::from_secs(1);

impl Readiness {
    /// Called at shutdown so load balancers stop sending new requests during the drain.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// `Ok` when ready, else the reasons.
    pub async fn check(self: &Arc<Self>) -> Result<(), Vec<&'static str>> {
        let mut reasons = Vec::new();
        if self.draining.load(Ordering::SeqCst) {
            reasons.push("shutting down");
        }
        if self.provider.as_ref().is_some_and(|p| !p.is_loaded()) {
            reasons.push("OIDC discovery has not loaded");
        }
        let (begun, more, causes) = self.dependencies().await;
        reasons.extend(more);
        self.log_change(begun, &reasons, &causes);
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// What the store and the upstream say, asked at most once per [`FINDING_LIFE`] and by
    /// one check at a time, which every probe meanwhile waits for. The check is a task of its
    /// own: a probe that gives up (its client's timeout) does not take the check with it, and
    /// clients that keep opening and dropping probes cannot keep every check from finishing.
    async fn dependencies(self: &Arc<Self>) -> Finding {
        let mut running = {
            let mut f = self.findings.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, found)) = &f.latest {
                if at.elapsed() < FINDING_LIFE {
                    return found.clone();
                }
            }
            match &f.running {
                Some(running) => running.clone(),
                None => {
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    f.running = Some(rx.clone());
                    let me = self.clone();
                    tokio::spawn(async move {
                        let found = me.ask_dependencies().await;
                        {
                            let mut f = me.findings.lock().unwrap_or_else(|p| p.into_inner());
                            f.latest = Some((tokio::time::Instant::now(), found.clone()));
                            f.running = None;
                        }
                        // No probe left waiting is fine: the finding is kept above.
                        let _ = tx.send(Some(found));
                    });
                    rx
                }
            }
        };
        let waited = running
            .wait_for(Option::is_some)
            .await
            .map(|found| found.clone().unwrap_or_default());
        match waited {
            Ok(found) => found,
            // The check's task ended without a finding (it panicked): say so, and let the
            // next probe start another.
            Err(_) => {
                let mut f = self.findings.lock().unwrap_or_else(|p| p.into_inner());
                f.running = None;
                (0, vec!["readiness check failed"], Vec::new())
            }
        }
    }

    /// Asks the store and the upstream, both at once.
    async fn ask_dependencies(&self) -> Finding {
        let begun = self.checks.fetch_add(1, Ordering::Relaxed);
        // Both at once: the probe's own timeout (a second by default) must cover the slower
        // of the two, not their sum.
        let store = async {
            match &self.store {
                Some(store) => store
                    .ping()
                    .await
                    .map_err(|e| format!("session store: {e}")),
                None => Ok(()),
            }
        };
        let upstream = async {
            match &self.upstream {
                Some(upstream) => upstream.ask().await,
                None => Ok(()),
            }
        };
        let (store, upstream) = tokio::join!(store, upstream);
        let (mut reasons, mut causes) = (Vec::new(), Vec::new());
        if let Err(e) = store {
            reasons.push("session store unreachable");
            causes.push(e);
        }
        if let Err(e) = upstream {
            reasons.push("upstream not ready");
            causes.push(e);
        }
        (begun, reasons, causes)
    }

    fn log_change(&self, begun: u64, reasons: &[&'static str], causes: &[String]) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some((newer, _)) if *newer > begun => return,
            Some((_, same)) if same == reasons => return,
            _ => {}
        }
        *last = Some((begun, reasons.to_vec()));
        if reasons.is_empty() {
            tracing::info!("ready");
        } else {
            tracing::warn!(?reasons, ?causes, "not ready");
        }
    }
}

/// `/readyz`'s question to the upstream: a `GET` of `upstream_ready_path`, ready on any 2xx or
/// 3xx within its deadline (the backend may be up long after the sidecar: OpenRag takes
/// minutes to load its models).
pub struct UpstreamCheck {
    client: crate::http_json::JsonClient,
    url: String,
}

impl UpstreamCheck {
    pub fn new(
        upstream: &url::Url,
        path: &str,
        tls: rustls::ClientConfig,
        timeout: std::time::Duration,
    ) -> Self {
        UpstreamCheck {
            client: crate::http_json::JsonClient::new("the upstream", tls, timeout, 64 * 1024),
            url: format!("{}{path}", upstream.as_str().trim_end_matches('/')),
        }
    }

    async fn ask(&self) -> Result<(), String> {
        let req = Request::get(&self.url)
            .body(http_body_util::Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        match self.client.send(req).await {
            Ok(r) if r.status().is_success() || r.status().is_redirection() => Ok(()),
            Ok(r) => Err(format!(
                "the upstream answered {} at its ready path",
                r.status()
            )),
            Err(e) => Err(crate::http_json::error_chain(&e)),
        }
    }
}

pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed\n".into(),
            );
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => match self.readiness.check().await {
                Ok(()) => text(
                    StatusCode::OK,
                    "application/json",
                    r#"{"status":"ready"}"#.into(),
                ),
                Err(reasons) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    serde_json::json!({ "status": "not ready", "reasons": reasons }).to_string(),
                ),
            },
            "/metrics" => text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.encode(),
            ),
            _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(crate::proxy::full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An upstream that answers its ready path after `delay`, counting the requests.
    async fn slow_upstream(delay: std::time::Duration) -> (url::Url, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = sock.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    let _ = sock.write_all(ok).await;
                });
            }
        });
        (url.parse().unwrap(), asked)
    }

    /// A probe that gives up mid-check (its client's timeout) does not take the check with it:
    /// the check finishes, and the next probe gets its finding without asking again.
    #[tokio::test]
    async fn a_probe_that_gives_up_leaves_the_check_running_for_the_next() {
        let delay = std::time::Duration::from_millis(300);
        let (url, asked) = slow_upstream(delay).await;
        let tls = crate::tls::client_config(None).unwrap();
        let timeout = std::time::Duration::from_secs(5);
        let r = Arc::new(Readiness {
            upstream: Some(UpstreamCheck::new(&url, "/ready", tls, timeout)),
            ..Readiness::default()
        });
        let short = std::time::Duration::from_millis(50);
        assert!(tokio::time::timeout(short, r.check()).await.is_err());
        assert!(tokio::time::timeout(short, r.check()).await.is_err());
        tokio::time::sleep(delay * 2).await;
        let begun = std::time::Instant::now();
        assert_eq!(r.check().await, Ok(()));
        assert!(begun.elapsed() < delay, "the next probe asked again");
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "one check for three probes"
        );
    }
}
