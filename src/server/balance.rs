//! Spreading client connections evenly over the worker threads (`connections.balance =
//! "exact"`, Envoy's `exact_balance`).
//!
//! Each worker accepts on its own `SO_REUSEPORT` socket, and the kernel picks the socket by a
//! hash of the connection's addresses, blind to how many connections each worker already
//! holds. With many short connections that evens out; with a few long-lived ones, which is what
//! a sidecar gets from an ingress or a load balancer keeping connections alive, it does not: on
//! two workers, 50 connections split 28/22 or worse about half the time (a binomial draw), and
//! 4 land on one worker one time in eight, leaving a core idle while the other queues every
//! request.
//!
//! So a worker that accepts a connection while another holds fewer hands it over: the socket
//! leaves this worker's event loop and joins the other's. Each worker counts the connections
//! placed on it until their sockets close (a WebSocket tunnel included), which is the only
//! state shared between workers here: an atomic per worker, read for every worker and written
//! twice per connection (placed, closed), never per request.
//!
//! What this must not do: read or write a byte of the connection (it moves before its first
//! byte, so TLS and protocol detection happen where it is served), or lose a connection it was
//! given: if the chosen worker has stopped taking them (shutting down), the acceptor serves it
//! itself; what was already on its way to a worker that stops is closed with the connections
//! that worker refuses.

use super::conn::Place;
use super::limits::ConnPermit;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The workers' connection counts and the way to each worker's inbox.
pub struct Balancer {
    loads: Box<[Padded]>,
    inboxes: Box<[mpsc::UnboundedSender<Handoff>]>,
}

/// A connection count on a cache line of its own: workers write their neighbours' rarely, but
/// their own on every connection.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicUsize);

/// What one worker needs to take part: its index, the shared counts, and its inbox.
pub struct Inbox {
    me: usize,
    balancer: Arc<Balancer>,
    rx: mpsc::UnboundedReceiver<Handoff>,
}

/// A connection on its way to another worker, with what was decided about it at accept: its
/// place under the caps, counted on that worker.
pub(super) struct Handoff {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub place: Place,
}

/// One connection counted on a worker, until dropped (when its connection ends).
pub struct Load {
    balancer: Arc<Balancer>,
    worker: usize,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.balancer.loads[self.worker]
            .0
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    /// A balancer for `workers` workers, and one inbox per worker, in worker order.
    pub fn inboxes(workers: usize) -> Vec<Inbox> {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let balancer = Arc::new(Balancer {
            loads: (0..workers).map(|_| Padded::default()).collect(),
            inboxes: txs.into(),
        });
        rxs.into_iter()
            .enumerate()
            .map(|(me, rx)| Inbox {
                me,
                balancer: balancer.clone(),
                rx,
            })
            .collect()
    }

    /// The worker with the fewest connections, `me` unless another holds fewer (ties stay, so
    /// an even spread moves nothing), counted on it from now on.
    fn place(self: &Arc<Self>, me: usize) -> Load {
        let load = |w: usize| self.loads[w].0.load(Ordering::Relaxed);
        let mut best = (me, load(me));
        for w in 0..self.loads.len() {
            let l = load(w);
            if l < best.1 {
                best = (w, l);
            }
        }
        self.count(best.0)
    }

    fn count(self: &Arc<Self>, worker: usize) -> Load {
        self.loads[worker].0.fetch_add(1, Ordering::Relaxed);
        Load {
            balancer: self.clone(),
            worker,
        }
    }

    /// Connections currently counted on each worker (tests and diagnostics).
    pub fn loads(&self) -> Vec<usize> {
        self.loads
            .iter()
            .map(|l| l.0.load(Ordering::Relaxed))
            .collect()
    }
}

impl Inbox {
    /// Decides where a connection this worker accepted is served. `Some`: here, with its place
    /// counted on this worker; `None`: handed over to another worker, nothing left to do.
    pub(super) fn place(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        permit: Option<ConnPermit>,
    ) -> Option<(TcpStream, Place)> {
        let load = self.balancer.place(self.me);
        let target = load.worker;
        let place = Place {
            permit,
            load: Some(load),
        };
        if target == self.me {
            return Some((stream, place));
        }
        // Out of this worker's event loop; it keeps its non-blocking mode for the next one.
        let std = match stream.into_std() {
            Ok(s) => s,
            // Cannot happen for a socket this runtime registered; if it does, the connection
            // is already unusable here: dropping it closes it, as a refused one would be.
            Err(e) => {
                tracing::warn!(error = %e, "a connection could not leave its worker");
                return None;
            }
        };
        let handoff = Handoff {
            stream: std,
            peer,
            place,
        };
        match self.balancer.inboxes[target].send(handoff) {
            Ok(()) => None,
            // That worker has stopped (shutdown): serve it here after all.
            Err(mpsc::error::SendError(mut h)) => {
                h.place.load = Some(self.balancer.count(self.me));
                match TcpStream::from_std(h.stream) {
                    Ok(stream) => Some((stream, h.place)),
                    Err(e) => {
                        tracing::warn!(error = %e, "a connection could not rejoin its worker");
                        None
                    }
                }
            }
        }
    }

    /// The next connection another worker handed to this one.
    pub(super) async fn next(&mut self) -> Option<Handoff> {
        self.rx.recv().await
    }

    /// Takes no more connections (this worker stops): the ones already on their way are
    /// dropped, which closes them, and a worker that picks this one from now on serves the
    /// connection itself.
    pub fn close(&mut self) {
        self.rx.close();
        while self.rx.try_recv().is_ok() {}
    }

    /// This worker will never serve (it could not start): no connection is sent to it.
    pub fn retire(self) {
        self.balancer.loads[self.me]
            .0
            .store(usize::MAX / 2, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{workers, ConnInfo, ServeOptions};
    use http::{Request, Response};
    use hyper::body::Incoming;
    use std::io::{Read, Write};
    use std::time::Duration;

    #[test]
    fn a_connection_goes_to_the_worker_holding_fewest_and_counts_until_it_ends() {
        let inboxes = Balancer::inboxes(3);
        let b = inboxes[0].balancer.clone();
        let first = b.place(0);
        assert_eq!((first.worker, b.loads()), (0, vec![1, 0, 0]), "a tie stays");
        let second = b.place(0);
        let third = b.place(0);
        assert_eq!((second.worker, third.worker), (1, 2));
        let fourth = b.place(2);
        assert_eq!((fourth.worker, b.loads()), (2, vec![1, 1, 2]));
        drop(first);
        assert_eq!(b.loads(), vec![0, 1, 2]);
        assert_eq!(b.place(2).worker, 0, "the freed place is taken again");
    }

    /// Every connection arrives at worker 0 (worker 1 listens where nobody connects): with
    /// balancing, half of them are served by worker 1 and each connection's requests stay on
    /// one worker; without, all stay on worker 0 (so the test can fail).
    #[test]
    fn connections_that_all_reach_one_worker_are_shared_evenly() {
        assert_eq!(served_by(true), (5, 5));
        assert_eq!(served_by(false), (10, 0));
    }

    /// A worker that stops taking connections (shutdown): what was on its way to it is closed
    /// and uncounted, and a connection that would go to it is served by its acceptor.
    #[tokio::test]
    async fn a_stopped_worker_gets_nothing_and_what_was_on_its_way_is_closed() {
        let mut inboxes = Balancer::inboxes(2);
        let mut second = inboxes.pop().unwrap();
        let first = inboxes.pop().unwrap();
        let b = first.balancer.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = || async {
            let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (stream, peer) = listener.accept().await.unwrap();
            (stream, peer, _client)
        };
        let held = b.count(0);
        let (stream, peer, mut client) = accept().await;
        assert!(first.place(stream, peer, None).is_none(), "handed over");
        assert_eq!(b.loads(), vec![1, 1]);
        second.close();
        assert_eq!(b.loads(), vec![1, 0], "the one on its way is uncounted");
        let mut buf = [0u8; 1];
        let read = tokio::io::AsyncReadExt::read(&mut client, &mut buf).await;
        assert!(matches!(read, Ok(0) | Err(_)), "and closed");

        let (stream, peer, _client) = accept().await;
        let (_, place) = first.place(stream, peer, None).expect("served here");
        assert_eq!(b.loads(), vec![2, 0]);
        drop((held, place));
        assert_eq!(b.loads(), vec![0, 0]);
    }

    /// A WebSocket tunnel outlives its connection's task (hyper hands the socket over at the
    /// upgrade): it stays counted on its worker until the tunnel closes.
    #[test]
    fn an_upgraded_connection_stays_counted_until_its_tunnel_closes() {
        let mut inboxes = Balancer::inboxes(1).into_iter();
        let inbox = inboxes.next().unwrap();
        let balancer = inbox.balancer.clone();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let release = Arc::new(tokio::sync::Notify::new());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let tunnel_ends = release.clone();
        let handler = move |mut req: Request<Incoming>, _: ConnInfo| {
            let release = tunnel_ends.clone();
            async move {
                let upgrade = hyper::upgrade::on(&mut req);
                // The tunnel: holds the upgraded socket until the test releases it.
                tokio::spawn(async move {
                    let io = upgrade.await;
                    release.notified().await;
                    drop(io);
                });
                let mut r = Response::new(crate::proxy::body::full(""));
                *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
                r.headers_mut()
                    .insert(http::header::CONNECTION, "upgrade".parse().unwrap());
                r.headers_mut()
                    .insert(http::header::UPGRADE, "test".parse().unwrap());
                r
            }
        };
        let opts = ServeOptions::for_tests();
        let t = workers::spawn(0, l, Some(inbox), handler, opts, stop_rx).unwrap();
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 101"), "{:?}", &buf[..n]);
        // Long enough for hyper's connection task to have ended at the upgrade.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(balancer.loads(), vec![1], "the tunnel is counted");
        release.notify_one();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while balancer.loads() != vec![0] && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            balancer.loads(),
            vec![0],
            "the closed tunnel is still counted"
        );
        stop_tx.send(true).unwrap();
        t.join().unwrap();
    }

    /// Connections to worker 0 of two, each asked twice which worker serves it; the count per
    /// worker, with all ten connections open at the end.
    fn served_by(balanced: bool) -> (usize, usize) {
        let mut inboxes = if balanced {
            Balancer::inboxes(2)
        } else {
            Vec::new()
        }
        .into_iter();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut addr = None;
        let mut threads = Vec::new();
        for i in 0..2 {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            addr = addr.or(Some(l.local_addr().unwrap()));
            let handler = |_: Request<Incoming>, _: ConnInfo| async {
                let me = crate::per_worker::current().map_or(9, |w| w);
                Response::new(crate::proxy::body::full(format!("worker={me};")))
            };
            let opts = ServeOptions::for_tests();
            let t = workers::spawn(i, l, inboxes.next(), handler, opts, stop_rx.clone());
            threads.push(t.unwrap());
        }
        let addr = addr.unwrap();
        let mut open = Vec::new();
        let mut counts = (0, 0);
        for _ in 0..10 {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut seen = Vec::new();
            for _ in 0..2 {
                c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 512];
                while !buf.ends_with(b";") {
                    let n = c.read(&mut chunk).unwrap();
                    assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
                    buf.extend_from_slice(&chunk[..n]);
                }
                seen.push(String::from_utf8_lossy(&buf).contains("worker=1;"));
            }
            assert_eq!(
                seen[0], seen[1],
                "a connection's requests stay on one worker"
            );
            if seen[0] {
                counts.1 += 1;
            } else {
                counts.0 += 1;
            }
            open.push(c);
        }
        stop_tx.send(true).unwrap();
        drop(open);
        for t in threads {
            t.join().unwrap();
        }
        counts
    }
}
