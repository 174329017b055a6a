//! Thread-per-core serving of the public listener: one single-threaded runtime per worker, each
//! accepting on its own `SO_REUSEPORT` socket (the kernel spreads connections), each with its
//! own upstream connection pool. A request then stays on one thread from accept to upstream and
//! back, with no cross-thread wake-ups — the layout nginx uses, and measurably faster than one
//! work-stealing runtime on the benchmark (bench/README.md).

use super::{serve, ConnInfo, ServeOptions};
use crate::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use std::future::Future;
use tokio::sync::watch;

thread_local! {
    /// The index of the worker running on this thread, if any.
    static WORKER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The index of the worker thread the caller runs on (`None` off the workers). Lets shared
/// clients keep one connection per worker, driven by that worker's own runtime.
pub fn current() -> Option<usize> {
    WORKER.with(|w| w.get())
}

/// This worker thread's entry of a per-worker list whose last entry serves callers off the
/// workers (admin listener, background tasks). Never empty by construction.
fn slot<T>(slots: &[T]) -> &T {
    let last = slots.len().saturating_sub(1);
    let i = current().map_or(last, |w| w % last.max(1));
    &slots[i]
}

/// One value per worker thread, plus one for callers off the workers. What every request
/// reads and writes (settings behind a lock, `Arc`s, counters) then stays in its own core's
/// cache instead of bouncing between cores on each request. Each value sits on cache lines of
/// its own, so neighbours do not share a line either.
pub struct PerWorker<T>(Vec<Padded<T>>);

/// Two cache lines (the prefetcher pairs adjacent lines on x86).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> PerWorker<T> {
    pub fn new(workers: usize, mut make: impl FnMut() -> T) -> Self {
        PerWorker((0..=workers).map(|_| Padded(make())).collect())
    }

    /// This thread's value.
    pub fn get(&self) -> &T {
        &slot(&self.0).0
    }

    /// Every worker's value (to change them all, or add them up).
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|p| &p.0)
    }
}

/// Reloadable state: each worker reads its own copy, a reload replaces every copy.
impl<T> PerWorker<std::sync::RwLock<std::sync::Arc<T>>> {
    /// This worker's current value.
    pub fn current(&self) -> std::sync::Arc<T> {
        self.get().read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces every worker's value with one of its own, made by `make`.
    pub fn replace(&self, mut make: impl FnMut() -> T) {
        for slot in self.all() {
            *slot.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(make());
        }
    }
}

/// `n` listeners on `first`'s address: `first` itself, then siblings bound with `SO_REUSEPORT`
/// (falling back to duplicates of `first` if the address cannot be shared).
pub fn siblings(
    first: std::net::TcpListener,
    n: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let addr = first.local_addr()?;
    let mut out = Vec::with_capacity(n);
    for _ in 1..n {
        let bound = (|| {
            let s = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            s.set_reuseaddr(true)?;
            s.set_reuseport(true)?;
            s.bind(addr)?;
            s.listen(1024)?.into_std()
        })();
        out.push(match bound {
            Ok(l) => l,
            Err(_) => first.try_clone()?,
        });
    }
    out.insert(0, first);
    Ok(out)
}

/// Runs `serve` on `listener` in a new thread with its own single-threaded runtime.
pub fn spawn<H, F>(
    index: usize,
    listener: std::net::TcpListener,
    handler: H,
    opts: ServeOptions,
    stop: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("sso-sidecar-worker-{index}"))
        .spawn(move || {
            WORKER.with(|w| w.set(Some(index)));
            runtime.block_on(async move {
                if let Err(e) = listener.set_nonblocking(true) {
                    tracing::error!(error = %e, "worker cannot use its listener");
                    return;
                }
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => serve(l, handler, opts, stop).await,
                    Err(e) => tracing::error!(error = %e, "worker cannot use its listener"),
                }
            })
        })
}
