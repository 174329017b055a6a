//! Layering tests: defaults < TOML < .env < environment, and error collection.

use super::*;

fn inputs(dir: &Path, config: Option<&str>, env: &[(&str, &str)]) -> Inputs {
    let config_file = config.map(|c| {
        let p = dir.join("sso-sidecar.toml");
        std::fs::write(&p, c).unwrap();
        p
    });
    Inputs {
        config_file,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        unreadable: Vec::new(),
        cwd: dir.to_path_buf(),
    }
}

#[test]
fn defaults_apply_without_any_source() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(inputs(dir.path(), None, &[])).unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:8000");
    assert_eq!(c.admin_listen.to_string(), "0.0.0.0:9090");
    assert_eq!(c.proxy.upstream.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(c.identity, IdentityMode::OpenRag);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.auth_mode(), AuthMode::Token);
    assert!(c.auth.redis.is_none());
}

#[test]
fn later_layers_win() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "SSO_SIDECAR_ADMIN_LISTEN=\"127.0.0.1:7002\"\nSSO_SIDECAR_UPSTREAM='http://10.0.0.2:81'\n",
    )
    .unwrap();
    let toml = "listen = \"127.0.0.1:7001\"\nadmin_listen = \"127.0.0.1:7001\"\nupstream = \"http://10.0.0.1:80\"\nlog_format = \"pretty\"\n[tls]\n";
    let c = load(inputs(
        dir.path(),
        Some(toml),
        &[
            ("SSO_SIDECAR_UPSTREAM", "http://10.0.0.3:82"),
            ("SSO_SIDECAR_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1"),
        ],
    ))
    .unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:7001", "from TOML");
    assert_eq!(
        c.admin_listen.to_string(),
        "127.0.0.1:7002",
        ".env (quotes stripped) beats TOML"
    );
    assert_eq!(
        c.proxy.upstream.as_str(),
        "http://10.0.0.3:82/",
        "environment beats .env"
    );
    assert_eq!(c.log_format, LogFormat::Pretty);
    assert_eq!(c.proxy.trusted_proxies.len(), 2);
}

#[test]
fn nested_keys_come_from_double_underscore_variables() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("c.pem");
    std::fs::write(&cert, "x").unwrap();
    let c = cert.to_str().unwrap();
    let cfg = load(inputs(
        dir.path(),
        None,
        &[
            ("SSO_SIDECAR_TLS__CERT_FILE", c),
            ("SSO_SIDECAR_TLS__KEY_FILE", c),
        ],
    ))
    .unwrap();
    assert_eq!(cfg.tls.unwrap().cert_file, cert);
}

#[test]
fn a_named_config_file_that_is_missing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut i = inputs(dir.path(), None, &[]);
    i.config_file = Some(dir.path().join("nope.toml"));
    let e = load(i).unwrap_err();
    assert!(e.0[0].contains("nope.toml does not exist"), "{e}");

    let i = inputs(
        dir.path(),
        None,
        &[("SSO_SIDECAR_CONFIG", "/nonexistent/x.toml")],
    );
    assert!(load(i)
        .unwrap_err()
        .to_string()
        .contains("/nonexistent/x.toml"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(inputs(
        dir.path(),
        Some("listen = \"nonsense\"\nlistne = 1\n"),
        &[
            ("AUTH_MODE", "oidc"),
            ("SSO_SIDECAR_UPSTREAM", "ftp://x"),
            ("SSO_SIDECAR_IDENTITY", "magic"),
            ("SSO_SIDECAR_LOG_FORMAT", "xml"),
            ("SSO_SIDECAR_TOKEN_ENDPOINT_AUTH", "private_key_jwt"),
            ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "ask"),
            ("SSO_SIDECAR_TRUSTED_PROXIES", "not-an-ip"),
        ],
    ))
    .unwrap_err();
    let all = e.to_string();
    // The unknown TOML key stops extraction, so the file's other values are not checked, but the
    // OpenRag variables still are: the operator sees both kinds at once.
    assert!(all.contains("listne"), "{all}");
    assert!(
        all.contains("AUTH_MODE=oidc but the following env vars are missing or empty"),
        "{all}"
    );

    let e = load(inputs(
        dir.path(),
        Some("listen = \"nonsense\"\n"),
        &[
            ("AUTH_MODE", "oidc"),
            ("SSO_SIDECAR_UPSTREAM", "ftp://x"),
            ("SSO_SIDECAR_IDENTITY", "magic"),
            ("SSO_SIDECAR_LOG_FORMAT", "xml"),
            ("SSO_SIDECAR_TOKEN_ENDPOINT_AUTH", "private_key_jwt"),
            ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "ask"),
            ("SSO_SIDECAR_TRUSTED_PROXIES", "not-an-ip"),
            ("SSO_SIDECAR_REDIS_URL", "http://user:pw@redis"),
        ],
    ))
    .unwrap_err();
    let all = e.to_string();
    for needle in [
        "listen must be",
        "upstream must be",
        "identity must be 'openrag' or 'headers', got 'magic'",
        "log_format must be 'json' or 'pretty', got 'xml'",
        "token_endpoint_auth must be one of 'auto', 'client_secret_basic', 'client_secret_post', got 'private_key_jwt'",
        "openrag.token_policy must be one of 'deny', 'regenerate', 'file', got 'ask'",
        "not-an-ip",
        "missing or empty",
        "redis_url must start",
    ] {
        assert!(all.contains(needle), "{needle} not in {all}");
    }
    assert!(!all.contains("pw@"), "the Redis password leaked into {all}");
}

#[test]
fn unknown_prefixed_variables_warn_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(inputs(
        dir.path(),
        None,
        &[("SSO_SIDECAR_SERVICE_PORT", "tcp://10.0.0.1:80")],
    ))
    .unwrap();
    assert_eq!(
        c.warnings,
        vec!["ignoring unknown variable SSO_SIDECAR_SERVICE_PORT".to_string()]
    );
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let key = crate::crypto::generate_key();
    let c = load(inputs(
        dir.path(),
        None,
        &[
            ("AUTH_MODE", "oidc"),
            ("AUTH_TOKEN", "admin-token-value-123"),
            ("OIDC_ENDPOINT", "https://idp.example"),
            ("OIDC_CLIENT_ID", "rp"),
            ("OIDC_CLIENT_SECRET", "client-secret-value"),
            ("OIDC_REDIRECT_URI", "https://rp.example/auth/callback"),
            ("OIDC_TOKEN_ENCRYPTION_KEY", &key),
            (
                "SSO_SIDECAR_REDIS_URL",
                "redis://:redis-password@127.0.0.1:6379",
            ),
        ],
    ))
    .unwrap();
    let dump = format!("{c:?}");
    for secret in [
        "admin-token-value-123",
        "client-secret-value",
        key.as_str(),
        "redis-password",
    ] {
        assert!(!dump.contains(secret), "{secret} leaked");
    }
    assert!(
        c.warnings.is_empty(),
        "redis configured: no in-memory warning"
    );
}

#[test]
fn the_example_toml_lists_every_key_with_its_default() {
    let example = include_str!("../../config/sso-sidecar.example.toml");
    let parsed: Settings = Figment::from(Toml::string(example)).extract().unwrap();
    let defaults = serde_json::to_value(Settings::default()).unwrap();
    assert_eq!(
        serde_json::to_value(&parsed).unwrap(),
        defaults,
        "example values must equal the defaults"
    );
    for key in settings::top_level_keys() {
        let env = format!("SSO_SIDECAR_{}", key.to_ascii_uppercase());
        assert!(
            example.contains(&env),
            "{env} is not documented in the example TOML"
        );
    }
}

#[test]
fn the_example_toml_path_rule_sample_loads_uncommented() {
    let example = include_str!("../../config/sso-sidecar.example.toml");
    let sample = ["[[authz.rules]]", "path = ", "methods = ", "groups = "];
    let uncommented: String = example
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if sample.iter().any(|s| rest.starts_with(s)) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        uncommented.contains("\n[[authz.rules]]\n"),
        "the sample is there"
    );
    let parsed: Result<Settings, _> = Figment::from(Toml::string(&uncommented)).extract();
    assert!(parsed.is_ok(), "{parsed:?}");
}

#[test]
fn the_readme_documents_every_key() {
    let readme = include_str!("../../README.md");
    for key in settings::top_level_keys() {
        let env = format!("`SSO_SIDECAR_{}", key.to_ascii_uppercase());
        assert!(
            readme.contains(&env),
            "{env} is missing from the README's configuration table"
        );
    }
}

#[test]
fn an_all_digit_redis_password_loads_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(inputs(
        dir.path(),
        None,
        &[
            ("SSO_SIDECAR_REDIS_URL", "redis://127.0.0.1:6379"),
            ("SSO_SIDECAR_REDIS_USERNAME", "2024"),
            ("SSO_SIDECAR_REDIS_PASSWORD", "0123456789"),
        ],
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let redis = c.auth.redis.expect("redis configured");
    assert!(!format!("{redis:?}").contains("0123456789"));
    assert_eq!(
        redis.password.as_ref().map(|p| p.expose().as_str()),
        Some("0123456789")
    );
    assert_eq!(redis.username.as_deref(), Some("2024"));
}

#[test]
fn openrag_booleans_that_read_as_false_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(inputs(
        dir.path(),
        None,
        &[
            ("RATE_LIMIT_ENABLED", "1"),
            ("OIDC_GROUP_SYNC_PRUNE", "yes"),
            ("OIDC_AUTO_PROVISION_LOGIN", "True"),
        ],
    ))
    .unwrap();
    let said = |name: &str| {
        c.warnings
            .iter()
            .any(|w| w.starts_with(&format!("{name}=")))
    };
    assert!(
        said("RATE_LIMIT_ENABLED") && said("OIDC_GROUP_SYNC_PRUNE"),
        "{:?}",
        c.warnings
    );
    assert!(
        !said("OIDC_AUTO_PROVISION_LOGIN"),
        "True is true: {:?}",
        c.warnings
    );
}

#[test]
fn bridge_settings_without_the_bridge_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("AUTH_MODE", "oidc"),
        ("OIDC_ENDPOINT", "https://idp.example.test"),
        ("OIDC_CLIENT_ID", "rp"),
        ("OIDC_CLIENT_SECRET", "s"),
        (
            "OIDC_REDIRECT_URI",
            "https://app.example.test/auth/callback",
        ),
        ("OIDC_GROUP_PREFIX", "sso:"),
        ("OIDC_CLAIM_GROUPS", "roles"),
        ("OIDC_GROUP_SYNC_PRUNE", "false"),
    ];
    let key = crate::crypto::generate_key();
    env.push(("OIDC_TOKEN_ENCRYPTION_KEY", &key));
    env.push(("AUTH_TOKEN", "admin-token"));
    let noted = |c: &Config| {
        c.warnings
            .iter()
            .filter(|w| w.contains("has no effect with SSO_SIDECAR_IDENTITY=headers"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let openrag = load(inputs(dir.path(), None, &env)).unwrap_or_else(|e| panic!("{e}"));
    assert!(noted(&openrag).is_empty(), "{:?}", openrag.warnings);
    env.push(("SSO_SIDECAR_IDENTITY", "headers"));
    let headers = load(inputs(dir.path(), None, &env)).unwrap_or_else(|e| panic!("{e}"));
    let said = noted(&headers);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].starts_with("OIDC_GROUP_PREFIX "), "{said:?}");
}

#[test]
fn the_login_timeout_is_a_setting_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(inputs(
        dir.path(),
        None,
        &[("SSO_SIDECAR_LOGIN_TIMEOUT_SECS", "1800")],
    ))
    .unwrap();
    assert_eq!(c.auth.login_timeout.as_secs(), 1800);
    for bad in ["59", "86401"] {
        let e = load(inputs(
            dir.path(),
            None,
            &[("SSO_SIDECAR_LOGIN_TIMEOUT_SECS", bad)],
        ))
        .err()
        .unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(
            e.to_string()
                .contains("login_timeout_secs must be between 60 and 86400"),
            "{e}"
        );
    }
}

#[test]
fn a_toml_syntax_error_is_placed_without_quoting_the_line() {
    let dir = tempfile::tempdir().unwrap();
    for toml in [
        "listen = \"0.0.0.0:8000\"\nredis_password = \"s3cret-pw\n",
        "redis_url = redis://:s3cret-pw@redis:6379\n",
    ] {
        let e = load(inputs(dir.path(), Some(toml), &[]))
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("s3cret-pw"), "{e}");
        assert!(e.contains("line") && e.contains("column"), "{e}");
    }
}

#[test]
fn the_idle_timeout_is_off_or_within_the_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let with = |v: &str| {
        load(inputs(
            dir.path(),
            None,
            &[
                ("SSO_SIDECAR_SESSION_IDLE_TIMEOUT_SECS", v),
                ("SSO_SIDECAR_SESSION_LIFETIME_SECS", "3600"),
            ],
        ))
    };
    assert_eq!(with("0").unwrap().auth.session_idle_timeout, None);
    assert_eq!(
        with("10").unwrap().auth.session_idle_timeout,
        Some(std::time::Duration::from_secs(10))
    );
    assert!(with("3600").is_ok());
    for bad in ["9", "3601"] {
        let e = with(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(
            e.to_string().contains("session_idle_timeout_secs must be"),
            "{e}"
        );
    }
}

#[test]
fn an_upstream_with_credentials_is_refused_without_showing_them() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "http://u:hunter2@h:1",
        "http://hunter2@h:1",
        "ftp://u:hunter2@h",
    ] {
        let env = [("SSO_SIDECAR_UPSTREAM", url)];
        let Err(e) = load(inputs(dir.path(), None, &env)) else {
            panic!("{url} was accepted");
        };
        let all = e.0.join("\n");
        assert!(all.contains("upstream must"), "{all}");
        assert!(!all.contains("hunter2"), "credentials echoed: {all}");
    }
}
