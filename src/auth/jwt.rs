//! JSON Web Signature verification of tokens the `openidconnect` crate has no verifier for —
//! back-channel logout tokens — on the crate's own JWK-set and signature types.
//!
//! Owns the algorithm allow-list and key selection only; what the claims must say is the
//! caller's business (`backchannel.rs`). ID tokens do not come here: `oidc.rs` verifies them
//! with the crate. Security invariants:
//! - only asymmetric algorithms are accepted (RS*, PS*, ES256/384, EdDSA): `none` and every HMAC
//!   algorithm are refused before any key is looked at, so a token "signed" with the public key
//!   as an HMAC secret can never verify;
//! - a key is used only for its own key type, curve, and declared `alg`/`use` when present.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKey, JsonWebKeyAlgorithm, JsonWebKeyUse, JwsSigningAlgorithm};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The IdP's signing keys, as the `openidconnect` crate parses them (keys it cannot use are
/// skipped, not fatal).
pub type Jwks = CoreJsonWebKeySet;

/// The algorithms an IdP may sign with: asymmetric ones only.
pub const ALLOWED: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// The protected header members we read.
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub typ: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed JWT")]
    Malformed,
    #[error("algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("no key in the JWKS matches kid {0:?}")]
    UnknownKey(Option<String>),
    #[error("signature does not verify")]
    BadSignature,
    /// No `kid`, and several keys of the JWKS could have signed it (OIDC Core §10.1 wants a
    /// `kid` then): an IdP in the middle of a rotation, not a forgery.
    #[error("the token names no kid and several keys could have signed it")]
    AmbiguousKey,
    /// RFC 7515 §4.1.11: a recipient must refuse a token whose `crit` header names extensions
    /// it does not understand, and this one understands none.
    #[error("critical header extensions are not supported")]
    Critical,
}

/// A verified token: its header and its claims.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Header,
    pub claims: Map<String, Value>,
}

/// The allow-listed algorithm named `name`, if it is one.
fn algorithm(name: &str) -> Option<CoreJwsSigningAlgorithm> {
    let alg: CoreJwsSigningAlgorithm = serde_json::from_value(Value::from(name)).ok()?;
    ALLOWED.contains(&alg).then_some(alg)
}

fn b64(s: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)
}

/// Splits a compact JWS and decodes its header, without verifying anything.
pub fn header(token: &str) -> Result<Header, JwtError> {
    let h = token.split('.').next().ok_or(JwtError::Malformed)?;
    parse_header(h)
}

/// The protected header: a JSON object of valid UTF-8 (RFC 7515 §4). The derived parse alone
/// would also take an array (`["EdDSA"]`) and skip the members it ignores without checking
/// their UTF-8; it still refuses duplicate members.
fn parse_header(segment: &str) -> Result<Header, JwtError> {
    let bytes = b64(segment)?;
    let members =
        serde_json::from_slice::<Map<String, Value>>(&bytes).map_err(|_| JwtError::Malformed)?;
    if members.contains_key("crit") {
        return Err(JwtError::Critical);
    }
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

/// Verifies `token`'s signature with a matching key of `jwks` and returns its claims.
pub fn verify(token: &str, jwks: &Jwks) -> Result<Verified, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header = parse_header(h)?;
    let alg =
        algorithm(&header.alg).ok_or_else(|| JwtError::AlgorithmNotAllowed(header.alg.clone()))?;
    let sig = b64(s)?;
    let message = &token.as_bytes()[..h.len() + 1 + p.len()];

    let candidates: Vec<&CoreJsonWebKey> = jwks
        .keys()
        .iter()
        .filter(|k| {
            header.kid.is_none() || k.key_id().map(|id| id.as_str()) == header.kid.as_deref()
        })
        .filter(|k| fits(k, &alg))
        .collect();
    if candidates.is_empty() {
        return Err(JwtError::UnknownKey(header.kid.clone()));
    }
    // The crate checks the curve and the key's encoding; several keys without a `kid` are all
    // tried (a token need not name its key when the set is unambiguous by type).
    if !candidates
        .iter()
        .any(|k| k.verify_signature(&alg, message, &sig).is_ok())
    {
        return Err(JwtError::BadSignature);
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(&b64(p)?).map_err(|_| JwtError::Malformed)?;
    Ok(Verified { header, claims })
}

/// A key may sign with `alg`: its `use` (if any) is signing, its type is the algorithm's, and
/// its declared `alg` (if any) is this one.
fn fits(k: &CoreJsonWebKey, alg: &CoreJwsSigningAlgorithm) -> bool {
    k.key_use().is_none_or(|u| u.allows_signature())
        && alg.key_type().as_ref() == Some(k.key_type())
        && match k.signing_alg() {
            JsonWebKeyAlgorithm::Unspecified => true,
            JsonWebKeyAlgorithm::Algorithm(a) => a == alg,
            JsonWebKeyAlgorithm::Unsupported => false,
        }
}

/// The OIDC `at_hash`/`c_hash` of `value` for a token signed with `alg`: the left half of the
/// hash named by the algorithm (SHA-512 for EdDSA/Ed25519), base64url without padding. The
/// sidecar checks `at_hash` with the crate's `AccessTokenHash`; this is for test IdPs.
pub fn half_hash(alg: &str, value: &str) -> Option<String> {
    let digest_alg = match alg {
        "RS256" | "PS256" | "ES256" => &ring::digest::SHA256,
        "RS384" | "PS384" | "ES384" => &ring::digest::SHA384,
        "RS512" | "PS512" | "EdDSA" => &ring::digest::SHA512,
        _ => return None,
    };
    let d = ring::digest::digest(digest_alg, value.as_bytes());
    let bytes = d.as_ref();
    Some(URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() / 2]))
}

#[cfg(test)]
mod tests;
