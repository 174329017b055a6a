//! The writes a login makes: the session under a new id, its logout indexes (first, so that a
//! Redis failover losing the last writes loses the session, never only its index entries), the
//! check for a logout that raced it (`revoke`'s records), and the user's oldest sessions ended
//! beyond `max_sessions_per_user`. No HTTP here.

use super::{lifetime_left, new_session_id, Session, Sessions};
use crate::store::StoreError;

impl Sessions {
    /// Stores `session` under a new random id and returns the id for the cookie; `None` when
    /// its IdP session, or every session of its user, was ended by a back-channel logout while
    /// the login (begun at `begun_ms`, milliseconds) completed (the session is deleted again;
    /// its index entries stay, pointing at nothing, until their TTL).
    pub async fn create(
        &self,
        session: &Session,
        now: i64,
        begun_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let id = new_session_id();
        // The indexes first, then the session: Redis replicates writes in order, so a failover
        // that loses the last of them loses the session too, never only its index entries (a
        // session no index names would outlive every logout). An entry naming nothing is
        // harmless, and dropped when its time is over.
        // The indexes live as long as the session may: requests push back the session's idle
        // deadline, not theirs, and a logout must still find a session in steady use.
        let ttl = lifetime_left(session, now);
        let member = Self::key_of(&id);
        let by_idp_session = match &session.sid {
            Some(sid) => Self::sid_index(&session.iss, sid),
            None => Self::sidless_index(&session.iss, &session.sub),
        };
        self.store.index_add(&by_idp_session, &member, ttl).await?;
        self.store
            .index_add(&Self::sub_index(&session.iss, &session.sub), &member, ttl)
            .await?;
        self.save(&id, session, now).await?;
        if self.ended_meanwhile(session, begun_ms).await? {
            self.store.delete(&member).await?;
            return Ok(None);
        }
        if let Some(keep) = self.max_per_user {
            self.end_oldest(session, &member, keep).await;
        }
        Ok(Some(id))
    }

    /// Before a refresh whose ID token names another IdP session (`sid`) than the session held
    /// is stored: the IdP's back-channel logout will name the new one, so the session joins
    /// that `sid`'s index (and stays in the old one's: a logout of either ends it). As at login
    /// (`create`), the index before the session that names it, so that no failure between
    /// the two leaves a session with a `sid` no index holds; and the index before the record:
    /// a logout of the new `sid` handled meanwhile either finds the session there or is found
    /// here. `true`: that logout happened, and the session must end.
    pub async fn join_sid(
        &self,
        id: &str,
        session: &Session,
        now: i64,
    ) -> Result<bool, StoreError> {
        let Some(sid) = &session.sid else {
            return Ok(false);
        };
        let member = Self::key_of(id);
        let ttl = lifetime_left(session, now);
        self.store
            .index_add(&Self::sid_index(&session.iss, sid), &member, ttl)
            .await?;
        let record = Self::ended_sid(&session.iss, sid);
        Ok(self.store.get_fresh(&record).await?.is_some())
    }

    /// After a session made without a `sid` was stored with one (`join_sid`): it leaves its
    /// user's sid-less index, which only a logout naming an unknown `sid` reads. Best effort.
    pub async fn leave_sidless(&self, id: &str, session: &Session) {
        let sidless = Self::sidless_index(&session.iss, &session.sub);
        if let Err(e) = self.store.index_remove(&sidless, &Self::key_of(id)).await {
            tracing::debug!(error = %e, "a session with a sid stays in the sid-less index");
        }
    }

    /// Ends `session`'s user's oldest live sessions beyond `keep` (never `member`, the one just
    /// made): one account signing in again and again (a script, a loop) would otherwise fill
    /// the store with live sessions, and make a logout of the user walk every one. Only live
    /// sessions count: an entry whose session is gone (idle, ended elsewhere) is dropped from
    /// the index, not counted, so a week-old session in daily use outlives fifty short ones
    /// that timed out. A session is deleted before it leaves the index, so that one whose
    /// deletion failed is still found by a logout. Reads at most [`TRIM_LOOKS`] entries per
    /// login, the oldest; best effort: the login stands if the store fails here.
    pub(super) async fn end_oldest(&self, session: &Session, member: &str, keep: usize) {
        let index = Self::sub_index(&session.iss, &session.sub);
        let members = match self.store.index_oldest_first(&index).await {
            Ok(m) if m.len() > keep => m,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not count the user's sessions");
                return;
            }
        };
        // Only the sessions that sort before this one may be ended by it: two logins of the
        // user at once must not end each other (each would see the other as over the cap).
        let older = members.iter().position(|m| m == member);
        let mut live = Vec::new();
        for (i, m) in members.iter().enumerate().take(TRIM_LOOKS) {
            if m == member {
                continue;
            }
            match self.store.get_fresh(m).await {
                Ok(Some(_)) => live.push((i, m)),
                Ok(None) => {
                    let _ = self.store.index_remove(&index, m).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not count the user's sessions");
                    return;
                }
            }
        }
        // The one just made counts too.
        let over = (live.len() + 1).saturating_sub(keep);
        // (This one gone from the index meanwhile: another login ended it; nothing to do.)
        let before_this = |i: &usize| older.is_some_and(|p| *i < p);
        let mut ended = 0;
        for (_, old) in live.into_iter().filter(|(i, _)| before_this(i)).take(over) {
            match self.store.delete(old).await {
                Ok(existed) => {
                    ended += usize::from(existed);
                    let _ = self.store.index_remove(&index, old).await;
                }
                Err(e) => tracing::warn!(error = %e, "an old session of the user stays"),
            }
        }
        if ended > 0 {
            tracing::info!(
                sub = %session.sub,
                ended,
                keep,
                "the user's oldest sessions ended: more than max_sessions_per_user"
            );
        }
    }
}

/// Index entries `end_oldest` looks at per login, the oldest first: a user who had thousands
/// of sessions before the cap loses the excess over a few logins, each bounded.
const TRIM_LOOKS: usize = 256;
