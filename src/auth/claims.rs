//! Pure rules about what the IdP says: the issuer of its discovery document and the claims of
//! its ID tokens (OIDC Core §3.1.3.7). No I/O; `now` is injected so tests need no clock.

use super::oidc::{DiscoveryError, CLOCK_SKEW_SECS};
use serde_json::{Map, Value};

/// The byte-for-byte issuer rule, with a hint an operator can act on.
pub fn check_issuer(configured: &str, advertised: &str) -> Result<(), DiscoveryError> {
    if configured == advertised {
        return Ok(());
    }
    let hint = if configured.trim_end_matches('/') == advertised.trim_end_matches('/') {
        format!("they differ only by a trailing slash: set OIDC_ENDPOINT={advertised} exactly")
    } else {
        format!("set OIDC_ENDPOINT to the advertised issuer, {advertised}, byte for byte")
    };
    Err(DiscoveryError::IssuerMismatch {
        configured: configured.to_owned(),
        advertised: advertised.to_owned(),
        hint,
    })
}

/// ID-token claim rules (OIDC Core §3.1.3.7), `now` injected for tests.
pub fn check_claims(
    c: &Map<String, Value>,
    issuer: &str,
    client_id: &str,
    nonce: Option<&str>,
    now: i64,
) -> Result<(), String> {
    if c.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(format!("iss {:?} is not {issuer:?}", c.get("iss")));
    }
    let audiences: Vec<&str> = match c.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&client_id) {
        return Err(format!("aud {audiences:?} does not contain the client id"));
    }
    let azp = c.get("azp").and_then(Value::as_str);
    if (audiences.len() > 1 && azp.is_none()) || azp.is_some_and(|a| a != client_id) {
        return Err(format!("azp {azp:?} is not the client id"));
    }
    let exp = c.get("exp").and_then(Value::as_i64).ok_or("exp missing")?;
    // Saturating: an IdP's `exp` near i64::MAX is far in the future, not an overflow.
    if exp.saturating_add(CLOCK_SKEW_SECS) < now {
        return Err(format!("expired at {exp}"));
    }
    let iat = c.get("iat").and_then(Value::as_i64).ok_or("iat missing")?;
    if iat.saturating_sub(CLOCK_SKEW_SECS) > now {
        return Err(format!("issued in the future ({iat})"));
    }
    if let Some(expected) = nonce {
        if c.get("nonce").and_then(Value::as_str) != Some(expected) {
            return Err("nonce mismatch".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn good() -> Value {
        json!({"iss":"https://idp","aud":"rp","exp":1000,"iat":900,"nonce":"n","sub":"alice"})
    }

    #[test]
    fn a_good_id_token_passes() {
        assert_eq!(
            check_claims(&claims(good()), "https://idp", "rp", Some("n"), 950),
            Ok(())
        );
    }

    #[test]
    fn each_bad_claim_is_refused() {
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
            let mut c = claims(good());
            c.insert(k.into(), v.clone());
            assert!(
                check_claims(&c, "https://idp", "rp", Some("n"), 950).is_err(),
                "{k}={v}"
            );
        }
        for k in ["exp", "iat", "nonce", "aud", "iss"] {
            let mut c = claims(good());
            c.remove(k);
            assert!(
                check_claims(&c, "https://idp", "rp", Some("n"), 950).is_err(),
                "missing {k}"
            );
        }
        let mut c = claims(good());
        c.insert("aud".into(), json!(["rp", "other"]));
        c.insert("azp".into(), json!("rp"));
        assert_eq!(
            check_claims(&c, "https://idp", "rp", Some("n"), 950),
            Ok(()),
            "several audiences with azp"
        );
    }

    /// Found while fuzzing (`fuzz/corpus/jwt`): an `exp` near i64::MAX or an `iat` near
    /// i64::MIN overflowed the clock-skew arithmetic (a panic where overflow is checked).
    #[test]
    fn extreme_times_do_not_overflow() {
        for (k, v) in [("exp", i64::MAX), ("iat", i64::MIN)] {
            let mut c = claims(good());
            c.insert(k.into(), json!(v));
            assert_eq!(
                check_claims(&c, "https://idp", "rp", Some("n"), 950),
                Ok(()),
                "{k}={v}"
            );
        }
    }

    #[test]
    fn issuer_mismatch_explains_the_trailing_slash() {
        let e = check_issuer("https://sso.example.com", "https://sso.example.com/")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("Issuer mismatch: configured \"https://sso.example.com\" but the IdP advertises \"https://sso.example.com/\""), "{e}");
        assert!(e.contains("trailing slash"), "{e}");
        assert!(check_issuer("a", "a").is_ok());
    }
}
