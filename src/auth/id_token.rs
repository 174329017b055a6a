//! ID tokens on the `openidconnect` crate: the relying-party types the sidecar instantiates
//! the crate with, and the verification of one ID token (OIDC Core §3.1.3.7) with the
//! sidecar's rules on top of the crate's. Pure: no I/O, `now` injected (the JWKS re-fetch and
//! the token calls are `oidc.rs`'s).

use super::jwt::{self, Jwks, JwtError};
use super::oidc::{TokenError, CLOCK_SKEW_SECS};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreRevocableToken,
    CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessToken, AccessTokenHash, AdditionalClaims, ClaimsVerificationError, ClientId,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, Nonce,
    ProviderMetadataWithLogout, SignatureVerificationError, StandardErrorResponse,
    StandardTokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Every claim beyond the standard ones (`groups`, `sid`, an IdP's own), kept as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OtherClaims {
    #[serde(flatten)]
    rest: Map<String, Value>,
}
impl AdditionalClaims for OtherClaims {}

pub type IdToken = openidconnect::IdToken<
    OtherClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
pub type Tokens = StandardTokenResponse<
    IdTokenFields<
        OtherClaims,
        openidconnect::EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;
/// The relying party: the crate's client with the IdP's endpoints from discovery.
pub type RelyingParty = openidconnect::Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// ID-token verification (OIDC Core §3.1.3.7) by the crate, with the sidecar's rules on top:
/// asymmetric algorithms only, [`CLOCK_SKEW_SECS`] for `exp` and `iat`, other audiences allowed
/// only with `azp` naming us, and `at_hash` when both it and the access token are present.
pub fn verify_id_token(
    client: &RelyingParty,
    id_token: &str,
    nonce: Option<&str>,
    access_token: Option<&str>,
    now: i64,
) -> Result<Map<String, Value>, TokenError> {
    let token: IdToken = id_token.parse().map_err(|_| JwtError::Malformed)?;
    let at = |secs: i64| chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    let verifier = client
        .id_token_verifier()
        .set_allowed_algs(jwt::ALLOWED)
        .set_other_audience_verifier_fn(|_| true)
        .set_time_fn(move || at(now.saturating_sub(CLOCK_SKEW_SECS)))
        .set_issue_time_verifier_fn(move |iat| {
            if iat > at(now.saturating_add(CLOCK_SKEW_SECS)) {
                Err(format!("issued in the future ({iat})"))
            } else {
                Ok(())
            }
        });
    let expected = nonce.map(|n| Nonce::new(n.to_owned()));
    let claims = match &expected {
        Some(n) => token.claims(&verifier, n),
        None => token.claims(&verifier, |_: Option<&Nonce>| Ok(())),
    }
    .map_err(|e| match e {
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        ) => TokenError::Jwt(JwtError::UnknownKey(token_kid(id_token))),
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::AmbiguousKeyId(_),
        ) => TokenError::Jwt(JwtError::AmbiguousKey),
        e => TokenError::Claims(e.to_string()),
    })?;
    // The crate leaves `azp` to its users: several audiences need it, and it must be us.
    let client_id = client.client_id().as_str();
    let azp = claims.authorized_party().map(|a| a.as_str());
    if (claims.audiences().len() > 1 && azp.is_none()) || azp.is_some_and(|a| a != client_id) {
        return Err(TokenError::Claims(format!(
            "azp {azp:?} is not the client id"
        )));
    }
    if let (Some(expected), Some(access_token)) = (claims.access_token_hash(), access_token) {
        let alg = token
            .signing_alg()
            .map_err(|e| TokenError::Claims(e.to_string()))?;
        let key = token
            .signing_key(&verifier)
            .map_err(|e| TokenError::Claims(e.to_string()))?;
        let actual =
            AccessTokenHash::from_token(&AccessToken::new(access_token.to_owned()), alg, key)
                .map_err(|e| TokenError::Claims(e.to_string()))?;
        if actual != *expected {
            return Err(TokenError::Claims(
                "at_hash does not match the access token".into(),
            ));
        }
    }
    as_map(claims)
}

/// Why an ID token does not show an authentication within the `max_age` the login asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum StaleAuth {
    /// No `auth_time` (OIDC Core §3.1.2.1 makes it required when `max_age` was sent).
    Missing,
    /// An `auth_time` this many seconds old, beyond `max_age` and [`CLOCK_SKEW_SECS`].
    Old(i64),
    /// An `auth_time` further ahead of our clock than [`CLOCK_SKEW_SECS`]: a clock that far
    /// off could make any authentication look recent.
    Future(i64),
}

impl std::fmt::Display for StaleAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StaleAuth::Missing => f.write_str("the ID token has no auth_time"),
            StaleAuth::Old(age) => write!(f, "auth_time is {age} s old"),
            StaleAuth::Future(ahead) => write!(f, "auth_time is {ahead} s in the future"),
        }
    }
}

/// Whether verified `claims` say the user authenticated at the IdP within `max_age` of `now`
/// (OIDC Core §3.1.3.7, item 13), give or take [`CLOCK_SKEW_SECS`].
pub fn authenticated_within(
    claims: &Map<String, Value>,
    max_age: std::time::Duration,
    now: i64,
) -> Result<(), StaleAuth> {
    let at = match claims.get("auth_time") {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        _ => None,
    }
    .ok_or(StaleAuth::Missing)?;
    let age = now.saturating_sub(at);
    let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
    if age > max_age.saturating_add(CLOCK_SKEW_SECS) {
        Err(StaleAuth::Old(age))
    } else if age < -CLOCK_SKEW_SECS {
        Err(StaleAuth::Future(-age))
    } else {
        Ok(())
    }
}

/// The `kid` a token's header names, for the JWKS re-fetch log.
fn token_kid(token: &str) -> Option<String> {
    jwt::header(token).ok().and_then(|h| h.kid)
}

/// Verified claims as one JSON object: standard and other claims alike.
pub fn as_map(claims: &impl Serialize) -> Result<Map<String, Value>, TokenError> {
    match serde_json::to_value(claims) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(TokenError::Response("claims are not a JSON object".into())),
        Err(e) => Err(TokenError::Response(e.to_string())),
    }
}

/// A relying party for `issuer` and `client_id` that knows only `jwks` (no endpoints are
/// called): for verifying tokens without discovery, in tests and the fuzz targets.
pub fn relying_party(issuer: &str, client_id: &str, jwks: Jwks) -> Option<RelyingParty> {
    let meta: ProviderMetadataWithLogout = serde_json::from_value(serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .ok()?;
    Some(RelyingParty::from_provider_metadata(
        meta.set_jwks(jwks),
        ClientId::new(client_id.to_owned()),
        None,
    ))
}

#[cfg(test)]
mod tests;
