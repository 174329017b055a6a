//! The `Sessions` service: seals a [`Session`] into the store and finds it again from a cookie
//! id.
//!
//! Rules of the house, enforced here: the cookie carries only a random 256-bit id; the store key
//! is a SHA-256 of that id (hash-tagged for Redis Cluster); the value is Fernet ciphertext; the
//! `sid` and `sub` indexes are keyed by hashes too, so Redis holds nothing readable. A session's
//! expiry is fixed at creation and never extended; with an idle timeout, the store entry's time
//! to live is also pushed back by the requests that use it ([`Sessions::with_idle_timeout`]).
//! No HTTP here.

use crate::crypto::KeyRing;
use crate::per_worker::PerWorker;
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::Session;

/// Seals sessions into the store and opens them again.
pub struct Sessions {
    store: Arc<Store>,
    keys: Arc<KeyRing>,
    /// Per worker thread (and one for the rest): opened sessions by cookie id, with their store
    /// key and the ciphertext they came from. The store is still asked on every request, so a
    /// revocation on any replica is seen as soon as it reaches this one (the Redis store's
    /// client-side cache is kept coherent by Redis); only when the ciphertext is byte for byte
    /// the one already opened are decryption and parsing skipped, and the key's SHA-256 is not
    /// computed again. Per worker, so requests on different cores never share a lock.
    opened: PerWorker<Mutex<OpenedCache>>,
    /// `session_idle_timeout_secs`, when set.
    idle: Option<Duration>,
    /// How long a login may take (`login_timeout_secs`): how long an IdP session ended by a
    /// back-channel logout is remembered, for the logins it raced ([`Sessions::revoke_sid`]).
    login_window: Duration,
    /// Live sessions one user may hold (`max_sessions_per_user`).
    max_per_user: Option<usize>,
}

/// One worker's opened sessions. A session is kept the second time this worker opens it
/// lately ([`Admission`](crate::per_worker::Admission)): when sessions far outnumber the cache,
/// the ones seen once would otherwise push out the busy ones, which then cost a decryption again
/// even when Redis's client-side cache still holds them.
#[derive(Default)]
struct OpenedCache {
    map: HashMap<String, Opened>,
    admission: crate::per_worker::Admission,
    /// With an idle timeout: when this worker last pushed back each session's idle deadline.
    touched: HashMap<String, i64>,
}

/// An opened session, its store key and the ciphertext it was opened from.
struct Opened {
    key: Arc<str>,
    sealed: bytes::Bytes,
    session: Arc<Session>,
}

/// Bound of each worker's opened-session cache (about 4.5 KiB an entry, so ~4.5 MiB at most);
/// when full, about an eighth of it is evicted (`per_worker::evict_some`) to make room.
const OPENED_CACHE_MAX: usize = 1024;

/// What a callback's own calls may add to a login's `login_timeout_secs`
/// ([`Sessions::with_login_timeout`]).
const LOGIN_MARGIN: Duration = Duration::from_secs(600);

/// Reads of a session `amend` makes before it gives up on writers that keep changing it.
const AMEND_TRIES: usize = 4;

/// Bound of each worker's record of idle deadlines pushed back (~100 bytes an entry).
const TOUCHED_MAX: usize = 8192;

/// A session id as the cookie carries it: 32 random bytes, base64url (43 characters).
pub fn new_session_id() -> String {
    crate::crypto::random_token(32)
}

fn plausible_id(id: &str) -> bool {
    id.len() == 43
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Sessions {
    /// `workers`: the number of worker threads, each of which gets its own opened-session cache.
    pub fn new(store: Arc<Store>, keys: Arc<KeyRing>, workers: usize) -> Self {
        Sessions {
            store,
            keys,
            opened: PerWorker::new(workers, Mutex::default),
            idle: None,
            // `login_timeout_secs`'s default (ten minutes) plus the margin, until told.
            login_window: Duration::from_secs(600) + LOGIN_MARGIN,
            max_per_user: None,
        }
    }

    /// Logins take at most `timeout` from the authorization request to the callback; the
    /// callback's own calls (the IdP's token and userinfo endpoints, the identity mode's login
    /// hook) may add minutes to when the session is stored: ten are allowed for them.
    pub fn with_login_timeout(mut self, timeout: Duration) -> Self {
        self.login_window = timeout + LOGIN_MARGIN;
        self
    }

    /// At most `max` live sessions per user: a login beyond it ends the user's oldest.
    pub fn with_max_per_user(mut self, max: Option<usize>) -> Self {
        self.max_per_user = max;
        self
    }

    /// Sessions that end after `idle` without a request (`None`: only at their expiry). The
    /// store entry lives `idle` plus an eighth; a request that uses the session pushes that
    /// back, each worker at most once per eighth of `idle` per session, so a session ends
    /// between `idle` and `idle` plus an eighth after its last request.
    pub fn with_idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.idle = idle;
        self
    }

    fn opened(&self) -> MutexGuard<'_, OpenedCache> {
        self.opened.get().lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The store key of a session id (public for tests that inspect Redis).
    pub fn key_of(id: &str) -> String {
        crate::store::keys::hashed("session", &["session", id])
    }

    fn sid_index(iss: &str, sid: &str) -> String {
        crate::store::keys::hashed("sid", &["sid", iss, sid])
    }

    fn sub_index(iss: &str, sub: &str) -> String {
        crate::store::keys::hashed("sub", &["sub", iss, sub])
    }

    /// A user's sessions made from an ID token without `sid`: a logout token naming an IdP
    /// session cannot find them by it (`revoke_sid`'s fallback).
    fn sidless_index(iss: &str, sub: &str) -> String {
        crate::store::keys::hashed("sidless", &["sidless", iss, sub])
    }

    /// Overwrites the session stored under `id` (after a refresh), keeping its expiry.
    pub async fn save(&self, id: &str, session: &Session, now: i64) -> Result<(), StoreError> {
        let key = Self::key_of(id);
        let mut bound = session.clone();
        bound.sealed_for = Some(key.clone());
        let plain =
            serde_json::to_vec(&bound).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let sealed = self.keys.seal(&plain);
        self.store
            .put(&key, sealed.as_bytes(), self.ttl(session, now))
            .await
    }

    /// Changes the session stored under `id` where it stands: read from the store itself,
    /// changed by `change`, and written back only if nobody wrote it meanwhile (else read and
    /// changed again). A request that learnt one thing about its session (a new backend token,
    /// new tokens from the IdP) must not carry the rest of the copy it started with back over a
    /// newer one: a refresh on another replica would be undone, and its spent refresh token
    /// brought back. The session as written; `None` when it is gone (or no longer live).
    pub async fn amend(
        &self,
        id: &str,
        now: i64,
        mut change: impl FnMut(&mut Session),
    ) -> Result<Option<Session>, StoreError> {
        let key = Self::key_of(id);
        for _ in 0..AMEND_TRIES {
            let Some(sealed) = self.store.get_fresh(&key).await? else {
                return Ok(None);
            };
            let Some(before) = self.keys.open_stored(&sealed) else {
                return Ok(None);
            };
            let Some(mut s) = serde_json::from_slice::<Session>(&before)
                .ok()
                .filter(|s| s.is_live(now) && sealed_for(s, &key))
            else {
                return Ok(None);
            };
            change(&mut s);
            s.sealed_for = Some(key.clone());
            let plain =
                serde_json::to_vec(&s).map_err(|e| StoreError::Unavailable(e.to_string()))?;
            if plain == before {
                // Nothing changed: no write, which would only make every replica read it again.
                return Ok(Some(s));
            }
            let new = self.keys.seal(&plain);
            let ttl = self.ttl(&s, now);
            if self
                .store
                .replace_if(&key, &sealed, new.as_bytes(), ttl)
                .await?
            {
                return Ok(Some(s));
            }
        }
        Err(StoreError::Unavailable(
            "the session kept changing while it was written".into(),
        ))
    }

    /// A sealed session read under `key`, opened: `None` when tampered, sealed with a foreign
    /// key, unreadable, or sealed for another key.
    fn open(&self, key: &str, sealed: &[u8]) -> Option<Session> {
        self.keys
            .open_stored(sealed)
            .and_then(|p| serde_json::from_slice::<Session>(&p).ok())
            .filter(|s| sealed_for(s, key))
    }

    /// The live session for a cookie id, or `None` (unknown, expired, tampered, foreign key).
    pub async fn load(&self, id: &str, now: i64) -> Result<Option<Arc<Session>>, StoreError> {
        self.load_from(id, now, false).await
    }

    /// As [`Sessions::load`], but read from the store itself, never from a client-side cache:
    /// for code that has just taken a lock and must see what another replica wrote.
    pub async fn load_fresh(&self, id: &str, now: i64) -> Result<Option<Arc<Session>>, StoreError> {
        self.load_from(id, now, true).await
    }

    async fn load_from(
        &self,
        id: &str,
        now: i64,
        fresh: bool,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        if !plausible_id(id) {
            return Ok(None);
        }
        // What this worker opened for the id before, if anything: its store key spares a
        // SHA-256, its ciphertext may spare the decryption.
        let known = self
            .opened()
            .map
            .get(id)
            .map(|o| (o.key.clone(), o.sealed.clone(), o.session.clone()));
        let key = match &known {
            Some((key, ..)) => key.clone(),
            None => Self::key_of(id).into(),
        };
        let read = if fresh {
            self.store.get_fresh(&key).await?
        } else {
            self.store.get(&key).await?
        };
        let Some(sealed) = read else {
            self.opened().map.remove(id);
            return Ok(None);
        };
        let was_known = known.is_some();
        if let Some((_, opened, session)) = known {
            // The same shared buffer (a cache hit below), or the same bytes in a new one.
            let same_buffer = opened.as_ptr() == sealed.as_ptr() && opened.len() == sealed.len();
            if same_buffer || opened == sealed {
                if !same_buffer {
                    // Keep the store's buffer, so later requests compare pointers, not bytes.
                    if let Some(entry) = self.opened().map.get_mut(id) {
                        entry.sealed = sealed;
                    }
                }
                return Ok(self.used(id, &key, Some(session), now, fresh).await);
            }
        }
        let session = self.open(&key, &sealed).map(Arc::new);
        {
            let mut cache = self.opened();
            match &session {
                // Kept if it was (a refresh changed it) or this is its second opening lately.
                Some(_) if !was_known && !cache.admission.seen_before(id, OPENED_CACHE_MAX) => {}
                Some(s) => {
                    if cache.map.len() >= OPENED_CACHE_MAX {
                        crate::per_worker::evict_some(&mut cache.map);
                    }
                    let entry = Opened {
                        key: key.clone(),
                        sealed,
                        session: s.clone(),
                    };
                    cache.map.insert(id.to_owned(), entry);
                }
                None => {
                    cache.map.remove(id);
                }
            }
        }
        Ok(self.used(id, &key, session, now, fresh).await)
    }

    /// `session` if it is live; with an idle timeout, a request (not a re-read under a lock)
    /// that uses it pushes back its idle deadline, when this worker has not done so for an
    /// eighth of the timeout. Only the time to live is changed, never the value: a refresh may
    /// be writing it meanwhile. A failed push is not the request's failure.
    async fn used(
        &self,
        id: &str,
        key: &str,
        session: Option<Arc<Session>>,
        now: i64,
        fresh: bool,
    ) -> Option<Arc<Session>> {
        let s = session.filter(|s| s.is_live(now))?;
        let Some(idle) = self.idle.filter(|_| !fresh) else {
            return Some(s);
        };
        let every = i64::try_from(idle.as_secs() / 8).unwrap_or(i64::MAX).max(1);
        {
            let mut cache = self.opened();
            if cache.touched.get(id).is_some_and(|&t| now - t < every) {
                return Some(s);
            }
            if cache.touched.len() >= TOUCHED_MAX {
                crate::per_worker::evict_some(&mut cache.touched);
            }
            cache.touched.insert(id.to_owned(), now);
        }
        match self.store.touch(key, self.ttl(&s, now)).await {
            // Gone since it was read (a logout on another replica): not served.
            Ok(false) => None,
            Ok(true) => Some(s),
            Err(e) => {
                tracing::debug!(error = %e, "a session's idle deadline was not pushed back");
                Some(s)
            }
        }
    }

    /// The session with this cookie id if it still exists (`None`: ended), read from the
    /// store itself (for a check of long-lived streams, not a request). A session `used` since
    /// the last check (its client's messages on a stream) pushes back its idle deadline as a
    /// request would.
    pub async fn still_there(
        &self,
        id: &str,
        now: i64,
        used: bool,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        let Some(s) = self.load_fresh(id, now).await? else {
            return Ok(None);
        };
        if !used || self.idle.is_none() {
            return Ok(Some(s));
        }
        let key = Self::key_of(id);
        let kept = self
            .used(id, &key, Some(s.clone()), now, false)
            .await
            .is_some();
        Ok(kept.then_some(s))
    }
}

impl Sessions {
    /// Store TTL of a session: its [`lifetime_left`], and with an idle timeout no longer than
    /// it plus an eighth.
    fn ttl(&self, s: &Session, now: i64) -> Duration {
        let left = lifetime_left(s, now);
        match self.idle {
            Some(idle) => left.min(idle + idle / 8),
            None => left,
        }
    }
}

/// Until the session's expiry (at least one second).
fn lifetime_left(s: &Session, now: i64) -> Duration {
    Duration::from_secs(u64::try_from(s.ends_at() - now).unwrap_or(0).max(1))
}

mod login;
mod revoke;
pub use revoke::SidLogout;

/// Whether `s`, read under `key`, was sealed for it (or before that was recorded). Another
/// key's value copied here is someone writing the store without the sealing key: said at each
/// such read (a refused value is not kept opened).
fn sealed_for(s: &Session, key: &str) -> bool {
    match s.sealed_for.as_deref() {
        Some(k) if k != key => {
            tracing::warn!(
                "a session value sealed for another store key was found: refused (someone \
                 writes the session store who cannot seal; check who can reach Redis)"
            );
            false
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests;
