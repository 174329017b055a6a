use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

const NOW: i64 = 950;

struct Signer {
    pair: EcdsaKeyPair,
    rp: RelyingParty,
}

fn enc(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

fn signer() -> Signer {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let p = pair.public_key().as_ref();
    let jwks = serde_json::from_value(json!({"keys": [
        {"kty":"EC","crv":"P-256","kid":"k1","x":enc(&p[1..33]),"y":enc(&p[33..65])}
    ]}))
    .unwrap();
    let rp = relying_party("https://idp", "rp", jwks).unwrap();
    Signer { pair, rp }
}

impl Signer {
    fn sign(&self, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            enc(br#"{"alg":"ES256","kid":"k1"}"#),
            enc(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", enc(sig.as_ref()))
    }

    fn check(&self, claims: &Value) -> Result<Map<String, Value>, TokenError> {
        verify_id_token(&self.rp, &self.sign(claims), Some("n"), None, NOW)
    }
}

fn good() -> Value {
    json!({"iss":"https://idp","aud":"rp","exp":1000,"iat":900,"nonce":"n","sub":"alice",
           "email":"a@example.com","groups":["g1","g2"],"sid":"s-1"})
}

#[test]
fn a_good_id_token_passes_with_every_claim() {
    let s = signer();
    let c = s.check(&good()).unwrap();
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["email"], "a@example.com");
    assert_eq!(
        c["groups"],
        json!(["g1", "g2"]),
        "non-standard claims are kept"
    );
    assert_eq!(c["sid"], "s-1");
}

#[test]
fn each_bad_claim_is_refused() {
    let s = signer();
    let cases = [
        ("iss", json!("https://idp/")),
        ("aud", json!("other")),
        ("aud", json!(["rp", "other"])),
        ("azp", json!("other")),
        ("exp", json!(800)),
        ("iat", json!(1100)),
        ("nonce", json!("m")),
    ];
    for (k, v) in cases {
        let mut c = good();
        c[k] = v.clone();
        assert!(s.check(&c).is_err(), "{k}={v}");
    }
    for k in ["exp", "iat", "nonce", "aud", "iss"] {
        let mut c = good();
        c.as_object_mut().unwrap().remove(k);
        assert!(s.check(&c).is_err(), "missing {k}");
    }
    let mut c = good();
    c["aud"] = json!(["rp", "other"]);
    c["azp"] = json!("rp");
    assert!(s.check(&c).is_ok(), "several audiences with azp");
}

#[test]
fn the_clock_skew_is_a_minute_each_way() {
    let s = signer();
    let mut c = good();
    c["exp"] = json!(NOW - CLOCK_SKEW_SECS + 1);
    assert!(s.check(&c).is_ok(), "expired less than the skew ago");
    c["exp"] = json!(NOW - CLOCK_SKEW_SECS - 1);
    assert!(s.check(&c).is_err());
    let mut c = good();
    c["iat"] = json!(NOW + CLOCK_SKEW_SECS);
    assert!(s.check(&c).is_ok(), "issued within the skew ahead");
    c["iat"] = json!(NOW + CLOCK_SKEW_SECS + 1);
    assert!(s.check(&c).is_err());
}

#[test]
fn at_hash_is_checked_when_both_are_present() {
    let s = signer();
    let mut c = good();
    c["at_hash"] = json!(jwt::half_hash("ES256", "the-access-token").unwrap());
    let t = s.sign(&c);
    assert!(verify_id_token(&s.rp, &t, Some("n"), Some("the-access-token"), NOW).is_ok());
    assert!(verify_id_token(&s.rp, &t, Some("n"), Some("another"), NOW).is_err());
    assert!(verify_id_token(&s.rp, &t, Some("n"), None, NOW).is_ok());
}

#[test]
fn no_nonce_is_expected_at_refresh() {
    let s = signer();
    let mut c = good();
    c.as_object_mut().unwrap().remove("nonce");
    assert!(verify_id_token(&s.rp, &s.sign(&c), None, None, NOW).is_ok());
}

#[test]
fn unknown_keys_none_and_hmac_are_told_apart() {
    let s = signer();
    let other = signer();
    let t = other.sign(&good());
    assert!(
        matches!(
            verify_id_token(&s.rp, &t, Some("n"), None, NOW),
            Err(TokenError::Claims(_))
        ),
        "same kid, another key: a bad signature"
    );
    let payload = enc(good().to_string().as_bytes());
    let none = format!("{}.{payload}.", enc(br#"{"alg":"none"}"#));
    assert!(verify_id_token(&s.rp, &none, Some("n"), None, NOW).is_err());
    let hs = format!(
        "{}.{payload}.{}",
        enc(br#"{"alg":"HS256","kid":"k1"}"#),
        enc(b"x")
    );
    assert!(verify_id_token(&s.rp, &hs, Some("n"), None, NOW).is_err());
    let rotated = format!(
        "{}.{payload}.{}",
        enc(br#"{"alg":"ES256","kid":"k2"}"#),
        enc(b"x")
    );
    assert!(matches!(
        verify_id_token(&s.rp, &rotated, Some("n"), None, NOW),
        Err(TokenError::Jwt(JwtError::UnknownKey(Some(k)))) if k == "k2"
    ));
}

/// Found while fuzzing (`fuzz/corpus/jwt`): an `exp` near i64::MAX or an `iat` near i64::MIN
/// overflowed the clock-skew arithmetic of the hand-written checks; with the crate they are
/// refused as out of range, without a panic.
#[test]
fn extreme_times_do_not_panic() {
    let s = signer();
    for (k, v) in [("exp", i64::MAX), ("iat", i64::MIN)] {
        let mut c = good();
        c[k] = json!(v);
        let _ = s.check(&c);
    }
}

/// `auth_time` as the crate hands it back (through its own claim types): within `max_age` and
/// the clock skew passes; older, ahead of the clock or missing does not.
#[test]
fn auth_time_must_fall_within_max_age() {
    let s = signer();
    let max_age = std::time::Duration::from_secs(300);
    let skew = CLOCK_SKEW_SECS;
    let at = |auth_time: Value| {
        let mut c = good();
        c["auth_time"] = auth_time;
        authenticated_within(&s.check(&c).unwrap(), max_age, NOW)
    };
    assert_eq!(at(json!(NOW)), Ok(()));
    assert_eq!(at(json!(NOW - 300 - skew)), Ok(()));
    assert_eq!(at(json!(NOW - 301 - skew)), Err(StaleAuth::Old(301 + skew)));
    assert_eq!(at(json!(NOW + skew)), Ok(()));
    assert_eq!(at(json!(NOW + skew + 1)), Err(StaleAuth::Future(skew + 1)));
    // A NumericDate may have a fraction.
    assert_eq!(at(json!(NOW as f64 - 10.5)), Ok(()));
    let missing = s.check(&good()).unwrap();
    assert_eq!(
        authenticated_within(&missing, max_age, NOW),
        Err(StaleAuth::Missing)
    );
    // Not a number: as good as missing.
    let mut text = Map::new();
    text.insert("auth_time".into(), json!("900"));
    assert_eq!(
        authenticated_within(&text, max_age, NOW),
        Err(StaleAuth::Missing)
    );
}
