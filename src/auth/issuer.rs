//! The issuer rule of discovery (OIDC Discovery §4.3): byte for byte, with a diagnosis an
//! operator can act on. Pure; ID-token claims are checked in `id_token.rs`.

use super::oidc::DiscoveryError;

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
