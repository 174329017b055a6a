//! Refresh without races: one refresh per session at a time, on any number of replicas.
//!
//! Within a process, concurrent requests of one session wait on the same async mutex; across
//! replicas a short lock in the shared store serialises them. After taking each lock the session
//! is read again, from the store itself rather than any client-side cache (whose invalidation
//! may still be on its way), because whoever held it may have refreshed already — so with
//! rotating refresh tokens a burst of requests at expiry spends exactly one refresh token. A
//! definitive refusal (`invalid_grant`, or a refreshed ID token judged wrong) ends the session;
//! anything else does not: the session lives on until its access token has really expired.

use super::flow::Auth;
use super::oidc::{now_unix, TokenError};
use crate::session::{Session, Sessions};
use crate::store::StoreError;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long a replica may hold the cross-replica refresh lock (crash guard) at least; longer
/// with a long `idp_timeout_secs` ([`Auth::lock_ttl`]).
const LOCK_TTL_MIN: Duration = Duration::from_secs(30);
/// How often a request waiting for another replica's refresh looks again: first soon (a
/// refresh usually takes a round trip to the IdP), then less often, so that requests waiting
/// on a slow IdP do not poll the store forty times a second each.
const LOCK_POLL_FIRST: Duration = Duration::from_millis(25);
const LOCK_POLL_MAX: Duration = Duration::from_millis(250);

/// How long a refresh's result waits at most between two tries to write it
/// ([`kept_through_store_errors`]).
const WRITE_RETRY_MAX: Duration = Duration::from_secs(2);

/// Per-process single flight: one async mutex per session being refreshed.
#[derive(Default)]
pub struct InFlight {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// Sessions whose last refresh failed or came back unconfirmed, and when (unix seconds):
    /// not refreshed again before [`RETRY_AFTER_SECS`], or every request of the session (and
    /// every one queued behind the single flight) would spend a grant at the IdP while it, or
    /// its JWKS, is down.
    failed: Mutex<HashMap<String, i64>>,
}

/// How long after a failed or unconfirmed refresh the session's next one may be tried.
const RETRY_AFTER_SECS: i64 = 5;

impl InFlight {
    fn backing_off(&self, key: &str, now: i64) -> bool {
        let map = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).is_some_and(|t| now - t < RETRY_AFTER_SECS)
    }

    fn failed(&self, key: &str, now: i64) {
        let mut map = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, t| now - *t < RETRY_AFTER_SECS);
        map.insert(key.to_owned(), now);
    }

    fn succeeded(&self, key: &str) {
        let mut map = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = map.get(key).and_then(Weak::upgrade) {
            return existing;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key.to_owned(), Arc::downgrade(&lock));
        lock
    }
}

/// The outcome of a refresh attempt, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshResult {
    Ok,
    Refused,
    Failed,
}

impl RefreshResult {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RefreshResult::Ok => "ok",
            RefreshResult::Refused => "refused",
            RefreshResult::Failed => "failed",
        }
    }
}

/// Due when the access token expires within the skew — a skew of at most a quarter of the
/// token's lifetime, so a 30 s token (LemonLDAP::NG's default) is refreshed about once per
/// lifetime instead of on every request under a 60 s skew.
fn needs_refresh(s: &Session, now: i64, skew: i64) -> bool {
    let skew = if s.access_lifetime > 0 {
        skew.min(s.access_lifetime / 4)
    } else {
        skew
    };
    s.refresh_token.is_some() && s.access_expires_at - now <= skew
}

/// The access token's lifetime in seconds as the IdP gave it (`expires_in`; an hour when it
/// said nothing), at least 1 and at most a year: an IdP's `expires_in` is not bounded, and
/// `now + i64::MAX` would wrap to a token long expired (a refresh on every request, or a
/// session dead on arrival). A year outlasts any session, so the cap changes nothing real.
pub(crate) fn access_lifetime(expires_in: Option<i64>) -> i64 {
    expires_in.unwrap_or(3600).clamp(1, MAX_ACCESS_LIFETIME)
}

/// The longest access token lifetime taken from an IdP, in seconds (a leap year).
const MAX_ACCESS_LIFETIME: i64 = 366 * 86_400;

impl Auth {
    /// Returns the session to use for this request: as loaded, refreshed, or `None` when it has
    /// ended (refused refresh, or expired while the IdP is unreachable).
    pub async fn ensure_fresh(
        self: &Arc<Self>,
        id: &str,
        session: Arc<Session>,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        if !self.refresh_due(&session) {
            return Ok(Some(session));
        }
        // A task of its own, which finishes even when the request is dropped (its client left):
        // cut between the IdP's answer and the write, a rotated refresh token would be spent
        // and the new one lost, and the session would end at its next refresh. (Not past the
        // drain's deadline: the worker's runtime ends then. Also keeps its large state, IdP
        // exchange included, out of every request's future.)
        let (auth, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move { auth.refresh_session(&id, session).await })
            .await
            .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("refresh stopped: {e}"))))
    }

    /// The refresh lock's time to live: longer than a refresh can take, so that no other
    /// replica spends the same refresh token meanwhile. A refresh makes up to three IdP calls
    /// (token, a JWKS re-fetch, userinfo), each bounded by `idp_timeout_secs`, may wait for the
    /// re-fetch's slot, and makes a few store round trips.
    fn lock_ttl(&self) -> Duration {
        let wait = super::oidc::verify::JWKS_REFETCH_WAIT;
        (self.settings().idp_timeout * 3 + wait + Duration::from_secs(5)).max(LOCK_TTL_MIN)
    }

    /// Whether `session` is due for a refresh now (cheap: no I/O).
    fn refresh_due(&self, session: &Session) -> bool {
        let skew = self.settings().refresh_skew.as_secs() as i64;
        needs_refresh(session, now_unix(), skew)
    }

    async fn refresh_session(
        &self,
        id: &str,
        loaded: Arc<Session>,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        let skew = self.settings().refresh_skew.as_secs() as i64;
        let key = Sessions::key_of(id);
        let local = self.inflight.lock_for(&key);
        // Another request of the session refreshes it here: one whose access token is still
        // valid is served as it is, not queued behind a slow IdP; one expired waits.
        let _local = match local.try_lock() {
            Ok(guard) => guard,
            Err(_) if loaded.is_live_access(now_unix()) => return Ok(Some(loaded)),
            Err(_) => local.lock().await,
        };
        let Some(mut current) = self.sessions.load_fresh(id, now_unix()).await? else {
            return Ok(None);
        };
        if !needs_refresh(&current, now_unix(), skew) {
            return Ok(Some(current));
        }
        // Tried moments ago and failed: served while its access token lasts, not asked again.
        if self.inflight.backing_off(&key, now_unix()) {
            return Ok(current.is_live_access(now_unix()).then_some(current));
        }

        let lock_key = crate::store::keys::hashed("lock", &["refresh", &key]);
        let owner = crate::crypto::random_token(16);
        let waited = Instant::now();
        let mut poll = LOCK_POLL_FIRST;
        loop {
            let store = self.sessions.store();
            match store
                .put_if_absent(&lock_key, owner.as_bytes(), self.lock_ttl())
                .await
            {
                Ok(true) => break,
                // Another replica is refreshing. An access token still valid is served as it
                // is, without waiting for a slow IdP; one expired waits for the new one.
                Ok(false) if current.is_live_access(now_unix()) => return Ok(Some(current)),
                Ok(false) => {}
                Err(e) => {
                    // A write that timed out may still have been applied: not left to make
                    // every request of the session wait for the lock's whole life.
                    let _ = store.delete_if(&lock_key, owner.as_bytes()).await;
                    // Nothing was spent at the IdP: a session whose access token is still
                    // valid is served (a full Redis refuses writes, not reads), as in an IdP
                    // outage; one past it cannot be refreshed now.
                    tracing::warn!(error = %e, "cannot take the refresh lock; the session lives until its access token expires");
                    if current.is_live_access(now_unix()) {
                        return Ok(Some(current));
                    }
                    return Err(e);
                }
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(LOCK_POLL_MAX);
            let Some(reloaded) = self.sessions.load_fresh(id, now_unix()).await? else {
                return Ok(None);
            };
            if !needs_refresh(&reloaded, now_unix(), skew) {
                return Ok(Some(reloaded));
            }
            current = reloaded;
            // The holder's refresh ends within the lock's life, and a lock left by a replica
            // that died expires then and is taken here: giving up sooner would answer 401 to
            // a session that is being refreshed (an IdP taking 9 s under a 10 s timeout). Past
            // that, others keep taking the lock first: "try again", not "log in again".
            if waited.elapsed() > self.lock_ttl() + LOCK_POLL_MAX * 4 {
                return Err(StoreError::Unavailable(
                    "another replica's refresh of this session did not finish".into(),
                ));
            }
        }
        let result = self.refresh_locked(id, now_unix(), skew).await;
        // Released only if still ours: a lock that expired and was taken by another replica stays.
        let _ = self
            .sessions
            .store()
            .delete_if(&lock_key, owner.as_bytes())
            .await;
        result
    }

    async fn refresh_locked(
        &self,
        id: &str,
        now: i64,
        skew: i64,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        // Taken just before: the lock is this replica's until then, short of a margin.
        let lock_held_until = Instant::now() + self.lock_ttl().saturating_sub(LOCK_TTL_MIN / 10);
        let Some(loaded) = self.sessions.load_fresh(id, now).await? else {
            return Ok(None);
        };
        let mut s = (*loaded).clone();
        if !needs_refresh(&s, now, skew) {
            return Ok(Some(loaded));
        }
        let Some(rt) = s.refresh_token.clone() else {
            return Ok(Some(loaded));
        };
        let key = Sessions::key_of(id);
        match self.refresh_tokens(&mut s, &rt, now).await {
            Ok((renewed, confirmed)) => {
                self.metrics.refresh(RefreshResult::Ok.label());
                // The IdP's current view (or, without a new one, the profile kept since) must
                // still pass `[authz]` as it is now, reloaded rules included.
                let authz = &self.settings().authz;
                let kept;
                let profile = match &renewed {
                    Some(Renewed {
                        profile: Some(p), ..
                    }) => p,
                    _ => {
                        kept = super::profile::stored(&s, &authz.groups_claim);
                        &kept
                    }
                };
                if let Err(why) = super::authz::admits(authz, profile) {
                    self.metrics.login_refused(why.label());
                    self.metrics.sessions_revoked(1);
                    tracing::warn!(sub = %s.sub, reason = why.label(), "refreshed identity no longer passes [authz]: session ended");
                    self.sessions.end(id, &s).await?;
                    return Ok(None);
                }
                // From here, the IdP has spent the old refresh token: a write the store fails
                // is tried again while the lock holds (no other replica refreshes meanwhile).
                let until = lock_held_until;
                let joined = || self.sessions.join_sid(id, &s, now);
                if s.sid != loaded.sid && kept_through_store_errors(until, joined).await? {
                    self.metrics.sessions_revoked(1);
                    tracing::info!(sub = %s.sub, "the IdP session named at refresh was logged out meanwhile: session ended");
                    self.sessions.end(id, &s).await?;
                    return Ok(None);
                }
                // What the refresh changed, onto the session as it stands now: the identity
                // bridge may have given it another backend token meanwhile. (Logged out while
                // the IdP answered: stay logged out.)
                let refreshed = |cur: &mut Session| {
                    let (token, user) = (cur.backend_token.take(), cur.backend_user_id);
                    *cur = s.clone();
                    cur.backend_token = token;
                    cur.backend_user_id = user;
                };
                let write = || self.sessions.amend(id, now, &refreshed);
                let Some(s) = kept_through_store_errors(until, write).await? else {
                    return Ok(None);
                };
                if s.refresh_token.as_ref() != Some(&rt) {
                    self.sessions.after_rotation().await;
                }
                if loaded.sid.is_none() && s.sid.is_some() {
                    self.sessions.leave_sidless(id, &s).await;
                }
                tracing::info!(sub = %s.sub, "access token refreshed");
                let claims = renewed.as_ref().and_then(|r| r.claims.as_ref());
                if !self
                    .identity
                    .on_refresh(&s.sub, s.backend_user_id, claims)
                    .await
                {
                    self.metrics.sessions_revoked(1);
                    tracing::warn!(sub = %s.sub, "the backend no longer links this user's account to it: session ended");
                    self.sessions.end(id, &s).await?;
                    return Ok(None);
                }
                // A refresh whose ID token could not be judged leaves the access valid no
                // longer than it was (`refresh_tokens`): past that, not served until one can,
                // and not asked again at once.
                if confirmed {
                    self.inflight.succeeded(&key);
                } else {
                    self.inflight.failed(&key, now_unix());
                }
                if !s.is_live_access(now_unix()) {
                    return Ok(None);
                }
                Ok(Some(Arc::new(s)))
            }
            Err(e) if is_definitive(&e) => {
                // The refusal is about the refresh token sent. Should the lock have expired
                // while this replica waited on the IdP or the store, another may have refreshed
                // meanwhile: the session then holds a newer token, and ending it would log out
                // a user whose refresh succeeded.
                match self.sessions.load_fresh(id, now_unix()).await? {
                    Some(cur) if cur.refresh_token.as_ref() != Some(&rt) => {
                        tracing::info!(sub = %s.sub, "refresh refused, but another replica refreshed the session meanwhile: kept");
                        return Ok(cur.is_live_access(now_unix()).then_some(cur));
                    }
                    Some(_) => {}
                    None => return Ok(None),
                }
                self.metrics.refresh(RefreshResult::Refused.label());
                self.metrics.sessions_revoked(1);
                tracing::info!(sub = %s.sub, error = %e, "refresh refused by the IdP: session ended");
                self.sessions.end(id, &s).await?;
                Ok(None)
            }
            Err(e) => {
                self.metrics.refresh(RefreshResult::Failed.label());
                tracing::warn!(sub = %s.sub, error = %e, "refresh failed; the session lives until its access token expires");
                self.inflight.failed(&key, now_unix());
                Ok(s.is_live_access(now_unix()).then(|| Arc::new(s)))
            }
        }
    }

    /// Spends the refresh token; with a new ID token, the session's profile follows it (or
    /// userinfo, per `OIDC_CLAIM_SOURCE`) and its verified claims are returned, with whether
    /// the refresh is confirmed (false: its ID token could not be judged yet).
    ///
    /// Once the IdP has answered, its refresh token is the only one that works (a rotating IdP
    /// has spent the old one, and one that detects reuse revokes the grant when it comes back):
    /// so an ID token that cannot be judged *now* (a key the JWKS does not have yet, the JWKS
    /// unreachable) does not lose the new tokens. They are kept, with the profile as it was,
    /// but the session's access counts as valid no longer than before the refresh: its profile
    /// was not confirmed, so it is served until then (as in an IdP outage), and refreshed again
    /// from then on until an ID token can be judged (a user removed from a group loses access
    /// within one access-token lifetime, JWKS or not). One judged wrong still fails.
    async fn refresh_tokens(
        &self,
        s: &mut Session,
        rt: &str,
        now: i64,
    ) -> Result<(Option<Renewed>, bool), TokenError> {
        let tokens = self.provider.refresh(rt).await?;
        let mut renewed = None;
        let mut unconfirmed = false;
        let verified = match &tokens.id_token {
            None => None,
            Some(id_token) => match self
                .provider
                .validate_id_token(id_token, None, Some(&tokens.access_token))
                .await
            {
                Ok(claims) => Some((id_token, claims)),
                Err(e) if !is_definitive(&e) => {
                    tracing::warn!(sub = %s.sub, error = %e, "the refreshed ID token cannot be verified now: the new tokens are kept, the profile is not updated, and the session is served only until its access token was due to expire");
                    unconfirmed = true;
                    None
                }
                Err(e) => return Err(e),
            },
        };
        if let Some((id_token, claims)) = verified {
            if claims.get("sub").and_then(Value::as_str) != Some(s.sub.as_str()) {
                return Err(TokenError::Claims(
                    "refreshed ID token names another subject".into(),
                ));
            }
            s.id_token = id_token.clone();
            // An IdP may name another session of its own at refresh: its back-channel logout
            // will name that one (`Sessions::join_sid`). Without a `sid`, the old one holds.
            if let Some(sid) = claims.get("sid").and_then(Value::as_str) {
                s.sid = Some(sid.to_owned());
            }
            let profile = match super::profile::read(
                &self.provider,
                &s.sub,
                &claims,
                &tokens.access_token,
                true,
            )
            .await
            {
                Ok(p) => {
                    super::profile::apply(s, &p, &self.settings().authz.groups_claim);
                    Some(p)
                }
                // Userinfo, the profile's source, answering for someone else with this
                // session's new access token: as an ID token naming another subject, the
                // session ends. (With `id_token`, userinfo only completes it, and is ignored.)
                Err(super::profile::ProfileError::OtherSubject)
                    if self.provider.settings.claim_source
                        == crate::config::ClaimSource::Userinfo =>
                {
                    return Err(TokenError::Claims(
                        "userinfo names another subject at refresh".into(),
                    ))
                }
                Err(e) => {
                    tracing::warn!(sub = %s.sub, error = %e, "profile not updated at refresh");
                    // What the new ID token says (its groups) still counts, over the profile
                    // kept since the login for what it does not say: `[authz]` judges it, and
                    // the session's groups (path rules, headers) follow it.
                    let groups_claim = &self.settings().authz.groups_claim;
                    let judged = super::profile::judged_without_userinfo(
                        self.provider.settings.claim_source,
                        &claims,
                        s,
                        groups_claim,
                    );
                    if let Some(p) = &judged {
                        super::profile::apply(s, p, groups_claim);
                    }
                    judged
                }
            };
            renewed = Some(Renewed {
                claims: Some(claims),
                profile,
            });
        } else if tokens.id_token.is_none() {
            // No new ID token (OIDC Core §12.2 allows it): with `OIDC_CLAIM_SOURCE=userinfo`
            // the profile is userinfo's, and the new access token reads it, so a user removed
            // from a group at the IdP loses access at this refresh, not at the session's end.
            match super::profile::reread(&self.provider, &s.sub, &tokens.access_token).await {
                Some(Ok(p)) => {
                    super::profile::apply(s, &p, &self.settings().authz.groups_claim);
                    renewed = Some(Renewed {
                        claims: None,
                        profile: Some(p),
                    });
                }
                Some(Err(super::profile::ProfileError::OtherSubject)) => {
                    return Err(TokenError::Claims(
                        "userinfo names another subject at refresh".into(),
                    ))
                }
                Some(Err(e)) => {
                    tracing::warn!(sub = %s.sub, error = %e, "profile not updated at refresh")
                }
                None => {}
            }
        }
        s.access_token = tokens.access_token;
        let lifetime = access_lifetime(tokens.expires_in);
        let until = now.saturating_add(lifetime);
        if unconfirmed {
            // Nor a longer lifetime, which would widen the refresh skew with it.
            s.access_expires_at = s.access_expires_at.min(until);
        } else {
            s.access_lifetime = lifetime;
            s.access_expires_at = until;
        }
        if let Some(new_rt) = tokens.refresh_token {
            s.refresh_token = Some(new_rt);
        }
        Ok((renewed, !unconfirmed))
    }
}

/// What a refresh learnt of the user: the new ID token's verified claims (`None` without
/// one, its profile then read from userinfo), and the profile `[authz]` judges (`None` when
/// userinfo could not be read: the one kept since the login is judged).
struct Renewed {
    claims: Option<serde_json::Map<String, Value>>,
    profile: Option<serde_json::Map<String, Value>>,
}

/// `invalid_grant` (the refresh token is spent, expired or revoked) and a refreshed ID token
/// judged wrong are the IdP's final word on the session. Anything else may pass, and ending
/// every session that refreshes meanwhile would log everyone out: a 403, 404 or 405 page from
/// an ingress or a WAF in front of the IdP during its deploy, `invalid_client` while the
/// client secret is being rotated. Those sessions live until their access token expires, as
/// in an outage, and are refreshed again later.
fn is_definitive(e: &TokenError) -> bool {
    match e {
        // A key the JWKS does not (yet) have, or a token without `kid` that several of its
        // keys could have signed, is the IdP rotating keys, not a refusal.
        TokenError::Jwt(
            crate::auth::jwt::JwtError::UnknownKey(_) | crate::auth::jwt::JwtError::AmbiguousKey,
        ) => false,
        TokenError::GrantRefused(_) | TokenError::MissingSub => true,
        TokenError::Claims(_) | TokenError::Jwt(_) => true,
        _ => false,
    }
}

/// `write` until it succeeds, or until `until` (the refresh lock's end) is too close for
/// another try. For the writes that keep a refresh's result: the IdP has spent the old refresh
/// token, so a store blip (a failover, a restart, a full Redis) that lost the new one would
/// leave the spent one stored, and the session's next refresh would end it (`invalid_grant`).
/// The request that refreshes waits meanwhile, as it would for a slow IdP.
///
/// A try is not cut at `until`: one that lands after the lock expired is still better than
/// none (lost, the new tokens log the user out for certain at the next refresh), and a replica
/// that took the expired lock and had its spent token refused re-reads the session and keeps
/// it when the token has changed meanwhile (`refresh_locked`).
async fn kept_through_store_errors<T, F, Fut>(until: Instant, mut write: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut pause = Duration::from_millis(100);
    loop {
        match write().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() + pause < until => {
                tracing::warn!(error = %e, "a refreshed session could not be stored: tried again while its refresh lock holds");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(WRITE_RETRY_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::idp_http::IdpHttpError;

    #[test]
    fn refusals_end_sessions_outages_do_not() {
        let status = |s: u16| {
            TokenError::Http(IdpHttpError::Status {
                service: "the IdP",
                status: http::StatusCode::from_u16(s).unwrap(),
                body: bytes::Bytes::new(),
            })
        };
        assert!(is_definitive(&TokenError::GrantRefused(
            "invalid_grant".into()
        )));
        // Not about this grant: the client's configuration, or a page from something in front
        // of the IdP.
        assert!(!is_definitive(&TokenError::Refused(
            "invalid_client".into()
        )));
        for s in [403, 404, 405, 408, 429] {
            assert!(!is_definitive(&status(s)), "{s}");
        }
        assert!(!is_definitive(&TokenError::Response(
            "400 with an HTML body".into()
        )));
        assert!(!is_definitive(&status(500)));
        assert!(!is_definitive(&status(503)));
        // The IdP rotating keys: judged again later, not taken for a forgery.
        use crate::auth::jwt::JwtError;
        assert!(!is_definitive(&TokenError::Jwt(JwtError::AmbiguousKey)));
        assert!(!is_definitive(&TokenError::Jwt(JwtError::UnknownKey(None))));
        assert!(is_definitive(&TokenError::Jwt(JwtError::BadSignature)));
        assert!(!is_definitive(&TokenError::Http(IdpHttpError::Transport {
            service: "the IdP",
            source: "refused".into(),
        })));
        assert!(!is_definitive(&TokenError::Http(IdpHttpError::Timeout {
            service: "the IdP",
            timeout: Duration::from_secs(1),
        })));
    }

    #[test]
    fn in_flight_locks_are_shared_per_session() {
        let f = InFlight::default();
        let a = f.lock_for("s1");
        let b = f.lock_for("s1");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &f.lock_for("s2")));
        drop((a, b));
        let _c = f.lock_for("s3");
        assert!(
            f.locks.lock().unwrap().len() <= 2,
            "dead entries are pruned"
        );
    }

    /// A 30 s token under the default 60 s skew: requests every second for two minutes.
    /// Refreshed about once per lifetime, never on every request, and never past expiry.
    #[test]
    fn a_short_token_is_refreshed_about_once_per_lifetime() {
        let mut s = crate::session::Session {
            expires_at: 10_000,
            ..crate::session::Session::for_tests("s", 0, access_lifetime(Some(30)))
        };
        let mut refreshes = 0;
        for now in 0..120 {
            assert!(
                now < s.access_expires_at,
                "a token forwarded at {now} past its expiry"
            );
            if needs_refresh(&s, now, 60) {
                refreshes += 1;
                s.access_expires_at = now + s.access_lifetime;
            }
        }
        assert!(
            (4..=6).contains(&refreshes),
            "{refreshes} refreshes in 120 s of a 30 s token"
        );
        // A session from before the lifetime was recorded keeps the configured skew.
        s.access_lifetime = 0;
        assert!(needs_refresh(&s, s.access_expires_at - 60, 60));
    }
}
