//! The OpenID Provider as the sidecar sees it, on the `openidconnect` crate: discovery (at
//! start-up and periodically, with backoff while the IdP is down), the JWKS cache with a
//! rate-limited re-fetch on an unknown `kid`, the authorization URL (PKCE S256, nonce, state),
//! the code exchange, ID-token verification, userinfo and refresh.
//!
//! Returns domain values and typed errors, never HTTP responses; `flow.rs` decides what the
//! user sees and the logs get the details. Security invariants: the advertised issuer must
//! equal `OIDC_ENDPOINT` byte for byte (checked here first, so the mismatch is explained), every
//! ID token's `iss` too; ID tokens are checked for an asymmetric signature, `aud`, `azp`, `exp`,
//! `iat`, `nonce` and `at_hash`; the IdP client never follows redirects (`idp_http.rs`).
//! Logout tokens are verified in `jwt.rs`/`backchannel.rs`: the crate has no verifier for them.

mod authorize;
pub(super) mod verify;

use super::discovery::check_issuer;
pub use super::discovery::{DiscoveryError, Metadata};
use super::id_token::{as_map, OtherClaims, RelyingParty};
use super::idp_http::{IdpHttp, IdpHttpError};
use super::jwt::{self, Jwks};
use crate::config::OidcSettings;
use openidconnect::core::{CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim};
use openidconnect::{
    AccessToken, AuthType, AuthorizationCode, ClientId, ClientSecret, PkceCodeVerifier,
    ProviderMetadataWithLogout, RedirectUrl, RefreshToken, RequestTokenError,
    StandardErrorResponse,
};
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Tolerated clock difference with the IdP for `exp` and `iat`.
pub const CLOCK_SKEW_SECS: i64 = 60;

struct Loaded {
    meta: Metadata,
    discovered: ProviderMetadataWithLogout,
    client: RelyingParty,
    jwks: Jwks,
    /// The client secret goes by HTTP Basic (else in the form body).
    basic: bool,
}

pub use super::tokens::{TokenError, TokenResponse};
pub use crate::config::ClientAuth;

pub struct Provider {
    /// The authorization request's `prompt` (none by default).
    prompt: Vec<CoreAuthPrompt>,
    /// The authorization request's `max_age` (`auth_max_age_secs`; none by default): the
    /// callback then requires an `auth_time` within it.
    max_age: Option<Duration>,
    /// `email_verified_required`: every claims map read from the IdP (ID token, userinfo) has
    /// its email marked unverified unless the IdP said `email_verified: true`.
    email_verified_required: bool,
    pub settings: OidcSettings,
    client_auth: ClientAuth,
    http: IdpHttp,
    loaded: RwLock<Option<Arc<Loaded>>>,
    /// The last JWKS re-fetch asked for by an ID token (from the IdP's token endpoint), and by
    /// a logout token (anyone may post one): separate, so that invented `kid`s posted to the
    /// logout route cannot hold off the re-fetch a login needs.
    last_refetch: Mutex<[Option<tokio::time::Instant>; 2]>,
    /// Bumped whenever a re-fetched JWKS is installed: tokens waiting for the next re-fetch
    /// wake on it.
    jwks_installed: tokio::sync::watch::Sender<()>,
}

pub use crate::clock::now_unix;

impl Provider {
    pub fn new(settings: OidcSettings, client_auth: ClientAuth, http: IdpHttp) -> Self {
        Provider {
            settings,
            prompt: Vec::new(),
            max_age: None,
            email_verified_required: false,
            client_auth,
            http,
            loaded: RwLock::new(None),
            last_refetch: Mutex::new([None; 2]),
            jwks_installed: tokio::sync::watch::Sender::new(()),
        }
    }

    fn current(&self) -> Option<Arc<Loaded>> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn loaded(&self) -> Result<Arc<Loaded>, TokenError> {
        self.current().ok_or(TokenError::NotLoaded)
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
        let invalid = |reason: String| DiscoveryError::Invalid {
            url: url.clone(),
            reason,
        };
        let mut doc =
            self.http
                .get_json(&url, None)
                .await
                .map_err(|source| DiscoveryError::Fetch {
                    url: url.clone(),
                    source,
                })?;
        let meta: Metadata =
            serde_json::from_value(doc.clone()).map_err(|e| invalid(e.to_string()))?;
        // Our own comparison first: the crate's says only "unexpected issuer URI".
        check_issuer(&self.settings.issuer, &meta.issuer)?;
        // Members OpenID Discovery requires but the sidecar never reads: an IdP that leaves
        // them out still works (the values are the specification's defaults).
        if let Value::Object(m) = &mut doc {
            for (k, v) in [
                ("response_types_supported", ["code"]),
                ("subject_types_supported", ["public"]),
                ("id_token_signing_alg_values_supported", ["RS256"]),
            ] {
                m.entry(k).or_insert_with(|| Value::from(v.to_vec()));
            }
        }
        let discovered: ProviderMetadataWithLogout =
            serde_json::from_value(doc).map_err(|e| invalid(e.to_string()))?;
        let jwks = self.fetch_jwks(&meta.jwks_uri).await?;
        let loaded = self.load(meta, discovered, jwks).map_err(invalid)?;
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(loaded));
        Ok(())
    }

    /// The crate's client for this discovery document and key set.
    fn load(
        &self,
        meta: Metadata,
        discovered: ProviderMetadataWithLogout,
        jwks: Jwks,
    ) -> Result<Loaded, String> {
        let use_basic = match self.client_auth {
            ClientAuth::Basic => true,
            ClientAuth::Post => false,
            ClientAuth::Auto => {
                let m = &meta.token_endpoint_auth_methods_supported;
                !m.iter().any(|a| a == "client_secret_post")
                    || m.iter().any(|a| a == "client_secret_basic")
            }
        };
        let redirect = RedirectUrl::new(self.settings.redirect_uri_as_written.clone())
            .map_err(|e| format!("redirect URI: {e}"))?;
        let client = RelyingParty::from_provider_metadata(
            discovered.clone().set_jwks(jwks.clone()),
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose().clone(),
            )),
        )
        .set_redirect_uri(redirect)
        .set_auth_type(if use_basic {
            AuthType::BasicAuth
        } else {
            AuthType::RequestBody
        });
        Ok(Loaded {
            meta,
            discovered,
            client,
            jwks,
            basic: use_basic,
        })
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
                        tracing::error!(error = %e.explained(), retry_in_secs = backoff.as_secs(), "OIDC discovery failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                }
            }
        });
    }

    /// The same, counting an email as verified only when the IdP says so (`email_verified_required`).
    pub fn with_email_verified_required(mut self, required: bool) -> Self {
        self.email_verified_required = required;
        self
    }

    /// What every reader of the IdP's claims sees: with `email_verified_required`, an email
    /// the IdP did not say is verified is marked unverified, once, here, so the allow-lists,
    /// the identity headers and the OpenRag bridge all discount it alike.
    pub(crate) fn as_read(&self, mut claims: Map<String, Value>) -> Map<String, Value> {
        if self.email_verified_required {
            crate::claims::require_verified_email(&mut claims);
        }
        claims
    }

    /// Exchanges an authorization code (with its PKCE verifier).
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
    ) -> Result<TokenResponse, TokenError> {
        let loaded = self.loaded()?;
        let tokens = loaded
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| TokenError::Response(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| self.token_error(&loaded, e))?;
        Ok(tokens.into())
    }

    /// Uses a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenResponse, TokenError> {
        let loaded = self.loaded()?;
        let rt = RefreshToken::new(refresh_token.to_owned());
        let tokens = loaded
            .client
            .exchange_refresh_token(&rt)
            .map_err(|e| TokenError::Response(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| self.token_error(&loaded, e))?;
        Ok(tokens.into())
    }

    fn token_error(
        &self,
        loaded: &Loaded,
        e: RequestTokenError<IdpHttpError, StandardErrorResponse<CoreErrorResponseType>>,
    ) -> TokenError {
        match e {
            RequestTokenError::Request(e) => TokenError::Http(e),
            RequestTokenError::ServerResponse(r) => {
                if matches!(r.error(), CoreErrorResponseType::InvalidGrant) {
                    TokenError::GrantRefused(r.to_string())
                } else if matches!(r.error(), CoreErrorResponseType::InvalidClient) {
                    // The operator's to mend, and the IdP's answer seldom says how: a wrong
                    // secret, or the secret sent another way than the client is registered
                    // for (OpenRag always sends it in the form body).
                    let (how, other) = if loaded.basic {
                        ("by HTTP Basic", "client_secret_post")
                    } else {
                        ("in the form body", "client_secret_basic")
                    };
                    TokenError::Refused(format!(
                        "{r} (check OIDC_CLIENT_ID and OIDC_CLIENT_SECRET; the secret was sent \
                         {how}: if the IdP's client is registered for the other way, set \
                         SSO_SIDECAR_TOKEN_ENDPOINT_AUTH={other})"
                    ))
                } else {
                    TokenError::Refused(r.to_string())
                }
            }
            RequestTokenError::Parse(e, body) => {
                // The crate parses the ID token with the response, and one without `sub` fails
                // there. When it is genuinely signed, say so (OpenRag has its own message).
                if Self::signed_without_sub(loaded, &body) {
                    TokenError::MissingSub
                } else {
                    TokenError::Response(e.to_string())
                }
            }
            RequestTokenError::Other(e) => TokenError::Response(e),
        }
    }

    /// Whether `body` is a token response whose ID token verifies but has no `sub`.
    fn signed_without_sub(loaded: &Loaded, body: &[u8]) -> bool {
        let Ok(Value::Object(resp)) = serde_json::from_slice::<Value>(body) else {
            return false;
        };
        resp.get("id_token")
            .and_then(Value::as_str)
            .and_then(|t| jwt::verify(t, &loaded.jwks).ok())
            .is_some_and(|v| !v.claims.contains_key("sub"))
    }

    /// The userinfo claims for `access_token` (plain JSON or a signed JWT, as the IdP
    /// answers); the caller compares their `sub` with the ID token's.
    pub async fn userinfo(&self, access_token: &str) -> Result<Map<String, Value>, TokenError> {
        let loaded = self.loaded()?;
        let claims: openidconnect::UserInfoClaims<OtherClaims, CoreGenderClaim> = loaded
            .client
            .user_info(AccessToken::new(access_token.to_owned()), None)
            .map_err(|_| TokenError::Response("the IdP has no userinfo endpoint".into()))?
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                openidconnect::UserInfoError::Request(e) => TokenError::Http(e),
                e => TokenError::Response(format!("userinfo: {e}")),
            })?;
        Ok(self.as_read(as_map(&claims)?))
    }
}
