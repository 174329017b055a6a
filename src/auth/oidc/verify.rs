//! Verifying what the IdP signed: ID tokens (through the crate) and logout tokens (`jwt`)
//! against the cached JWKS, which an unknown `kid` re-fetches at most once per
//! [`JWKS_REFETCH_MIN_INTERVAL`]: a key rotation is picked up at once, and a flood of tokens
//! with invented `kid`s cannot make the sidecar hammer the IdP.

use super::{now_unix, Loaded, Provider, TokenError};
use crate::auth::id_token::verify_id_token;
use crate::auth::jwt::{self, JwtError};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Minimum time between two JWKS re-fetches triggered by unknown `kid`s (abuse guard).
const JWKS_REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);

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
        match verify_id_token(&loaded.client, id_token, nonce, access_token, now_unix()) {
            Err(TokenError::Jwt(JwtError::UnknownKey(kid))) => {
                let loaded = self.refetch_jwks(&loaded, kid).await?;
                verify_id_token(&loaded.client, id_token, nonce, access_token, now_unix())
            }
            other => other,
        }
    }

    /// Verifies a JWS from the IdP that the crate has no verifier for (a logout token) against
    /// the cached JWKS, re-fetching it as for ID tokens.
    pub async fn verify_signature(&self, token: &str) -> Result<jwt::Verified, TokenError> {
        let loaded = self.loaded()?;
        match jwt::verify(token, &loaded.jwks) {
            Err(JwtError::UnknownKey(kid)) => {
                let loaded = self.refetch_jwks(&loaded, kid).await?;
                Ok(jwt::verify(token, &loaded.jwks)?)
            }
            other => Ok(other?),
        }
    }

    /// Re-fetches the JWKS for a token signed with an unknown key, at most once per
    /// [`JWKS_REFETCH_MIN_INTERVAL`], and installs it.
    async fn refetch_jwks(
        &self,
        loaded: &Loaded,
        kid: Option<String>,
    ) -> Result<Arc<Loaded>, TokenError> {
        if !self.refetch_allowed() {
            return Err(JwtError::UnknownKey(kid).into());
        }
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
        Ok(fresh)
    }

    fn refetch_allowed(&self) -> bool {
        let mut last = self.last_refetch.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < JWKS_REFETCH_MIN_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }
}
