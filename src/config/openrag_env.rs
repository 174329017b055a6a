//! OpenRag's own variables (`AUTH_MODE`, `AUTH_TOKEN`, `OIDC_*`), parsed exactly as OpenRag
//! parses them (docs/openrag-backend.md#variables), with one deliberate difference: the
//! Fernet key is checked at start-up instead of at the first login.
//!
//! Owns parsing and validation of these names only; it returns typed values or problem strings
//! (with OpenRag's wording where OpenRag has one) and never does I/O.

use super::sources::Vars;
use crate::crypto::KeyRing;
use crate::secret::Secret;
use std::sync::Arc;
use url::Url;

/// `AUTH_MODE`: `token` (pure pass-through) or `oidc` (single sign-on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Token,
    Oidc,
}

/// `OIDC_CLAIM_SOURCE`: where user claims are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimSource {
    IdToken,
    Userinfo,
}

/// One `db_field:claim` pair of `OIDC_CLAIM_MAPPING`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    pub field: String,
    pub claim: String,
}

/// The OpenID Connect settings, present when `AUTH_MODE=oidc`.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// `OIDC_ENDPOINT`, verbatim: it is compared byte for byte with the advertised issuer.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret<String>,
    pub redirect_uri: Url,
    pub keys: Arc<KeyRing>,
    pub scopes: String,
    pub claim_source: ClaimSource,
    pub post_logout_redirect_uri: Option<Url>,
}

/// Everything read from OpenRag's variable names.
#[derive(Debug, Clone)]
pub struct OpenRagVars {
    pub auth_mode: AuthMode,
    pub auth_token: Option<Secret<String>>,
    pub oidc: Option<OidcSettings>,
    pub claim_mapping: Vec<ClaimMapping>,
    pub auto_provision: bool,
    /// `OIDC_CLAIM_GROUPS` and friends: groups → partition memberships.
    pub group_sync: Option<super::access::GroupSync>,
    /// `RATE_LIMIT_*`; `None` when disabled.
    pub rate_limits: Option<super::access::RateLimits>,
}

pub const DEFAULT_SCOPES: &str = "openid email profile offline_access";
const WRITABLE_FIELDS: [&str; 2] = ["display_name", "email"];
const REQUIRED_OIDC: [&str; 5] = [
    "OIDC_ENDPOINT",
    "OIDC_CLIENT_ID",
    "OIDC_CLIENT_SECRET",
    "OIDC_REDIRECT_URI",
    "OIDC_TOKEN_ENCRYPTION_KEY",
];

/// OpenRag's boolean rule: only the literal `true` (trimmed, any case) is true; `yes` is not.
pub fn parse_bool(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

pub fn parse_auth_mode(value: Option<&str>) -> Result<AuthMode, String> {
    let raw = value.unwrap_or("token");
    match raw.trim().to_ascii_lowercase().as_str() {
        "token" => Ok(AuthMode::Token),
        "oidc" => Ok(AuthMode::Oidc),
        _ => Err(format!(
            "Invalid AUTH_MODE='{raw}'. Expected 'token' or 'oidc'."
        )),
    }
}

pub fn parse_claim_source(value: Option<&str>) -> Result<ClaimSource, String> {
    let raw = value.unwrap_or("id_token");
    match raw.trim().to_ascii_lowercase().as_str() {
        "id_token" | "" => Ok(ClaimSource::IdToken),
        "userinfo" => Ok(ClaimSource::Userinfo),
        _ => Err(format!(
            "Invalid OIDC_CLAIM_SOURCE='{raw}'. Expected one of ['id_token', 'userinfo']."
        )),
    }
}

/// Parses `OIDC_CLAIM_MAPPING`, collecting every bad entry.
pub fn parse_claim_mapping(value: Option<&str>, problems: &mut Vec<String>) -> Vec<ClaimMapping> {
    let mut out = Vec::new();
    for pair in value.unwrap_or("").split(',').map(str::trim) {
        if pair.is_empty() {
            continue;
        }
        let Some((field, claim)) = pair.split_once(':') else {
            problems.push(format!(
                "Invalid OIDC_CLAIM_MAPPING entry '{pair}': expected 'db_field:claim'"
            ));
            continue;
        };
        let (field, claim) = (field.trim(), claim.trim());
        if !WRITABLE_FIELDS.contains(&field) {
            problems.push(format!(
                "OIDC_CLAIM_MAPPING db_field '{field}' is not writable (allowed: ['display_name', 'email'])"
            ));
        } else if claim.is_empty() {
            problems.push(format!(
                "OIDC_CLAIM_MAPPING entry for '{field}' has empty claim name"
            ));
        } else {
            out.push(ClaimMapping {
                field: field.to_owned(),
                claim: claim.to_owned(),
            });
        }
    }
    out
}

/// Reads and validates OpenRag's variables, pushing every problem found.
pub fn parse(vars: &Vars, problems: &mut Vec<String>) -> Option<OpenRagVars> {
    let auth_mode = parse_auth_mode(vars.get("AUTH_MODE"))
        .map_err(|e| problems.push(e))
        .ok();
    // Checked in both modes, as OpenRag does.
    let claim_mapping = parse_claim_mapping(vars.get("OIDC_CLAIM_MAPPING"), problems);
    let auto_provision = parse_bool(vars.get("OIDC_AUTO_PROVISION_LOGIN"));
    let auth_token = vars
        .non_empty("AUTH_TOKEN")
        .map(|t| Secret::new(t.to_owned()));

    let oidc = match auth_mode {
        Some(AuthMode::Oidc) => parse_oidc(vars, problems),
        _ => None,
    };
    let group_sync = super::access::parse_group_sync(vars, problems);
    let rate_limits = super::access::parse_rate_limits(vars, problems);
    Some(OpenRagVars {
        auth_mode: auth_mode?,
        auth_token,
        oidc,
        claim_mapping,
        auto_provision,
        group_sync,
        rate_limits,
    })
}

fn parse_oidc(vars: &Vars, problems: &mut Vec<String>) -> Option<OidcSettings> {
    let missing: Vec<&str> = REQUIRED_OIDC
        .iter()
        .copied()
        .filter(|name| vars.non_empty(name).is_none())
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "AUTH_MODE=oidc but the following env vars are missing or empty: {}",
            missing.join(", ")
        ));
    }
    let before = problems.len();

    let issuer = vars
        .non_empty("OIDC_ENDPOINT")
        .unwrap_or_default()
        .to_owned();
    if !issuer.is_empty() {
        check_http_url("OIDC_ENDPOINT", &issuer, problems);
    }
    let redirect_uri = vars.non_empty("OIDC_REDIRECT_URI").and_then(|raw| {
        let url = check_http_url("OIDC_REDIRECT_URI", raw, problems)?;
        if url.path() != "/auth/callback" {
            problems.push(format!(
                "OIDC_REDIRECT_URI must be <public origin>/auth/callback (the sidecar's callback \
                 route), got path {:?}",
                url.path()
            ));
            return None;
        }
        Some(url)
    });
    let keys = vars.non_empty("OIDC_TOKEN_ENCRYPTION_KEY").and_then(|raw| {
        KeyRing::parse(raw)
            .map_err(|e| problems.push(e.to_string()))
            .ok()
    });
    let scopes = vars
        .non_empty("OIDC_SCOPES")
        .unwrap_or(DEFAULT_SCOPES)
        .to_owned();
    if !scopes.split_whitespace().any(|s| s == "openid") {
        problems.push(format!("OIDC_SCOPES must include 'openid', got '{scopes}'"));
    }
    let claim_source = parse_claim_source(vars.get("OIDC_CLAIM_SOURCE"))
        .map_err(|e| problems.push(e))
        .ok();
    let post_logout_redirect_uri = vars
        .non_empty("OIDC_POST_LOGOUT_REDIRECT_URI")
        .and_then(|raw| check_http_url("OIDC_POST_LOGOUT_REDIRECT_URI", raw, problems));

    if !missing.is_empty() || problems.len() > before {
        return None;
    }
    Some(OidcSettings {
        issuer,
        client_id: vars.non_empty("OIDC_CLIENT_ID")?.to_owned(),
        client_secret: Secret::new(vars.non_empty("OIDC_CLIENT_SECRET")?.to_owned()),
        redirect_uri: redirect_uri?,
        keys: Arc::new(keys?),
        scopes,
        claim_source: claim_source?,
        post_logout_redirect_uri,
    })
}

/// An absolute `http(s)://host…` URL, or a problem naming the variable.
fn check_http_url(name: &str, raw: &str, problems: &mut Vec<String>) -> Option<Url> {
    match Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
        Ok(_) => {
            problems.push(format!(
                "{name} must be an absolute http(s) URL, got '{raw}'"
            ));
            None
        }
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            problems.push(format!(
                "{name} is not a valid URL ('{raw}'): it must start with https:// or http://"
            ));
            None
        }
        Err(e) => {
            problems.push(format!("{name} is not a valid URL ('{raw}'): {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars::layer(
            Vec::new(),
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn auth_mode_is_trimmed_and_case_insensitive() {
        assert_eq!(parse_auth_mode(Some("  OIDC  ")), Ok(AuthMode::Oidc));
        assert_eq!(parse_auth_mode(Some("Token")), Ok(AuthMode::Token));
        assert_eq!(parse_auth_mode(None), Ok(AuthMode::Token));
        assert_eq!(
            parse_auth_mode(Some("saml")).unwrap_err(),
            "Invalid AUTH_MODE='saml'. Expected 'token' or 'oidc'."
        );
    }

    #[test]
    fn booleans_are_true_only_for_literal_true() {
        assert!(parse_bool(Some(" TRUE ")));
        assert!(parse_bool(Some("true")));
        for no in ["yes", "1", "on", "", "truee"] {
            assert!(!parse_bool(Some(no)), "{no}");
        }
        assert!(!parse_bool(None));
    }

    #[test]
    fn claim_source_accepts_two_values() {
        assert_eq!(
            parse_claim_source(Some(" UserInfo ")),
            Ok(ClaimSource::Userinfo)
        );
        assert_eq!(
            parse_claim_source(Some("access_token")).unwrap_err(),
            "Invalid OIDC_CLAIM_SOURCE='access_token'. Expected one of ['id_token', 'userinfo']."
        );
    }

    #[test]
    fn claim_mapping_reports_every_bad_entry() {
        let mut p = Vec::new();
        let m = parse_claim_mapping(
            Some(" display_name : name ,, email:email, nocolon, is_admin:admin, email: "),
            &mut p,
        );
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0],
            ClaimMapping {
                field: "display_name".into(),
                claim: "name".into()
            }
        );
        assert_eq!(
            p,
            vec![
                "Invalid OIDC_CLAIM_MAPPING entry 'nocolon': expected 'db_field:claim'".to_string(),
                "OIDC_CLAIM_MAPPING db_field 'is_admin' is not writable (allowed: ['display_name', 'email'])".to_string(),
                "OIDC_CLAIM_MAPPING entry for 'email' has empty claim name".to_string(),
            ]
        );
    }

    #[test]
    fn oidc_mode_names_every_missing_variable_in_one_message() {
        let mut p = Vec::new();
        let v = parse(
            &vars(&[
                ("AUTH_MODE", "oidc"),
                ("OIDC_ENDPOINT", "https://idp"),
                ("OIDC_CLIENT_SECRET", " "),
            ]),
            &mut p,
        );
        assert!(v.unwrap().oidc.is_none());
        assert_eq!(
            p,
            vec![
                "AUTH_MODE=oidc but the following env vars are missing or empty: OIDC_CLIENT_ID, \
                  OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI, OIDC_TOKEN_ENCRYPTION_KEY"
                    .to_string()
            ]
        );
    }

    #[test]
    fn oidc_mode_parses_a_complete_configuration() {
        let key = crate::crypto::generate_key();
        let mut p = Vec::new();
        let v = parse(
            &vars(&[
                ("AUTH_MODE", "oidc"),
                ("OIDC_ENDPOINT", "https://sso.example.com/"),
                ("OIDC_CLIENT_ID", "openrag"),
                ("OIDC_CLIENT_SECRET", "s3cret-s3cret"),
                ("OIDC_REDIRECT_URI", "https://rag.example.com/auth/callback"),
                ("OIDC_TOKEN_ENCRYPTION_KEY", &key),
            ]),
            &mut p,
        )
        .unwrap();
        assert!(p.is_empty(), "{p:?}");
        let oidc = v.oidc.unwrap();
        assert_eq!(
            oidc.issuer, "https://sso.example.com/",
            "issuer kept byte for byte"
        );
        assert_eq!(oidc.scopes, DEFAULT_SCOPES);
        assert_eq!(oidc.claim_source, ClaimSource::IdToken);
        assert!(!format!("{oidc:?}").contains("s3cret"));
    }

    #[test]
    fn oidc_mode_rejects_bad_key_redirect_and_scopes_together() {
        let mut p = Vec::new();
        parse(
            &vars(&[
                ("AUTH_MODE", "oidc"),
                ("OIDC_ENDPOINT", "sso.example.com"),
                ("OIDC_CLIENT_ID", "openrag"),
                ("OIDC_CLIENT_SECRET", "s"),
                ("OIDC_REDIRECT_URI", "https://rag.example.com/callback"),
                ("OIDC_TOKEN_ENCRYPTION_KEY", "not-a-fernet-key"),
                ("OIDC_SCOPES", "email profile"),
                ("OIDC_CLAIM_SOURCE", "bogus"),
            ]),
            &mut p,
        );
        assert_eq!(p.len(), 5, "{p:#?}");
        assert!(p.iter().any(|m| m
            == "OIDC_ENDPOINT is not a valid URL ('sso.example.com'): it must start with https:// or http://"));
        assert!(p.iter().any(|m| m.contains("/auth/callback")));
        assert!(p.iter().any(|m| m.contains("not a valid Fernet key")));
        assert!(p.iter().any(|m| m.contains("must include 'openid'")));
        assert!(p.iter().any(|m| m.contains("Invalid OIDC_CLAIM_SOURCE")));
    }

    #[test]
    fn token_mode_ignores_oidc_variables_but_checks_claim_mapping() {
        let mut p = Vec::new();
        let v = parse(
            &vars(&[("OIDC_CLAIM_SOURCE", "bogus"), ("OIDC_CLAIM_MAPPING", "x")]),
            &mut p,
        )
        .unwrap();
        assert_eq!(v.auth_mode, AuthMode::Token);
        assert_eq!(p.len(), 1, "{p:?}");
    }
}
