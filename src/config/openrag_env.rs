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
    /// `OIDC_REDIRECT_URI` as written (trimmed): what goes to the IdP, as OpenRag sends it. An
    /// IdP comparing it with the registered URI byte for byte must not see it re-serialised
    /// (a host in lower case, `:443` dropped).
    pub redirect_uri_as_written: String,
    pub keys: Arc<KeyRing>,
    pub scopes: String,
    pub claim_source: ClaimSource,
    pub post_logout_redirect_uri: Option<Url>,
    /// `OIDC_POST_LOGOUT_REDIRECT_URI` as written, for the same reason: re-serialised,
    /// `https://intranet.mycorp.com` would go as `https://intranet.mycorp.com/`.
    pub post_logout_redirect_uri_as_written: Option<String>,
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
    if auth_token
        .as_ref()
        .is_some_and(|t| t.expose().starts_with("REPLACE-ME"))
    {
        // The example Secret's placeholder: the backend reads the same value, so anyone sending
        // it as a Bearer token would be its administrator.
        problems.push(
            "AUTH_TOKEN is still the REPLACE-ME placeholder of the example Secret: set the \
             backend's own administrator token (the backend reads the same value, and anyone \
             sending the placeholder as a Bearer token would be its administrator)"
                .into(),
        );
    }

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
        let hint = if scopes.contains(',') {
            " (the list is space-separated: openid email profile)"
        } else {
            ""
        };
        problems.push(format!(
            "OIDC_SCOPES must include 'openid', got '{scopes}'{hint}"
        ));
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
        redirect_uri_as_written: vars.non_empty("OIDC_REDIRECT_URI")?.to_owned(),
        keys: Arc::new(keys?),
        scopes,
        claim_source: claim_source?,
        post_logout_redirect_uri_as_written: post_logout_redirect_uri
            .is_some()
            .then(|| vars.non_empty("OIDC_POST_LOGOUT_REDIRECT_URI"))
            .flatten()
            .map(str::to_owned),
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
mod tests;
