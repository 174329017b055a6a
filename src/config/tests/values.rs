//! Single settings: bounds, secrets kept out of output, values refused or warned about.

use super::*;

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
    // Sentinel and Cluster node URLs may carry a password inline.
    let c = load(inputs(
        dir.path(),
        None,
        &[
            ("SSO_SIDECAR_REDIS_MODE", "sentinel"),
            (
                "SSO_SIDECAR_REDIS_NODES",
                "redis://:sentinel-pw-123@10.0.0.1:26379,redis://10.0.0.2:26379",
            ),
        ],
    ))
    .unwrap();
    let dump = format!("{c:?}");
    assert!(
        !dump.contains("sentinel-pw-123"),
        "a node's password leaked"
    );
    assert!(dump.contains("10.0.0.1:26379"), "the node is still named");
}

/// A setting of another Redis topology is refused, not ignored: nodes without their mode once
/// left each replica with sessions of its own in memory, with only a warning to set a URL. So
/// is a key prefix with a brace, which changes the hash tags that keep a login's keys on one
/// Cluster shard.
#[test]
fn redis_settings_of_another_topology_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[
                ("SSO_SIDECAR_REDIS_MODE", "cluster"),
                ("SSO_SIDECAR_REDIS_NODES", "redis://10.0.0.1:6379"),
                ("SSO_SIDECAR_REDIS_KEY_PREFIX", "sso{"),
            ],
            "redis_key_prefix must not contain { or }",
        ),
        (
            &[
                ("SSO_SIDECAR_REDIS_URL", "redis://10.0.0.9:6379"),
                ("SSO_SIDECAR_REDIS_KEY_PREFIX", "x{}:"),
            ],
            "redis_key_prefix must not contain { or }",
        ),
        (
            &[(
                "SSO_SIDECAR_REDIS_NODES",
                "redis://10.0.0.1:6379,redis://10.0.0.2:6379",
            )],
            "redis_nodes is set but redis_mode is \"single\"",
        ),
        (
            &[
                ("SSO_SIDECAR_REDIS_MODE", "cluster"),
                ("SSO_SIDECAR_REDIS_NODES", "redis://10.0.0.1:6379"),
                ("SSO_SIDECAR_REDIS_URL", "redis://:pw-in-url@10.0.0.9:6379"),
            ],
            "redis_url is set with redis_mode = \"cluster\"",
        ),
        (
            &[
                ("SSO_SIDECAR_REDIS_MODE", "sentinel"),
                ("SSO_SIDECAR_REDIS_NODES", "redis://10.0.0.1:26379"),
                ("SSO_SIDECAR_REDIS_URL", "redis://10.0.0.9:6379"),
            ],
            "redis_url is set with redis_mode = \"sentinel\"",
        ),
    ];
    for (vars, expected) in cases {
        let e = load(inputs(dir.path(), None, vars))
            .unwrap_err()
            .to_string();
        assert!(e.contains(expected), "{vars:?}: {e}");
        assert!(!e.contains("pw-in-url"), "a URL was echoed: {e}");
    }
}

/// A logout waits for one replica by default with Sentinel (a set-up made to fail over), for
/// none with one server or a Cluster (which may have no replicas); the setting and the wait are
/// read as given, with a Cluster too (each master's replicas).
#[test]
fn logouts_wait_for_a_replica_by_default_with_sentinel_only() {
    let dir = tempfile::tempdir().unwrap();
    let sentinel = [
        ("SSO_SIDECAR_REDIS_MODE", "sentinel"),
        ("SSO_SIDECAR_REDIS_NODES", "redis://10.0.0.1:26379"),
    ];
    let cluster = [
        ("SSO_SIDECAR_REDIS_MODE", "cluster"),
        ("SSO_SIDECAR_REDIS_NODES", "redis://10.0.0.1:6379"),
    ];
    let single = [("SSO_SIDECAR_REDIS_URL", "redis://10.0.0.9:6379")];
    let replicas = |vars: &[(&str, &str)]| {
        let c = load(inputs(dir.path(), None, vars)).unwrap_or_else(|e| panic!("{e}"));
        let r = c.auth.redis.expect("redis configured");
        (r.logout_replicas, r.logout_wait.as_millis())
    };
    assert_eq!(replicas(&sentinel), (1, 1000));
    assert_eq!(replicas(&cluster), (0, 1000));
    assert_eq!(replicas(&single), (0, 1000));
    let mut two = single.to_vec();
    two.extend([
        ("SSO_SIDECAR_REDIS_LOGOUT_REPLICAS", "2"),
        ("SSO_SIDECAR_REDIS_LOGOUT_WAIT_MS", "250"),
    ]);
    assert_eq!(replicas(&two), (2, 250));
    let mut cluster_one = cluster.to_vec();
    cluster_one.push(("SSO_SIDECAR_REDIS_LOGOUT_REPLICAS", "1"));
    assert_eq!(replicas(&cluster_one), (1, 1000));
    let mut none = sentinel.to_vec();
    none.push(("SSO_SIDECAR_REDIS_LOGOUT_REPLICAS", "0"));
    assert_eq!(replicas(&none), (0, 1000));
    let mut shouted = sentinel.to_vec();
    shouted.push(("SSO_SIDECAR_REDIS_LOGOUT_REPLICAS", "AUTO"));
    assert_eq!(replicas(&shouted), (1, 1000));
    // In the file, a number as a number.
    let file = dir.path().join("replicas.toml");
    std::fs::write(&file, "redis_logout_replicas = 2\n").unwrap();
    let mut from_file = inputs(dir.path(), None, &sentinel);
    from_file.config_file = Some(file);
    let c = load(from_file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.auth.redis.expect("redis").logout_replicas, 2);
    for (value, problem) in [
        (
            "two",
            "redis_logout_replicas must be auto or a whole number",
        ),
        ("-1", "redis_logout_replicas must be auto or a whole number"),
    ] {
        let mut bad = sentinel.to_vec();
        bad.push(("SSO_SIDECAR_REDIS_LOGOUT_REPLICAS", value));
        let e = load(inputs(dir.path(), None, &bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains(problem), "{value}: {e}");
    }
    let mut long = sentinel.to_vec();
    long.push(("SSO_SIDECAR_REDIS_LOGOUT_WAIT_MS", "60001"));
    let e = load(inputs(dir.path(), None, &long))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("redis_logout_wait_ms must be at most 60000"),
        "{e}"
    );
    let mut never = sentinel.to_vec();
    never.push(("SSO_SIDECAR_REDIS_LOGOUT_WAIT_MS", "0"));
    let e = load(inputs(dir.path(), None, &never))
        .unwrap_err()
        .to_string();
    assert!(e.contains("redis_logout_wait_ms must be at least 1"), "{e}");
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
fn auth_max_age_is_off_by_default_and_at_most_a_year() {
    let dir = tempfile::tempdir().unwrap();
    let with = |v: &str| {
        load(inputs(
            dir.path(),
            None,
            &[("SSO_SIDECAR_AUTH_MAX_AGE_SECS", v)],
        ))
    };
    assert_eq!(
        load(inputs(dir.path(), None, &[])).unwrap().auth.max_age,
        None
    );
    assert_eq!(with("0").unwrap().auth.max_age, None);
    let hour = with("3600").unwrap().auth.max_age;
    assert_eq!(hour, Some(std::time::Duration::from_secs(3600)));
    let e = with("31536001")
        .err()
        .unwrap_or_else(|| panic!("more than a year accepted"));
    assert!(
        e.to_string()
            .contains("auth_max_age_secs must be at most 31536000"),
        "{e}"
    );
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

/// The example Secret's placeholder admin token is refused in both modes, without echoing it.
#[test]
fn a_placeholder_admin_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for mode in ["token", "oidc"] {
        let env = [("AUTH_MODE", mode), ("AUTH_TOKEN", "REPLACE-ME-admin")];
        let Err(e) = load(inputs(dir.path(), None, &env)) else {
            panic!("accepted in {mode} mode");
        };
        let all = e.0.join("\n");
        assert!(all.contains("AUTH_TOKEN is still the REPLACE-ME"), "{all}");
        assert!(!all.contains("REPLACE-ME-admin"), "{all}");
    }
    let env = [("AUTH_MODE", "token"), ("AUTH_TOKEN", "sk-a-real-token")];
    assert!(load(inputs(dir.path(), None, &env)).is_ok());
}

#[test]
fn connection_balancing_is_exact_unless_set_to_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let with = |v: Option<&str>| {
        let vars: Vec<(&str, &str)> = v
            .map(|v| ("SSO_SIDECAR_CONNECTIONS__BALANCE", v))
            .into_iter()
            .collect();
        load(inputs(dir.path(), None, &vars))
    };
    let balance = |v| with(v).unwrap().connections.balance;
    assert_eq!(balance(None), crate::config::Balance::Exact);
    assert_eq!(balance(Some("kernel")), crate::config::Balance::Kernel);
    let e = with(Some("round-robin")).err().unwrap().to_string();
    assert!(
        e.contains("connections.balance must be 'exact' or 'kernel', got 'round-robin'"),
        "{e}"
    );
}

#[test]
fn bearer_passthrough_follows_the_identity_mode_unless_set() {
    let dir = tempfile::tempdir().unwrap();
    let passthrough = |vars: &[(&str, &str)]| {
        load(inputs(dir.path(), None, vars))
            .unwrap()
            .auth
            .paths
            .bearer_passthrough
    };
    assert_eq!(
        passthrough(&[]),
        Some(true),
        "openrag checks its own tokens"
    );
    let headers = ("SSO_SIDECAR_IDENTITY", "headers");
    assert_eq!(passthrough(&[headers]), Some(false));
    let on = ("SSO_SIDECAR_PATHS__BEARER_PASSTHROUGH", "true");
    assert_eq!(passthrough(&[headers, on]), Some(true));
    let off = ("SSO_SIDECAR_PATHS__BEARER_PASSTHROUGH", "false");
    assert_eq!(passthrough(&[off]), Some(false));
}

/// `AUTH_MODE=token` passes every request through: settings that only mean something when the
/// sidecar authenticates are named, each with what to do, rather than silently unused.
#[test]
fn a_pass_through_names_the_settings_it_leaves_unused() {
    let dir = tempfile::tempdir().unwrap();
    let toml =
        "identity = \"headers\"\n[[authz.rules]]\npath = \"/admin/*\"\ngroups = [\"admins\"]\n";
    let c = load(inputs(
        dir.path(),
        Some(toml),
        &[
            ("AUTH_MODE", "token"),
            ("OIDC_ENDPOINT", "https://idp.example"),
        ],
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let all = c.warnings.join("\n");
    for named in [
        "SSO_SIDECAR_IDENTITY=headers",
        "[[authz.rules]]",
        "OIDC_ENDPOINT",
    ] {
        assert!(all.contains(named), "{named} not named:\n{all}");
    }
    assert_eq!(c.warnings.len(), 3, "{all}");
    let quiet = load(inputs(dir.path(), None, &[("AUTH_MODE", "token")])).unwrap();
    assert!(quiet.warnings.is_empty(), "{:?}", quiet.warnings);
}

/// A reload cannot change the identity mode (or `OIDC_CLAIM_GROUPS`): the defaults that follow
/// them keep following the running values. Before, a SIGHUP after `identity = "headers"` turned
/// the running OpenRag bridge's bearer pass-through and `/static?token=` off, and the other
/// way round turned bearer pass-through on in front of a header-trusting backend.
#[test]
fn a_reload_fills_in_its_defaults_for_the_running_identity_mode() {
    let dir = tempfile::tempdir().unwrap();
    let oidc = |groups: &'static str| {
        vec![
            ("AUTH_MODE", "oidc"),
            ("AUTH_TOKEN", "admin"),
            ("OIDC_ENDPOINT", "https://idp.example"),
            ("OIDC_CLIENT_ID", "rp"),
            ("OIDC_CLIENT_SECRET", "s"),
            ("OIDC_REDIRECT_URI", "https://rp.example/auth/callback"),
            ("OIDC_CLAIM_GROUPS", groups),
        ]
    };
    let key = crate::crypto::generate_key();
    let load_with = |toml: &str, groups: &'static str| {
        let mut env = oidc(groups);
        env.push(("OIDC_TOKEN_ENCRYPTION_KEY", &key));
        load(inputs(dir.path(), Some(toml), &env)).unwrap_or_else(|e| panic!("{e}"))
    };
    let running = load_with("identity = \"openrag\"\n", "roles");
    let next = load_with("identity = \"headers\"\n", "teams");
    let restart = restart_required(&running, &next);
    assert!(restart.iter().any(|k| k == "identity"), "{restart:?}");
    let r = Reloadable::under(&running, &next);
    assert_eq!(
        r.paths.bearer_passthrough,
        Some(true),
        "the bridge's default"
    );
    assert_eq!(r.paths.browser_login, Some(false));
    assert_eq!(r.paths.token_query.0, vec!["/static*".to_owned()]);
    assert_eq!(
        r.authz.groups_claim, "roles",
        "the running OIDC_CLAIM_GROUPS"
    );
    // What the file sets explicitly is applied as given.
    let explicit = load_with(
        "identity = \"headers\"\n[paths]\nbearer_passthrough = false\n[authz]\ngroups_claim = \"g\"\n",
        "teams",
    );
    let r = Reloadable::under(&running, &explicit);
    assert_eq!(r.paths.bearer_passthrough, Some(false));
    assert_eq!(r.authz.groups_claim, "g");
    // A claim the running file named and the next one no longer does: back to the default.
    let r = Reloadable::under(&explicit, &running);
    assert_eq!(
        r.authz.groups_claim, "teams",
        "explicit's own OIDC_CLAIM_GROUPS"
    );
}

/// An allow-list that ends up empty restricts nothing: a variable set to nothing (a compose
/// file's `${GROUPS}` with GROUPS unset) over a file's list, or an emails file with no address
/// (one caught half written when SIGHUP re-reads it), is refused rather than letting everyone in.
#[test]
fn an_allow_list_that_ends_up_empty_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[authz]\nallowed_groups = [\"staff\"]\n";
    for value in ["", " ", ",", " , "] {
        let e = load(inputs(
            dir.path(),
            Some(toml),
            &[("SSO_SIDECAR_AUTHZ__ALLOWED_GROUPS", value)],
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("SSO_SIDECAR_AUTHZ__ALLOWED_GROUPS is set but empty"),
            "{value:?}: {e}"
        );
    }
    let file = dir.path().join("emails.txt");
    std::fs::write(&file, "# nobody yet\n\n").unwrap();
    let toml = format!(
        "[authz]\nallowed_emails_file = {:?}\n",
        file.display().to_string()
    );
    let e = load(inputs(dir.path(), Some(&toml), &[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("lists no address"), "{e}");
    std::fs::write(&file, "alice@example.com\n").unwrap();
    let c = load(inputs(dir.path(), Some(&toml), &[])).unwrap();
    assert!(c.auth.authz.allowed_emails.contains("alice@example.com"));
}

/// `SSO_SIDECAR_CONFIG` and `SSO_SIDECAR_ENV_FILE` are read from the process environment
/// only: written in `.env`, they are ignored, and that is said (a rules file never loaded is
/// no rules).
#[test]
fn a_bootstrap_variable_in_dotenv_is_warned_about() {
    let warnings = dotenv_warnings("SSO_SIDECAR_CONFIG=/etc/sso/sso-sidecar.toml\n");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("SSO_SIDECAR_CONFIG is set in") && w.contains("ignored")),
        "{warnings:?}"
    );
}

/// Settings that run but leave a hole are said at start-up: a public address in plain http
/// beyond this host, and trusted proxies that are every address.
#[test]
fn plain_http_and_trusting_everyone_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let key = crate::crypto::generate_key();
    let oidc = |redirect: &'static str| {
        vec![
            ("AUTH_MODE", "oidc"),
            ("AUTH_TOKEN", "admin-token-value-123"),
            ("OIDC_ENDPOINT", "https://idp.example"),
            ("OIDC_CLIENT_ID", "rp"),
            ("OIDC_CLIENT_SECRET", "client-secret-value"),
            ("OIDC_REDIRECT_URI", redirect),
        ]
    };
    let mut vars = oidc("http://rag.example.com/auth/callback");
    vars.push(("OIDC_TOKEN_ENCRYPTION_KEY", &key));
    let c = load(inputs(dir.path(), None, &vars)).unwrap();
    assert!(
        c.warnings.iter().any(|w| w.contains("OIDC_REDIRECT_URI")),
        "{:?}",
        c.warnings
    );
    let mut vars = oidc("http://127.0.0.1:8000/auth/callback");
    vars.push(("OIDC_TOKEN_ENCRYPTION_KEY", &key));
    vars.push(("SSO_SIDECAR_TRUSTED_PROXIES", "10.0.0.0/8, ::/0"));
    let c = load(inputs(dir.path(), None, &vars)).unwrap();
    assert!(
        !c.warnings.iter().any(|w| w.contains("OIDC_REDIRECT_URI")),
        "loopback is a local test: {:?}",
        c.warnings
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("trusted_proxies contains ::/0")),
        "{:?}",
        c.warnings
    );
}

/// A token file that is not a JSON object is refused by where it breaks, never by quoting what
/// it holds (a bare JSON string is a token).
#[test]
fn a_broken_token_file_is_refused_without_quoting_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.json");
    std::fs::write(&file, "\"or-secret-token-value\"").unwrap();
    let path = file.display().to_string();
    let e = load(inputs(
        dir.path(),
        None,
        &[
            ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "file"),
            ("SSO_SIDECAR_OPENRAG__TOKEN_FILE", &path),
        ],
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("not valid at line 1"), "{e}");
    assert!(!e.contains("or-secret-token-value"), "{e}");
}

/// `${VAR}` in `.env` is taken literally (OpenRag's tooling would expand it): said, since a
/// secret written so passes every check and fails the first login.
#[test]
fn an_unexpanded_variable_in_dotenv_is_warned_about() {
    let warnings = dotenv_warnings("OIDC_CLIENT_SECRET=${KC_SECRET}\nUNRELATED=${X}\n");
    let about: Vec<_> = warnings.iter().filter(|w| w.contains("'${'")).collect();
    assert_eq!(about.len(), 1, "{warnings:?}");
    assert!(about[0].starts_with("OIDC_CLIENT_SECRET in"), "{about:?}");
    assert!(!about[0].contains("KC_SECRET"), "the value is not quoted");
}

/// The warnings of a configuration read from a `.env` holding `text`, and nothing else.
fn dotenv_warnings(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), text).unwrap();
    load(inputs(dir.path(), None, &[])).unwrap().warnings
}

/// An exact rule for a directory after a prefix rule on it is never reached (the prefix rule
/// covers `/admin` too): said at start-up; in the other order, nothing is said.
#[test]
fn an_exact_rule_a_prefix_rule_shadows_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let rule = |path: &str, group: &str| {
        format!("[[authz.rules]]\npath = \"{path}\"\ngroups = [\"{group}\"]\n")
    };
    let shadowed = |c: &crate::config::Config| {
        c.warnings
            .iter()
            .any(|w| w.contains("authz.rules[1] ('/admin') comes after authz.rules[0]"))
    };
    let toml = rule("/admin/*", "admins") + &rule("/admin", "staff");
    let c = load(inputs(dir.path(), Some(&toml), &[])).unwrap();
    assert!(shadowed(&c), "{:?}", c.warnings);
    let toml = rule("/admin", "staff") + &rule("/admin/*", "admins");
    let c = load(inputs(dir.path(), Some(&toml), &[])).unwrap();
    assert!(
        !c.warnings.iter().any(|w| w.contains("comes after")),
        "{:?}",
        c.warnings
    );
}

/// The redirect URIs go to the IdP as written, as OpenRag sends them: an IdP comparing them
/// with its registration byte for byte must not see a host in lower case, `:443` dropped, or a
/// `/` added.
#[test]
fn redirect_uris_are_kept_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let key = crate::crypto::generate_key();
    let with = |redirect: &'static str| {
        load(inputs(
            dir.path(),
            None,
            &[
                ("AUTH_MODE", "oidc"),
                ("OIDC_ENDPOINT", "https://idp.example"),
                ("OIDC_CLIENT_ID", "rp"),
                ("OIDC_CLIENT_SECRET", "client-secret-value"),
                ("OIDC_REDIRECT_URI", redirect),
                ("OIDC_POST_LOGOUT_REDIRECT_URI", "https://intranet.example"),
                ("OIDC_TOKEN_ENCRYPTION_KEY", &key),
                ("SSO_SIDECAR_IDENTITY", "headers"),
            ],
        ))
        .unwrap()
    };
    let c = with(" https://RAG.example:443/auth/callback ");
    // Another spelling of the same URL is another value for the IdP: a reload says that it
    // needs a restart.
    let respelt = with("https://rag.example/auth/callback");
    let restart = restart_required(&c, &respelt);
    assert!(
        restart.iter().any(|k| k == "OIDC_REDIRECT_URI"),
        "{restart:?}"
    );
    let o = c.openrag_env.oidc.unwrap();
    assert_eq!(
        o.redirect_uri_as_written,
        "https://RAG.example:443/auth/callback"
    );
    assert_eq!(o.redirect_uri.host_str(), Some("rag.example"));
    assert_eq!(
        o.post_logout_redirect_uri_as_written.as_deref(),
        Some("https://intranet.example")
    );
}
