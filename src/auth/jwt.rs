//! JSON Web Signature verification against a JSON Web Key Set, with ring.
//!
//! Owns the algorithm allow-list and key selection only; what the claims must say is the
//! caller's business (ID tokens in `oidc.rs`, logout tokens elsewhere). Security invariants:
//! - only asymmetric algorithms are accepted (RS*, PS*, ES256/384, EdDSA): `none` and every HMAC
//!   algorithm are refused before any key is looked at, so a token "signed" with the public key
//!   as an HMAC secret can never verify;
//! - a key is used only for its own key type, curve, and declared `alg`/`use` when present.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::{Map, Value};

/// One key of a JWKS (only the members we use).
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

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
}

/// A verified token: its header and its claims.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Header,
    pub claims: Map<String, Value>,
}

/// The allow-listed algorithms and what each needs.
enum Alg {
    Rsa(&'static signature::RsaParameters),
    Ec(&'static signature::EcdsaVerificationAlgorithm, &'static str),
    Ed25519,
}

fn algorithm(name: &str) -> Option<Alg> {
    Some(match name {
        "RS256" => Alg::Rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => Alg::Rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => Alg::Rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
        "PS256" => Alg::Rsa(&signature::RSA_PSS_2048_8192_SHA256),
        "PS384" => Alg::Rsa(&signature::RSA_PSS_2048_8192_SHA384),
        "PS512" => Alg::Rsa(&signature::RSA_PSS_2048_8192_SHA512),
        "ES256" => Alg::Ec(&signature::ECDSA_P256_SHA256_FIXED, "P-256"),
        "ES384" => Alg::Ec(&signature::ECDSA_P384_SHA384_FIXED, "P-384"),
        "EdDSA" => Alg::Ed25519,
        _ => return None,
    })
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
    serde_json::from_slice::<Map<String, Value>>(&bytes).map_err(|_| JwtError::Malformed)?;
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

    let candidates: Vec<&Jwk> = jwks
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.kid == header.kid)
        .filter(|k| k.use_.as_deref().is_none_or(|u| u == "sig"))
        .filter(|k| k.alg.as_deref().is_none_or(|a| a == header.alg))
        .filter(|k| key_fits(k, &alg))
        .collect();
    if candidates.is_empty() {
        return Err(JwtError::UnknownKey(header.kid.clone()));
    }
    if !candidates.iter().any(|k| check(k, &alg, message, &sig)) {
        return Err(JwtError::BadSignature);
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(&b64(p)?).map_err(|_| JwtError::Malformed)?;
    Ok(Verified { header, claims })
}

fn key_fits(k: &Jwk, alg: &Alg) -> bool {
    match alg {
        Alg::Rsa(_) => k.kty == "RSA",
        Alg::Ec(_, crv) => k.kty == "EC" && k.crv.as_deref() == Some(crv),
        Alg::Ed25519 => k.kty == "OKP" && k.crv.as_deref() == Some("Ed25519"),
    }
}

fn check(k: &Jwk, alg: &Alg, message: &[u8], sig: &[u8]) -> bool {
    let decode = |v: &Option<String>| v.as_deref().and_then(|s| URL_SAFE_NO_PAD.decode(s).ok());
    match alg {
        Alg::Rsa(params) => match (decode(&k.n), decode(&k.e)) {
            (Some(n), Some(e)) => RsaPublicKeyComponents { n, e }
                .verify(params, message, sig)
                .is_ok(),
            _ => false,
        },
        Alg::Ec(params, _) => match (decode(&k.x), decode(&k.y)) {
            (Some(x), Some(y)) => {
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                UnparsedPublicKey::new(*params, point)
                    .verify(message, sig)
                    .is_ok()
            }
            _ => false,
        },
        Alg::Ed25519 => match decode(&k.x) {
            Some(x) => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, sig)
                .is_ok(),
            None => false,
        },
    }
}

/// The OIDC `at_hash`/`c_hash` of `value` for a token signed with `alg`: the left half of the
/// hash named by the algorithm (SHA-512 for EdDSA/Ed25519), base64url without padding.
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
