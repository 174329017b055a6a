//! The token vault: each user's backend token, Fernet-encrypted in the shared store under a hash
//! of the `sub`, with the id of the backend account it belongs to. A token is handed to a login
//! only for the account the `sub` is linked to now: an administrator may move the link to
//! another account, and the old account's token must not follow it.
//!
//! Owns the vault's format (JSON `{"user", "token"}`; a bare token, as older versions wrote it,
//! has no known owner and is checked with the backend before use). Never logs a token.

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
    user: Option<u64>,
    token: std::borrow::Cow<'a, str>,
}

impl OpenRagBridge {
    pub(super) fn vault_key(&self, sub: &str) -> String {
        crate::store::keys::hashed("vault", &["vault", &self.issuer, sub])
    }

    pub(super) async fn vault_get(&self, sub: &str) -> Result<Option<Vaulted>, StoreError> {
        let sealed = self.store.get(&self.vault_key(sub)).await?;
        Ok(sealed.and_then(|b| self.open_vaulted(&b)))
    }

    /// A vault value (as [`OpenRagBridge::vault_get`] reads it), from its sealed bytes.
    pub(super) fn open_vaulted(&self, sealed: &[u8]) -> Option<Vaulted> {
        let plain = self.open_sealed(sealed)?;
        Some(match serde_json::from_str::<Sealed>(plain.expose()) {
            Ok(s) => Vaulted {
                user: s.user,
                token: Secret::new(s.token.into_owned()),
            },
            Err(_) => Vaulted {
                user: None,
                token: plain,
            },
        })
    }

    /// Text sealed with the bridge's keys (a vault value, Chainlit's session cookies).
    pub(super) fn open_sealed(&self, sealed: &[u8]) -> Option<Secret<String>> {
        std::str::from_utf8(sealed)
            .ok()
            .and_then(|t| self.keys.open(t))
            .and_then(|p| String::from_utf8(p).ok())
            .map(Secret::new)
    }

    pub(super) async fn vault_put(
        &self,
        sub: &str,
        user: Option<u64>,
        token: &Secret<String>,
    ) -> Result<(), StoreError> {
        let plain = serde_json::to_vec(&Sealed {
            user,
            token: token.expose().as_str().into(),
        })
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let sealed = self.keys.seal(&plain);
        self.store
            .put(
                &self.vault_key(sub),
                sealed.as_bytes(),
                self.settings.vault_ttl,
            )
            .await
    }

    /// Whether a vaulted token is backend account `user`'s: recorded as its, or (an entry from
    /// before owners were recorded) the backend says so.
    pub(super) async fn belongs_to(&self, v: &Vaulted, user: u64) -> Result<bool, BridgeError> {
        Ok(match v.user {
            Some(owner) => owner == user,
            None => self.admin.token_owner(v.token.expose()).await? == Some(user),
        })
    }

    /// The vaulted token of `sub` if it belongs to backend account `user`: recorded as its, or
    /// (an entry from before owners were recorded) the backend says so. `None`: no entry, or
    /// one of another account (the link moved) or that the backend refuses; the caller then
    /// applies the token policy, and its `vault_put` replaces the entry.
    pub(super) async fn vault_token_for(
        &self,
        sub: &str,
        user: u64,
    ) -> Result<Option<Secret<String>>, BridgeError> {
        let Some(v) = self.vault_get(sub).await? else {
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
        b.vault_put("alice", Some(7), &Secret::new("tok-7".into()))
            .await
            .unwrap();
        let v = b.vault_get("alice").await.unwrap().unwrap();
        assert_eq!((v.user, v.token.expose().as_str()), (Some(7), "tok-7"));
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

        // An entry from before owners were recorded: the bare token, owner unknown.
        let sealed = b.keys.seal(b"old-token");
        b.store
            .put(
                &b.vault_key("bob"),
                sealed.as_bytes(),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        let v = b.vault_get("bob").await.unwrap().unwrap();
        assert_eq!((v.user, v.token.expose().as_str()), (None, "old-token"));
        // Its owner is asked of the backend; one that cannot answer fails the lookup rather
        // than hand the token over unchecked.
        assert!(b.vault_token_for("bob", 7).await.is_err());
    }
}
