//! Thread-per-core serving of the public listener: one single-threaded runtime per worker, each
//! accepting on its own `SO_REUSEPORT` socket (the kernel spreads connections, and
//! [`super::balance`] evens out what it spread unevenly), each with its own upstream connection
//! pool. A request then stays on one thread from its connection's first byte to the upstream
//! and back, with no cross-thread wake-ups — the layout nginx uses, and measurably faster than
//! one work-stealing runtime on the benchmark (bench/README.md).

use super::{serve_balanced, ConnInfo, ServeOptions};
use crate::proxy::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use std::future::Future;
use tokio::sync::watch;

/// `n` listeners on `first`'s address: `first` itself, then siblings bound with `SO_REUSEPORT`
/// (falling back to duplicates of `first` if the address cannot be shared).
pub fn siblings(
    first: std::net::TcpListener,
    n: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let addr = first.local_addr()?;
    let mut out = Vec::with_capacity(n);
    for _ in 1..n {
        let bound = super::listen(addr, true).and_then(|l| l.into_std());
        out.push(match bound {
            Ok(l) => l,
            Err(_) => first.try_clone()?,
        });
    }
    out.insert(0, first);
    Ok(out)
}

/// Runs `serve` on `listener` in a new thread with its own single-threaded runtime; with an
/// `inbox`, balanced against the other workers ([`super::balance`]).
pub fn spawn<H, F>(
    index: usize,
    listener: std::net::TcpListener,
    inbox: Option<super::balance::Inbox>,
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
            crate::per_worker::enter(index);
            runtime.block_on(async move {
                let listener = listener
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(listener));
                match listener {
                    Ok(l) => serve_balanced(l, inbox, handler, opts, stop).await,
                    Err(e) => {
                        tracing::error!(error = %e, "worker cannot use its listener");
                        // The others must not hand it connections it will never serve.
                        if let Some(inbox) = inbox {
                            inbox.retire();
                        }
                    }
                }
            })
        })
}
