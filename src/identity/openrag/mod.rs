//! The OpenRag identity bridge (`identity = "openrag"`): an unmodified OpenRag backend trusts
//! only its own per-user tokens, so the sidecar maps the IdP `sub` to the backend user whose
//! `external_user_id == sub` and injects that user's token (docs/openrag-backend.md#users, #tokens, #admin-api).
//!
//! Owns the user lookup (`directory.rs`: list + cache, refreshed on a miss), auto-provisioning and claim sync
//! through the admin API, the token vault (`vault.rs`: each user's token Fernet-encrypted in the
//! shared store with the account it belongs to, keyed by a hash of the `sub`) and the policy for users whose token the vault lacks. It never
//! logs a token; the `sub` of a refused user is logged at WARN, as OpenRag does.

pub mod admin;
pub mod chainlit;
mod claims_sync;
mod directory;
pub mod groups;
pub mod inject;
mod provision;
pub(crate) mod request;
mod vault;

use crate::config::openrag_env::ClaimMapping;
use crate::config::{BridgeSettings, TokenPolicy};
use crate::crypto::KeyRing;
use crate::secret::Secret;
use crate::store::{Store, StoreError};
use admin::{AdminClient, AdminError, BackendUser};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("user not registered")]
    NotRegistered,
    #[error("no backend token is known for this user and the token policy is deny")]
    NoToken,
    #[error("an account with this email already exists")]
    EmailConflict,
    #[error(transparent)]
    Backend(#[from] AdminError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The backend user a login resolved to, with the token to inject.
pub struct Resolved {
    pub user_id: u64,
    pub token: Secret<String>,
}

pub struct OpenRagBridge {
    admin: AdminClient,
    store: Arc<Store>,
    keys: Arc<KeyRing>,
    settings: BridgeSettings,
    issuer: String,
    auto_provision: bool,
    claim_mapping: Vec<ClaimMapping>,
    /// `sub` → backend user, rebuilt from `GET /users/` on a miss; the emails taken.
    directory: directory::Directory,
    /// `sub` → when its token was last recovered (unix seconds): at most one per minute.
    recovered: Mutex<HashMap<String, i64>>,
    /// Groups → partition memberships, when `OIDC_CLAIM_GROUPS` is set.
    groups: Option<groups::GroupSyncer>,
    /// How the backend hands users over to Chainlit, once probed.
    handoff: std::sync::OnceLock<chainlit::Handoff>,
    /// The account `AUTH_TOKEN` belongs to, once asked ([`OpenRagBridge::admin_account`]).
    admin_account: std::sync::OnceLock<u64>,
    /// When the hand-off probe last failed (unix seconds, 0: never).
    handoff_failed: std::sync::atomic::AtomicI64,
    /// Held while the hand-off is probed: the requests that arrive meanwhile (a page's burst
    /// of Chainlit assets) wait for that probe's answer instead of each making its own.
    handoff_probe: tokio::sync::Mutex<()>,
}

/// How long an unregistered `sub` is remembered, so repeated logins of someone the backend
/// does not know do not list the whole users table each time.
const UNREGISTERED_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Seconds between two recoveries of one user's token.
const RECOVERY_INTERVAL_SECS: i64 = 60;

impl OpenRagBridge {
    pub fn new(
        admin: AdminClient,
        store: Arc<Store>,
        keys: Arc<KeyRing>,
        settings: BridgeSettings,
        issuer: String,
        auto_provision: bool,
        claim_mapping: Vec<ClaimMapping>,
    ) -> Self {
        OpenRagBridge {
            admin,
            store,
            keys,
            settings,
            issuer,
            auto_provision,
            claim_mapping,
            directory: directory::Directory::default(),
            recovered: Mutex::default(),
            groups: None,
            handoff: std::sync::OnceLock::new(),
            admin_account: std::sync::OnceLock::new(),
            handoff_failed: std::sync::atomic::AtomicI64::new(0),
            handoff_probe: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, sub: &str) -> Option<BackendUser> {
        self.directory.cached(sub)
    }

    /// Whether the backend still links its user `id` to `sub`: `Some(false)` once it names
    /// another `sub` (an administrator moved the link) or the user is gone (404); `None` when
    /// it cannot say (an outage, a refused admin token), which ends no session but confirms
    /// nothing either.
    pub async fn still_linked(&self, id: u64, sub: &str) -> Option<bool> {
        match self.admin.get_user(id).await {
            Ok(u) => Some(u.external_user_id.as_deref() == Some(sub)),
            Err(AdminError::Status { status, .. }) if status == http::StatusCode::NOT_FOUND => {
                Some(false)
            }
            Err(_) => None,
        }
    }

    /// The backend user linked to `sub` ([`directory::Directory::find`]).
    async fn find_user(&self, sub: &str) -> Result<Option<BackendUser>, BridgeError> {
        Ok(self.directory.find(&self.admin, sub).await?)
    }

    /// Whether backend user `id` is an administrator (asked of the backend, not cached: an
    /// administrator's rights can be withdrawn at any time).
    pub async fn is_admin(&self, id: u64) -> Result<bool, BridgeError> {
        Ok(self.admin.get_user(id).await?.is_admin)
    }

    /// The account `AUTH_TOKEN` belongs to, asked once. Its token must never be regenerated:
    /// every admin call of the sidecar (each login, group sync, recovery) would fail from then
    /// on, and again after every backend restart (which sets that account's token back to
    /// `AUTH_TOKEN`, reference §5.3).
    pub async fn admin_account(&self) -> Result<Option<u64>, BridgeError> {
        if let Some(id) = self.admin_account.get() {
            return Ok(Some(*id));
        }
        let id = self.admin.own_account().await?;
        if let Some(id) = id {
            let _ = self.admin_account.set(id);
        }
        Ok(id)
    }

    /// Keeps `token` as `sub`'s backend token (it was regenerated through the sidecar, by the
    /// user or an administrator); true when kept. Only while `user` is the account `sub` is
    /// linked to: a token regenerated for an account moved meanwhile (by an administrator's
    /// request that raced the move) must not land in the vault of the account's previous user.
    /// (A session of that previous user may not regenerate the account's token at all:
    /// `request::regenerate::self_or_admin`.)
    pub async fn adopt_token(
        &self,
        sub: &str,
        user: u64,
        token: &Secret<String>,
    ) -> Result<bool, BridgeError> {
        if self.find_user(sub).await?.is_some_and(|u| u.id == user) {
            self.vault_put(sub, user, token).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// With group sync on (`OIDC_CLAIM_GROUPS`).
    pub fn with_group_sync(mut self, g: Option<crate::config::access::GroupSync>) -> Self {
        self.groups = g.map(groups::GroupSyncer::new);
        self
    }

    /// Reconciles the user's partition memberships with verified ID-token `claims` (at login,
    /// and after a refresh that brought a new ID token). Never fails: problems are logged.
    pub async fn sync_groups(&self, user_id: u64, claims: &Map<String, Value>) {
        if let Some(g) = &self.groups {
            g.sync(&self.admin, user_id, claims).await;
        }
    }

    fn unregistered_key(&self, sub: &str) -> String {
        crate::store::keys::hashed("unregistered", &["unregistered", &self.issuer, sub])
    }

    /// At login: the backend user for `sub` (created when auto-provisioning is on), its token
    /// (vault, then policy), and only then its claims synced — a refused login writes nothing.
    pub async fn resolve(
        &self,
        sub: &str,
        claims: &Map<String, Value>,
    ) -> Result<Resolved, BridgeError> {
        if !self.auto_provision
            && self.cached(sub).is_none()
            && self.store.get(&self.unregistered_key(sub)).await?.is_some()
        {
            tracing::warn!(
                sub,
                "OIDC login rejected — user not registered (checked less than a minute ago)"
            );
            return Err(BridgeError::NotRegistered);
        }
        let user = match self.find_user(sub).await? {
            Some(u) => u,
            None if self.auto_provision => return self.provision(sub, claims).await,
            None => {
                tracing::warn!(sub, "OIDC login rejected — user not registered");
                self.store
                    .put(&self.unregistered_key(sub), b"1", UNREGISTERED_TTL)
                    .await?;
                return Err(BridgeError::NotRegistered);
            }
        };
        let token = self.token_for(sub, &user).await?;
        self.sync_claims(sub, &user, claims).await;
        // Writing the claims may take the admin API's time: a token another replica or a
        // regeneration vaulted for this account meanwhile is newer than the one read above
        // (which it may have made dead), and is taken instead of being written over.
        if let Some(v) = self.vault_read(sub, true).await? {
            if v.token.expose() != token.expose() && self.belongs_to(&v, user.id).await? {
                return Ok(Resolved {
                    user_id: user.id,
                    token: v.token,
                });
            }
        }
        // Keeps the vault entry alive while the user logs in (and records its owner).
        self.vault_put(sub, user.id, &token).await?;
        Ok(Resolved {
            user_id: user.id,
            token,
        })
    }

    /// Whether `sub`'s token was recovered less than a minute ago.
    fn recovered_lately(&self, sub: &str, now: i64) -> bool {
        let last = self.recovered.lock().unwrap_or_else(|p| p.into_inner());
        last.get(sub)
            .is_some_and(|t| now - t < RECOVERY_INTERVAL_SECS)
    }

    /// After a response that looks like the backend refusing `stale`: a newer vault token
    /// (another replica's), else — once a probe has confirmed that the backend refuses it, and
    /// at most once a minute per user — the policy's answer. `None`: the token still works (the
    /// response was some route's own answer) or cannot be judged now; nothing was changed.
    /// Called at most once per request by the router, so it cannot loop.
    pub async fn recover(
        &self,
        sub: &str,
        user: Option<u64>,
        stale: &str,
    ) -> Result<Option<Resolved>, BridgeError> {
        // Read from Redis itself: this is exactly "what did another replica just write". Taken
        // only when it is the same account's (`user`, the session's): an entry of another
        // account (the link moved) is left to the full resolution below.
        if let (Some(v), Some(user)) = (self.vault_read(sub, true).await?, user) {
            if v.token.expose() != stale && self.belongs_to(&v, user).await? {
                return Ok(Some(Resolved {
                    user_id: user,
                    token: v.token,
                }));
            }
        }
        // Within a minute of the last recovery, not even asked: each probe of a dead token is a
        // failed authentication the backend charges to the sidecar's address (its own budget,
        // which its admin calls share), and a session holding one sends a request at a time.
        let now = crate::clock::now_unix();
        if self.recovered_lately(sub, now) {
            tracing::warn!(
                sub,
                "the backend refuses the user's token again within a minute; not recovering"
            );
            return Ok(None);
        }
        // A route may answer 403 "Invalid token" for its own reasons (a provider it calls):
        // only the backend's verdict on the token itself counts.
        match self.admin.token_works(stale).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(
                    sub,
                    "a route refused the request, but the backend accepts the user's token: kept"
                );
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(sub, error = %e, "cannot confirm a token refusal; the token is kept");
                return Ok(None);
            }
        }
        {
            let mut last = self.recovered.lock().unwrap_or_else(|p| p.into_inner());
            if last
                .get(sub)
                .is_some_and(|t| now - t < RECOVERY_INTERVAL_SECS)
            {
                tracing::warn!(
                    sub,
                    "the backend refuses the user's token again within a minute; not recovering"
                );
                return Ok(None);
            }
            last.retain(|_, t| now - *t < RECOVERY_INTERVAL_SECS);
            last.insert(sub.to_owned(), now);
        }
        self.vault_forget(sub, stale).await?;
        self.directory.forget(sub);
        let user = self
            .find_user(sub)
            .await?
            .ok_or(BridgeError::NotRegistered)?;
        // The account the link names now: its token from the vault if a login stored one (the
        // link moved: not regenerated again), else the policy's.
        let token = self.token_for(sub, &user).await?;
        if token.expose() == stale {
            // The policy can only offer the token the backend just refused.
            tracing::warn!(
                sub,
                user_id = user.id,
                "the backend refuses the only token the policy knows"
            );
            return Err(BridgeError::NoToken);
        }
        tracing::info!(
            sub,
            user_id = user.id,
            "backend token recovered after a refusal"
        );
        Ok(Some(Resolved {
            user_id: user.id,
            token,
        }))
    }

    pub(super) async fn token_by_policy(
        &self,
        sub: &str,
        user: &BackendUser,
    ) -> Result<Secret<String>, BridgeError> {
        match &self.settings.policy {
            TokenPolicy::Deny => {
                tracing::warn!(
                    sub,
                    user_id = user.id,
                    "no backend token in the vault and token_policy = deny"
                );
                Err(BridgeError::NoToken)
            }
            // The administrator's account (an operator linked to it): its token is AUTH_TOKEN.
            TokenPolicy::Regenerate if self.admin_account().await? == Some(user.id) => {
                Ok(self.admin.own_token())
            }
            TokenPolicy::Regenerate => {
                tracing::info!(
                    sub,
                    user_id = user.id,
                    "regenerating the user's backend token (token_policy = regenerate)"
                );
                Ok(self.admin.regenerate_token(user.id).await?)
            }
            TokenPolicy::File(map) => {
                let Some(token) = map.get(sub) else {
                    tracing::warn!(
                        sub,
                        user_id = user.id,
                        "the token file has no token for this user"
                    );
                    return Err(BridgeError::NoToken);
                };
                // The file was written once; links move since (an account given to someone
                // else), and files have typos: its token must be the linked account's own.
                match self.admin.token_owner(token.expose()).await? {
                    Some(owner) if owner == user.id => Ok(token.clone()),
                    owner => {
                        tracing::warn!(
                            sub,
                            user_id = user.id,
                            token_owner = ?owner,
                            "the token file's token for this user belongs to another account (or none): not used"
                        );
                        Err(BridgeError::NoToken)
                    }
                }
            }
        }
    }
}

pub use claims_sync::display_name;
use claims_sync::email;

#[cfg(test)]
mod tests;
