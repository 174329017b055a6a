//! Every unknown key of a TOML configuration file at once, each with a did-you-mean, and a
//! clear word for OpenRag's variables put there by mistake (they are read from the environment
//! or `.env`). figment's own check stops at the first unknown key; this one reads the whole
//! file against the keys `Settings` has. No I/O beyond the file figment reads anyway.

use super::Settings;
use figment::providers::{Format, Toml};
use serde_json::Value;
use std::path::Path;

/// One line per unknown key of `path`.
pub fn unknown_keys(path: &Path) -> Vec<String> {
    let Ok(file) = figment::Figment::from(Toml::file_exact(path)).extract::<Value>() else {
        return Vec::new(); // a syntax error: figment reports it
    };
    let Ok(known) = serde_json::to_value(Settings::default()) else {
        return Vec::new();
    };
    let name = path.display();
    let mut out = Vec::new();
    let (Value::Object(file), Value::Object(known)) = (file, known) else {
        return out;
    };
    for (key, value) in &file {
        match known.get(key) {
            None if is_openrag_variable(key) => out.push(format!(
                "{name}: {key} is one of OpenRag's variables: they are read from the environment \
                 or .env, not the TOML file"
            )),
            None => out.push(unknown(&name, key, known.keys())),
            Some(Value::Object(section)) => {
                if let Value::Object(inner) = value {
                    for k in inner.keys() {
                        if !section.contains_key(k) && !optional_key(key, k) {
                            let full = format!("{key}.{k}");
                            let candidates: Vec<String> =
                                section.keys().map(|c| format!("{key}.{c}")).collect();
                            out.push(unknown(&name, &full, candidates.iter()));
                        }
                    }
                }
            }
            Some(_) => {}
        }
    }
    out
}

/// Whether `key` (in `section`, when given) is a setting: the values of unknown keys are left
/// out of the layering once reported, so they hide no other problem.
pub fn is_known(section: Option<&str>, key: &str) -> bool {
    let Ok(defaults) = serde_json::to_value(Settings::default()) else {
        return true;
    };
    match section {
        None => defaults.get(key).is_some(),
        Some(s) => defaults.get(s).and_then(|t| t.get(key)).is_some() || optional_key(s, key),
    }
}

/// Keys that exist but are absent from the defaults' serialisation (unset options).
fn optional_key(section: &str, key: &str) -> bool {
    matches!(
        (section, key),
        ("paths", "browser_login" | "bearer_passthrough")
            | ("tls", "cert_file" | "key_file")
            | ("openrag", "token_file")
            | ("authz", "allowed_emails_file" | "groups_claim")
    )
}

fn is_openrag_variable(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    k == "AUTH_MODE" || k == "AUTH_TOKEN" || k.starts_with("OIDC_") || k.starts_with("RATE_LIMIT_")
}

fn unknown<'a>(
    file: &impl std::fmt::Display,
    key: &str,
    candidates: impl Iterator<Item = &'a String>,
) -> String {
    match super::suggest::closest(key, candidates.map(String::as_str)) {
        Some(c) => format!("{file}: unknown key {key} (did you mean {c}?)"),
        None => format!("{file}: unknown key {key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_key_at_once_with_a_suggestion() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sidecar.toml");
        std::fs::write(
            &path,
            "listn = \"0.0.0.0:8000\"\nAUTH_MODE = \"oidc\"\nwhatever = 1\n\
             [connections]\nmaxx = 5\n[paths]\npubic = []\nbrowser_login = true\n",
        )
        .unwrap();
        let found = unknown_keys(&path);
        let all = found.join("\n");
        assert_eq!(found.len(), 5, "{all}");
        assert!(
            all.contains("unknown key listn (did you mean listen?)"),
            "{all}"
        );
        assert!(
            all.contains("AUTH_MODE is one of OpenRag's variables"),
            "{all}"
        );
        assert!(
            all.contains("unknown key whatever\n") || all.ends_with("unknown key whatever"),
            "{all}"
        );
        assert!(
            all.contains("unknown key connections.maxx (did you mean connections.max?)"),
            "{all}"
        );
        assert!(
            all.contains("unknown key paths.pubic (did you mean paths.public?)"),
            "{all}"
        );
        assert!(!all.contains("default."), "{all}");
    }
}
