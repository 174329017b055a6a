//! Revocation that reaches live streams: the WebSocket tunnels and event streams that sessions
//! hold open are closed once their session ends — by logout, back-channel logout, a refused
//! refresh or expiry — on whichever replica holds them.
//!
//! Each replica keeps the sessions that have a live stream on it and checks, every
//! `revocation_check` interval, that each of them still exists in the shared store (read from
//! Redis itself, not the client-side cache). A session gone from the store cancels every stream
//! of it. Only sessions with live streams are checked: the cost grows with open streams, not
//! with requests. A session whose client sent something on one of its streams since the last
//! check (a WebSocket message) is used, as a request would use it: with an idle timeout, the
//! check pushes its idle deadline back. Knows sessions and the store; not HTTP (the proxy gets
//! an opaque signal and a flag).

use super::Sessions;
use crate::clock::now_unix;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The sessions with live streams on this replica.
#[derive(Default)]
pub struct LiveStreams {
    /// Session cookie id → its streams.
    by_session: Mutex<HashMap<String, Live>>,
    /// Keys the number that names a session to the proxy (its tunnels are capped per holder)
    /// without handing it the cookie id.
    holder_key: std::hash::RandomState,
}

/// One session's live streams on this replica.
struct Live {
    /// The signal they all wait on.
    end: CancellationToken,
    /// How many there are.
    count: usize,
    /// Raised by any of them when its client sends something; lowered by each check.
    client_sent: Arc<AtomicBool>,
}

/// One live stream's registration; dropping it (the stream ended) unregisters it.
struct Registration {
    streams: Arc<LiveStreams>,
    id: String,
}

impl LiveStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.by_session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The watch of one new long-lived stream of session `id`: a signal that completes when
    /// the session ends, which the stream holds for as long as it lives, and the session's
    /// flag for its client's messages.
    pub fn watch(self: &Arc<Self>, id: &str) -> crate::proxy::Watch {
        let (token, client_sent) = {
            let mut map = self.lock();
            let live = map.entry(id.to_owned()).or_insert_with(|| Live {
                end: CancellationToken::new(),
                count: 0,
                client_sent: Arc::default(),
            });
            live.count += 1;
            (live.end.clone(), live.client_sent.clone())
        };
        let registration = Registration {
            streams: self.clone(),
            id: id.to_owned(),
        };
        crate::proxy::Watch {
            end: Box::pin(async move {
                let _registration = registration;
                token.cancelled().await;
            }),
            client_sent,
            holder: std::hash::BuildHasher::hash_one(&self.holder_key, id),
        }
    }

    /// Live streams on this replica (for tests and metrics).
    pub fn count(&self) -> usize {
        self.lock().values().map(|l| l.count).sum()
    }

    /// Checks every `period` that each session with live streams still exists; closes the
    /// streams of those that do not, and counts the client's messages on them since the last
    /// check as use of the session. A store that cannot be reached closes nothing.
    pub async fn check_forever(
        self: Arc<Self>,
        sessions: Arc<Sessions>,
        metrics: Arc<Metrics>,
        period: Duration,
    ) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let due: Vec<(String, bool)> = self
                .lock()
                .iter()
                .map(|(id, l)| (id.clone(), l.client_sent.swap(false, Ordering::Relaxed)))
                .collect();
            for (id, used) in due {
                match sessions.still_there(&id, now_unix(), used).await {
                    Ok(true) => {}
                    Ok(false) => {
                        if let Some(live) = self.lock().remove(&id) {
                            live.end.cancel();
                            metrics.streams_revoked(live.count as u64);
                            let n = live.count;
                            tracing::info!(streams = n, "session ended: its live streams closed");
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "stream revocation check skipped: store unavailable");
                    }
                }
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.streams.lock();
        if let Some(live) = map.get_mut(&self.id) {
            live.count -= 1;
            if live.count == 0 {
                map.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registrations_come_and_go_with_their_streams() {
        let s = Arc::new(LiveStreams::default());
        let a = s.watch("one");
        let b = s.watch("one");
        let c = s.watch("two");
        assert_eq!(s.count(), 3);
        drop(a);
        assert_eq!(s.count(), 2);
        drop(c);
        assert_eq!(s.lock().len(), 1);
        let token = s.lock()["one"].end.clone();
        token.cancel();
        b.end.await;
        assert_eq!(s.count(), 0, "a finished signal unregisters");
    }
}
