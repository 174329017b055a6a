//! What the token endpoint answers, as the sidecar keeps it ([`TokenResponse`], whose `Debug`
//! shows no token), and why a login or refresh could not complete at the token or ID-token
//! stage ([`TokenError`]). Types only: the calls are `oidc.rs`'s.

use super::id_token::Tokens;
use super::idp_http::IdpHttpError;
use super::jwt::JwtError;
use openidconnect::OAuth2TokenResponse;

/// Why a login could not complete at the token or ID-token stage (logged; the user sees the
/// generic "OIDC code exchange failed").
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("discovery has not completed")]
    NotLoaded,
    #[error("token endpoint: {0}")]
    Http(#[from] IdpHttpError),
    /// The IdP's `invalid_grant` (RFC 6749 §5.2: the code or refresh token is invalid,
    /// expired or revoked): its final word on this grant.
    #[error("the IdP refused: {0}")]
    GrantRefused(String),
    /// Another OAuth error answer (`invalid_client`, `unauthorized_client`…): about the
    /// client or the request, not this user's grant (a client secret being rotated, say).
    #[error("the IdP refused: {0}")]
    Refused(String),
    #[error("token response: {0}")]
    Response(String),
    #[error("ID token: {0}")]
    Jwt(#[from] JwtError),
    #[error("ID token claim check failed: {0}")]
    Claims(String),
    /// A correctly signed ID token without a `sub` (OpenRag has its own message for it).
    #[error("ID token has no sub")]
    MissingSub,
}

/// What the token endpoint returned. Its `Debug` shows no token.
#[derive(Clone)]
pub struct TokenResponse {
    pub access_token: String,
    pub expires_in: Option<i64>,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("id_token", &self.id_token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl From<Tokens> for TokenResponse {
    fn from(t: Tokens) -> Self {
        TokenResponse {
            access_token: t.access_token().secret().clone(),
            expires_in: t
                .expires_in()
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            refresh_token: t.refresh_token().map(|r| r.secret().clone()),
            id_token: t.extra_fields().id_token().map(|i| i.to_string()),
        }
    }
}
