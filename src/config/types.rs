//! Values checked against the type their setting expects before figment sees them, so a
//! wrong one is named by its variable (or file and key) in words — `SSO_SIDECAR_SHUTDOWN_TIMEOUT_SECS:
//! expected whole seconds (up to ten years), got "30s"` — and is left out, letting every other problem of every
//! layer be found in the same run. The expected types come from `Settings::default()`.

use super::Settings;
use figment::value::Value as FValue;
use serde_json::Value;

/// What a setting expects, read off the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Secs,
    Millis,
    Number,
    Bool,
    Text,
    List,
    /// Not in the defaults' serialisation (an unset option, an unknown key): as given.
    Any,
}

/// The longest any duration setting may be: ten years. Far beyond any useful value, and far
/// below where deadlines computed from one would overflow (and panic in every connection).
const MAX_SECS: u64 = 10 * 366 * 24 * 3600;

impl Expected {
    /// Whether `n` is in range for this type (durations at most [`MAX_SECS`]).
    fn in_range(self, n: u64) -> bool {
        match self {
            Expected::Secs => n <= MAX_SECS,
            Expected::Millis => n <= MAX_SECS * 1000,
            _ => true,
        }
    }

    fn words(self) -> &'static str {
        match self {
            Expected::Secs => "whole seconds (up to ten years)",
            Expected::Millis => "whole milliseconds (up to ten years)",
            Expected::Number => "a whole number",
            Expected::Bool => "true or false",
            Expected::Text => "text",
            Expected::List => "a list (comma-separated in a variable)",
            Expected::Any => "a value",
        }
    }
}

fn expected(key: &str) -> Expected {
    // An array of tables (`[[authz.rules]]`), not a list of strings: serde checks its shape.
    if key == "authz.rules" {
        return Expected::Any;
    }
    // A word or a number (`auto`, `2`): its own deserializer checks it.
    if key == "redis_logout_replicas" {
        return Expected::Any;
    }
    let Ok(defaults) = serde_json::to_value(Settings::default()) else {
        return Expected::Any;
    };
    let mut v = &defaults;
    for part in key.split('.') {
        match v.get(part) {
            Some(inner) => v = inner,
            None => return Expected::Any,
        }
    }
    match v {
        Value::Number(_) if key.ends_with("_secs") => Expected::Secs,
        Value::Number(_) if key.ends_with("_ms") => Expected::Millis,
        Value::Number(_) => Expected::Number,
        Value::Bool(_) => Expected::Bool,
        Value::String(_) => Expected::Text,
        Value::Array(_) => Expected::List,
        // Every optional setting is text (a URL, a file, a user name, a password): an
        // all-digit password must not become a number that figment then refuses.
        Value::Null => Expected::Text,
        _ => Expected::Any,
    }
}

/// The typed value of variable `name` (setting `key`), or the problem with it.
pub fn env_value(name: &str, key: &str, raw: &str) -> Result<FValue, String> {
    let bad = |e: Expected| {
        format!(
            "{name}: expected {}, got {}",
            e.words(),
            shown(key, format!("{raw:?}"))
        )
    };
    match expected(key) {
        e @ (Expected::Secs | Expected::Millis | Expected::Number) => raw
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| e.in_range(n))
            .map(FValue::from)
            .ok_or_else(|| bad(e)),
        Expected::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(FValue::from(true)),
            "false" => Ok(FValue::from(false)),
            _ => Err(bad(Expected::Bool)),
        },
        Expected::Text | Expected::List => Ok(FValue::from(raw.to_owned())),
        Expected::Any => Ok(raw.parse().unwrap_or_else(|_| FValue::from(raw.to_owned()))),
    }
}

/// The TOML file's table with every value of the wrong type taken out, and one problem for
/// each (`<file>: <key>: expected …, got …`).
pub fn toml_values(file: &str, table: Value, problems: &mut Vec<String>) -> Value {
    let Value::Object(map) = table else {
        return table;
    };
    let mut out = serde_json::Map::new();
    for (key, value) in map {
        match value {
            Value::Object(inner) if matches!(expected_table(&key), Some(true)) => {
                let mut kept = serde_json::Map::new();
                for (k, v) in inner {
                    let full = format!("{key}.{k}");
                    if super::toml_keys::is_known(Some(&key), &k) && fits(&full, &v, file, problems)
                    {
                        kept.insert(k, v);
                    }
                }
                out.insert(key, Value::Object(kept));
            }
            v => {
                if super::toml_keys::is_known(None, &key) && fits(&key, &v, file, problems) {
                    out.insert(key, v);
                }
            }
        }
    }
    Value::Object(out)
}

/// Whether `key` is a table of the settings (`Some(true)`), a plain key, or unknown.
fn expected_table(key: &str) -> Option<bool> {
    let defaults = serde_json::to_value(Settings::default()).ok()?;
    defaults.get(key).map(Value::is_object)
}

fn fits(key: &str, v: &Value, file: &str, problems: &mut Vec<String>) -> bool {
    let e = expected(key);
    let ok = match e {
        Expected::Secs | Expected::Millis | Expected::Number => {
            v.as_u64().is_some_and(|n| e.in_range(n))
        }
        Expected::Bool => v.is_boolean(),
        Expected::Text => v.is_string(),
        Expected::List => {
            v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
        }
        Expected::Any => true,
    };
    if !ok {
        let given = shown(key, v.to_string());
        problems.push(format!(
            "{file}: {key}: expected {}, got {given}",
            e.words()
        ));
    }
    ok
}

/// A wrong value as a problem shows it: as given, but never for a setting that holds a secret
/// (a password, or a URL that may carry one), whose problems reach stderr and the log.
fn shown(key: &str, given: String) -> String {
    if key.contains("password") || key.contains("redis_url") || key.contains("redis_nodes") {
        "a value not shown (it may be a secret)".to_owned()
    } else {
        given
    }
}

/// An enum-valued key: `value` (trimmed, any case) deserialized as `T` by its serde names, or
/// one problem that names the key, every accepted value and what was given.
pub fn one_of<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    use serde::de::value::{Error, StrDeserializer};
    let given = value.trim();
    let lower = given.to_ascii_lowercase();
    match T::deserialize(StrDeserializer::<Error>::new(&lower)) {
        Ok(t) => Some(t),
        Err(e) => {
            // serde says "unknown variant `x`, expected `a` or `b`" (or "one of `a`, `b`, `c`").
            let e = e.to_string();
            let accepted = e
                .split_once("expected ")
                .map_or(e.as_str(), |(_, a)| a)
                .replace('`', "'");
            problems.push(format!("{key} must be {accepted}, got '{given}'"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_values_are_named_in_words() {
        assert_eq!(
            env_value(
                "SSO_SIDECAR_SHUTDOWN_TIMEOUT_SECS",
                "shutdown_timeout_secs",
                "30s"
            )
            .unwrap_err(),
            "SSO_SIDECAR_SHUTDOWN_TIMEOUT_SECS: expected whole seconds (up to ten years), got \"30s\""
        );
        assert!(env_value("X", "shutdown_timeout_secs", " 30 ").is_ok());
        // A duration beyond ten years would overflow the deadlines made from it.
        for (key, huge) in [
            ("connections.idle_timeout_secs", "18446744073709551615"),
            ("idp_timeout_secs", "316224001"),
            ("redis_timeout_ms", "316224000001"),
        ] {
            assert!(
                env_value("X", key, huge)
                    .unwrap_err()
                    .contains("up to ten years"),
                "{key}"
            );
        }
        assert!(env_value("X", "idp_timeout_secs", "316224000").is_ok());
        assert_eq!(
            env_value("SSO_SIDECAR_LISTEN", "listen", "8000").unwrap(),
            FValue::from("8000".to_string()),
            "a port alone stays text, for validation to explain"
        );
        assert!(
            env_value("SSO_SIDECAR_PRESERVE_HOST", "preserve_host", "yes")
                .unwrap_err()
                .contains("expected true or false")
        );
        assert!(env_value("V", "connections.max", "many")
            .unwrap_err()
            .contains("a whole number"));
        let mut problems = Vec::new();
        let kept = toml_values(
            "s.toml",
            json!({"shutdown_timeout_secs": "30s", "listen": 8000, "workers": 2,
                   "connections": {"max": "x", "max_per_ip": 3}}),
            &mut problems,
        );
        assert_eq!(
            problems,
            vec![
                "s.toml: connections.max: expected a whole number, got \"x\"",
                "s.toml: listen: expected text, got 8000",
                "s.toml: shutdown_timeout_secs: expected whole seconds (up to ten years), got \"30s\"",
            ]
        );
        assert_eq!(
            kept,
            json!({"workers": 2, "connections": {"max_per_ip": 3}})
        );
    }

    #[test]
    fn unset_options_are_text_and_secrets_are_never_shown() {
        // An all-digit password (or `true`) stays the text it is.
        for raw in ["0123456789", "true", "1.5"] {
            assert_eq!(
                env_value("SSO_SIDECAR_REDIS_PASSWORD", "redis_password", raw).unwrap(),
                FValue::from(raw.to_string())
            );
        }
        let mut problems = Vec::new();
        let kept = toml_values(
            "s.toml",
            json!({"redis_password": 123456, "redis_url": 7, "tls": {"cert_file": 5}}),
            &mut problems,
        );
        assert_eq!(kept, json!({"tls": {}}));
        assert_eq!(
            problems,
            [
                "s.toml: redis_password: expected text, got a value not shown (it may be a secret)",
                "s.toml: redis_url: expected text, got a value not shown (it may be a secret)",
                "s.toml: tls.cert_file: expected text, got 5",
            ]
        );
    }
}

#[cfg(test)]
mod null_defaults {
    use super::*;
    use figment::providers::Serialized;

    /// Every setting without a default (`null`) is read as text: each takes a text value,
    /// digits included. An optional number added later would fail here, not in production.
    #[test]
    fn every_unset_setting_takes_text() {
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        let mut nulls = Vec::new();
        for (k, v) in defaults.as_object().unwrap() {
            match v {
                Value::Null => nulls.push(k.clone()),
                Value::Object(inner) => nulls.extend(
                    inner
                        .iter()
                        .filter(|(_, v)| v.is_null())
                        .map(|(n, _)| format!("{k}.{n}")),
                ),
                _ => {}
            }
        }
        assert!(nulls.len() >= 8, "{nulls:?}");
        for key in nulls {
            assert_eq!(expected(&key), Expected::Text, "{key}");
            let figment = figment::Figment::from(Serialized::defaults(Settings::default()))
                .merge(Serialized::global(&key, "0123"));
            assert!(figment.extract::<Settings>().is_ok(), "{key} refuses text");
        }
    }
}
