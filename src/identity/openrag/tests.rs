use super::*;
use serde_json::json;

fn c(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn display_name_follows_openrags_order() {
    assert_eq!(
        display_name(
            "abcdefghij",
            &c(json!({"name": " Ada ", "preferred_username": "ada"}))
        ),
        "Ada"
    );
    assert_eq!(
        display_name(
            "abcdefghij",
            &c(json!({"name": "", "preferred_username": "ada"}))
        ),
        "ada"
    );
    assert_eq!(
        display_name(
            "abcdefghij",
            &c(json!({"given_name": "Ada", "family_name": "Lovelace"}))
        ),
        "Ada Lovelace"
    );
    assert_eq!(
        display_name("abcdefghij", &c(json!({"family_name": "Lovelace"}))),
        "Lovelace"
    );
    assert_eq!(display_name("abcdefghij", &c(json!({}))), "oidc-abcdefgh");
}

#[test]
fn email_is_trimmed_and_lower_cased() {
    assert_eq!(
        email(&c(json!({"email": " Ada@Example.COM "}))).as_deref(),
        Some("ada@example.com")
    );
    assert_eq!(email(&c(json!({"email": ""}))), None);
    assert_eq!(email(&c(json!({"email": null}))), None);
}
