//! Revocation that reaches live streams: the WebSocket tunnels and event streams that sessions
//! hold open are closed once their session ends — by logout, back-channel logout, a refused
//! refresh or expiry — on whichever replica holds them.
//!
//! Each replica keeps the sessions that have a live stream on it and checks, every
//! `revocation_check` interval, that each of them still exists in the shared store (read from
//! Redis itself, not the client-side cache). A session gone from the store cancels every stream
//! of it. Only sessions with live streams are checked: the cost grows with open streams, not
//! with requests. Knows sessions and the store; not HTTP (the proxy gets an opaque signal).

use super::Sessions;
use crate::clock::now_unix;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The sessions with live streams on this replica.
#[derive(Default)]
pub struct LiveStreams {
    /// Session cookie id → the signal its streams wait on, and how many there are.
    by_session: Mutex<HashMap<String, (CancellationToken, usize)>>,
}

/// One live stream's registration; dropping it (the stream ended) unregisters it.
struct Registration {
    streams: Arc<LiveStreams>,
    id: String,
}

impl LiveStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (CancellationToken, usize)>> {
        self.by_session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A signal for one new long-lived stream of session `id`: it completes when the session
    /// ends. The stream holds it for as long as it lives.
    pub fn watch(self: &Arc<Self>, id: &str) -> crate::proxy::Abort {
        let token = {
            let mut map = self.lock();
            let entry = map
                .entry(id.to_owned())
                .or_insert_with(|| (CancellationToken::new(), 0));
            entry.1 += 1;
            entry.0.clone()
        };
        let registration = Registration {
            streams: self.clone(),
            id: id.to_owned(),
        };
        Box::pin(async move {
            let _registration = registration;
            token.cancelled().await;
        })
    }

    /// Live streams on this replica (for tests and metrics).
    pub fn count(&self) -> usize {
        self.lock().values().map(|(_, n)| n).sum()
    }

    /// Checks every `period` that each session with live streams still exists; closes the
    /// streams of those that do not. A store that cannot be reached closes nothing.
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
            let ids: Vec<String> = self.lock().keys().cloned().collect();
            for id in ids {
                match sessions.load_fresh(&id, now_unix()).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        if let Some((token, n)) = self.lock().remove(&id) {
                            token.cancel();
                            metrics.streams_revoked(n as u64);
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
        if let Some(entry) = map.get_mut(&self.id) {
            entry.1 -= 1;
            if entry.1 == 0 {
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
        let token = s.lock()["one"].0.clone();
        token.cancel();
        b.await;
        assert_eq!(s.count(), 0, "a finished signal unregisters");
    }
}
