//! OpenID Connect Back-Channel Logout 1.0: `POST /auth/backchannel-logout`.
//!
//! The IdP posts a signed `logout_token`; every check of the spec's §2.6 is made before anything
//! is revoked. A token whose `jti` was already seen (its replay marker in the shared store, so
//! a replay to another replica is caught too) is refused; otherwise its sessions are revoked,
//! and only then is the marker written. So an invalid token burns nothing, and a logout that
//! did not complete (the store failed or timed out, even after applying a write) leaves no
//! marker: the IdP's retry is not taken for a replay. The revocation runs in a task of its own,
//! so an IdP that hangs up while it runs does not cut it short. Revocation is idempotent: two
//! deliveries of one token at once both revoke, which ends nothing more. Revocation is by `sid`
//! when present, else every session of `sub` from this issuer.

use super::flow::Auth;
use super::oidc::{now_unix, CLOCK_SKEW_SECS};
use super::tokens::TokenError;
use crate::session::sessions::SidLogout;
use serde_json::{Map, Value};
use std::time::Duration;

/// How old a logout token may be (its `iat`), and how long its `jti` is remembered.
pub const MAX_AGE_SECS: i64 = 300;
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Why a logout token was refused (the `error_description` of the 400).
#[derive(Debug, thiserror::Error)]
pub enum LogoutError {
    #[error("missing logout_token")]
    Missing,
    #[error("invalid logout_token: {0}")]
    Invalid(String),
    #[error("logout_token replayed")]
    Replayed,
    /// The token could not be judged (the JWKS it needs could not be fetched): not its fault,
    /// and not a detail for an anonymous caller.
    #[error("cannot verify logout_token now: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// No place free to wait for a key in, or to be handled in (`backchannel_limits`).
    #[error("back-channel logouts busy")]
    Busy,
}

impl Auth {
    /// Validates `logout_token` and revokes the sessions it names; returns how many.
    pub async fn backchannel_logout(
        self: &std::sync::Arc<Self>,
        form: &[u8],
    ) -> Result<usize, LogoutError> {
        let token = form_urlencoded::parse(form)
            .find(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned())
            .ok_or(LogoutError::Missing)?;
        // Against the cached keys first, holding no place: a token whose key is unknown waits
        // for a re-fetch in a pool of its own, which invented keys may fill without touching
        // the places that verified logouts are handled in.
        let verified = match self.provider.verify_cached(&token) {
            Err(TokenError::Jwt(crate::auth::jwt::JwtError::UnknownKey(_))) => {
                let Some(_waiting) = self.backchannel.wait_for_key() else {
                    return Err(LogoutError::Busy);
                };
                self.provider.verify_signature(&token).await
            }
            other => other,
        }
        .map_err(|e| match e {
            TokenError::Jwt(e) => LogoutError::Invalid(e.to_string()),
            e => LogoutError::Unavailable(e.to_string()),
        })?;
        if !typ_ok(verified.header.typ.as_deref()) {
            return Err(LogoutError::Invalid(format!(
                "typ {:?}",
                verified.header.typ.as_deref().unwrap_or_default()
            )));
        }
        let settings = &self.provider.settings;
        let (sid, sub, jti) = check_claims(
            &verified.claims,
            &settings.issuer,
            &settings.client_id,
            now_unix(),
        )
        .map_err(LogoutError::Invalid)?;

        let Some(_handling) = self.backchannel.handle() else {
            return Err(LogoutError::Busy);
        };
        let marker = crate::store::keys::hashed("jti", &["jti", &settings.issuer, &jti]);
        if self.sessions.store().get_fresh(&marker).await?.is_some() {
            return Err(LogoutError::Replayed);
        }
        let auth = self.clone();
        let named = (sid.is_some(), sub.clone());
        let n = tokio::spawn(async move { auth.revoke_for_logout(sid, sub, &marker).await })
            .await
            .unwrap_or_else(|e| {
                Err(crate::store::StoreError::Unavailable(format!(
                    "logout stopped: {e}"
                )))
            })?;
        self.metrics.logout("backchannel");
        self.metrics.sessions_revoked(n as u64);
        let (sid, sub) = named;
        tracing::info!(sid, sub = ?sub, revoked = n, "back-channel logout");
        Ok(n)
    }

    /// Revokes what a valid logout token names, then remembers its `jti` (`marker`).
    async fn revoke_for_logout(
        &self,
        sid: Option<String>,
        sub: Option<String>,
        marker: &str,
    ) -> Result<usize, crate::store::StoreError> {
        let iss = &self.provider.settings.issuer;
        let n = match (&sid, &sub) {
            (Some(sid), sub) => {
                let by = SidLogout::Signed {
                    sub: sub.as_deref(),
                };
                self.sessions.revoke_sid(iss, sid, by).await?
            }
            (None, Some(sub)) => {
                self.sessions
                    .revoke_sub(iss, sub, Some(crate::clock::now_unix_ms()))
                    .await?
            }
            (None, None) => 0,
        };
        let ttl = Duration::from_secs((2 * MAX_AGE_SECS) as u64);
        self.sessions.store().put(marker, b"1", ttl).await?;
        Ok(n)
    }
}

/// The claim rules of Back-Channel Logout §2.4/§2.6; returns (sid, sub, jti).
pub fn check_claims(
    c: &Map<String, Value>,
    issuer: &str,
    client_id: &str,
    now: i64,
) -> Result<(Option<String>, Option<String>, String), String> {
    if c.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err("iss is not the configured issuer".into());
    }
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == client_id,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err("aud does not contain the client id".into());
    }
    let iat = c.get("iat").and_then(numeric_date).ok_or("iat missing")?;
    if iat > now + CLOCK_SKEW_SECS || iat < now - MAX_AGE_SECS {
        return Err("iat is outside the accepted window".into());
    }
    if let Some(exp) = c.get("exp") {
        let exp = numeric_date(exp).ok_or("exp is not a number")?;
        if exp.saturating_add(CLOCK_SKEW_SECS) < now {
            return Err("expired".into());
        }
    }
    let jti = c
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty())
        .ok_or("jti missing")?;
    match c.get("events").and_then(|e| e.get(EVENT)) {
        Some(Value::Object(_)) => {}
        _ => return Err("events does not contain the back-channel logout event".into()),
    }
    if c.contains_key("nonce") {
        return Err("nonce is not allowed in a logout token".into());
    }
    let sid = c.get("sid").and_then(Value::as_str).map(str::to_owned);
    let sub = c.get("sub").and_then(Value::as_str).map(str::to_owned);
    if sid.is_none() && sub.is_none() {
        return Err("neither sid nor sub".into());
    }
    Ok((sid, sub, jti.to_owned()))
}

/// A logout token's `typ`, when it has one: `logout+jwt` (Back-Channel Logout 1.0 §2.4), with
/// or without the `application/` prefix RFC 7515 §4.1.9 lets it carry, or plain `JWT` (IdPs of
/// the draft versions). Any other type is another kind of token, refused.
fn typ_ok(typ: Option<&str>) -> bool {
    let Some(typ) = typ else {
        return true;
    };
    let short = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    short.eq_ignore_ascii_case("logout+jwt") || short.eq_ignore_ascii_case("jwt")
}

/// A NumericDate (RFC 7519 §2): seconds, which may have a fraction (`1700000000.5`), taken
/// down to the whole second.
fn numeric_date(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        let f = v.as_f64()?;
        // Bounded before the cast (which saturates anyway): no NaN or infinity in JSON.
        f.is_finite()
            .then(|| f.floor().clamp(i64::MIN as f64, i64::MAX as f64) as i64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({"iss":"https://idp","aud":"rp","iat":1000,"jti":"j1","sid":"s1","sub":"alice",
               "events":{EVENT:{}}})
    }

    fn check(v: &Value) -> Result<(Option<String>, Option<String>, String), String> {
        check_claims(v.as_object().unwrap(), "https://idp", "rp", 1010)
    }

    #[test]
    fn a_good_logout_token_names_its_session() {
        assert_eq!(
            check(&good()),
            Ok((Some("s1".into()), Some("alice".into()), "j1".into()))
        );
    }

    /// Found while fuzzing (`fuzz/corpus/jwt`): an `exp` near i64::MAX overflowed the
    /// clock-skew arithmetic (a panic where overflow is checked).
    #[test]
    fn an_exp_near_i64_max_does_not_overflow() {
        let mut t = good();
        t["exp"] = json!(i64::MAX);
        assert!(check(&t).is_ok());
    }

    /// Conforming IdPs' spellings pass: `typ` with its media-type prefix, NumericDates with a
    /// fraction (both were refused: a conforming IdP's logouts got 400, its sessions lived on).
    #[test]
    fn conforming_spellings_of_typ_and_dates_pass() {
        for typ in [
            None,
            Some("logout+jwt"),
            Some("application/logout+jwt"),
            Some("JWT"),
            Some("Application/Logout+JWT"),
        ] {
            assert!(typ_ok(typ), "{typ:?}");
        }
        for typ in [
            "at+jwt",
            "application/at+jwt",
            "application/",
            "logout+jwt2",
            "applicatioé/jwt",
        ] {
            assert!(!typ_ok(Some(typ)), "{typ}");
        }
        let mut t = good();
        t["iat"] = json!(1000.5);
        t["exp"] = json!(1100.25);
        assert!(check(&t).is_ok());
        t["exp"] = json!(900.5);
        assert!(check(&t).is_err(), "a fractional exp long past");
    }

    #[test]
    fn every_broken_rule_is_refused() {
        let mut cases: Vec<(&str, Value)> = vec![
            ("iss", json!("https://evil")),
            ("aud", json!("other")),
            ("iat", json!(100)),
            ("iat", json!(5000)),
            ("exp", json!(10)),
            ("events", json!({})),
            ("events", json!({EVENT: "yes"})),
            ("nonce", json!("n")),
            ("jti", json!("")),
        ];
        for (k, v) in cases.drain(..) {
            let mut t = good();
            t[k] = v.clone();
            assert!(check(&t).is_err(), "{k}={v}");
        }
        for k in ["jti", "events", "iat", "aud"] {
            let mut t = good();
            t.as_object_mut().unwrap().remove(k);
            assert!(check(&t).is_err(), "missing {k}");
        }
        let mut t = good();
        t.as_object_mut().unwrap().remove("sid");
        t.as_object_mut().unwrap().remove("sub");
        assert!(check(&t).is_err(), "neither sid nor sub");
    }
}
