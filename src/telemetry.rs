//! Logging set-up (tracing-subscriber) and the access log.
//!
//! Owns the subscriber (JSON by default, `pretty` on request; level from `RUST_LOG`, else the
//! configured `log_level`) and the one access-log line per request, written with the request's
//! metrics by its [`Record`] even when the request ends without an answer. Redaction is by
//! construction: no code path logs a header map, a query string, a cookie or a body — the access
//! line carries the path without its query, because OpenRag puts tokens in `?token=`.

use crate::config::LogFormat;
use crate::metrics::Metrics;
use std::time::Instant;
use tracing_subscriber::EnvFilter;

type Reloader = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Swaps the log filter of the installed subscriber (configuration reload).
static RELOAD: std::sync::OnceLock<Reloader> = std::sync::OnceLock::new();

/// Whether `RUST_LOG` set the filter at start-up (set and readable): it then wins over
/// `log_level`, at start-up and at every reload.
static FROM_RUST_LOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `RUST_LOG` decides the log level ([`FROM_RUST_LOG`]).
pub fn rust_log_decides() -> bool {
    FROM_RUST_LOG.load(std::sync::atomic::Ordering::Relaxed)
}

/// Installs the global subscriber. Logs go to stdout, as containers expect.
pub fn init(format: LogFormat, default_level: &str) {
    let from_env = EnvFilter::try_from_default_env();
    // Set but unreadable: said once the subscriber is up, or the operator who set it to see
    // more would see the usual level and no reason why.
    let unreadable = match (&from_env, std::env::var_os("RUST_LOG")) {
        (Err(e), Some(_)) => Some(e.to_string()),
        _ => None,
    };
    FROM_RUST_LOG.store(from_env.is_ok(), std::sync::atomic::Ordering::Relaxed);
    let filter = from_env
        .or_else(|_| EnvFilter::builder().parse(default_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // The reload handle's type names the whole subscriber, so each format gets its own.
    // A second init (tests, or a library user) keeps the first subscriber.
    match format {
        LogFormat::Json => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_target(true)
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = RELOAD.set(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
            let _ = builder.try_init();
        }
        LogFormat::Pretty => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_target(true)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = RELOAD.set(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
            let _ = builder.try_init();
        }
    }
    if let Some(e) = unreadable {
        tracing::warn!(error = %e, "RUST_LOG is not a filter the sidecar can read: the configured log_level is used");
    }
}

/// Applies a new `log_level`, unless `RUST_LOG` (which wins at start-up) set the filter.
pub fn set_level(level: &str) -> Result<bool, String> {
    if rust_log_decides() {
        return Ok(false);
    }
    let filter = EnvFilter::builder()
        .parse(level)
        .map_err(|e| e.to_string())?;
    match RELOAD.get() {
        Some(reload) => reload(filter).map(|_| true),
        None => Ok(false),
    }
}

/// A path as it is logged: printable ASCII as it came, any other byte percent-encoded. A client
/// may put C1 controls (U+0080–U+009F, terminal escapes) or bidi overrides in its path as
/// UTF-8; JSON escapes neither, and the `pretty` format writes them raw. At most
/// [`LOGGED_PATH_MAX`] bytes of the path are written, then `…[cut]`: a 32 KiB path would make
/// a line log pipelines split (Docker's at 16 KiB) or drop.
pub fn loggable(path: &str) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write;
    let (kept, cut) = match path.as_bytes().get(..LOGGED_PATH_MAX) {
        Some(head) if path.len() > LOGGED_PATH_MAX => (head, true),
        _ => (path.as_bytes(), false),
    };
    if !cut && kept.iter().all(|b| b.is_ascii_graphic()) {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(kept.len() * 3 + 6);
    for &b in kept {
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    if cut {
        out.push_str("…[cut]");
    }
    std::borrow::Cow::Owned(out)
}

/// Bytes of a request's path the access log writes at most.
const LOGGED_PATH_MAX: usize = 2048;

/// The status logged for a request that ended without an answer: its client left (an HTTP/2
/// reset, a closed connection) or the drain's deadline came. nginx's "client closed request".
const CLIENT_LEFT: u16 = 499;

/// One request from its start to its answer: its in-flight count, duration, status count and
/// access line, written exactly once. A request whose future is dropped before it answers
/// (hyper drops it when the client leaves) is recorded as [`CLIENT_LEFT`] instead of vanishing
/// with its place in the in-flight gauge.
pub struct Record<'a> {
    metrics: &'a Metrics,
    start: Instant,
    method: http::Method,
    /// A cheap clone (shared bytes) of the request's target: the log takes its path.
    uri: http::Uri,
    pub request_id: http::HeaderValue,
    done: bool,
}

impl<'a> Record<'a> {
    pub fn start(
        metrics: &'a Metrics,
        method: http::Method,
        uri: http::Uri,
        request_id: http::HeaderValue,
    ) -> Self {
        metrics.request_started();
        Record {
            metrics,
            start: Instant::now(),
            method,
            uri,
            request_id,
            done: false,
        }
    }

    /// The request is answered with `status` (`upstream_status` when the upstream answered).
    pub fn finish(mut self, status: u16, upstream_status: Option<u16>) {
        self.done = true;
        self.write(status, upstream_status);
    }

    /// Counts the request and writes its access line (target `access`, so it can be filtered
    /// on its own). The line's fields are only evaluated when it is written: with the access
    /// log off, the path is not scanned.
    fn write(&self, status: u16, upstream_status: Option<u16>) {
        let elapsed = self.start.elapsed();
        self.metrics.request_finished(&self.method, status, elapsed);
        tracing::info!(
            target: "access",
            method = self.method.as_str(),
            path = &*loggable(self.uri.path()),
            status,
            upstream_status,
            latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            request_id = self.request_id.to_str().unwrap_or_default(),
            "request"
        );
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.write(CLIENT_LEFT, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::loggable;

    #[test]
    fn a_path_is_logged_in_printable_ascii() {
        assert!(matches!(
            loggable("/api/v1/x?y"),
            std::borrow::Cow::Borrowed(_)
        ));
        // U+009B (CSI) and U+202E (right-to-left override), as UTF-8.
        assert_eq!(loggable("/a\u{9b}b\u{202e}"), "/a%C2%9Bb%E2%80%AE");
        assert_eq!(loggable("/caf\u{e9}"), "/caf%C3%A9");
        let long = format!("/{}", "\u{e9}".repeat(15_000));
        let logged = loggable(&long);
        assert!(logged.ends_with("…[cut]"), "cut");
        assert!(
            logged.len() <= 3 * super::LOGGED_PATH_MAX + 8,
            "{}",
            logged.len()
        );
    }
}
