//! Verifying what the IdP signed: ID tokens (through the crate) and logout tokens (`jwt`)
//! against the cached JWKS, which an unknown `kid` re-fetches at most once per
//! [`JWKS_REFETCH_MIN_INTERVAL`] for each kind of token: a key rotation is picked up at once,
//! a flood of tokens with invented `kid`s cannot make the sidecar hammer the IdP, and a token
//! that comes while the slot is taken waits for the next re-fetch rather than being refused.

use super::{now_unix, Loaded, Provider, TokenError};
use crate::auth::id_token::verify_id_token;
use crate::auth::jwt::{self, JwtError};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Minimum time between two JWKS re-fetches triggered by unknown `kid`s (abuse guard).
const JWKS_REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);

/// The longest a token with an unknown `kid` waits for the next re-fetch (or one in flight).
pub const JWKS_REFETCH_WAIT: Duration = Duration::from_secs(15);

/// What kind of token asks for a re-fetch: each kind has its own slot.
#[derive(Clone, Copy)]
enum Asker {
    /// An ID token, from the IdP's token endpoint: its `kid` is the IdP's.
    IdToken = 0,
    /// A logout token, posted by whoever likes.
    LogoutToken = 1,
}

impl Provider {
    /// Verifies an ID token with the crate (re-fetching the JWKS once, rate-limited, when the
    /// `kid` is unknown) and returns its claims. `nonce` is required at login and absent at
    /// refresh.
    pub async fn validate_id_token(
        &self,
        id_token: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<Map<String, Value>, TokenError> {
        let loaded = self.loaded()?;
        let claims =
            match verify_id_token(&loaded.client, id_token, nonce, access_token, now_unix()) {
                Err(TokenError::Jwt(JwtError::UnknownKey(kid))) => {
                    let loaded = self.refetch_jwks(&loaded, kid, Asker::IdToken).await?;
                    verify_id_token(&loaded.client, id_token, nonce, access_token, now_unix())
                }
                other => other,
            }?;
        Ok(self.as_read(claims))
    }

    /// Verifies a JWS from the IdP that the crate has no verifier for (a logout token) against
    /// the cached JWKS only (`JwtError::UnknownKey` when its key is not there).
    pub fn verify_cached(&self, token: &str) -> Result<jwt::Verified, TokenError> {
        Ok(jwt::verify(token, &self.loaded()?.jwks)?)
    }

    /// Verifies a JWS from the IdP that the crate has no verifier for (a logout token) against
    /// the cached JWKS, re-fetching it as for ID tokens.
    pub async fn verify_signature(&self, token: &str) -> Result<jwt::Verified, TokenError> {
        let loaded = self.loaded()?;
        match jwt::verify(token, &loaded.jwks) {
            Err(JwtError::UnknownKey(kid)) => {
                let loaded = self.refetch_jwks(&loaded, kid, Asker::LogoutToken).await?;
                Ok(jwt::verify(token, &loaded.jwks)?)
            }
            other => Ok(other?),
        }
    }

    /// Re-fetches the JWKS for a token signed with an unknown key, at most once per
    /// [`JWKS_REFETCH_MIN_INTERVAL`], and installs it. When a re-fetch was made lately, waits
    /// for the next one (or one in flight), within [`JWKS_REFETCH_WAIT`]: otherwise anyone
    /// sending a token with an invented `kid` every ten seconds would keep the slot, and a
    /// genuine token signed with a key the IdP just rotated in (a logout, a login) would be
    /// refused. Returns the JWKS to verify again with (the caller does so once).
    async fn refetch_jwks(
        &self,
        loaded: &Arc<Loaded>,
        kid: Option<String>,
        asker: Asker,
    ) -> Result<Arc<Loaded>, TokenError> {
        let give_up = tokio::time::Instant::now() + JWKS_REFETCH_WAIT;
        loop {
            // Subscribed before the JWKS is read, so an install in between is not missed.
            let mut installed = self.jwks_installed.subscribe();
            let current = self.loaded()?;
            if !Arc::ptr_eq(&current, loaded) {
                return Ok(current);
            }
            // Past its wait, a token takes no slot (its fetch would run past the bound).
            if tokio::time::Instant::now() >= give_up {
                return Err(JwtError::UnknownKey(kid).into());
            }
            let next = match self.refetch_slot(asker) {
                Ok(()) => return self.refetch_now(&current, kid).await,
                Err(next) => next,
            };
            tokio::select! {
                _ = installed.changed() => {}
                _ = tokio::time::sleep_until(next.min(give_up)) => {}
            }
        }
    }

    async fn refetch_now(
        &self,
        loaded: &Loaded,
        kid: Option<String>,
    ) -> Result<Arc<Loaded>, TokenError> {
        tracing::info!(?kid, "unknown signing key: re-fetching the JWKS");
        let jwks = self
            .fetch_jwks(&loaded.meta.jwks_uri)
            .await
            .map_err(|e| TokenError::Response(format!("JWKS re-fetch failed: {e}")))?;
        let fresh = Arc::new(
            self.load(loaded.meta.clone(), loaded.discovered.clone(), jwks)
                .map_err(TokenError::Response)?,
        );
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh.clone());
        self.jwks_installed.send_replace(());
        Ok(fresh)
    }

    /// Takes `asker`'s re-fetch slot, or says when it opens again.
    fn refetch_slot(&self, asker: Asker) -> Result<(), tokio::time::Instant> {
        let mut last = self.last_refetch.lock().unwrap_or_else(|p| p.into_inner());
        let last = &mut last[asker as usize];
        let now = tokio::time::Instant::now();
        match *last {
            Some(t) if now.duration_since(t) < JWKS_REFETCH_MIN_INTERVAL => {
                Err(t + JWKS_REFETCH_MIN_INTERVAL)
            }
            _ => {
                *last = Some(now);
                Ok(())
            }
        }
    }
}
