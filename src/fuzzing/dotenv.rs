//! The `dotenv` target: the `.env` reader against a reference reader of the same grammar.
//! Part of the fuzz targets (`super`); never called by the sidecar.

use crate::config::{self, sources};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `data` up to its first NUL byte is a `.env` file, the rest a TOML configuration file.
/// `read_dotenv` returns pairs whose names are valid variable names, or an error; the TOML is
/// extracted into `Settings` and validated, and `validate` fails exactly when it reports a
/// problem; the whole `config::load` over both files reports at least one problem when it fails
/// and returns a configuration whose checked invariants hold when it succeeds.
pub fn dotenv(data: &[u8]) {
    use figment::providers::{Format, Serialized, Toml};

    let (env_text, toml_text) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Some(dir) = ScratchDir::new() else {
        return;
    };
    let env_file = dir.0.join("fuzz.env");
    let toml_file = dir.0.join("fuzz.toml");
    if std::fs::write(&env_file, env_text).is_err() {
        return;
    }

    let pairs = sources::read_dotenv(&env_file);
    if let Ok(pairs) = &pairs {
        for (k, _) in pairs {
            let mut chars = k.chars();
            assert!(
                chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'),
                "variable name {k:?}"
            );
        }
    }

    let toml_str = toml_text.map(String::from_utf8_lossy);
    let mut reads_files = false;
    if let Some(t) = &toml_str {
        let extracted: Result<config::Settings, _> =
            figment::Figment::from(Serialized::defaults(config::Settings::default()))
                .merge(Toml::string(t))
                .extract();
        if let Ok(settings) = extracted {
            // `openrag.token_file` is read; the fuzzer could name /dev/zero.
            reads_files = settings.openrag.token_file.is_some();
            if !reads_files {
                let mut problems = Vec::new();
                let validated = settings.validate(&mut problems).is_some();
                assert_eq!(
                    validated,
                    problems.is_empty(),
                    "validate() = {validated} with problems {problems:?}"
                );
            }
        }
    }

    // `*_FILE` variables name files that `load` reads: not for the fuzzer to choose.
    let Ok(pairs) = pairs else {
        return;
    };
    if reads_files
        || pairs
            .iter()
            .any(|(k, _)| k.to_ascii_lowercase().ends_with("_file"))
    {
        return;
    }
    if let Some(t) = &toml_str {
        if std::fs::write(&toml_file, t.as_bytes()).is_err() {
            return;
        }
    }
    let inputs = config::Inputs {
        config_file: toml_str.is_some().then(|| toml_file.clone()),
        env: vec![(
            "SSO_SIDECAR_ENV_FILE".to_owned(),
            env_file.to_string_lossy().into_owned(),
        )],
        unreadable: Vec::new(),
        cwd: dir.0.clone(),
    };
    match config::load(inputs) {
        Err(e) => assert!(!e.0.is_empty(), "load failed without naming a problem"),
        Ok(c) => {
            let vars: BTreeMap<&str, &str> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert!(c.workers >= 1);
            assert!(matches!(c.proxy.upstream.scheme(), "http" | "https"));
            assert!(c.proxy.max_request_header_bytes >= 8192);
            let name = &c.auth.session_cookie_name;
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "session cookie name {name:?}"
            );
            let mode = vars.get("AUTH_MODE").map(|m| m.trim().to_ascii_lowercase());
            assert_eq!(
                c.auth_mode() == config::AuthMode::Oidc,
                mode.as_deref() == Some("oidc")
            );
            if let Some(o) = &c.openrag_env.oidc {
                assert_eq!(o.redirect_uri.path(), "/auth/callback");
                assert!(o.scopes.split_whitespace().any(|s| s == "openid"));
                assert!(!o.issuer.is_empty() && !o.client_id.is_empty());
            } else {
                assert_eq!(c.auth_mode(), config::AuthMode::Token);
            }
        }
    }
}

/// A directory of this thread's own, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Option<Self> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sso-sidecar-fuzz-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        Some(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
