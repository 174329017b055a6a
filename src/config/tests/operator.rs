//! Mistakes an operator makes, said as what to do: a setting typed so that it would be
//! ignored, settings the rest of the configuration leaves unread, and values whose message
//! must point at the fix.

use super::*;

/// A working OIDC configuration for the bridge, plus `extra`.
fn oidc_with(extra: &[(&'static str, &'static str)]) -> Result<Config, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let key = crate::crypto::generate_key();
    let mut env = vec![
        ("AUTH_MODE", "oidc"),
        ("AUTH_TOKEN", "admin-token-value-123"),
        ("OIDC_ENDPOINT", "https://idp.example.test"),
        ("OIDC_CLIENT_ID", "rp"),
        ("OIDC_CLIENT_SECRET", "client-secret-value"),
        (
            "OIDC_REDIRECT_URI",
            "https://app.example.test/auth/callback",
        ),
        ("OIDC_TOKEN_ENCRYPTION_KEY", key.as_str()),
    ];
    env.extend_from_slice(extra);
    load(inputs(dir.path(), None, &env))
}

fn problems(extra: &[(&'static str, &'static str)]) -> String {
    oidc_with(extra)
        .map(|_| "loaded".into())
        .unwrap_or_else(|e| e.to_string())
}

fn warnings(extra: &[(&'static str, &'static str)]) -> Vec<String> {
    oidc_with(extra).unwrap_or_else(|e| panic!("{e}")).warnings
}

/// `SSO_SIDECAR_AUTHZ_ALLOWED_GROUPS` (one underscore) would leave the allow-list unset and
/// let everyone in: refused, naming the variable meant. Kubernetes' own variables are not.
#[test]
fn a_section_setting_with_one_underscore_is_refused() {
    let e = problems(&[("SSO_SIDECAR_AUTHZ_ALLOWED_GROUPS", "admins")]);
    assert!(
        e.contains("SSO_SIDECAR_AUTHZ_ALLOWED_GROUPS")
            && e.contains("SSO_SIDECAR_AUTHZ__ALLOWED_GROUPS"),
        "{e}"
    );
    let e = problems(&[("SSO_SIDECAR_TLS_CERT_FILE", "/c.pem")]);
    assert!(e.contains("SSO_SIDECAR_TLS__CERT_FILE"), "{e}");
    let w = warnings(&[
        ("SSO_SIDECAR_SERVICE_HOST", "10.0.0.1"),
        ("SSO_SIDECAR_PORT", "tcp://10.0.0.1:8000"),
    ]);
    assert_eq!(
        w.iter()
            .filter(|w| w.contains("ignoring unknown variable"))
            .count(),
        2,
        "{w:?}"
    );
}

/// An unknown setting of a known section, given as a variable: named with a suggestion, and
/// every other problem still reported (figment stopped at it, naming neither).
#[test]
fn an_unknown_section_setting_is_named_and_hides_nothing() {
    let e = problems(&[
        ("SSO_SIDECAR_CONNECTIONS__MAX_PER_IPS", "3"),
        ("SSO_SIDECAR_LISTEN", "8000"),
    ]);
    assert!(
        e.contains("unknown variable SSO_SIDECAR_CONNECTIONS__MAX_PER_IPS (did you mean SSO_SIDECAR_CONNECTIONS__MAX_PER_IP?)"),
        "{e}"
    );
    assert!(e.contains("listen must be"), "the other problem: {e}");
}

/// Settings the rest leaves unread are named.
#[test]
fn settings_of_the_mode_not_in_use_are_named() {
    let w = warnings(&[
        ("SSO_SIDECAR_IDENTITY", "headers"),
        ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "regenerate"),
    ]);
    assert!(
        w.iter()
            .any(|w| w.starts_with("[openrag] settings have no effect")),
        "{w:?}"
    );
    // `[headers]` with the bridge: its names are stripped, never sent.
    let w = warnings(&[("SSO_SIDECAR_HEADERS__USER", "X-User")]);
    assert!(
        w.iter()
            .any(|w| w.starts_with("[headers] names are only stripped")),
        "{w:?}"
    );
    let w = warnings(&[
        ("SSO_SIDECAR_OPENRAG__TOKEN_FILE", "/tokens.json"),
        ("SSO_SIDECAR_OPENRAG__TOKEN_POLICY", "Deny"),
    ]);
    assert!(
        w.iter().any(|w| w.contains("openrag.token_file is set")),
        "{w:?}"
    );
    let w = warnings(&[("SSO_SIDECAR_OPENRAG__TOKEN_FILE", "/tokens.json")]);
    assert!(
        w.iter()
            .any(|w| w.contains("openrag.token_file is set but openrag.token_policy is \"deny\"")),
        "{w:?}"
    );
    // Group sync's refinements without the claim that turns it on; their defaults say nothing.
    let w = warnings(&[
        ("OIDC_GROUP_PREFIX", "sso:"),
        ("OIDC_GROUP_SYNC_PRUNE", "false"),
    ]);
    let said: Vec<_> = w
        .iter()
        .filter(|w| w.contains("without OIDC_CLAIM_GROUPS"))
        .collect();
    assert_eq!(said.len(), 1, "{w:?}");
    assert!(said[0].starts_with("OIDC_GROUP_PREFIX"), "{said:?}");
    let w = warnings(&[("OIDC_GROUP_PREFIX", "/openrag/")]);
    assert!(
        !w.iter().any(|w| w.contains("without OIDC_CLAIM_GROUPS")),
        "{w:?}"
    );
    // And a configuration that uses everything it sets says none of it.
    let w = warnings(&[]);
    assert!(
        !w.iter()
            .any(|w| w.contains("no effect") || w.contains("is set but")),
        "{w:?}"
    );
}

/// Sentinel settings without sentinel mode are refused, as the README says (a Redis URL aimed
/// at a sentinel with the mode forgotten would otherwise run against the wrong server).
#[test]
fn sentinel_settings_outside_sentinel_mode_are_refused() {
    for (name, value) in [
        ("SSO_SIDECAR_REDIS_SENTINEL_MASTER", "prod"),
        ("SSO_SIDECAR_REDIS_SENTINEL_TLS", "true"),
        ("SSO_SIDECAR_REDIS_SENTINEL_PASSWORD", "sentinel-Pass-9q"),
    ] {
        let url = ("SSO_SIDECAR_REDIS_URL", "redis://127.0.0.1:26379");
        // Set to nothing (a compose file's `${X:-}`) is unset.
        if !name.ends_with("_TLS") {
            assert_eq!(problems(&[url, (name, "")]), "loaded", "{name} empty");
        }
        let e = problems(&[url, (name, value)]);
        let setting = name.trim_start_matches("SSO_SIDECAR_").to_ascii_lowercase();
        assert!(
            e.contains(&format!("{setting} is set but redis_mode is \"single\"")),
            "{name}: {e}"
        );
        // A value no temp-dir name can hold (the message names the temp dir it read).
        assert!(!e.contains("sentinel-Pass-9q"), "never echoed: {e}");
    }
}

/// A Redis setting is checked without Redis too: a typo does not wait for the day Redis is
/// turned on.
#[test]
fn redis_settings_are_checked_without_redis() {
    let e = problems(&[("SSO_SIDECAR_REDIS_LOGOUT_REPLICAS", "banana")]);
    assert!(
        e.contains("redis_logout_replicas must be auto or a whole number"),
        "{e}"
    );
}

/// Messages that say what to do.
#[test]
fn messages_point_at_the_fix() {
    let e = problems(&[("OIDC_SCOPES", "openid,email,profile")]);
    assert!(e.contains("the list is space-separated"), "{e}");
    // `openid` present as a scope of its own: loaded, with a word about the comma.
    let w = warnings(&[("OIDC_SCOPES", "openid email,profile")]);
    assert!(
        w.iter().any(|w| w.contains("the list is space-separated")),
        "{w:?}"
    );
    let w = warnings(&[("OIDC_SCOPES", "openid email profile")]);
    assert!(!w.iter().any(|w| w.contains("OIDC_SCOPES")), "{w:?}");
    let w = warnings(&[("RATE_LIMIT_ENABLED", "")]);
    assert!(
        w.iter()
            .any(|w| w.contains("RATE_LIMIT_ENABLED is set but empty")),
        "{w:?}"
    );
    let w = warnings(&[("RATE_LIMIT_ENABLE", "false")]);
    assert!(
        w.iter()
            .any(|w| w.contains("RATE_LIMIT_ENABLE (did you mean RATE_LIMIT_ENABLED?)")),
        "{w:?}"
    );
    let w = warnings(&[("OIDC_POST_LOGOUT_REDIRECT_URI", "https://app.example.test/")]);
    assert!(w.iter().any(|w| w.contains("re-login loop")), "{w:?}");
}

/// Identity headers front another backend than OpenRag: OpenRag's public paths, left as the
/// default, would be that backend's paths answered without a session. Said; not said once
/// `paths.public` is set, nor with the bridge.
#[test]
fn openrags_public_paths_left_by_default_in_front_of_another_backend_are_warned_about() {
    let about = |w: Vec<String>| {
        w.iter()
            .any(|w| w.contains("paths.public is OpenRag's list"))
    };
    assert!(about(warnings(&[("SSO_SIDECAR_IDENTITY", "headers")])));
    assert!(!about(warnings(&[
        ("SSO_SIDECAR_IDENTITY", "headers"),
        ("SSO_SIDECAR_PATHS__PUBLIC", "/healthz"),
    ])));
    assert!(!about(warnings(&[("SSO_SIDECAR_IDENTITY", "openrag")])));
}

/// Identity headers to a backend on another host: anything else that reaches it can name a
/// user too. Said; not for a backend on this host, nor with the bridge (bearer tokens).
#[test]
fn identity_headers_to_another_host_are_warned_about() {
    let about = |w: Vec<String>| w.iter().any(|w| w.contains("is not on this host"));
    let headers = ("SSO_SIDECAR_IDENTITY", "headers");
    assert!(about(warnings(&[
        headers,
        ("SSO_SIDECAR_UPSTREAM", "http://my-app.ns.svc:8080")
    ])));
    for local in [
        "http://127.0.0.1:8080",
        "http://localhost:9000",
        "http://[::1]:80",
    ] {
        assert!(
            !about(warnings(&[headers, ("SSO_SIDECAR_UPSTREAM", local)])),
            "{local}"
        );
    }
    assert!(!about(warnings(&[
        ("SSO_SIDECAR_IDENTITY", "openrag"),
        ("SSO_SIDECAR_UPSTREAM", "http://my-app.ns.svc:8080")
    ])));
}

/// `trusted_origins = "*"` leaves every preflight answered with nothing allowed unless they
/// are forwarded: said, naming both ways out; not with listed origins, nor when forwarded.
#[test]
fn preflights_refused_under_a_star_are_warned_about() {
    let about = |w: Vec<String>| w.iter().any(|w| w.contains("forward_preflights is off"));
    assert!(about(warnings(&[("SSO_SIDECAR_TRUSTED_ORIGINS", "*")])));
    assert!(!about(warnings(&[
        ("SSO_SIDECAR_TRUSTED_ORIGINS", "*"),
        ("SSO_SIDECAR_FORWARD_PREFLIGHTS", "true")
    ])));
    assert!(!about(warnings(&[(
        "SSO_SIDECAR_TRUSTED_ORIGINS",
        "https://ui.example.test"
    )])));
}

/// The admin listener on the public one's port, or an upstream that is the sidecar itself:
/// refused, naming both settings. What only DNS could tell is left alone.
#[test]
fn listeners_and_an_upstream_that_meet_are_refused() {
    for (listen, admin) in [
        ("0.0.0.0:8000", "0.0.0.0:8000"),
        ("0.0.0.0:8000", "127.0.0.1:8000"),
        ("127.0.0.1:8000", "[::]:8000"),
        ("[::1]:8000", "[::1]:8000"),
        ("127.0.0.1:8000", "[::ffff:127.0.0.1]:8000"),
    ] {
        let e = problems(&[
            ("SSO_SIDECAR_LISTEN", listen),
            ("SSO_SIDECAR_ADMIN_LISTEN", admin),
        ]);
        assert!(
            e.contains("listen (") && e.contains("admin_listen ("),
            "{listen} {admin}: {e}"
        );
    }
    for (listen, admin) in [
        ("0.0.0.0:8000", "0.0.0.0:9090"),
        ("127.0.0.1:8000", "127.0.0.2:8000"),
        ("0.0.0.0:8000", "[::1]:8000"),
        ("127.0.0.1:0", "127.0.0.1:0"),
    ] {
        let e = problems(&[
            ("SSO_SIDECAR_LISTEN", listen),
            ("SSO_SIDECAR_ADMIN_LISTEN", admin),
        ]);
        assert_eq!(e, "loaded", "{listen} {admin}");
    }
    for (listen, upstream) in [
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("127.0.0.1:8080", "http://localhost:8080/"),
        ("0.0.0.0:80", "http://127.0.0.1"),
        ("[::]:8443", "https://[::1]:8443/api"),
        ("127.0.0.1:8080", "http://0.0.0.0:8080"),
        ("127.0.0.1:8080", "http://[::ffff:127.0.0.1]:8080"),
        ("127.0.0.1:8080", "http://localhost.:8080"),
        ("[::]:8080", "http://app.localhost:8080"),
    ] {
        let e = problems(&[
            ("SSO_SIDECAR_LISTEN", listen),
            ("SSO_SIDECAR_UPSTREAM", upstream),
        ]);
        assert!(
            e.contains("upstream (") && e.contains("own listen address"),
            "{listen} {upstream}: {e}"
        );
    }
    for (listen, upstream) in [
        ("0.0.0.0:8080", "http://127.0.0.1:8000"),
        ("127.0.0.1:8080", "http://10.0.0.5:8080"),
        ("0.0.0.0:8080", "http://openrag:8080"),
        ("0.0.0.0:443", "https://backend.example.test"),
        // A connection to `[::]` goes to `[::1]`, where nothing of the sidecar listens.
        ("127.0.0.1:8080", "http://[::]:8080"),
        ("127.0.0.1:8080", "http://notlocalhost:8080"),
    ] {
        let e = problems(&[
            ("SSO_SIDECAR_LISTEN", listen),
            ("SSO_SIDECAR_UPSTREAM", upstream),
        ]);
        assert_eq!(e, "loaded", "{listen} {upstream}");
    }
}
