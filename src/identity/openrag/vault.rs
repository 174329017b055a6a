//! The token vault: each user's backend token, Fernet-encrypted in the shared store under a hash
//! of the `sub`, with the id of the backend account it belongs to. A token is handed to a login
//! only for the account the `sub` is linked to now: an administrator may move the link to
//! another account, and the old account's token must not follow it.
//!
//! Owns the vault's format. Two entries per user: the token with its owner (JSON
//! `{"user", "token"}`, under `vault-owned:`), read first; and the bare token under `vault:`,
//! which is what versions before the owner was recorded read and write, so that replicas of both
//! kinds share the newest token during a rolling upgrade. A bare token has no known owner and is
//! checked with the backend before use. Never logs a token.

use super::{BridgeError, OpenRagBridge};
use crate::secret::Secret;
use crate::store::StoreError;
use serde::{Deserialize, Serialize};

/// A vaulted token and, when known, the backend account it belongs to.
pub(super) struct Vaulted {
    pub user: Option<u64>,
    pub token: Secret<String>,
}

#[derive(Serialize, Deserialize)]
struct Sealed<'a> {
    user: u64,
    token: std::borrow::Cow<'a, str>,
}

impl OpenRagBridge {
    /// The bare token's entry (the format of versions before the owner was recorded).
    pub(super) fn vault_key(&self, sub: &str) -> String {
        crate::store::keys::hashed("vault", &["vault", &self.issuer, sub])
    }

    fn owned_key(&self, sub: &str) -> String {
        crate::store::keys::hashed("vault-owned", &["vault-owned", &self.issuer, sub])
    }

    /// `sub`'s vaulted token: the one with its owner, else a bare one. `fresh`: as the store
    /// holds it now (what another replica just wrote), never from a client-side cache.
    pub(super) async fn vault_read(
        &self,
        sub: &str,
        fresh: bool,
    ) -> Result<Option<Vaulted>, StoreError> {
        let read = |key: String| async move {
            if fresh {
                self.store.get_fresh(&key).await
            } else {
                self.store.get(&key).await
            }
        };
        if let Some(owned) = read(self.owned_key(sub)).await? {
            let plain = self.open_sealed(&owned);
            if let Some(s) = plain.and_then(|p| serde_json::from_str::<Sealed>(p.expose()).ok()) {
                return Ok(Some(Vaulted {
                    user: Some(s.user),
                    token: Secret::new(s.token.into_owned()),
                }));
            }
        }
        let bare = read(self.vault_key(sub)).await?;
        Ok(bare
            .and_then(|b| self.open_sealed(&b))
            .map(|token| Vaulted { user: None, token }))
    }

    /// Text sealed with the bridge's keys (a vault value, Chainlit's session cookies).
    pub(super) fn open_sealed(&self, sealed: &[u8]) -> Option<Secret<String>> {
        self.keys
            .open_stored(sealed)
            .and_then(|p| String::from_utf8(p).ok())
            .map(Secret::new)
    }

    /// Keeps `token` as `sub`'s, belonging to backend account `user`: with its owner, and bare
    /// for replicas of the previous version.
    pub(super) async fn vault_put(
        &self,
        sub: &str,
        user: u64,
        token: &Secret<String>,
    ) -> Result<(), StoreError> {
        let owned = serde_json::to_vec(&Sealed {
            user,
            token: token.expose().as_str().into(),
        })
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let ttl = self.settings.vault_ttl;
        let owned = self.keys.seal(&owned);
        self.store
            .put(&self.owned_key(sub), owned.as_bytes(), ttl)
            .await?;
        let bare = self.keys.seal(token.expose().as_bytes());
        self.store
            .put(&self.vault_key(sub), bare.as_bytes(), ttl)
            .await
    }

    /// Removes `sub`'s vault entries that hold `stale` (a token the backend refused), and only
    /// those: a newer token another replica stored meanwhile stays.
    pub(super) async fn vault_forget(&self, sub: &str, stale: &str) -> Result<(), StoreError> {
        for key in [self.owned_key(sub), self.vault_key(sub)] {
            let Some(sealed) = self.store.get_fresh(&key).await? else {
                continue;
            };
            let token = self.open_sealed(&sealed).map(|p| {
                serde_json::from_str::<Sealed>(p.expose())
                    .map(|s| s.token.into_owned())
                    .unwrap_or_else(|_| p.expose().clone())
            });
            if token.as_deref() == Some(stale) {
                self.store.delete_if(&key, &sealed).await?;
            }
        }
        Ok(())
    }

    /// Whether a vaulted token is backend account `user`'s: recorded as its, or (a bare token)
    /// the backend says so.
    pub(super) async fn belongs_to(&self, v: &Vaulted, user: u64) -> Result<bool, BridgeError> {
        Ok(match v.user {
            Some(owner) => owner == user,
            None => self.admin.token_owner(v.token.expose()).await? == Some(user),
        })
    }

    /// The vaulted token of `sub` if it belongs to backend account `user`. `None`: no entry,
    /// or one of another account (the link moved) or that the backend refuses; the caller then
    /// applies the token policy, and its `vault_put` replaces the entry.
    pub(super) async fn vault_token_for(
        &self,
        sub: &str,
        user: u64,
    ) -> Result<Option<Secret<String>>, BridgeError> {
        let Some(v) = self.vault_read(sub, false).await? else {
            return Ok(None);
        };
        if self.belongs_to(&v, user).await? {
            return Ok(Some(v.token));
        }
        tracing::info!(
            sub,
            user_id = user,
            "the vaulted token is not the linked account's (the link moved): not used"
        );
        Ok(None)
    }

    /// `sub`'s token for backend account `user`: the vault's when it is that account's, else
    /// the token policy's, then kept in the vault.
    pub(super) async fn token_for(
        &self,
        sub: &str,
        user: &super::admin::BackendUser,
    ) -> Result<Secret<String>, BridgeError> {
        if let Some(t) = self.vault_token_for(sub, user.id).await? {
            // Kept `vault_ttl` after the user's last login, as documented: each use pushes it
            // back (it used to expire that long after it was written, logins or not, and under
            // `deny` a daily user was then refused).
            for key in [self.owned_key(sub), self.vault_key(sub)] {
                self.store.touch(&key, self.settings.vault_ttl).await?;
            }
            return Ok(t);
        }
        // A login creating this user right now vaults its token right after: wait for it
        // rather than apply the policy (`deny` would refuse this login, `regenerate` replace
        // the token the other login has just been given). One that lost it: a new one.
        if let Some(t) = self.token_of_creation(sub, user).await? {
            return Ok(t);
        }
        let t = self.token_by_policy(sub, user).await?;
        self.vault_put(sub, user.id, &t).await?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{memory::MemoryStore, Store};
    use std::sync::Arc;
    use std::time::Duration;

    /// A bridge over a memory store whose backend is never reached (nothing here asks it).
    fn bridge() -> OpenRagBridge {
        let admin = super::super::admin::AdminClient::new(
            &"http://127.0.0.1:9".parse().unwrap(),
            Secret::new("admin".into()),
            crate::tls::client_config(None).unwrap(),
            Duration::from_secs(1),
        );
        let settings = crate::config::BridgeSettings {
            policy: crate::config::TokenPolicy::Deny,
            admin_timeout: Duration::from_secs(1),
            vault_ttl: Duration::from_secs(60),
        };
        OpenRagBridge::new(
            admin,
            Arc::new(Store::Memory(MemoryStore::new())),
            Arc::new(crate::crypto::KeyRing::parse(&crate::crypto::generate_key()).unwrap()),
            settings,
            "https://idp".into(),
            false,
            Vec::new(),
        )
    }

    #[tokio::test]
    async fn a_vaulted_token_goes_to_its_own_account_only() {
        let b = bridge();
        b.vault_put("alice", 7, &Secret::new("tok-7".into()))
            .await
            .unwrap();
        let v = b.vault_read("alice", false).await.unwrap().unwrap();
        assert_eq!((v.user, v.token.expose().as_str()), (Some(7), "tok-7"));
        // The bare entry, for replicas of the previous version, holds the same token.
        let bare = b.store.get(&b.vault_key("alice")).await.unwrap().unwrap();
        assert_eq!(b.open_sealed(&bare).unwrap().expose(), "tok-7");
        assert_eq!(
            b.vault_token_for("alice", 7)
                .await
                .unwrap()
                .map(|t| t.expose().clone()),
            Some("tok-7".to_owned())
        );
        assert!(
            b.vault_token_for("alice", 8).await.unwrap().is_none(),
            "the link moved to account 8: account 7's token is not handed over"
        );
        assert!(b.vault_token_for("nobody", 7).await.unwrap().is_none());

        // Only the entries holding the refused token are forgotten.
        b.vault_forget("alice", "tok-other").await.unwrap();
        assert!(b.vault_read("alice", true).await.unwrap().is_some());
        b.vault_forget("alice", "tok-7").await.unwrap();
        assert!(b.vault_read("alice", true).await.unwrap().is_none());

        // An entry only a previous version wrote: the bare token, owner unknown.
        let sealed = b.keys.seal(b"old-token");
        b.store
            .put(
                &b.vault_key("bob"),
                sealed.as_bytes(),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        let v = b.vault_read("bob", false).await.unwrap().unwrap();
        assert_eq!((v.user, v.token.expose().as_str()), (None, "old-token"));
        // Its owner is asked of the backend; one that cannot answer fails the lookup rather
        // than hand the token over unchecked.
        assert!(b.vault_token_for("bob", 7).await.is_err());
    }

    /// The vault keeps a token `vault_ttl` (here 60 s) after its last use at a login, not after
    /// it was written.
    #[tokio::test(start_paused = true)]
    async fn a_vaulted_token_lives_its_ttl_after_its_last_use() {
        let b = bridge();
        let alice: super::super::admin::BackendUser =
            serde_json::from_value(serde_json::json!({"id": 7})).unwrap();
        b.vault_put("alice", 7, &Secret::new("tok-7".into()))
            .await
            .unwrap();
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(50)).await;
            let t = b.token_for("alice", &alice).await.unwrap();
            assert_eq!(t.expose(), "tok-7", "used at a login 50 s after the last");
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(b.vault_read("alice", true).await.unwrap().is_none());
    }
}
