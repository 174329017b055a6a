//! Revocation: one session ended (its user's logout, a refresh refused, a login replacing
//! it), every session of an IdP session (`sid`) or of a user (`sub`), found through the
//! indexes `Sessions::create` writes (back-channel and front-channel logout), the records (an
//! ended `sid`, a user's sessions, a user's sessions without `sid`) that stop a login racing
//! its logout, and the wait for the store's replicas once a revocation is written. Deletes sessions; never reads or decrypts one.

use super::{Session, Sessions};
use crate::store::redis::settle::Settled;
use crate::store::StoreError;

/// Who asks for a revocation by `sid`, which decides what more it may do.
#[derive(Debug, Clone, Copy)]
pub enum SidLogout<'a> {
    /// A verified logout token (back-channel), naming a user or not.
    Signed { sub: Option<&'a str> },
    /// A request anyone can send (front-channel): it ends only the sessions that carry the
    /// `sid`, and writes nothing, or any client could fill the store with records.
    Unsigned,
}

/// The time a user's logout record holds, in milliseconds: written `ms<milliseconds>`; a
/// record of an earlier version holds whole seconds, read as the start of its second (what it
/// meant then). Earlier versions cannot read the new form and take it for no record: while
/// both run, the race of `ended_meanwhile` stays open on their side only.
fn ended_at(record: &[u8]) -> Option<i64> {
    let record = std::str::from_utf8(record).ok()?;
    match record.strip_prefix("ms") {
        Some(ms) => ms.parse().ok(),
        None => record.parse::<i64>().ok()?.checked_mul(1000),
    }
}

/// How `record_ended` writes a time (milliseconds).
fn record_value(ms: i64) -> String {
    format!("ms{ms}")
}

/// Reads and compare-and-set writes of a user's logout record before giving up (each retry
/// means another logout of the same user wrote it meanwhile).
const RECORD_TRIES: usize = 8;

impl Sessions {
    /// The record that an IdP session was ended by a logout.
    pub(super) fn ended_sid(iss: &str, sid: &str) -> String {
        crate::store::keys::hashed("sid-ended", &["sid-ended", iss, sid])
    }

    /// The record that every session of a user was ended by a logout, holding when.
    pub(super) fn ended_sub(iss: &str, sub: &str) -> String {
        crate::store::keys::hashed("sub-ended", &["sub-ended", iss, sub])
    }

    /// The record that a user's sessions made without a `sid` were ended by a logout naming a
    /// `sid` no session has (`revoke_sid`'s fallback), holding when.
    fn ended_sidless(iss: &str, sub: &str) -> String {
        crate::store::keys::hashed("sidless-ended", &["sidless-ended", iss, sub])
    }

    /// Whether `session`'s IdP session, or every session of its user, was ended by a logout
    /// that `create` may have missed; `begun_ms`: when its login began (milliseconds).
    ///
    /// A login completes in steps: the IdP issues a code for its session `sid`, the callback
    /// exchanges it, stores the session, then adds it to the `sid` and `sub` indexes. A logout
    /// handled in between reads an index without the new session and leaves it alive. So a
    /// logout first records the `sid` (or the `sub`) as ended, then reads the index; a login
    /// first adds to the indexes, then reads the records. Whichever order the two interleave
    /// in, either the logout finds the session or the login finds the record. A user's record
    /// (and the record of their sessions without `sid`) ends only the logins begun before the
    /// logout (milliseconds, on the replicas' clocks): the user may sign in again at once, into
    /// a new IdP session (a browser sent from the IdP's logout page straight back to a login
    /// does). Whole seconds, as earlier versions kept, could not tell that re-login from a
    /// login begun earlier in the logout's second and completing after it.
    pub(super) async fn ended_meanwhile(
        &self,
        session: &Session,
        begun_ms: i64,
    ) -> Result<bool, StoreError> {
        let (iss, sub) = (&session.iss, &session.sub);
        match &session.sid {
            Some(sid) => {
                let record = self.store.get_fresh(&Self::ended_sid(iss, sid)).await?;
                if record.is_some() {
                    return Ok(true);
                }
            }
            None => {
                let at = self.ended_at(&Self::ended_sidless(iss, sub)).await?;
                if at.is_some_and(|at| begun_ms < at) {
                    return Ok(true);
                }
            }
        }
        let at = self.ended_at(&Self::ended_sub(iss, sub)).await?;
        Ok(at.is_some_and(|at| begun_ms < at))
    }

    /// The time a logout record holds, if there is one.
    async fn ended_at(&self, record: &str) -> Result<Option<i64>, StoreError> {
        let record = self.store.get_fresh(record).await?;
        Ok(record.as_deref().and_then(ended_at))
    }

    /// Removes every session of an IdP session (`sid`); returns how many existed. A signed
    /// logout also records the `sid` as ended, and when no session was ever made with that
    /// `sid` (its index is empty) and it names a `sub`, removes that user's sessions made
    /// without a `sid` instead: an IdP whose ID tokens carry none may still name one in its
    /// logout tokens, and one of them may be the session it ended (their record is written
    /// first, for such a login completing meanwhile). A `sid` whose sessions already ended
    /// elsewhere leaves them alone.
    pub async fn revoke_sid(
        &self,
        iss: &str,
        sid: &str,
        by: SidLogout<'_>,
    ) -> Result<usize, StoreError> {
        // Before the index is read (`ended_meanwhile` says why). Kept as long as a login may
        // take: the IdP issues no new code for an ended session, so only logins begun before
        // the logout can race it. Its failure does not stop the revocation (in a Redis Cluster
        // the record may live on another shard than the sessions), but is reported after it,
        // so that the IdP may send the logout again.
        let mut recorded = match by {
            SidLogout::Signed { .. } => {
                let ended = Self::ended_sid(iss, sid);
                self.store.put(&ended, b"1", self.login_window).await
            }
            SidLogout::Unsigned => Ok(()),
        };
        let index = Self::sid_index(iss, sid);
        let members = self.store.index_members(&index).await?;
        let revoked = match by {
            SidLogout::Signed { sub: Some(sub) } if members.is_empty() => {
                // As with the `sid`: the record first, then the index, for a login made
                // without a `sid` that is completing meanwhile (`ended_meanwhile`).
                let now = crate::clock::now_unix_ms();
                let record = Self::ended_sidless(iss, sub);
                recorded = recorded.and(self.record_ended(&record, now).await);
                self.revoke_index(&Self::sidless_index(iss, sub)).await
            }
            // The members stay in the sid's index (until its TTL) as a record that the sid was
            // known: a repeated logout for it must not fall back to the sid-less sessions.
            _ => self.revoke_members(&index, members, false).await,
        };
        let signed = matches!(by, SidLogout::Signed { .. });
        self.settled(revoked, recorded, signed).await
    }

    /// Removes every session of a user (`sub`) from an issuer; returns how many existed. A
    /// signed logout (`ended_at`: its time, in milliseconds) also records the user's sessions as ended then, for
    /// the logins begun by then that are completing meanwhile (`ended_meanwhile`); as with a
    /// `sid`, a record that cannot be written stops nothing but is reported after the
    /// revocation.
    pub async fn revoke_sub(
        &self,
        iss: &str,
        sub: &str,
        ended_at: Option<i64>,
    ) -> Result<usize, StoreError> {
        let recorded = match ended_at {
            Some(t) => self.record_ended(&Self::ended_sub(iss, sub), t).await,
            None => Ok(()),
        };
        let revoked = self.revoke_index(&Self::sub_index(iss, sub)).await;
        self.settled(revoked, recorded, ended_at.is_some()).await
    }

    /// A revocation's outcome once it is on the replicas: waited for when it deleted something
    /// (also when a member failed: the others were deleted) or `wrote` a record; its count, or
    /// the first failure of the deletions, then of the record.
    async fn settled(
        &self,
        revoked: Result<usize, StoreError>,
        recorded: Result<(), StoreError>,
        wrote: bool,
    ) -> Result<usize, StoreError> {
        if wrote || !revoked.as_ref().is_ok_and(|n| *n == 0) {
            self.settle().await;
        }
        let revoked = revoked?;
        recorded.map(|()| revoked)
    }

    /// Writes `record` (a user's sessions, or their sessions without `sid`, ended at `t`, milliseconds),
    /// unless a logout handled before this one recorded a later time: logouts may be handled
    /// out of order, and the time must not go back (a login racing the later logout would then
    /// keep its session). Compare-and-set, so that two logouts handled at once on two replicas
    /// cannot leave the earlier time.
    async fn record_ended(&self, record: &str, t: i64) -> Result<(), StoreError> {
        let value = record_value(t);
        for _ in 0..RECORD_TRIES {
            let written = match self.store.get_fresh(record).await? {
                None => {
                    self.store
                        .put_if_absent(record, value.as_bytes(), self.login_window)
                        .await?
                }
                Some(cur) => {
                    if ended_at(&cur).is_some_and(|at| at >= t) {
                        return Ok(());
                    }
                    self.store
                        .replace_if(record, &cur, value.as_bytes(), self.login_window)
                        .await?
                }
            };
            if written {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(
            "the record of a logout kept changing".into(),
        ))
    }

    async fn revoke_index(&self, index: &str) -> Result<usize, StoreError> {
        let members = self.store.index_members(index).await?;
        self.revoke_members(index, members, true).await
    }

    /// Deletes the sessions `members` of `index`; `unindex`: removes them from it too. A member
    /// the store fails on does not stop the others (an IdP may not send the logout again): the
    /// first failure is reported once every member was tried.
    async fn revoke_members(
        &self,
        index: &str,
        members: Vec<String>,
        unindex: bool,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        let mut failed = None;
        for member in members {
            match self.store.delete(&member).await {
                Ok(existed) => n += usize::from(existed),
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            }
            if unindex {
                if let Err(e) = self.store.index_remove(index, &member).await {
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }
}

impl Sessions {
    /// Removes the session with this cookie id.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let existed = self.store.delete(&Self::key_of(id)).await?;
        if existed {
            self.settle().await;
        }
        Ok(existed)
    }

    /// Deletes the session `id`, whose content is `session`, and takes it out of its user's
    /// logout indexes (`sub`, and sid-less), so that a user who signs in and out all day leaves
    /// nothing for a back-channel logout to walk. The `sid` index keeps it: that index lasts
    /// one IdP session, and a member left there is the record that the `sid` was known (a
    /// later logout naming it must not fall back to the user's sid-less sessions). Whether the
    /// session existed; taking it out of an index is best effort (a member left behind is
    /// dropped when its time is over).
    pub async fn end(&self, id: &str, session: &Session) -> Result<bool, StoreError> {
        let member = Self::key_of(id);
        let existed = self.store.delete(&member).await?;
        let mut indexes = vec![Self::sub_index(&session.iss, &session.sub)];
        if session.sid.is_none() {
            indexes.push(Self::sidless_index(&session.iss, &session.sub));
        }
        for index in indexes {
            if let Err(e) = self.store.index_remove(&index, &member).await {
                tracing::debug!(error = %e, "an ended session stays in a logout index");
            }
        }
        if existed {
            self.settle().await;
        }
        Ok(existed)
    }

    /// After a refresh that rotated the refresh token: the old one is spent at the IdP, and a
    /// failover that promoted a replica without the new one would bring it back, so the
    /// session's next refresh would be refused (`invalid_grant`) and the user logged out. So
    /// it waits for the replicas as a revocation does (`redis_logout_replicas`).
    pub async fn after_rotation(&self) {
        if let Settled::Short { acked } = self.store.after_revocation().await {
            tracing::warn!(
                acked,
                "a refreshed session was answered before the Redis replicas acknowledged it: a \
                 failover now may bring back its spent refresh token, ending it at its next refresh"
            );
        }
    }

    /// After a revocation: waits for the store's replicas to have it, so that a failover
    /// after the answer does not bring the sessions back (`redis_logout_replicas`).
    async fn settle(&self) {
        if let Settled::Short { acked } = self.store.after_revocation().await {
            tracing::warn!(
                acked,
                "a logout was answered before the Redis replicas acknowledged it: a failover now \
                 may bring its sessions back"
            );
        }
    }
}
