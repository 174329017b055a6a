//! The backend's users as the bridge knows them: `sub` → backend user (from the last
//! `GET /users/`, confirmed one user at a time), and the emails taken. OpenRag's users API has
//! no search, so finding a user the bridge does not know means listing every user — a long list
//! in a large organisation, and at a roll-out a burst of first logins at once. Listings are
//! made one at a time, and a login that waited for one uses it when it began after the login
//! asked (its outcome, failure included), instead of fetching the same list again.
//!
//! Knows the admin API's users calls only; not tokens, not the vault, not HTTP requests.

use super::admin::{AdminClient, AdminError, BackendUser};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use tokio::time::Instant;

#[derive(Default)]
pub(super) struct Directory {
    users: Mutex<HashMap<String, BackendUser>>,
    emails: Mutex<HashSet<String>>,
    /// Held while a listing runs; the last one's outcome.
    listing: tokio::sync::Mutex<Option<Listing>>,
    /// Keys the hashes of the linked `sub`s a listing keeps.
    subs_key: RandomState,
}

/// What the last listing found, for the logins that waited for it: the map of users may
/// change after it (a login forgets a link it found moved), its answer must not.
struct Listing {
    began: Instant,
    /// Keyed hashes of the `sub`s it found linked, or why it failed.
    found: Result<HashSet<u64>, String>,
}

impl Directory {
    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<String, BackendUser>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user remembered for `sub`, unconfirmed.
    pub(super) fn cached(&self, sub: &str) -> Option<BackendUser> {
        self.users().get(sub).cloned()
    }

    pub(super) fn remember(&self, sub: &str, user: BackendUser) {
        self.users().insert(sub.to_owned(), user);
    }

    pub(super) fn forget(&self, sub: &str) {
        self.users().remove(sub);
    }

    /// Changes the remembered user of `sub`, if there is one.
    pub(super) fn amend(&self, sub: &str, change: impl FnOnce(&mut BackendUser)) {
        if let Some(u) = self.users().get_mut(sub) {
            change(u);
        }
    }

    /// Whether another account already has `email`, as far as the last list tells.
    pub(super) fn email_taken(&self, email: &str) -> bool {
        self.emails
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&email.trim().to_ascii_lowercase())
    }

    /// The backend user linked to `sub`. A remembered link is confirmed with `GET /users/{id}`
    /// (one user, at a login): an administrator may have deleted that user or moved the link
    /// to another one since, and the login must not land in the old account (nor through its
    /// token: the vault hands a token only to its own account, `vault.rs`).
    pub(super) async fn find(
        &self,
        admin: &AdminClient,
        sub: &str,
    ) -> Result<Option<BackendUser>, AdminError> {
        if let Some(u) = self.confirmed(admin, sub).await {
            return Ok(Some(u));
        }
        // From here on, only a listing that begins now tells where `sub` is.
        let asked = Instant::now();
        let mut last = self.listing.lock().await;
        if let Some(l) = last.as_ref().filter(|l| l.began >= asked) {
            // A listing that began after this login asked has just answered for it.
            match &l.found {
                Err(e) => return Err(AdminError::Earlier(e.clone())),
                Ok(subs) if !subs.contains(&self.subs_key.hash_one(sub)) => return Ok(None),
                Ok(_) => {
                    if let Some(u) = self.confirmed(admin, sub).await {
                        return Ok(Some(u));
                    }
                }
            }
        }
        let began = Instant::now();
        let (answer, found) = match self.list_for(admin, sub).await {
            Ok((user, subs)) => (Ok(user), Ok(subs)),
            Err(e) => {
                let text = e.to_string();
                (Err(e), Err(text))
            }
        };
        *last = Some(Listing { began, found });
        answer
    }

    /// The remembered user of `sub`, if the backend still links it to `sub`. A link the
    /// backend says has moved (or whose user is gone) is forgotten; one it could not check is
    /// kept, the caller lists the users anyway.
    async fn confirmed(&self, admin: &AdminClient, sub: &str) -> Option<BackendUser> {
        let u = self.cached(sub)?;
        let moved = match admin.get_user(u.id).await {
            Ok(now) if now.external_user_id.as_deref() == Some(sub) => {
                self.remember(sub, now.clone());
                return Some(now);
            }
            Ok(_) | Err(AdminError::Status { .. }) => true,
            Err(_) => false,
        };
        tracing::info!(
            sub,
            user_id = u.id,
            moved,
            "the remembered backend user could not be confirmed: users listed again"
        );
        if moved {
            // Only the link this login saw: a fresher one may have replaced it meanwhile.
            let mut users = self.users();
            if users.get(sub).is_some_and(|now| now.id == u.id) {
                users.remove(sub);
            }
        }
        None
    }

    /// Lists the backend's users again (links and emails); returns the one linked to `sub`,
    /// and the keyed hashes of every linked `sub`.
    async fn list_for(
        &self,
        admin: &AdminClient,
        sub: &str,
    ) -> Result<(Option<BackendUser>, HashSet<u64>), AdminError> {
        let all = admin.list_users().await?;
        *self.emails.lock().unwrap_or_else(|p| p.into_inner()) = all
            .iter()
            .filter_map(|u| u.email.as_deref())
            .map(|e| e.trim().to_ascii_lowercase())
            .collect();
        let mut map = self.users();
        map.clear();
        for u in all {
            if let Some(ext) = u.external_user_id.clone().filter(|e| !e.trim().is_empty()) {
                map.insert(ext, u);
            }
        }
        let subs = map.keys().map(|s| self.subs_key.hash_one(s)).collect();
        Ok((map.get(sub).cloned(), subs))
    }
}
