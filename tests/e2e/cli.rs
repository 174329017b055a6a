//! The command line: `check`, `gen-key`, and exit code 78 listing every configuration problem
//! before any port is bound.

use crate::support::*;
use std::process::Stdio;

/// Fails unless `all` holds every one of `needles`.
fn says(all: &str, needles: &[&str]) {
    for needle in needles {
        assert!(all.contains(needle), "{needle} missing:\n{all}");
    }
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = sidecar_command(dir.path(), env)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The OIDC variables every `check` below needs, for the IdP at `issuer`, then `extra`.
fn oidc_env(issuer: &str, redirect: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("AUTH_MODE", "oidc"),
        ("OIDC_ENDPOINT", issuer),
        ("OIDC_CLIENT_ID", "rp"),
        ("OIDC_CLIENT_SECRET", "s"),
        ("OIDC_REDIRECT_URI", redirect),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.push((
        "OIDC_TOKEN_ENCRYPTION_KEY".into(),
        sso_sidecar::crypto::generate_key(),
    ));
    env
}

/// `sso-sidecar check` with `env`, off the test's runtime (the process is waited for).
async fn check(env: Vec<(String, String)>) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run(&["check"], &env)
    })
    .await
    .unwrap()
}

#[test]
fn help_names_the_variables_and_points_to_the_readme() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, Some(0));
    for needle in [
        "OIDC_ENDPOINT",
        "AUTH_MODE",
        "SSO_SIDECAR_UPSTREAM",
        "README.md",
        ".env",
    ] {
        assert!(out.contains(needle), "{needle} missing from --help:\n{out}");
    }
}

#[test]
fn type_errors_name_their_variable_and_hide_no_other_problem() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("sidecar.toml");
    std::fs::write(&toml, "workers = \"two\"\nlistn = \"x\"\n").unwrap();
    let (code, out, err) = run(
        &["check", "--config", toml.to_str().unwrap()],
        &[
            ("SSO_SIDECAR_SHUTDOWN_TIMEOUT_SECS", "30s"),
            ("SSO_SIDECAR_LISTEN", "8000"),
            ("SSO_SIDECAR_UPSTREAM", "foo"),
        ],
    );
    assert_eq!(code, Some(78), "{out}{err}");
    let all = format!("{out}{err}");
    says(
        &all,
        &[
            "SSO_SIDECAR_SHUTDOWN_TIMEOUT_SECS: expected whole seconds (up to ten years), got \"30s\"",
            "listen must be an address like 0.0.0.0:8000, got '8000'",
            "upstream must be an http:// or https:// URL, got 'foo'",
            "sidecar.toml: workers: expected a whole number, got \"two\"",
            "unknown key listn (did you mean listen?)",
        ],
    );
    assert!(!all.contains("default."), "{all}");
}

#[test]
fn check_names_the_variable_a_typo_meant() {
    let (code, out, err) = run(
        &["check"],
        &[
            ("OIDC_AUTO_PROVISION_LOGIN", "yes"),
            ("OIDC_AUTO_PROVISION", "true"),
        ],
    );
    assert_eq!(code, Some(0), "warnings only: {out}{err}");
    let all = format!("{out}{err}");
    says(
        &all,
        &[
            "OIDC_AUTO_PROVISION (did you mean OIDC_AUTO_PROVISION_LOGIN?)",
            "OIDC_AUTO_PROVISION_LOGIN=yes is false",
        ],
    );
    // A section's setting with one underscore would be ignored (its default kept): refused.
    let (code, out, err) = run(&["check"], &[("SSO_SIDECAR_OPENRAG_TOKEN_POLICY", "file")]);
    assert_eq!(code, Some(78), "{out}{err}");
    says(
        &format!("{out}{err}"),
        &[
            "unknown variable SSO_SIDECAR_OPENRAG_TOKEN_POLICY",
            "SSO_SIDECAR_OPENRAG__TOKEN_POLICY",
        ],
    );
}

#[test]
fn gen_key_prints_a_fernet_key() {
    let (code, out, _) = run(&["gen-key"], &[]);
    assert_eq!(code, Some(0));
    let key = out.trim();
    assert_eq!(key.len(), 44, "{key}");
    assert!(sso_sidecar::crypto::KeyRing::parse(key).is_ok());
    assert_ne!(run(&["gen-key"], &[]).1.trim(), key, "keys are random");
}

#[test]
fn bad_configuration_exits_78_listing_every_problem_before_binding() {
    // Occupy a port: if the sidecar tried to bind before validating it would fail differently.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let (code, out, err) = run(
        &[],
        &[
            ("AUTH_MODE", "oidc"),
            ("OIDC_ENDPOINT", "https://idp.example.com"),
            ("OIDC_TOKEN_ENCRYPTION_KEY", "not-a-key"),
            ("OIDC_CLAIM_MAPPING", "is_admin:admin"),
            ("SSO_SIDECAR_LISTEN", &taken),
            ("SSO_SIDECAR_UPSTREAM", "ftp://nope"),
            ("SSO_SIDECAR_LOG_FORMAT", "xml"),
        ],
    );
    assert_eq!(code, Some(78), "stdout: {out}\nstderr: {err}");
    for needle in [
        "AUTH_MODE=oidc but the following env vars are missing or empty: OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI",
        "not a valid Fernet key",
        "OIDC_CLAIM_MAPPING db_field 'is_admin' is not writable",
        "upstream must be an http:// or https:// URL",
        "log_format must be 'json' or 'pretty'",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!err.contains("not-a-key"), "key material echoed:\n{err}");
    assert!(
        !err.contains("cannot listen"),
        "it must fail before binding:\n{err}"
    );
}

#[test]
fn invalid_auth_mode_and_missing_config_file_exit_78() {
    let (code, _, err) = run(
        &["--config", "/nonexistent/sso.toml"],
        &[("AUTH_MODE", "saml")],
    );
    assert_eq!(code, Some(78));
    assert!(
        err.contains("config file /nonexistent/sso.toml does not exist"),
        "{err}"
    );
    assert!(
        err.contains("Invalid AUTH_MODE='saml'. Expected 'token' or 'oidc'."),
        "{err}"
    );
}

#[test]
fn check_accepts_a_valid_configuration_file_and_dotenv() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("sso.toml");
    std::fs::write(&toml, "listen = \"127.0.0.1:18000\"\n").unwrap();
    let dotenv = dir.path().join("app.env");
    std::fs::write(
        &dotenv,
        "SSO_SIDECAR_UPSTREAM=\"http://backend:8080\"\nAUTH_MODE='  TOKEN '\n",
    )
    .unwrap();
    let (code, out, err) = run(
        &["check", "--config", toml.to_str().unwrap()],
        &[("SSO_SIDECAR_ENV_FILE", dotenv.to_str().unwrap())],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("configuration OK: AUTH_MODE=token, listen 127.0.0.1:18000, upstream http://backend:8080/"), "{out}");
    assert!(
        out.contains("AUTH_MODE=token: pass-through, no single sign-on"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("read ") && l.ends_with(".env")),
        "the files read are named: {out}"
    );

    let (code, _, err) = run(&["check"], &[("SSO_SIDECAR_UPSTREAM", "nope")]);
    assert_eq!(code, Some(78));
    assert!(err.contains("upstream must be"), "{err}");
}

#[tokio::test]
async fn check_explains_an_idp_it_cannot_use_and_exits_78() {
    let plain = Upstream::start(); // plain http, answers 200 echoes and 404s
    let base = |endpoint: String| {
        oidc_env(
            &endpoint,
            "http://127.0.0.1:1/auth/callback",
            &[
                ("SSO_SIDECAR_IDENTITY", "headers"),
                ("SSO_SIDECAR_IDP_TIMEOUT_SECS", "3"),
            ],
        )
    };
    let https = base(format!("https://127.0.0.1:{}", plain.port));
    let (code, out, err) = check(https).await;
    assert_eq!(code, Some(78), "{out}{err}");
    assert!(err.contains("is the IdP plain http?"), "{err}");
    let unreachable = base("http://127.0.0.1:9".to_string());
    let (code, out, err) = check(unreachable).await;
    assert_eq!(
        code,
        Some(78),
        "an unreachable IdP is the configuration's to fix: {out}{err}"
    );
    assert!(err.contains("cannot reach the IdP"), "{err}");
    let (code, _, err) = run(
        &["check"],
        &[("AUTH_MODE", "oidc"), ("OIDC_ENDPOINT", "sso.example.com")],
    );
    assert_eq!(code, Some(78));
    assert!(
        err.contains("it must start with https:// or http://"),
        "{err}"
    );
}

#[tokio::test]
async fn check_probes_redis_and_the_backends_admin_token() {
    let idp = crate::mock_idp::MockIdp::start().await;
    idp.set(|m| m.jwks = serde_json::json!({"keys": [crate::mock_idp::Key::new("k").jwk()]}));
    let backend = crate::openrag::Backend::start(serde_json::json!([]));
    let (backend_url, issuer) = (backend.url(), idp.issuer());
    let env = oidc_env(
        &issuer,
        "https://rag.example/auth/callback",
        &[
            ("SSO_SIDECAR_IDENTITY", "openrag"),
            ("AUTH_TOKEN", "not-the-admin-token-at-all"),
            ("SSO_SIDECAR_UPSTREAM", &backend_url),
            ("SSO_SIDECAR_REDIS_URL", "redis://127.0.0.1:9"),
            ("SSO_SIDECAR_REDIS_TIMEOUT_MS", "500"),
        ],
    );
    let (code, out, err) = check(env).await;
    assert_eq!(code, Some(78), "{out}{err}");
    assert!(out.contains("OIDC discovery OK"), "{out}");
    assert!(out.contains("AUTH_MODE=oidc: single sign-on"), "{out}");
    assert!(out.contains("OIDC_REDIRECT_URI is https"), "{out}");
    assert!(err.contains("Redis:"), "{err}");
    assert!(
        err.contains("the backend's users API with AUTH_TOKEN")
            && err.contains("AUTH_TOKEN must be the backend's own admin token"),
        "{err}"
    );
    assert!(
        !format!("{out}{err}").contains("not-the-admin-token"),
        "the token is never printed"
    );
}

#[tokio::test]
async fn healthcheck_subcommand_probes_the_admin_listener() {
    let up = Upstream::start();
    let sc = Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;
    let admin = sc.admin.to_string();
    let (code, _, err) = run(&["healthcheck"], &[("SSO_SIDECAR_ADMIN_LISTEN", &admin)]);
    assert_eq!(code, Some(0), "{err}");
    // A configuration the probe cannot read whole (here, an identity bridge without its admin
    // token) does not make a serving container unhealthy.
    let (code, _, err) = run(
        &["healthcheck"],
        &[
            ("SSO_SIDECAR_ADMIN_LISTEN", &admin),
            ("AUTH_MODE", "oidc"),
            ("SSO_SIDECAR_IDENTITY", "openrag"),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    drop(sc);
    let (code, _, _) = run(&["healthcheck"], &[("SSO_SIDECAR_ADMIN_LISTEN", &admin)]);
    assert_eq!(code, Some(1));
}

/// `check` tells beforehand whether the client-side session cache can work: a Redis ACL that
/// refuses `CLIENT TRACKING` is named with the two ways out, as a warning (as `run` gives it:
/// the sidecar still works, reading Redis every time).
#[tokio::test]
async fn check_says_whether_redis_allows_client_tracking() {
    let redis = crate::oidc_support::Redis::start().await;
    redis.cli(&[
        "ACL",
        "SETUSER",
        "limited",
        "on",
        ">limited-pw",
        "~*",
        "+@all",
        "-client|tracking",
    ]);
    let idp = crate::mock_idp::MockIdp::start().await;
    idp.set(|m| m.jwks = serde_json::json!({"keys": [crate::mock_idp::Key::new("k").jwk()]}));
    let port = redis.url().rsplit(':').next().unwrap().to_owned();
    for (url, allowed) in [
        (redis.url(), true),
        (
            format!("redis://limited:limited-pw@127.0.0.1:{port}"),
            false,
        ),
    ] {
        let env = oidc_env(
            &idp.issuer(),
            "http://127.0.0.1:1/auth/callback",
            &[
                ("SSO_SIDECAR_IDENTITY", "headers"),
                ("SSO_SIDECAR_REDIS_URL", &url),
            ],
        );
        let (code, out, err) = check(env).await;
        if allowed {
            assert_eq!(code, Some(0), "{out}{err}");
            assert!(out.contains("CLIENT TRACKING allowed"), "{out}");
        } else {
            assert_eq!(code, Some(0), "{out}{err}");
            assert!(
                out.contains("warning: Redis: the ACL refuses CLIENT TRACKING")
                    && out.contains("redis_client_cache = false"),
                "{out}"
            );
        }
    }
}

/// A Redis that evicts keys when full may evict a logout index, and the IdP's logout then ends
/// nothing: `check` and `run` warn of it (a limit and an evicting policy), and not of a Redis
/// without a limit or one that refuses writes when full.
#[tokio::test]
async fn a_redis_that_evicts_keys_when_full_is_warned_about() {
    let redis = crate::oidc_support::Redis::start().await;
    let idp = crate::mock_idp::MockIdp::start().await;
    idp.set(|m| m.jwks = serde_json::json!({"keys": [crate::mock_idp::Key::new("k").jwk()]}));
    let env = oidc_env(
        &idp.issuer(),
        "http://127.0.0.1:1/auth/callback",
        &[
            ("SSO_SIDECAR_IDENTITY", "headers"),
            ("SSO_SIDECAR_REDIS_URL", &redis.url()),
        ],
    );
    let said = "Redis evicts keys when full";
    for (maxmemory, policy, warned) in [
        ("0", "allkeys-lru", false),
        ("64mb", "noeviction", false),
        ("64mb", "volatile-lru", true),
    ] {
        redis.cli(&["CONFIG", "SET", "maxmemory", maxmemory]);
        redis.cli(&["CONFIG", "SET", "maxmemory-policy", policy]);
        let (code, out, err) = check(env.clone()).await;
        assert_eq!(code, Some(0), "{out}{err}");
        assert_eq!(out.contains(said), warned, "{maxmemory} {policy}: {out}");
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sc = Sidecar::start(&env).await;
    wait_until(
        "the warning at start",
        std::time::Duration::from_secs(10),
        || sc.output().contains(said),
    )
    .await;
    assert!(sc.output().contains("maxmemory-policy volatile-lru"));
}

/// A certificate, key or CA file that exists but holds no usable PEM is a configuration
/// problem like any other: `check` and `run` both exit 78 naming each file, and `run` does so
/// before binding a port (once bound, a start-up failure exits 1).
#[test]
fn unusable_tls_files_exit_78_before_any_port_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let junk = |name: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, "not a PEM file\n").unwrap();
        p.to_string_lossy().into_owned()
    };
    let (cert, key, ca) = (junk("cert.pem"), junk("key.pem"), junk("ca.pem"));
    // The listener's port is held here: a `run` that got as far as binding would fail on it
    // with exit 1, whatever it thought of the files.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    let env = [
        ("SSO_SIDECAR_LISTEN", listen.as_str()),
        ("SSO_SIDECAR_ADMIN_LISTEN", "127.0.0.1:0"),
        ("SSO_SIDECAR_TLS__CERT_FILE", cert.as_str()),
        ("SSO_SIDECAR_TLS__KEY_FILE", key.as_str()),
        ("SSO_SIDECAR_UPSTREAM_CA_FILE", ca.as_str()),
    ];
    for command in ["check", "run"] {
        let (code, out, err) = run(&[command], &env);
        assert_eq!(code, Some(78), "{command}: {out}{err}");
        says(
            &err,
            &["tls.cert_file", "cert.pem", "upstream_ca_file", "ca.pem"],
        );
    }
    // With the files sound, the held port is what stops `run`: exit 1, not 78. The IdP's CA
    // file is not among them in pass-through mode, where nothing uses it.
    let mut sound = env[..2].to_vec();
    sound.push(("SSO_SIDECAR_IDP_CA_FILE", ca.as_str()));
    let (code, _, err) = run(&["run"], &sound);
    assert_eq!(code, Some(1), "{err}");
    says(&err, &["cannot listen on"]);

    // With OIDC, Redis settings that make no client are found before binding too.
    let mut oidc = oidc_env(
        "http://127.0.0.1:1",
        "http://127.0.0.1:1/auth/callback",
        &[],
    );
    for (k, v) in [
        ("SSO_SIDECAR_IDENTITY", "headers"),
        ("SSO_SIDECAR_REDIS_URL", "redis://127.0.0.1:not-a-port"),
    ]
    .into_iter()
    .chain(sound[..2].iter().copied())
    {
        oidc.push((k.to_owned(), v.to_owned()));
    }
    let oidc: Vec<(&str, &str)> = oidc.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, _, err) = run(&["run"], &oidc);
    assert_eq!(code, Some(78), "{err}");
    says(
        &err,
        &["Redis: redis_url is not usable: Redis URL did not parse"],
    );
    // `check` names each problem once, though its probes would meet them again.
    let mut with_ca = oidc.clone();
    with_ca.push(("SSO_SIDECAR_IDP_CA_FILE", ca.as_str()));
    let (code, _, err) = run(&["check"], &with_ca);
    assert_eq!(code, Some(78), "{err}");
    assert_eq!(err.matches("ca.pem").count(), 1, "{err}");
    assert_eq!(err.matches("redis_url is not usable").count(), 1, "{err}");
}

/// A variable that is not UTF-8 (a binary Secret mounted with `envFrom`) is no reason to
/// panic: one the sidecar never reads is ignored, one it reads is a configuration problem
/// (exit 78, named), never exit 101.
#[test]
fn variables_that_are_not_utf8_are_named_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let binary = std::ffi::OsStr::from_bytes(b"\xff\xfe");
    let dir = tempfile::tempdir().unwrap();
    let run_with = |name: &str| {
        let out = sidecar_command(
            dir.path(),
            &[("SSO_SIDECAR_UPSTREAM", "http://127.0.0.1:9")],
        )
        .arg("check")
        .env(name, binary)
        .stdin(Stdio::null())
        .output()
        .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run_with("SOME_BINARY_SECRET");
    assert_eq!(code, Some(0), "an unread variable:\n{err}");
    for read in ["SSO_SIDECAR_LOG_LEVEL", "AUTH_TOKEN_FILE"] {
        let (code, err) = run_with(read);
        assert_eq!(code, Some(78), "{err}");
        says(&err, &[&format!("{read} is not valid UTF-8")]);
    }
}

/// A second sidecar on the first one's public port fails at start, naming the setting: its
/// SO_REUSEPORT socket would otherwise have joined the first one's, and the kernel split the
/// connections between two processes (sessions in memory then lost at random).
#[tokio::test]
async fn a_second_sidecar_on_the_same_port_fails_instead_of_sharing_it() {
    let up = Upstream::start();
    let first =
        Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &up.url()), ("AUTH_MODE", "token")]).await;
    let listen = first.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut second = sidecar_command(
        dir.path(),
        &[
            ("SSO_SIDECAR_UPSTREAM", &up.url()),
            ("AUTH_MODE", "token"),
            ("SSO_SIDECAR_LISTEN", &listen),
            ("SSO_SIDECAR_ADMIN_LISTEN", "127.0.0.1:0"),
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let started = std::time::Instant::now();
    while second.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(10) {
            second.kill().unwrap();
            panic!("a second sidecar started on {listen}, the first one's port");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let out = second.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{said}");
    says(
        &said,
        &["SSO_SIDECAR_LISTEN", "another process listens there"],
    );
    // The first still serves.
    let r = get(&first.url("/echo"), &[]).await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A `RUST_LOG` the sidecar cannot read is said at start-up (the configured level is used);
/// before, it was ignored without a word, and the operator who set it saw no more than before.
#[tokio::test]
async fn an_unreadable_rust_log_is_said() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sso.toml");
    std::fs::write(&file, "log_level = \"info\"\n").unwrap();
    let sc = Sidecar::start(&[
        ("SSO_SIDECAR_UPSTREAM", &up.url()),
        ("SSO_SIDECAR_CONFIG", file.to_str().unwrap()),
        ("RUST_LOG", "nonsense==="),
    ])
    .await;
    sc.logged("RUST_LOG is not a filter").await;
    // And a reload's log_level applies, as the configured one did at start-up.
    std::fs::write(&file, "log_level = \"debug\"\n").unwrap();
    sc.signal("HUP");
    let reloaded = || sc.output().contains("configuration reloaded");
    crate::redis_ha::until("the reload", 10, reloaded).await;
    assert!(
        !sc.output().contains("RUST_LOG is set, and it decides"),
        "{}",
        sc.output()
    );
    let fine = Sidecar::start(&[("SSO_SIDECAR_UPSTREAM", &up.url())]).await;
    assert!(!fine.output().contains("RUST_LOG is not"));
}
