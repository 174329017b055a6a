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
//!
//! A stream admitted by a path rule (`[[authz.rules]]`) carries a judge, which each check asks
//! again with the session as the store holds it and the rules as they are now: a reload that
//! tightens the rules, or a refresh (on any replica, made by the session's HTTP requests: the
//! check itself refreshes nothing) that took the user out of the group the rule asks for,
//! closes that stream, and only that one, at the next check. A stream opened on a public path
//! (no session looked at, no bearer credential) carries a judge too, asked at each check
//! whether the path is still public: a reload that takes the path out of `paths.public` closes
//! it.
//!
//! While the store cannot be reached, nothing can be confirmed: a session's streams then stay
//! open until the session's end (its absolute expiry, or without a refresh token its access
//! token's, learnt at the last successful check) or until they have gone
//! unconfirmed for `connections.revocation_outage_secs`, whichever comes first. Requests are
//! refused at once meanwhile; the streams get that grace so that a Redis failover of a few
//! seconds does not cut every chat, yet a logout made during an outage is not ignored for as
//! long as it lasts.

use super::{Session, Sessions};
use crate::clock::now_unix;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Sessions a revocation pass asks the store about at once.
const CHECKS_AT_ONCE: usize = 32;

/// Whether a session, as it stands now, may still hold a stream it opened: the path rules of
/// the request that opened it, asked again (built by the caller, which knows the rules).
pub type Judge = Arc<dyn Fn(&Session) -> bool + Send + Sync>;

/// Whether a stream opened on a public path without a session may stay open: its path is
/// still public under the settings as they are now (built by the caller, which knows them).
pub type PublicJudge = Arc<dyn Fn() -> bool + Send + Sync>;

/// The sessions with live streams on this replica, and the streams opened on public paths.
#[derive(Default)]
pub struct LiveStreams {
    /// Session cookie id → its streams.
    by_session: Mutex<HashMap<String, Live>>,
    /// Streams opened on public paths: each check asks their judges again, and a reload that
    /// put a path behind a login closes the streams open on it.
    public: Mutex<Vec<Judged<PublicJudge>>>,
    /// Keys the number that names a user to the proxy (their tunnels, bodies on their way
    /// upstream and event streams are capped per holder) without handing it the `sub`.
    holder_key: std::hash::RandomState,
    /// Numbers each `Live` entry: a registration unregisters only from the entry it joined.
    generations: std::sync::atomic::AtomicU64,
}

/// One session's live streams on this replica.
struct Live {
    /// The signal they all wait on.
    end: CancellationToken,
    /// How many there are.
    count: usize,
    /// Raised by any of them when its client sends something; lowered by each check.
    client_sent: Arc<AtomicBool>,
    /// When the store last confirmed the session (at first: when its first stream opened,
    /// after the request that opened it was let in).
    confirmed: Instant,
    /// When the session ends (Unix seconds, [`crate::session::Session::ends_at`]), once a check
    /// has read it.
    expires_at: Option<i64>,
    /// Which entry this is: after a check removed a session's entry (its streams told to
    /// close), the session's next stream starts a new one, which the old streams' late
    /// unregistering must not count down.
    generation: u64,
    /// The streams with a judge: their number, their own signal (a child of `end`) and the
    /// judge.
    judged: Vec<Judged<Judge>>,
}

/// One live stream's registration; dropping it (the stream ended) unregisters it.
struct Registration {
    streams: Arc<LiveStreams>,
    of: Registered,
}

/// What a stream is registered as.
enum Registered {
    /// One of the streams of the session whose cookie id is `id`, counted in its entry of
    /// `generation`; `judged`: its number among that session's judged streams, if it has a
    /// judge.
    Session {
        id: String,
        generation: u64,
        judged: Option<u64>,
    },
    /// A stream on a public path, by its number among those.
    Public(u64),
}

/// A stream with a judge: its number, its own signal, and the judge.
type Judged<J> = (u64, CancellationToken, J);

/// Keeps the streams `admits` still admits in `judged` and tells the others to close: how many
/// were closed.
fn keep_admitted<J>(judged: &mut Vec<Judged<J>>, admits: impl Fn(&J) -> bool) -> usize {
    let before = judged.len();
    judged.retain(|(_, own, judge)| {
        let admitted = admits(judge);
        if !admitted {
            own.cancel();
        }
        admitted
    });
    before - judged.len()
}

impl LiveStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.by_session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The watch of one new long-lived stream of session `id`: a signal that completes when
    /// the session ends (or, with a `judge`, when the judge no longer admits the session),
    /// which the stream holds for as long as it lives, and the session's flag for its client's
    /// messages.
    pub fn watch(self: &Arc<Self>, id: &str, judge: Option<Judge>) -> crate::proxy::Watch {
        let (token, client_sent, generation, judged) = {
            let mut map = self.lock();
            let live = map.entry(id.to_owned()).or_insert_with(|| Live {
                end: CancellationToken::new(),
                count: 0,
                client_sent: Arc::default(),
                confirmed: Instant::now(),
                expires_at: None,
                generation: self.generations.fetch_add(1, Ordering::Relaxed),
                judged: Vec::new(),
            });
            live.count += 1;
            let (token, judged) = match judge {
                Some(judge) => {
                    let n = self.generations.fetch_add(1, Ordering::Relaxed);
                    let own = live.end.child_token();
                    live.judged.push((n, own.clone(), judge));
                    (own, Some(n))
                }
                None => (live.end.clone(), None),
            };
            (token, live.client_sent.clone(), live.generation, judged)
        };
        let registration = Registration {
            streams: self.clone(),
            of: Registered::Session {
                id: id.to_owned(),
                generation,
                judged,
            },
        };
        watch_until(registration, token, client_sent)
    }

    /// The watch of a new long-lived stream on a public path, without a session: a signal that
    /// completes once `judge` says the path is no longer public (after a reload).
    pub fn watch_public(self: &Arc<Self>, judge: PublicJudge) -> crate::proxy::Watch {
        let n = self.generations.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        self.public_streams().push((n, token.clone(), judge));
        let registration = Registration {
            streams: self.clone(),
            of: Registered::Public(n),
        };
        watch_until(registration, token, Arc::default())
    }

    fn public_streams(&self) -> std::sync::MutexGuard<'_, Vec<Judged<PublicJudge>>> {
        self.public.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the streams on public paths whose judge says the path is no longer public: how
    /// many.
    fn judge_public(&self) -> usize {
        keep_admitted(&mut self.public_streams(), |judge| judge())
    }

    /// The opaque number that names a user (`sub`) to the proxy, which caps what one holder
    /// keeps open (tunnels, bodies on their way upstream, event streams): the same for every
    /// request of the user's sessions on this replica, and no use to anyone without the
    /// replica's key.
    pub fn holder(&self, sub: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.holder_key, sub)
    }

    /// [`LiveStreams::holder`] of an opened session's user, worked out once per opened session
    /// (every request of it asks, for its place under the upstream cap).
    pub fn holder_of(&self, session: &super::Session) -> u64 {
        *session.holder.get_or_init(|| self.holder(&session.sub))
    }

    /// Live streams on this replica (for tests and metrics).
    pub fn count(&self) -> usize {
        self.lock().values().map(|l| l.count).sum::<usize>() + self.public_streams().len()
    }

    /// Checks every `period` that each session with live streams still exists; closes the
    /// streams of those that do not, and counts the client's messages on them since the last
    /// check as use of the session. While the store cannot be reached, closes the streams of a
    /// session past its expiry or unconfirmed for longer than `outage` (the module doc).
    pub async fn check_forever(
        self: Arc<Self>,
        sessions: Arc<Sessions>,
        metrics: Arc<Metrics>,
        period: Duration,
        outage: Option<Duration>,
    ) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let closed = self.judge_public();
            if closed > 0 {
                metrics.streams_revoked(closed as u64);
                tracing::info!(
                    streams = closed,
                    "streams on paths no longer public (paths.public) without a session: closed"
                );
            }
            let due: Vec<(String, bool)> = self
                .lock()
                .iter()
                .map(|(id, l)| (id.clone(), l.client_sent.swap(false, Ordering::Relaxed)))
                .collect();
            // Asked CHECKS_AT_ONCE at a time: one after another, a pass over thousands of
            // sessions would take a round trip each, and stretch the delay before a revoked
            // stream closes. Once the store fails in a pass, the rest of the pass does not ask
            // it: each ask could wait for the store's timeout, and with many sessions a pass
            // would take long enough to stretch every session's grace.
            let mut store_down = false;
            let mut answers = Vec::with_capacity(due.len());
            for batch in due.chunks(CHECKS_AT_ONCE) {
                if store_down {
                    answers.extend(batch.iter().map(|(id, _)| (id.clone(), Err(None))));
                    continue;
                }
                let mut asks = tokio::task::JoinSet::new();
                for (id, used) in batch.iter().cloned() {
                    let sessions = sessions.clone();
                    asks.spawn(async move {
                        let answer = sessions.still_there(&id, now_unix(), used).await;
                        (id, answer.map_err(Some))
                    });
                }
                while let Some(done) = asks.join_next().await {
                    // A check that panicked tells nothing: its session is asked again next time.
                    let Ok((id, answer)) = done else { continue };
                    store_down |= answer.is_err();
                    answers.push((id, answer));
                }
            }
            for (id, answer) in answers {
                let why = match answer {
                    Ok(Some(session)) => {
                        let closed = self.confirmed(&id, &session);
                        if closed > 0 {
                            metrics.streams_revoked(closed as u64);
                            tracing::info!(streams = closed, "streams no longer allowed on their paths by [authz] rules: closed");
                        }
                        continue;
                    }
                    Ok(None) => "session ended: its live streams closed",
                    Err(e) if !self.unconfirmed_too_long(&id, outage) => {
                        if let Some(e) = e {
                            tracing::debug!(error = %e, "stream revocation check skipped: store unavailable");
                        }
                        continue;
                    }
                    Err(_) => {
                        "session unconfirmed while the store is unavailable: its live streams closed"
                    }
                };
                if let Some(live) = self.lock().remove(&id) {
                    live.end.cancel();
                    metrics.streams_revoked(live.count as u64);
                    tracing::info!(streams = live.count, "{why}");
                }
            }
        }
    }

    /// Records that the store holds `id` as `session`, and closes the streams whose judge no
    /// longer admits it: how many.
    fn confirmed(&self, id: &str, session: &Session) -> usize {
        let mut map = self.lock();
        let Some(live) = map.get_mut(id) else {
            return 0;
        };
        live.confirmed = Instant::now();
        live.expires_at = Some(session.ends_at());
        keep_admitted(&mut live.judged, |judge| judge(session))
    }

    /// Whether the streams of `id`, which the store cannot confirm now, must close: the
    /// session is past its expiry, or went unconfirmed for longer than `outage`.
    fn unconfirmed_too_long(&self, id: &str, outage: Option<Duration>) -> bool {
        let map = self.lock();
        let Some(live) = map.get(id) else {
            return false;
        };
        live.expires_at.is_some_and(|e| now_unix() >= e)
            || outage.is_some_and(|o| live.confirmed.elapsed() > o)
    }
}

/// A stream's watch: `token`'s signal, holding `registration` for as long as the stream lives.
fn watch_until(
    registration: Registration,
    token: CancellationToken,
    client_sent: Arc<AtomicBool>,
) -> crate::proxy::Watch {
    crate::proxy::Watch {
        end: Box::pin(async move {
            let _registration = registration;
            token.cancelled().await;
        }),
        client_sent,
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let (id, generation, judged) = match &self.of {
            Registered::Public(n) => {
                self.streams.public_streams().retain(|(m, _, _)| m != n);
                return;
            }
            Registered::Session {
                id,
                generation,
                judged,
            } => (id, *generation, *judged),
        };
        let mut map = self.streams.lock();
        if let Some(live) = map.get_mut(id).filter(|l| l.generation == generation) {
            if let Some(n) = judged {
                live.judged.retain(|(m, _, _)| *m != n);
            }
            live.count -= 1;
            if live.count == 0 {
                map.remove(id);
            }
        }
    }
}

#[cfg(test)]
#[path = "streams_tests.rs"]
mod tests;
