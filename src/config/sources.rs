//! Where configuration values come from, before any of them is interpreted.
//!
//! Owns the variable map (a `.env` file overlaid by the process environment), the `*_FILE`
//! twins of secrets, and a figment provider that turns `SSO_SIDECAR_*` variables into nested
//! keys. It never reads `std::env` itself: callers pass the variables in, so tests never have to
//! mutate the process environment.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};
use std::collections::BTreeMap;
use std::path::Path;

/// Prefix of the sidecar's own variables; nested keys are joined with `__`.
pub const PREFIX: &str = "SSO_SIDECAR_";

/// Variables that hold secrets and therefore also accept `<NAME>_FILE` (a path whose content,
/// minus trailing whitespace, is the value — the form Kubernetes Secrets are mounted in).
pub const SECRET_VARS: &[&str] = &[
    "OIDC_CLIENT_SECRET",
    "OIDC_TOKEN_ENCRYPTION_KEY",
    "AUTH_TOKEN",
    "SSO_SIDECAR_REDIS_URL",
    "SSO_SIDECAR_REDIS_PASSWORD",
    "SSO_SIDECAR_REDIS_SENTINEL_PASSWORD",
];

/// Variables that select files and are therefore read from the process environment only
/// (a `.env` file cannot choose which `.env` file or TOML file is read).
pub const BOOTSTRAP_VARS: &[&str] = &["SSO_SIDECAR_CONFIG", "SSO_SIDECAR_ENV_FILE"];

/// All variables after layering: `.env` values, overridden by the process environment.
#[derive(Default, Clone)]
pub struct Vars {
    map: BTreeMap<String, String>,
    /// The names the process environment set (the rest came from `.env` only).
    from_process: std::collections::BTreeSet<String>,
}

impl Vars {
    /// Layers `process` over the `.env` file's pairs. Values from `.env` have their quotes
    /// stripped by the dotenv parser, as OpenRag's guide expects.
    pub fn layer(
        dotenv: Vec<(String, String)>,
        process: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut map: BTreeMap<String, String> = dotenv.into_iter().collect();
        let mut from_process = std::collections::BTreeSet::new();
        for (k, v) in process {
            from_process.insert(k.clone());
            map.insert(k, v);
        }
        Vars { map, from_process }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    /// Every variable's name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// The value if set and not blank after trimming (OpenRag treats empty as missing).
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// Replaces every `<SECRET>_FILE` by the file's content under `<SECRET>`. Setting both in
    /// one place is an error: silently preferring one would hide a deployment mistake. Set in
    /// two, the process environment wins over `.env`, as it does for every variable: OpenRag's
    /// `.env` (with `OIDC_CLIENT_SECRET`) mounted beside a Secret given as
    /// `OIDC_CLIENT_SECRET_FILE` (what the chart does) uses the Secret.
    pub fn resolve_secret_files(&mut self, problems: &mut Vec<String>) {
        for name in SECRET_VARS {
            let file_var = format!("{name}_FILE");
            let Some(path) = self.non_empty(&file_var).map(str::to_owned) else {
                continue;
            };
            if self.non_empty(name).is_some() {
                let (value_here, file_here) = (
                    self.from_process.contains(*name),
                    self.from_process.contains(&file_var),
                );
                if value_here && !file_here {
                    // The value from the process; the `.env`'s file is not read.
                    self.map.remove(&file_var);
                    continue;
                }
                if value_here == file_here {
                    problems.push(format!("set either {name} or {file_var}, not both"));
                    continue;
                }
                // The file from the process: its content replaces the `.env`'s value below.
            }
            match std::fs::read_to_string(&path) {
                Ok(content) => {
                    self.map
                        .insert((*name).to_owned(), content.trim_end().to_owned());
                }
                Err(e) => problems.push(format!("{file_var}: cannot read {path:?}: {e}")),
            }
        }
    }

    /// The `SSO_SIDECAR_*` variables whose first key segment is one of `known` (the top-level
    /// settings). Others are returned separately: Kubernetes injects `<SERVICE>_PORT`-style
    /// variables for every Service, so an unknown name under our prefix is reported, not fatal.
    pub fn sidecar_vars(&self, known: &[String]) -> (Vec<(String, String)>, Vec<String>) {
        let mut keep = Vec::new();
        let mut unknown = Vec::new();
        for (name, value) in &self.map {
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let is_secret_file = SECRET_VARS
                .iter()
                .any(|s| name.strip_suffix("_FILE") == Some(s));
            if BOOTSTRAP_VARS.contains(&name.as_str()) || is_secret_file {
                continue;
            }
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let top = key.split('.').next().unwrap_or_default();
            if known.iter().any(|k| k == top) {
                keep.push((key, value.clone()));
            } else {
                unknown.push(name.clone());
            }
        }
        (keep, unknown)
    }
}

/// Reads a `.env` file into pairs, in file order, without touching the process environment
/// (parsed as OpenRag's tooling parses it: `config::dotenv`).
pub fn read_dotenv(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    super::dotenv::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A figment provider over already-collected `SSO_SIDECAR_*` pairs (dotted keys), their values
/// already typed (`config::types`).
pub struct VarsProvider {
    pairs: Vec<(String, Value)>,
}

impl VarsProvider {
    pub fn new(pairs: Vec<(String, Value)>) -> Self {
        VarsProvider { pairs }
    }
}

impl Provider for VarsProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable(s)").interpolater(|_profile, keys| {
            format!("{PREFIX}{}", keys.join("__").to_ascii_uppercase())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut figment = figment::Figment::new();
        for (key, value) in &self.pairs {
            figment = figment.merge(figment::providers::Serialized::default(key, value.clone()));
        }
        let dict = figment
            .data()?
            .remove(&Profile::Default)
            .unwrap_or_default();
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars::layer(
            Vec::new(),
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn process_environment_wins_over_dotenv() {
        let v = Vars::layer(
            vec![("A".into(), "from-dotenv".into()), ("B".into(), "b".into())],
            vec![("A".to_string(), "from-env".to_string())],
        );
        assert_eq!(v.get("A"), Some("from-env"));
        assert_eq!(v.get("B"), Some("b"));
    }

    #[test]
    fn secret_file_twins_are_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "s3cr3t-value\n").unwrap();
        let mut v = vars(&[("OIDC_CLIENT_SECRET_FILE", p.to_str().unwrap())]);
        let mut problems = Vec::new();
        v.resolve_secret_files(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(v.get("OIDC_CLIENT_SECRET"), Some("s3cr3t-value"));
    }

    #[test]
    fn both_secret_and_file_is_an_error_and_missing_file_is_named() {
        let mut v = vars(&[
            ("AUTH_TOKEN", "x"),
            ("AUTH_TOKEN_FILE", "/nonexistent/a"),
            ("OIDC_CLIENT_SECRET_FILE", "/nonexistent/b"),
        ]);
        let mut problems = Vec::new();
        v.resolve_secret_files(&mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("either AUTH_TOKEN or AUTH_TOKEN_FILE")));
        assert!(problems
            .iter()
            .any(|p| p.contains("OIDC_CLIENT_SECRET_FILE: cannot read")));
    }

    /// The secret in one place, its file twin in the other: the process environment wins, as
    /// for every variable (OpenRag's `.env` beside the chart's `*_FILE` Secrets). Both in the
    /// same place stays an error.
    #[test]
    fn a_secret_and_its_file_twin_from_two_places_take_the_process_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "from-the-secret\n").unwrap();
        let file = p.to_str().unwrap().to_owned();
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut v = Vars::layer(
            pairs(&[
                ("OIDC_CLIENT_SECRET", "from-dotenv"),
                ("AUTH_TOKEN_FILE", "/nonexistent/from-dotenv"),
            ]),
            pairs(&[
                ("OIDC_CLIENT_SECRET_FILE", &file),
                ("AUTH_TOKEN", "from-process"),
            ]),
        );
        let mut problems = Vec::new();
        v.resolve_secret_files(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(v.get("OIDC_CLIENT_SECRET"), Some("from-the-secret"));
        assert_eq!(v.get("AUTH_TOKEN"), Some("from-process"));
        assert_eq!(v.get("AUTH_TOKEN_FILE"), None);
        let mut v = Vars::layer(
            pairs(&[("AUTH_TOKEN", "a"), ("AUTH_TOKEN_FILE", "/nonexistent/a")]),
            Vec::new(),
        );
        let mut problems = Vec::new();
        v.resolve_secret_files(&mut problems);
        assert!(problems[0].contains("not both"), "{problems:?}");
    }

    #[test]
    fn sidecar_vars_are_nested_and_unknown_ones_reported() {
        let v = vars(&[
            ("SSO_SIDECAR_LISTEN", "127.0.0.1:1"),
            ("SSO_SIDECAR_TLS__CERT_FILE", "/c"),
            ("SSO_SIDECAR_SERVICE_HOST", "10.0.0.1"),
            ("SSO_SIDECAR_CONFIG", "/x.toml"),
            ("SSO_SIDECAR_REDIS_URL_FILE", "/r"),
            ("OTHER", "1"),
        ]);
        let (keep, unknown) = v.sidecar_vars(&["listen".into(), "tls".into()]);
        assert_eq!(
            keep,
            vec![
                ("listen".to_string(), "127.0.0.1:1".to_string()),
                ("tls.cert_file".to_string(), "/c".to_string())
            ]
        );
        assert_eq!(unknown, vec!["SSO_SIDECAR_SERVICE_HOST".to_string()]);
    }
}
