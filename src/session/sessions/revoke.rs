//! Revocation: every session of an IdP session (`sid`) or of a user (`sub`), found through
//! the indexes `Sessions::create` writes (back-channel and front-channel logout). Deletes
//! sessions; never reads or decrypts one.

use super::Sessions;
use crate::store::StoreError;

impl Sessions {
    /// Removes every session of an IdP session (`sid`); returns how many existed. When no
    /// session was ever made with that `sid` (its index is empty) and `sub` is given, removes
    /// that user's sessions made without a `sid` instead: an IdP whose ID tokens carry none
    /// may still name one in its logout tokens, and one of them may be the session it ended.
    /// A `sid` whose sessions already ended elsewhere leaves them alone.
    pub async fn revoke_sid(
        &self,
        iss: &str,
        sid: &str,
        sub: Option<&str>,
    ) -> Result<usize, StoreError> {
        let index = Self::sid_index(iss, sid);
        let members = self.store.index_members(&index).await?;
        match sub {
            Some(sub) if members.is_empty() => {
                self.revoke_index(&Self::sidless_index(iss, sub)).await
            }
            // The members stay in the sid's index (until its TTL) as a record that the sid was
            // known: a repeated logout for it must not fall back to the sid-less sessions.
            _ => self.revoke_members(&index, members, false).await,
        }
    }

    /// Removes every session of a user (`sub`) from an issuer; returns how many existed.
    pub async fn revoke_sub(&self, iss: &str, sub: &str) -> Result<usize, StoreError> {
        self.revoke_index(&Self::sub_index(iss, sub)).await
    }

    async fn revoke_index(&self, index: &str) -> Result<usize, StoreError> {
        let members = self.store.index_members(index).await?;
        self.revoke_members(index, members, true).await
    }

    /// Deletes the sessions `members` of `index`; `unindex`: removes them from it too.
    async fn revoke_members(
        &self,
        index: &str,
        members: Vec<String>,
        unindex: bool,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for member in members {
            if self.store.delete(&member).await? {
                n += 1;
            }
            if unindex {
                self.store.index_remove(index, &member).await?;
            }
        }
        Ok(n)
    }
}
