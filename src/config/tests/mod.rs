//! Layering tests: defaults < TOML < .env < environment, and error collection.

use super::*;

mod documented;
mod operator;
mod values;

pub(crate) fn inputs(dir: &Path, config: Option<&str>, env: &[(&str, &str)]) -> Inputs {
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
            (
                "SSO_SIDECAR_BACKCHANNEL_LOGOUT_FROM",
                "10.0.0.0/8, idp.example",
            ),
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
        "trusted_proxies: 'not-an-ip' is not an IP address or CIDR",
        "backchannel_logout_from: 'idp.example' is not an IP address or CIDR",
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
        &[
            ("SSO_SIDECAR_SERVICE_PORT", "tcp://10.0.0.1:80"),
            ("AUTH_MODE", "token"),
        ],
    ))
    .unwrap();
    assert_eq!(
        c.warnings,
        vec!["ignoring unknown variable SSO_SIDECAR_SERVICE_PORT".to_string()]
    );
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

/// `AUTH_MODE` unset and no `.env` where one was looked for: the pass-through it leaves is
/// named, with the path looked at (not when `AUTH_MODE` is set, or a `.env` was read).
#[test]
fn a_pass_through_nobody_asked_for_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let warned = |c: &Config| {
        c.warnings
            .iter()
            .any(|w| w.contains("AUTH_MODE is not set"))
    };
    let c = load(inputs(dir.path(), None, &[])).unwrap();
    assert!(warned(&c), "{:?}", c.warnings);
    let all = c.warnings.join("\n");
    assert!(
        all.contains(&dir.path().join(".env").display().to_string()),
        "{all}"
    );
    let c = load(inputs(dir.path(), None, &[("AUTH_MODE", "token")])).unwrap();
    assert!(!warned(&c), "{:?}", c.warnings);
    std::fs::write(dir.path().join(".env"), "AUTH_TOKEN=x\n").unwrap();
    let c = load(inputs(dir.path(), None, &[])).unwrap();
    assert!(!warned(&c), "{:?}", c.warnings);
}

/// `[]` in a variable is the empty list (start-up's advice for `paths.public` says to write it):
/// it was taken as one entry and refused as a path or an address.
#[test]
fn an_empty_list_in_a_variable_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(inputs(
        dir.path(),
        None,
        &[
            ("SSO_SIDECAR_PATHS__PUBLIC", " [] "),
            ("SSO_SIDECAR_TRUSTED_PROXIES", "[]"),
            ("AUTH_MODE", "token"),
        ],
    ))
    .unwrap();
    assert!(c.auth.paths.public.0.is_empty());
    assert!(c.proxy.trusted_proxies.is_empty());
}

/// OpenRag's `INDEXERUI_URL` is an origin a login may return to, as in OpenRag (its trailing
/// slash dropped); a value that is no origin (OpenRag's stock placeholder) is warned about.
#[test]
fn the_indexer_uis_origin_is_one_a_login_may_return_to() {
    let dir = tempfile::tempdir().unwrap();
    let env = |ui: &'static str| [("AUTH_MODE", "token"), ("INDEXERUI_URL", ui)];
    let c = load(inputs(dir.path(), None, &env("http://10.0.0.5:3042/"))).unwrap();
    assert_eq!(c.auth.allowed_redirect_origins, ["http://10.0.0.5:3042"]);
    let c = load(inputs(
        dir.path(),
        None,
        &env("http://X.X.X.X:INDEXERUI_PORT"),
    ))
    .unwrap();
    assert!(c.auth.allowed_redirect_origins.is_empty());
    assert!(
        c.warnings.iter().any(|w| w.contains("INDEXERUI_URL")),
        "{:?}",
        c.warnings
    );
}

/// A refused configuration says which files it was read from (a `.env` other than the one
/// meant, or none, is a common cause and showed nowhere).
#[test]
fn a_refused_configuration_names_the_files_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(inputs(dir.path(), None, &[("AUTH_MODE", "nope")]))
        .err()
        .unwrap()
        .to_string();
    let no_env = format!("no .env at {}", dir.path().join(".env").display());
    assert!(
        e.contains("read: no TOML file; ") && e.contains(&no_env),
        "{e}"
    );
    std::fs::write(dir.path().join(".env"), "AUTH_MODE=nope\n").unwrap();
    let e = load(inputs(dir.path(), None, &[]))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&format!(".env {}", dir.path().join(".env").display())),
        "{e}"
    );
}

/// A quoted value that fails nothing at start-up (a secret: the IdP refuses it at the first
/// login) is warned about, naming the variable, never the value.
#[test]
fn quotes_kept_by_the_environment_are_warned_about_when_nothing_fails() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(inputs(
        dir.path(),
        None,
        &[
            ("AUTH_MODE", "token"),
            ("OIDC_CLIENT_SECRET", "\"s3cret-value\""),
        ],
    ))
    .unwrap();
    let all = c.warnings.join("\n");
    assert!(
        all.contains("OIDC_CLIENT_SECRET is wrapped in quotes"),
        "{all}"
    );
    assert!(!all.contains("s3cret-value"), "{all}");
}

/// A value quoted in the process environment (docker --env-file keeps the quotes) fails as it
/// would, with a line saying the quotes are the cause.
#[test]
fn quotes_kept_by_the_environment_are_named_as_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(inputs(
        dir.path(),
        None,
        &[
            ("AUTH_MODE", "oidc"),
            ("OIDC_SCOPES", "\"openid email profile\""),
            ("OIDC_CLIENT_ID", "plain"),
        ],
    ))
    .err()
    .unwrap();
    assert!(
        e.0.iter()
            .any(|p| p.starts_with("OIDC_SCOPES is wrapped in quotes")),
        "{e}"
    );
    assert!(!e.to_string().contains("OIDC_CLIENT_ID is wrapped"), "{e}");
}
