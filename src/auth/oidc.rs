//! The OpenID Provider as the sidecar sees it: discovery (at start-up and periodically, with
//! backoff while the IdP is down), the JWKS cache with a rate-limited re-fetch on an unknown
//! `kid`, the authorization URL, the code exchange, ID-token validation, userinfo and refresh.
//!
//! Returns domain values and typed errors, never HTTP responses; `flow.rs` decides what the
//! user sees and the logs get the details. Security invariants: the advertised issuer must
//! equal `OIDC_ENDPOINT` byte for byte, every ID token's `iss` too; tokens are checked for
//! `aud`, `azp`, `exp`, `iat`, `nonce` and `at_hash`; the IdP client never follows redirects.

use super::claims::{check_claims, check_issuer};
use super::idp_http::{IdpHttp, IdpHttpError};
use super::jwt::{self, Jwks, JwtError};
use crate::config::OidcSettings;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Tolerated clock difference with the IdP for `exp` and `iat`.
pub const CLOCK_SKEW_SECS: i64 = 60;
/// Minimum time between two JWKS re-fetches triggered by unknown `kid`s (abuse guard).
const JWKS_REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
}

struct Loaded {
    meta: Metadata,
    jwks: Jwks,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("Issuer mismatch: configured \"{configured}\" but the IdP advertises \"{advertised}\" ({hint})")]
    IssuerMismatch {
        configured: String,
        advertised: String,
        hint: String,
    },
    #[error("OIDC discovery at {url} failed: {source}")]
    Fetch { url: String, source: IdpHttpError },
    #[error("OIDC discovery document at {url} is invalid: {reason}")]
    Invalid { url: String, reason: String },
}

/// Why a login could not complete at the token or ID-token stage (logged; the user sees the
/// generic "OIDC code exchange failed").
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("discovery has not completed")]
    NotLoaded,
    #[error("token endpoint: {0}")]
    Http(#[from] IdpHttpError),
    #[error("token response: {0}")]
    Response(String),
    #[error("ID token: {0}")]
    Jwt(#[from] JwtError),
    #[error("ID token claim check failed: {0}")]
    Claims(String),
}

pub use crate::config::ClientAuth;

/// What the token endpoint returned. Its `Debug` shows no token.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
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

pub struct Provider {
    /// The authorization request's `prompt` (none by default).
    prompt: Option<String>,
    pub settings: OidcSettings,
    client_auth: ClientAuth,
    http: IdpHttp,
    loaded: RwLock<Option<Arc<Loaded>>>,
    last_refetch: Mutex<Option<Instant>>,
}

pub use crate::clock::now_unix;

impl Provider {
    pub fn new(settings: OidcSettings, client_auth: ClientAuth, http: IdpHttp) -> Self {
        Provider {
            settings,
            prompt: None,
            client_auth,
            http,
            loaded: RwLock::new(None),
            last_refetch: Mutex::new(None),
        }
    }

    fn current(&self) -> Option<Arc<Loaded>> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// True once discovery and the JWKS have loaded.
    pub fn is_loaded(&self) -> bool {
        self.current().is_some()
    }

    pub fn metadata(&self) -> Option<Metadata> {
        self.current().map(|l| l.meta.clone())
    }

    /// `OIDC_ENDPOINT` without trailing slash + `/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        )
    }

    /// Fetches discovery and the JWKS; replaces the cached ones only when both are good.
    pub async fn discover(&self) -> Result<(), DiscoveryError> {
        let url = self.discovery_url();
        let doc = self
            .http
            .get_json(&url, None)
            .await
            .map_err(|source| DiscoveryError::Fetch {
                url: url.clone(),
                source,
            })?;
        let meta: Metadata = serde_json::from_value(doc).map_err(|e| DiscoveryError::Invalid {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        check_issuer(&self.settings.issuer, &meta.issuer)?;
        let jwks = self.fetch_jwks(&meta.jwks_uri).await?;
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) =
            Some(Arc::new(Loaded { meta, jwks }));
        Ok(())
    }

    async fn fetch_jwks(&self, uri: &str) -> Result<Jwks, DiscoveryError> {
        let v = self
            .http
            .get_json(uri, None)
            .await
            .map_err(|source| DiscoveryError::Fetch {
                url: uri.to_owned(),
                source,
            })?;
        serde_json::from_value(v).map_err(|e| DiscoveryError::Invalid {
            url: uri.to_owned(),
            reason: format!("JWKS: {e}"),
        })
    }

    /// Keeps discovery fresh: retries with exponential backoff (1 s … 60 s) until it loads,
    /// then re-fetches every `refresh_every`. Runs until the process ends.
    pub fn spawn_discovery(self: Arc<Self>, refresh_every: Duration) {
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                match self.discover().await {
                    Ok(()) => {
                        tracing::info!(issuer = %self.settings.issuer, "OIDC discovery loaded");
                        backoff = Duration::from_secs(1);
                        tokio::time::sleep(refresh_every).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, retry_in_secs = backoff.as_secs(), "OIDC discovery failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                }
            }
        });
    }

    /// The same, asking the IdP for `prompt` at every login.
    pub fn with_prompt(mut self, prompt: Option<String>) -> Self {
        self.prompt = prompt;
        self
    }

    /// The authorization request URL.
    pub fn authorize_url(&self, state: &str, nonce: &str, code_challenge: &str) -> Option<String> {
        let meta = self.current()?.meta.clone();
        let mut url = url::Url::parse(&meta.authorization_endpoint).ok()?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", self.settings.redirect_uri.as_str())
            .append_pair("scope", &self.settings.scopes)
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", code_challenge)
            .append_pair("code_challenge_method", "S256");
        // None unless configured, as OpenRag: `prompt=consent` makes some IdPs (LemonLDAP::NG)
        // show their consent page at every login. Those that grant `offline_access` only with
        // consent (OIDC Core §11) need `prompt = "consent"`.
        if let Some(p) = &self.prompt {
            url.query_pairs_mut().append_pair("prompt", p);
        }
        Some(url.into())
    }

    /// Exchanges an authorization code (with its PKCE verifier).
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
    ) -> Result<TokenResponse, TokenError> {
        let redirect = self.settings.redirect_uri.as_str();
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// Uses a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenResponse, TokenError> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    async fn token_request(&self, params: &[(&str, &str)]) -> Result<TokenResponse, TokenError> {
        let meta = self.current().ok_or(TokenError::NotLoaded)?.meta.clone();
        let secret = self.settings.client_secret.expose().as_str();
        let id = self.settings.client_id.as_str();
        let mut form: Vec<(&str, &str)> = params.to_vec();
        let basic;
        let use_basic = match self.client_auth {
            ClientAuth::Basic => true,
            ClientAuth::Post => false,
            ClientAuth::Auto => {
                let m = &meta.token_endpoint_auth_methods_supported;
                !m.iter().any(|a| a == "client_secret_post")
                    || m.iter().any(|a| a == "client_secret_basic")
            }
        };
        if use_basic {
            // RFC 6749 §2.3.1: form-encode id and secret before base64.
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            basic = Some(base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                enc(id),
                enc(secret)
            )));
            form.push(("client_id", id));
        } else {
            basic = None;
            form.push(("client_id", id));
            form.push(("client_secret", secret));
        }
        let v = self
            .http
            .post_form(&meta.token_endpoint, &form, basic.as_deref())
            .await?;
        serde_json::from_value(v).map_err(|e| TokenError::Response(e.to_string()))
    }

    /// Verifies an ID token's signature (re-fetching the JWKS once, rate-limited, when the `kid`
    /// is unknown) and its claims. `nonce` is required at login and absent at refresh.
    pub async fn validate_id_token(
        &self,
        id_token: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<Map<String, Value>, TokenError> {
        let verified = self.verify_signature(id_token).await?;
        let c = &verified.claims;
        check_claims(
            c,
            &self.settings.issuer,
            &self.settings.client_id,
            nonce,
            now_unix(),
        )
        .map_err(TokenError::Claims)?;
        if let (Some(expected), Some(at)) = (c.get("at_hash").and_then(Value::as_str), access_token)
        {
            if jwt::half_hash(&verified.header.alg, at).as_deref() != Some(expected) {
                return Err(TokenError::Claims(
                    "at_hash does not match the access token".into(),
                ));
            }
        }
        Ok(verified.claims)
    }

    /// Verifies a JWS from the IdP (ID token or logout token) against the cached JWKS.
    pub async fn verify_signature(&self, token: &str) -> Result<jwt::Verified, TokenError> {
        let loaded = self.current().ok_or(TokenError::NotLoaded)?;
        match jwt::verify(token, &loaded.jwks) {
            Err(JwtError::UnknownKey(kid)) => {
                if !self.refetch_allowed() {
                    return Err(JwtError::UnknownKey(kid).into());
                }
                tracing::info!(?kid, "unknown signing key: re-fetching the JWKS");
                let jwks = self
                    .fetch_jwks(&loaded.meta.jwks_uri)
                    .await
                    .map_err(|e| TokenError::Response(format!("JWKS re-fetch failed: {e}")))?;
                let verified = jwt::verify(token, &jwks);
                *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Loaded {
                    meta: loaded.meta.clone(),
                    jwks,
                }));
                Ok(verified?)
            }
            other => Ok(other?),
        }
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

    pub async fn userinfo(&self, access_token: &str) -> Result<Map<String, Value>, TokenError> {
        let meta = self.current().ok_or(TokenError::NotLoaded)?.meta.clone();
        let url = meta
            .userinfo_endpoint
            .ok_or_else(|| TokenError::Response("the IdP has no userinfo endpoint".into()))?;
        match self.http.get_json(&url, Some(access_token)).await? {
            Value::Object(m) => Ok(m),
            _ => Err(TokenError::Response("userinfo is not a JSON object".into())),
        }
    }
}
