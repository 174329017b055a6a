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
