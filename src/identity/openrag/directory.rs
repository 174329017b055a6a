//! The backend's users as the bridge knows them: `sub` → backend user (from the last
//! `GET /users/`, confirmed one user at a time), and the emails taken. OpenRag's users API has
//! no search, so finding a user the bridge does not know means listing every user — a long list
//! in a large organisation, and at a roll-out a burst of first logins at once. Listings are
//! made one at a time, and a login that waited for one uses it when it began after the login
//! asked, instead of fetching the same list again.
//!
//! Knows the admin API's users calls only; not tokens, not the vault, not HTTP requests.

use super::admin::{AdminClient, AdminError, BackendUser};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use tokio::time::Instant;

#[derive(Default)]
pub(super) struct Directory {
    users: Mutex<HashMap<String, BackendUser>>,
    emails: Mutex<HashSet<String>>,
    /// Held while a listing runs; when the last completed one began.
    listing: tokio::sync::Mutex<Option<Instant>>,
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
        let asked = Instant::now();
        if let Some(u) = self.confirmed(admin, sub).await {
            return Ok(Some(u));
        }
        let mut last = self.listing.lock().await;
        if last.is_some_and(|began| began >= asked) {
            // A listing that began after this login asked has just answered for it.
            return Ok(self.cached(sub));
        }
        if let Some(u) = self.confirmed(admin, sub).await {
            // Listed by another login while this one waited.
            return Ok(Some(u));
        }
        let began = Instant::now();
        let found = self.list_for(admin, sub).await?;
        *last = Some(began);
        Ok(found)
    }

    /// The remembered user of `sub`, if the backend still links it to `sub`.
    async fn confirmed(&self, admin: &AdminClient, sub: &str) -> Option<BackendUser> {
        let u = self.cached(sub)?;
        match admin.get_user(u.id).await {
            Ok(now) if now.external_user_id.as_deref() == Some(sub) => {
                self.remember(sub, now.clone());
                Some(now)
            }
            // Moved, deleted or unreadable: the whole list says where `sub` is now.
            _ => {
                tracing::info!(
                    sub,
                    user_id = u.id,
                    "the remembered backend user changed: users listed again"
                );
                self.forget(sub);
                None
            }
        }
    }

    /// Lists the backend's users again (links and emails) and returns the one linked to `sub`.
    async fn list_for(
        &self,
        admin: &AdminClient,
        sub: &str,
    ) -> Result<Option<BackendUser>, AdminError> {
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
        Ok(map.get(sub).cloned())
    }
}
