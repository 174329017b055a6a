//! Auto-provisioning (`OIDC_AUTO_PROVISION_LOGIN=true`): a user the backend does not know is
//! created at their first login, as OpenRag's own OIDC mode does — unless their email already
//! belongs to another account. That conflict is found before creating where the backend's user
//! list shows emails; OpenRag 1.1.8's list does not, and its `POST /users/` answers a duplicate
//! with `500 [UNEXPECTED_ERROR]` (using up a user id), which the bridge reads as the same
//! conflict and remembers for a minute so that retries do not use up more ids. Either way the
//! user gets the documented 409 page that says what an administrator must do.
//!
//! A creation's outcome may be lost: `POST /users/` times out, its connection drops or its
//! answer cannot be read after the backend committed, or the vault write after it fails. The
//! token it carried is shown once and was never handed to anyone, so the creation record of the
//! `sub` then says so ("lost", for [`LOST_TTL`]), and the next login that finds the user with no
//! token in the vault regenerates it whatever the token policy (under `deny` the user would
//! otherwise be locked out for good). A clear refusal (4xx) leaves no such record.

use super::admin::{AdminError, BackendUser};
use super::{display_name, email, BridgeError, OpenRagBridge, Resolved};
use crate::secret::Secret;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// How long a login refused for an email conflict is remembered (no second `POST /users/`).
const CONFLICT_TTL: Duration = Duration::from_secs(60);

/// Beyond `admin_timeout` (the longest `POST /users/` may take), how long a creation may take
/// to vault its token: a login that finds the user meanwhile waits that long for it.
const CREATION_GRACE: Duration = Duration::from_secs(2);

/// Between two looks at the vault while waiting for a creation.
const CREATION_WAIT_STEP: Duration = Duration::from_millis(50);

/// How long a creation whose token was lost lets the next login regenerate it. Short: past
/// it, an account linked to the `sub` may have been given a token by someone else.
const LOST_TTL: Duration = Duration::from_secs(10 * 60);

/// The creation record's value once the token is lost (followed by the account's id when
/// known); any other value is a creation under way (versions before this one wrote `1`).
const LOST: &str = "lost";

/// What the creation record of a `sub` says.
enum Creation {
    /// A login is creating the user right now.
    Pending,
    /// A login created (or may have created) the user and lost its token: `Some(id)` when it
    /// knows the account.
    Lost(Option<u64>),
}

fn creation_of(value: &[u8]) -> Creation {
    match String::from_utf8_lossy(value).strip_prefix(LOST) {
        Some(id) => Creation::Lost(id.trim().parse().ok()),
        None => Creation::Pending,
    }
}

impl OpenRagBridge {
    /// The record that a login is creating `sub`'s user, or lost the token of the user it
    /// created ([`Creation`]).
    pub(super) fn creating_key(&self, sub: &str) -> String {
        crate::store::keys::hashed("creating", &["creating", &self.issuer, sub])
    }

    /// How long a creation may take, its token vaulted: `POST /users/` and a moment more.
    fn creation_window(&self) -> Duration {
        self.settings.admin_timeout.saturating_add(CREATION_GRACE)
    }

    /// Removes this login's creation record (`mine`), if it wrote one (`owned`): never another
    /// login's.
    async fn release_creation(
        &self,
        key: &str,
        mine: &str,
        owned: bool,
    ) -> Result<(), BridgeError> {
        if owned {
            self.store.delete_if(key, mine.as_bytes()).await?;
        }
        Ok(())
    }

    async fn creation(&self, sub: &str) -> Result<Option<Creation>, BridgeError> {
        let v = self.store.get_fresh(&self.creating_key(sub)).await?;
        Ok(v.map(|v| creation_of(&v)))
    }

    /// For a login that finds `user` (linked to `sub`) with no token in the vault: the token a
    /// login creating that user is about to vault (waited for, as long as that creation may
    /// take), or a new one when the login that created it lost it. `None`: no creation
    /// concerns it, or it ended without a token; the token policy decides.
    pub(super) async fn token_of_creation(
        &self,
        sub: &str,
        user: &BackendUser,
    ) -> Result<Option<Secret<String>>, BridgeError> {
        let wait = self.creation_window();
        let began = tokio::time::Instant::now();
        loop {
            match self.creation(sub).await? {
                // Done: its token is in the vault now, or it failed.
                None => return self.vault_token_for(sub, user.id).await,
                Some(Creation::Lost(id)) => return self.regain_lost(sub, user, id).await,
                Some(Creation::Pending) if began.elapsed() >= wait => return Ok(None),
                Some(Creation::Pending) => {}
            }
            tokio::time::sleep(CREATION_WAIT_STEP).await;
            if let Some(t) = self.vault_token_for(sub, user.id).await? {
                return Ok(Some(t));
            }
        }
    }

    /// The token of a user this sidecar created and whose token it lost: nobody else can hold
    /// it (it was shown once, to the login that lost it), so regenerating it takes nothing
    /// from anyone, whatever the token policy. Not for another account than the one the record
    /// names, nor for the one `AUTH_TOKEN` belongs to.
    async fn regain_lost(
        &self,
        sub: &str,
        user: &BackendUser,
        lost: Option<u64>,
    ) -> Result<Option<Secret<String>>, BridgeError> {
        if lost.is_some_and(|id| id != user.id) || self.admin_account().await? == Some(user.id) {
            return Ok(None);
        }
        tracing::warn!(
            sub,
            user_id = user.id,
            "the token of the user this sidecar created was lost: regenerating it"
        );
        let token = self.admin.regenerate_token(user.id).await?;
        self.vault_put(sub, user.id, &token).await?;
        // Spent; a creation that began since keeps its own record.
        let key = self.creating_key(sub);
        if let Some(v) = self.store.get_fresh(&key).await? {
            if matches!(creation_of(&v), Creation::Lost(_)) {
                self.store.delete_if(&key, &v).await?;
            }
        }
        Ok(Some(token))
    }

    /// Records that the user of `sub` may have been created (`user`: the account, when known)
    /// and its token lost ([`LOST_TTL`]). Best effort: the caller is failing already.
    async fn creation_lost(&self, sub: &str, user: Option<u64>, why: &str) {
        let value = match user {
            Some(id) => format!("{LOST} {id}"),
            None => LOST.to_owned(),
        };
        let key = self.creating_key(sub);
        match self.store.put(&key, value.as_bytes(), LOST_TTL).await {
            Ok(()) => {
                tracing::warn!(sub, why, "the user may have been created, its token is lost: the next login regenerates it")
            }
            Err(e) => {
                tracing::error!(sub, why, error = %e, "the user may have been created, its token is lost, and the store cannot say so: an administrator must regenerate it")
            }
        }
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
        // vault: this record tells them to wait for it (`token_of_creation`). Not over another
        // login's: a concurrent creation's, or one that lost its token (that user may yet
        // appear, committed late: this login's 409 then regenerates its token).
        let creating = self.creating_key(sub);
        let mine = format!("pending {}", crate::crypto::random_token(16));
        let pending_ttl = self.creation_window();
        let owned = self
            .store
            .put_if_absent(&creating, mine.as_bytes(), pending_ttl)
            .await?;
        let (user, token) = match self.admin.create_user(body).await {
            Ok(r) => r,
            Err(AdminError::Status { status, detail })
                if status == http::StatusCode::CONFLICT
                    || (status == http::StatusCode::INTERNAL_SERVER_ERROR
                        && detail.contains("[UNEXPECTED_ERROR]")) =>
            {
                // A concurrent first login may have created it: re-read before giving up (with
                // this login's record still there, so that its token is waited for: the login
                // that created it may not have written a record, this one's being first).
                let meanwhile = self.created_meanwhile(sub).await;
                // Nothing of this login's to wait for; another creation's record stays.
                self.release_creation(&creating, &mine, owned).await?;
                if let Some(r) = meanwhile? {
                    return Ok(r);
                }
                let why = if status == http::StatusCode::CONFLICT {
                    "POST /users/ answered 409"
                } else {
                    "POST /users/ answered 500 [UNEXPECTED_ERROR] (OpenRag 1.1.8's answer to a duplicate email)"
                };
                return Err(self.conflict(sub, why).await);
            }
            // A clear refusal: nothing was created.
            Err(e @ AdminError::Status { status, .. }) if status.is_client_error() => {
                self.release_creation(&creating, &mine, owned).await?;
                return Err(e.into());
            }
            // No answer in time, a dropped connection, an answer that cannot be read, a 5xx:
            // the backend may have committed the user, with the token this login never got.
            Err(e) => {
                self.creation_lost(sub, None, &e.to_string()).await;
                return Err(e.into());
            }
        };
        tracing::info!(sub, user_id = user.id, "auto-provisioned a backend user");
        if let Err(e) = self.vault_put(sub, user.id, &token).await {
            self.creation_lost(sub, Some(user.id), &e.to_string()).await;
            return Err(e.into());
        }
        // Its own record only: another login's (first, though this one committed) is its own.
        self.release_creation(&creating, &mine, owned).await?;
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
