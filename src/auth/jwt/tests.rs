use super::*;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

fn enc(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

struct Es256 {
    pair: EcdsaKeyPair,
    kid: String,
}

impl Es256 {
    fn new(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Es256 {
            pair,
            kid: kid.into(),
        }
    }
    fn jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({"kty":"EC","crv":"P-256","kid":self.kid,"x":enc(&p[1..33]),"y":enc(&p[33..65])})
    }
    fn sign(&self, header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            enc(header.to_string().as_bytes()),
            enc(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", enc(sig.as_ref()))
    }
}

/// A key set of these JWKs, parsed as the crate parses an IdP's.
fn set(keys: Vec<Value>) -> Jwks {
    serde_json::from_value(json!({ "keys": keys })).unwrap()
}

fn claims() -> Value {
    json!({"iss":"https://idp","sub":"alice"})
}

#[test]
fn es256_tokens_verify_with_the_matching_key() {
    let k = Es256::new("k1");
    let jwks = set(vec![k.jwk()]);
    let t = k.sign(json!({"alg":"ES256","kid":"k1"}), claims());
    let v = verify(&t, &jwks).unwrap();
    assert_eq!(v.claims["sub"], "alice");
    assert_eq!(v.header.kid.as_deref(), Some("k1"));
    // Without a kid every key of the right type is tried.
    let t = k.sign(json!({"alg":"ES256"}), claims());
    assert!(verify(&t, &jwks).is_ok());
}

#[test]
fn eddsa_tokens_verify() {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let jwk = json!({"kty":"OKP","crv":"Ed25519","kid":"ed","x":enc(pair.public_key().as_ref())});
    let input = format!(
        "{}.{}",
        enc(br#"{"alg":"EdDSA","kid":"ed"}"#),
        enc(claims().to_string().as_bytes())
    );
    let t = format!("{input}.{}", enc(pair.sign(input.as_bytes()).as_ref()));
    assert!(verify(&t, &set(vec![jwk])).is_ok());
}

#[test]
fn unknown_kid_and_wrong_key_are_told_apart() {
    let signer = Es256::new("k1");
    let other = Es256::new("k1");
    let t = signer.sign(json!({"alg":"ES256","kid":"k2"}), claims());
    assert_eq!(
        verify(&t, &set(vec![signer.jwk()])).unwrap_err(),
        JwtError::UnknownKey(Some("k2".into()))
    );
    let t = signer.sign(json!({"alg":"ES256","kid":"k1"}), claims());
    assert_eq!(
        verify(&t, &set(vec![other.jwk()])).unwrap_err(),
        JwtError::BadSignature
    );
}

#[test]
fn tampered_payloads_fail() {
    let k = Es256::new("k1");
    let t = k.sign(json!({"alg":"ES256","kid":"k1"}), claims());
    let parts: Vec<&str> = t.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        enc(br#"{"iss":"https://idp","sub":"mallory"}"#),
        parts[2]
    );
    assert_eq!(
        verify(&forged, &set(vec![k.jwk()])).unwrap_err(),
        JwtError::BadSignature
    );
}

#[test]
fn none_and_hmac_are_refused_even_with_the_public_key_as_secret() {
    let k = Es256::new("k1");
    let jwks = set(vec![k.jwk()]);
    let body = enc(claims().to_string().as_bytes());
    let none = format!("{}.{body}.", enc(br#"{"alg":"none"}"#));
    assert_eq!(
        verify(&none, &jwks).unwrap_err(),
        JwtError::AlgorithmNotAllowed("none".into())
    );
    // HS256 keyed with the public key's JSON: the classic key-confusion forgery.
    let input = format!("{}.{body}", enc(br#"{"alg":"HS256","kid":"k1"}"#));
    let secret = serde_json::to_vec(&json!({"x": k.jwk()["x"], "y": k.jwk()["y"]})).unwrap();
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
        input.as_bytes(),
    );
    let forged = format!("{input}.{}", enc(tag.as_ref()));
    assert_eq!(
        verify(&forged, &jwks).unwrap_err(),
        JwtError::AlgorithmNotAllowed("HS256".into())
    );
}

#[test]
fn keys_are_used_only_for_their_declared_alg_and_use() {
    let k = Es256::new("k1");
    let mut jwk = k.jwk();
    jwk["use"] = json!("enc");
    let t = k.sign(json!({"alg":"ES256","kid":"k1"}), claims());
    assert!(matches!(
        verify(&t, &set(vec![jwk])),
        Err(JwtError::UnknownKey(_))
    ));
    let mut jwk = k.jwk();
    jwk["alg"] = json!("ES384");
    assert!(matches!(
        verify(&t, &set(vec![jwk])),
        Err(JwtError::UnknownKey(_))
    ));
}

#[test]
fn malformed_tokens_are_malformed() {
    let jwks = set(vec![]);
    for t in ["", "a.b", "a.b.c.d", "!!.e30.x", "e30.e30.e30"] {
        assert!(verify(t, &jwks).is_err(), "{t}");
    }
}

#[test]
fn half_hash_uses_the_algorithms_digest() {
    // Left half of SHA-256 for *256, of SHA-512 for *512 and for EdDSA (Ed25519).
    let a = half_hash("RS256", "token").unwrap();
    let b = half_hash("RS512", "token").unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 16);
    assert_eq!(URL_SAFE_NO_PAD.decode(&b).unwrap().len(), 32);
    assert_eq!(half_hash("EdDSA", "token"), Some(b));
    assert!(half_hash("HS256", "token").is_none());
}

/// Found by fuzzing (`fuzz/corpus/jwt`): the protected header must be a JSON object of valid
/// UTF-8; an array, or invalid UTF-8 in a member the parse ignores, was accepted.
#[test]
fn a_header_that_is_not_a_json_object_is_malformed() {
    for h in [
        &br#"["ES256","k1"]"#[..],
        b"{\"alg\":\"ES256\",\"x\":\"\xa7\"}",
        br#"{"alg":"ES256","alg":"none"}"#,
    ] {
        let t = format!("{}.{}.{}", enc(h), enc(b"{}"), enc(b"sig"));
        assert_eq!(header(&t).unwrap_err(), JwtError::Malformed);
        assert_eq!(verify(&t, &set(vec![])).unwrap_err(), JwtError::Malformed);
    }
    // A good signature does not make an array header acceptable.
    let k = Es256::new("k1");
    let jwks = set(vec![k.jwk()]);
    let t = k.sign(json!(["ES256", "k1"]), claims());
    assert_eq!(verify(&t, &jwks).unwrap_err(), JwtError::Malformed);
}

/// RFC 7515 §4.1.11: a token naming critical extensions is refused, even well signed, since
/// none is understood here.
#[test]
fn a_token_with_critical_extensions_is_refused() {
    let k = Es256::new("k1");
    let jwks = set(vec![k.jwk()]);
    let t = k.sign(
        json!({"alg":"ES256","kid":"k1","crit":["exp"],"exp":1}),
        claims(),
    );
    assert_eq!(verify(&t, &jwks).unwrap_err(), JwtError::Critical);
    assert_eq!(header(&t).unwrap_err(), JwtError::Critical);
}
