//! The `jwt` target: signed tokens (ID and logout tokens) verified against a fixed key set, and their claims checked against a reference.
//! Part of the fuzz targets (`super`); never called by the sidecar.

use crate::auth::{backchannel, id_token, jwt};
use serde_json::{Map, Value};

const ISSUER: &str = "https://idp.example.com/realms/openrag";
const CLIENT_ID: &str = "openrag";
const NONCE: &str = "n-0S6_WzA2Mj";
/// "Now" for the claim checks: 2023-11-14T22:13:20Z.
const NOW: i64 = 1_700_000_000;
const SKEW: i64 = crate::auth::oidc::CLOCK_SKEW_SECS;
const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Seed of the one Ed25519 key whose tokens may verify (signatures are deterministic).
const ED_SEED: [u8; 32] = *b"sso-sidecar fuzz key, not secret";

/// A compact JWS: `data` as text (lossy, as a form or JSON string would give it), or, when it
/// starts with `!`, assembled from `!header\npayload\nsignature` (each base64url-encoded here,
/// so that mutations reach the JSON; a missing signature or `sign` means the fixed Ed25519 key's
/// signature). With no keys it never verifies, and `none`/HMAC algorithms are refused before any
/// key is looked at; with a fixed JWKS (an RSA and a P-256 key whose private halves were thrown
/// away, and one Ed25519 key) it verifies exactly when it carries the Ed25519 key's own
/// signature of its first two segments. `header` agrees with a plain JSON decode of the first
/// segment, which must be an object. The payload, verified or not, goes through the ID-token and
/// logout-token claim rules, whose acceptances are re-checked here.
pub fn jwt(data: &[u8]) {
    let token = match data.strip_prefix(b"!") {
        Some(parts) => assemble_jws(parts),
        None => String::from_utf8_lossy(data).into_owned(),
    };
    let token = token.as_str();
    let segments: Vec<&str> = token.split('.').collect();
    let header_json = segment_json(segments[0]);

    match jwt::header(token) {
        Ok(h) => {
            let Some(Value::Object(m)) = &header_json else {
                panic!("header() accepted {:?}, not a JSON object", segments[0]);
            };
            assert_eq!(m.get("alg").and_then(Value::as_str), Some(h.alg.as_str()));
            assert_eq!(m.get("kid").and_then(Value::as_str), h.kid.as_deref());
        }
        Err(jwt::JwtError::Critical) => {
            let Some(Value::Object(m)) = &header_json else {
                panic!("header() read {:?} as naming crit", segments[0]);
            };
            assert!(m.contains_key("crit"));
        }
        Err(e) => assert_eq!(e, jwt::JwtError::Malformed),
    }

    let header_alg = match &header_json {
        Some(Value::Object(m)) => m.get("alg").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    let refused_alg = header_alg
        .as_deref()
        .is_some_and(|a| a == "none" || a.to_ascii_uppercase().starts_with("HS"));

    let empty = jwt::verify(token, &jwt::Jwks::new(Vec::new()));
    match &empty {
        Ok(_) => panic!("{token:?} verified with no keys"),
        Err(e) if segments.len() != 3 => assert_eq!(*e, jwt::JwtError::Malformed, "{token:?}"),
        Err(e) if refused_alg => assert!(
            matches!(
                e,
                jwt::JwtError::AlgorithmNotAllowed(_) | jwt::JwtError::Malformed
            ),
            "{token:?}: {e:?}"
        ),
        Err(_) => {}
    }

    let fixed = fixed_jwks();
    let verified = jwt::verify(token, &fixed.jwks);
    let genuine = segments.len() == 3 && ed_signed(&segments, &fixed.ed);
    match &verified {
        Ok(v) => {
            assert!(genuine, "{token:?} verified without the key's signature");
            assert_eq!(v.header.alg, "EdDSA");
            assert_eq!(
                Some(Value::Object(v.claims.clone())),
                segment_json(segments[1])
            );
        }
        Err(e) => assert!(
            !genuine || matches!(e, jwt::JwtError::Malformed),
            "{token:?}, signed by the key, refused: {e:?}"
        ),
    }
    if refused_alg {
        assert!(verified.is_err());
    }

    if let Some(Value::Object(c)) = segments.get(1).and_then(|s| segment_json(s)) {
        id_token_claims(&c);
        logout_token_claims(&c);
    }
    if let Some(alg) = &header_alg {
        let h = jwt::half_hash(alg, token);
        let len = match alg.as_str() {
            "RS256" | "PS256" | "ES256" => Some(22),
            "RS384" | "PS384" | "ES384" => Some(32),
            "RS512" | "PS512" | "EdDSA" => Some(43),
            _ => None,
        };
        assert_eq!(h.map(|h| h.len()), len, "half_hash({alg:?})");
    }
}

/// `header\npayload\nsignature` as a compact JWS, signed with the fixed Ed25519 key when the
/// signature is missing or `sign`.
fn assemble_jws(parts: &[u8]) -> String {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut parts = parts.splitn(3, |&b| b == b'\n');
    let header = parts.next().unwrap_or_default();
    let payload = parts.next().unwrap_or_default();
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = match parts.next() {
        None | Some(b"sign") => b64(fixed_jwks().ed.sign(input.as_bytes()).as_ref()),
        Some(sig) => b64(sig),
    };
    format!("{input}.{signature}")
}

/// A base64url segment decoded as JSON, if it is that.
fn segment_json(s: &str) -> Option<Value> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

struct Fixed {
    jwks: jwt::Jwks,
    rp: id_token::RelyingParty,
    ed: ring::signature::Ed25519KeyPair,
}

fn fixed_jwks() -> &'static Fixed {
    static FIXED: std::sync::OnceLock<Option<Fixed>> = std::sync::OnceLock::new();
    let fixed = FIXED.get_or_init(|| {
        use base64::Engine;
        use ring::signature::KeyPair;
        let ed = ring::signature::Ed25519KeyPair::from_seed_unchecked(&ED_SEED).ok()?;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ed.public_key());
        let jwks = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "use": "sig", "e": "AQAB",
             "n": "yhePCZwcDqmGB0-b38ui09PubXEsQifGrpu6a27r_zxvGakROBDhsQG5z9I7YhKJNf5wZzZcLDClXeFD21WVXdjAb1BUp-mm2WaLu65d4K7L5Q8x0kg5nTff-Aa8Al1UVDs5ZkpowWlF7Ui2R11SkMPceZjngBktBR5f0nRVQEMVv_5whjpfxoAHHN-7aWAjT0V--qQOUiNP_V96iZeIhuTt4BuZvFHoRCkIhR3ztQ2MG4-vgVnvZPjpEsuc3EuHt2oIfhaCjrtm1nGxTWmlHShKtRbPO4Vt3MldrU4PK1ZGiXw-5GhquStR-ELMvxTe9DCKcKka4eIT5WBI1lNmwQ"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "alg": "ES256",
             "x": "QObaIP7Yh5URDdP0hxXvuzb40B2tPOnhW7A4Lj1Anp4",
             "y": "U7bRDpf05ibHZ2gulN0OOKzpwyE8qkjgOiRuuRW7w_0"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": x},
        ]}))
        .ok()?;
        let rp = id_token::relying_party(ISSUER, CLIENT_ID, serde_json::from_value(
            serde_json::to_value(&jwks).ok()?,
        ).ok()?)?;
        Some(Fixed { jwks, rp, ed })
    });
    match fixed {
        Some(f) => f,
        None => panic!("the fixed JWKS does not build"),
    }
}

/// Whether the token is `EdDSA` (kid absent or `ed`) with the fixed Ed25519 key's signature of
/// its signing input and a JSON-object payload: exactly what `verify` must accept.
fn ed_signed(segments: &[&str], ed: &ring::signature::Ed25519KeyPair) -> bool {
    use base64::Engine;
    let Some(Value::Object(h)) = segment_json(segments[0]) else {
        return false;
    };
    let kid_ok = match h.get("kid") {
        None | Some(Value::Null) => true,
        Some(k) => k.as_str() == Some("ed"),
    };
    let typ_ok = matches!(
        h.get("typ"),
        None | Some(Value::Null) | Some(Value::String(_))
    );
    if h.get("alg").and_then(Value::as_str) != Some("EdDSA") || !kid_ok || !typ_ok {
        return false;
    }
    if !matches!(segment_json(segments[1]), Some(Value::Object(_))) {
        return false;
    }
    let message = format!("{}.{}", segments[0], segments[1]);
    let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(ed.sign(message.as_bytes()).as_ref());
    segments[2] == expected
}

/// An ID token with these claims, genuinely signed, accepted by the `openidconnect`-based
/// verification (with and without a nonce expected) names us, is current, and carries the
/// nonce when one is expected.
fn id_token_claims(c: &Map<String, Value>) {
    use base64::Engine;
    let fixed = fixed_jwks();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"EdDSA","kid":"ed"}"#),
        b64(Value::Object(c.clone()).to_string().as_bytes())
    );
    let token = format!("{input}.{}", b64(fixed.ed.sign(input.as_bytes()).as_ref()));
    for nonce in [Some(NONCE), None] {
        if id_token::verify_id_token(&fixed.rp, &token, nonce, None, NOW).is_err() {
            continue;
        }
        assert_eq!(c.get("iss").and_then(Value::as_str), Some(ISSUER));
        let audiences: Vec<&str> = match c.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            other => panic!("accepted with aud {other:?}"),
        };
        assert!(audiences.contains(&CLIENT_ID), "aud {audiences:?}");
        let azp = c.get("azp").and_then(Value::as_str);
        if audiences.len() > 1 || azp.is_some() {
            assert_eq!(azp, Some(CLIENT_ID), "azp");
        }
        let exp = c.get("exp").and_then(Value::as_i64);
        assert!(
            exp.is_some_and(|e| i128::from(e) + i128::from(SKEW) >= i128::from(NOW)),
            "accepted with exp {exp:?}"
        );
        let iat = c.get("iat").and_then(Value::as_i64);
        assert!(
            iat.is_some_and(|i| i128::from(i) - i128::from(SKEW) <= i128::from(NOW)),
            "accepted with iat {iat:?}"
        );
        if let Some(n) = nonce {
            assert_eq!(c.get("nonce").and_then(Value::as_str), Some(n));
        }
    }
}

/// An accepted logout token names us, is recent, has a `jti` and the logout event, no nonce,
/// and the `sid`/`sub` returned are its own.
fn logout_token_claims(c: &Map<String, Value>) {
    let Ok((sid, sub, jti)) = backchannel::check_claims(c, ISSUER, CLIENT_ID, NOW) else {
        return;
    };
    assert_eq!(c.get("iss").and_then(Value::as_str), Some(ISSUER));
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == CLIENT_ID,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(CLIENT_ID)),
        _ => false,
    };
    assert!(aud_ok, "aud {:?}", c.get("aud"));
    let iat = c.get("iat").and_then(Value::as_i64);
    assert!(
        iat.is_some_and(|i| (NOW - backchannel::MAX_AGE_SECS..=NOW + SKEW).contains(&i)),
        "iat {iat:?}"
    );
    if let Some(exp) = c.get("exp") {
        assert!(
            exp.as_i64()
                .is_some_and(|e| i128::from(e) + i128::from(SKEW) >= i128::from(NOW)),
            "exp {exp:?}"
        );
    }
    assert!(!jti.is_empty());
    assert_eq!(c.get("jti").and_then(Value::as_str), Some(jti.as_str()));
    assert!(matches!(
        c.get("events").and_then(|e| e.get(LOGOUT_EVENT)),
        Some(Value::Object(_))
    ));
    assert!(!c.contains_key("nonce"));
    assert!(sid.is_some() || sub.is_some());
    assert_eq!(sid.as_deref(), c.get("sid").and_then(Value::as_str), "sid");
    assert_eq!(sub.as_deref(), c.get("sub").and_then(Value::as_str), "sub");
}
