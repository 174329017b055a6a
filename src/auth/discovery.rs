//! What discovery yields and how it fails: the members of the discovery document the sidecar
//! reads itself, the errors, and the issuer rule (OIDC Discovery §4.3: byte for byte, with a
//! diagnosis an operator can act on). Pure; fetching is `oidc.rs`'s, ID-token claims are
//! `id_token.rs`'s.

use super::idp_http::IdpHttpError;
use serde::Deserialize;

/// The discovery members the sidecar reads itself (the crate's metadata has the rest).
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// RFC 9207: the IdP names itself (`iss`) in every authorization response.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("Issuer mismatch: configured \"{configured}\" but the IdP advertises \"{advertised}\" ({hint})")]
    IssuerMismatch {
        configured: String,
        advertised: String,
        hint: String,
    },
    #[error("OIDC discovery at {url} failed: {source}")]
    Fetch { url: String, source: IdpHttpError },
    #[error("OIDC discovery document at {url} is invalid: {reason}")]
    Invalid { url: String, reason: String },
}

impl DiscoveryError {
    /// The whole cause chain (DNS, refused connection, TLS, HTTP status), with a hint when
    /// the chain points at a usual mistake: what `check` prints and the start-up log says.
    pub fn explained(&self) -> String {
        let chain = crate::http_json::error_chain(self);
        if chain.contains("InvalidContentType") || chain.contains("corrupt message") {
            format!("{chain}\n  hint: TLS handshake failed: is the IdP plain http? Try OIDC_ENDPOINT=http://…")
        } else if chain.contains("UnknownIssuer") || chain.contains("unknown issuer") {
            format!("{chain}\n  hint: the IdP's TLS certificate is not trusted: for a private CA, set SSO_SIDECAR_IDP_CA_FILE to its PEM bundle")
        } else if chain.contains("404") {
            format!("{chain}\n  hint: no discovery document there: check OIDC_ENDPOINT (the issuer, without /.well-known/openid-configuration)")
        } else {
            chain
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
