//! The settings as documented: the example TOML and the README list every key, with its default.

use super::*;

#[test]
fn the_example_toml_lists_every_key_with_its_default() {
    let example = include_str!("../../../config/sso-sidecar.example.toml");
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
    let example = include_str!("../../../config/sso-sidecar.example.toml");
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
    let readme = include_str!("../../../README.md");
    for key in settings::top_level_keys() {
        let env = format!("`SSO_SIDECAR_{}", key.to_ascii_uppercase());
        assert!(
            readme.contains(&env),
            "{env} is missing from the README's configuration table"
        );
    }
}
