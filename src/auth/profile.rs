//! The user's profile as the sidecar keeps it in the session — email, name, username, groups —
//! read from the ID token or userinfo as `OIDC_CLAIM_SOURCE` says, at login and again after
//! every refresh that brings a new ID token (so headers, allow-lists, path rules and group sync
//! see the IdP's current view). Reads the IdP through `oidc.rs`; no HTTP responses here.

use super::oidc::{Provider, TokenError};
use crate::config::ClaimSource;
use crate::session::Session;
use serde_json::{Map, Value};

/// Why no profile could be read (the callback maps these to OpenRag's messages).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("userinfo failed: {0}")]
    Userinfo(#[source] TokenError),
    #[error("userinfo names another subject")]
    OtherSubject,
}

/// The profile for `sub` from verified ID-token `claims`: the claims themselves with
/// `OIDC_CLAIM_SOURCE=id_token` (completed from userinfo when the ID token has no profile
/// claims at all, as LemonLDAP::NG's by default), userinfo's with `userinfo` (whose `sub`
/// must match).
///
/// When userinfo fails for an ID token without profile claims, a login goes on with the claims
/// it has; a refresh (`refreshing`) gets the error instead, so the profile kept since the login
/// stands: a passing outage must not blank the session's email or end it under `[authz]`.
pub async fn read(
    provider: &Provider,
    sub: &str,
    claims: &Map<String, Value>,
    access_token: &str,
    refreshing: bool,
) -> Result<Map<String, Value>, ProfileError> {
    match provider.settings.claim_source {
        ClaimSource::IdToken if lacks_profile(claims) => {
            let mut profile = claims.clone();
            match provider.userinfo(access_token).await {
                Ok(info) if info.get("sub").and_then(Value::as_str) == Some(sub) => {
                    static SAID: std::sync::atomic::AtomicBool =
                        std::sync::atomic::AtomicBool::new(false);
                    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::info!("the ID token has no email or name: the profile is read from userinfo at each login");
                    }
                    for (k, v) in info {
                        profile.entry(k).or_insert(v);
                    }
                }
                Ok(_) if refreshing => return Err(ProfileError::OtherSubject),
                Ok(_) => tracing::warn!("userinfo names another subject: ignored"),
                Err(e) if refreshing => return Err(ProfileError::Userinfo(e)),
                Err(e) => {
                    tracing::warn!(error = %e, "userinfo failed; the ID token's claims are used")
                }
            }
            Ok(profile)
        }
        ClaimSource::IdToken => Ok(claims.clone()),
        ClaimSource::Userinfo => {
            let info = provider
                .userinfo(access_token)
                .await
                .map_err(ProfileError::Userinfo)?;
            if info.get("sub").and_then(Value::as_str) != Some(sub) {
                return Err(ProfileError::OtherSubject);
            }
            Ok(info)
        }
    }
}

/// At a refresh that brought no new ID token: the profile read again, from userinfo with the
/// new access token, when `OIDC_CLAIM_SOURCE=userinfo` (its `sub` must match); `None` with
/// `id_token`, whose profile only a new ID token renews.
pub async fn reread(
    provider: &Provider,
    sub: &str,
    access_token: &str,
) -> Option<Result<Map<String, Value>, ProfileError>> {
    match provider.settings.claim_source {
        ClaimSource::IdToken => None,
        ClaimSource::Userinfo => Some(read(provider, sub, &Map::new(), access_token, true).await),
    }
}

/// When a refresh's verified ID-token `claims` came without the profile userinfo should have
/// completed (userinfo failed): what `[authz]` judges. With `OIDC_CLAIM_SOURCE=id_token`, the
/// new claims (the groups a LemonLDAP::NG ID token carries) over the profile kept in `s` for
/// what they do not say; with `userinfo`, `None`: the kept profile alone, as the ID token is
/// not that mode's source.
pub fn judged_without_userinfo(
    source: ClaimSource,
    claims: &Map<String, Value>,
    s: &Session,
    groups_claim: &str,
) -> Option<Map<String, Value>> {
    match source {
        ClaimSource::Userinfo => None,
        ClaimSource::IdToken => {
            let mut judged = claims.clone();
            for (k, v) in stored(s, groups_claim) {
                judged.entry(k).or_insert(v);
            }
            Some(judged)
        }
    }
}

/// Writes the profile's fields into the session (groups from `groups_claim`).
pub fn apply(s: &mut Session, profile: &Map<String, Value>, groups_claim: &str) {
    s.email = string_claim(profile, "email");
    s.name = string_claim(profile, "name");
    s.preferred_username = string_claim(profile, "preferred_username");
    s.groups = crate::claims::groups(profile, groups_claim).unwrap_or_default();
    s.email_verified = match profile.get("email_verified") {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(v)) if v.eq_ignore_ascii_case("true") => Some(true),
        Some(Value::String(v)) if v.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    };
}

/// The session's profile in the shape [`apply`] read it from (groups under `groups_claim`):
/// what `[authz]` checks again at a refresh that brings no new profile, so a rule tightened
/// since the login still ends the session at its next refresh.
pub fn stored(s: &Session, groups_claim: &str) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(email) = &s.email {
        m.insert("email".into(), Value::from(email.as_str()));
    }
    // Not judged by `[authz]`, but kept so that [`apply`] of a profile completed from this one
    // (`judged_without_userinfo`) leaves them as they were.
    if let Some(name) = &s.name {
        m.insert("name".into(), Value::from(name.as_str()));
    }
    if let Some(username) = &s.preferred_username {
        m.insert("preferred_username".into(), Value::from(username.as_str()));
    }
    if let Some(verified) = s.email_verified {
        m.insert("email_verified".into(), Value::from(verified));
    }
    m.insert(groups_claim.into(), Value::from(s.groups.clone()));
    m
}

/// An ID token with none of the profile claims the sidecar uses.
fn lacks_profile(c: &Map<String, Value>) -> bool {
    !["email", "name", "preferred_username"]
        .iter()
        .any(|k| c.contains_key(*k))
}

fn string_claim(c: &Map<String, Value>, name: &str) -> Option<String> {
    c.get(name).and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What `[authz]` reads of the kept profile is what it read of the IdP's: email, its
    /// verification (as a boolean or the string some IdPs send) and the groups.
    #[test]
    fn the_kept_profile_reads_as_the_one_it_came_from() {
        for profile in [
            json!({"email": "a@x.test", "email_verified": false, "g": ["staff"]}),
            json!({"email": "a@x.test", "email_verified": "FALSE", "g": "staff"}),
            json!({"email": "a@x.test", "email_verified": true, "g": []}),
            json!({"email": "a@x.test"}),
            json!({}),
        ] {
            let profile = profile.as_object().unwrap().clone();
            let mut s = Session::for_tests("a", 0, 60);
            apply(&mut s, &profile, "g");
            let kept = stored(&s, "g");
            for (rule, domains, groups) in [
                ("email", vec!["x.test".to_owned()], vec![]),
                ("groups", vec![], vec!["staff".to_owned()]),
            ] {
                let a = crate::config::access::Authz {
                    allowed_email_domains: domains,
                    allowed_groups: groups,
                    groups_claim: "g".into(),
                    ..Default::default()
                };
                assert_eq!(
                    super::super::authz::admits(&a, &kept).is_ok(),
                    super::super::authz::admits(&a, &profile).is_ok(),
                    "{rule} rule on {profile:?}, kept as {kept:?}"
                );
            }
        }
    }

    /// A refresh whose ID token carries groups but no profile, userinfo failing: `[authz]`
    /// judges the new groups (not the login's), with the email kept since the login.
    #[test]
    fn without_userinfo_the_new_id_token_is_judged_over_the_kept_profile() {
        let mut s = Session::for_tests("a", 0, 60);
        s.email = Some("a@x.test".into());
        s.groups = vec!["staff".into()];
        let claims = json!({"sub": "a", "g": ["alumni"]});
        let claims = claims.as_object().unwrap();
        let judged = judged_without_userinfo(ClaimSource::IdToken, claims, &s, "g").unwrap();
        assert_eq!(judged["g"], json!(["alumni"]));
        assert_eq!(judged["email"], json!("a@x.test"));
        let without_groups = json!({"sub": "a"});
        let judged = judged_without_userinfo(
            ClaimSource::IdToken,
            without_groups.as_object().unwrap(),
            &s,
            "g",
        )
        .unwrap();
        assert_eq!(
            judged["g"],
            json!(["staff"]),
            "the kept groups when it says none"
        );
        assert!(judged_without_userinfo(ClaimSource::Userinfo, claims, &s, "g").is_none());
        // Applied, it changes the groups the token names and nothing else.
        s.name = Some("Alice".into());
        s.preferred_username = Some("al".into());
        let judged = judged_without_userinfo(ClaimSource::IdToken, claims, &s, "g").unwrap();
        apply(&mut s, &judged, "g");
        assert_eq!(s.groups, ["alumni"]);
        assert_eq!(
            (
                s.email.as_deref(),
                s.name.as_deref(),
                s.preferred_username.as_deref()
            ),
            (Some("a@x.test"), Some("Alice"), Some("al"))
        );
    }
}
