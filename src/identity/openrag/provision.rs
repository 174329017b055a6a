//! Auto-provisioning (`OIDC_AUTO_PROVISION_LOGIN=true`): a user the backend does not know is
//! created at their first login, as OpenRag's own OIDC mode does — unless their email already
//! belongs to another account. That conflict is found before creating where the backend's user
//! list shows emails; OpenRag 1.1.8's list does not, and its `POST /users/` answers a duplicate
//! with `500 [UNEXPECTED_ERROR]` (using up a user id), which the bridge reads as the same
//! conflict and remembers for a minute so that retries do not use up more ids. Either way the
//! user gets the documented 409 page that says what an administrator must do.

use super::admin::{AdminError, BackendUser};
use super::{display_name, email, BridgeError, OpenRagBridge, Resolved};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// How long a login refused for an email conflict is remembered (no second `POST /users/`).
const CONFLICT_TTL: Duration = Duration::from_secs(60);

/// How long the record that a login is creating a user lasts at most (it is removed once the
/// new user's token is in the vault).
const CREATING_TTL: Duration = Duration::from_secs(10);

impl OpenRagBridge {
    /// The record that a login is creating `sub`'s user ([`CREATING_TTL`]).
    pub(super) fn creating_key(&self, sub: &str) -> String {
        crate::store::keys::hashed("creating", &["creating", &self.issuer, sub])
    }

    fn conflict_key(&self, sub: &str) -> String {
        crate::store::keys::hashed("conflict", &["conflict", &self.issuer, sub])
    }

    /// Whether another account already has `email`, as far as the last users list tells.
    fn email_taken(&self, email: &str) -> bool {
        self.directory.email_taken(email)
    }

    async fn conflict(&self, sub: &str, why: &str) -> BridgeError {
        tracing::warn!(sub, why, "OIDC login refused — an account with this email already exists; an administrator must link it (PATCH /users/{{id}} with external_user_id) or change its email");
        if let Err(e) = self
            .store
            .put(&self.conflict_key(sub), b"1", CONFLICT_TTL)
            .await
        {
            return e.into();
        }
        BridgeError::EmailConflict
    }

    pub(super) async fn provision(
        &self,
        sub: &str,
        claims: &Map<String, Value>,
    ) -> Result<Resolved, BridgeError> {
        if self.store.get(&self.conflict_key(sub)).await?.is_some() {
            return Err(BridgeError::EmailConflict);
        }
        let email = email(claims);
        if email.as_deref().is_some_and(|e| self.email_taken(e)) {
            return Err(self.conflict(sub, "the users list shows the email").await);
        }
        let body = json!({
            "external_user_id": sub,
            "display_name": display_name(sub, claims),
            "email": email,
            "is_admin": false,
            // Absent, OpenRag's request model stores 10; null means the backend's own
            // DEFAULT_FILE_QUOTA, as for a user OpenRag's OIDC mode provisions.
            "file_quota": null,
        });
        // Other logins of this user meanwhile may find it created before its token is in the
        // vault: this record tells them to wait for it (`token_for`).
        let creating = self.creating_key(sub);
        self.store.put(&creating, b"1", CREATING_TTL).await?;
        let (user, token) = match self.admin.create_user(body).await {
            Ok(r) => r,
            Err(AdminError::Status { status, .. }) if status == http::StatusCode::CONFLICT => {
                // A concurrent first login may have created it: re-read before giving up.
                if let Some(r) = self.created_meanwhile(sub).await? {
                    return Ok(r);
                }
                return Err(self.conflict(sub, "POST /users/ answered 409").await);
            }
            Err(AdminError::Status { status, detail })
                if status == http::StatusCode::INTERNAL_SERVER_ERROR
                    && detail.contains("[UNEXPECTED_ERROR]") =>
            {
                if let Some(r) = self.created_meanwhile(sub).await? {
                    return Ok(r);
                }
                return Err(self
                    .conflict(sub, "POST /users/ answered 500 [UNEXPECTED_ERROR] (OpenRag 1.1.8's answer to a duplicate email)")
                    .await);
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(sub, user_id = user.id, "auto-provisioned a backend user");
        self.vault_put(sub, user.id, &token).await?;
        self.store.delete(&creating).await?;
        self.directory.remember(sub, user.clone());
        Ok(Resolved {
            user_id: user.id,
            token,
        })
    }

    /// The user a concurrent first login created, with its token, if there is one now.
    async fn created_meanwhile(&self, sub: &str) -> Result<Option<Resolved>, BridgeError> {
        self.directory.forget(sub);
        let Some(u): Option<BackendUser> = self.find_user(sub).await? else {
            return Ok(None);
        };
        let token = self.token_for(sub, &u).await?;
        Ok(Some(Resolved {
            user_id: u.id,
            token,
        }))
    }
}
