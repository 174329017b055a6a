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

/// The backend refuses a display name above 255 characters (400, at every login of the user):
/// a longer one is cut to 255 characters, never inside a multi-byte character.
#[test]
fn display_name_is_cut_to_255_characters() {
    let long = "é".repeat(300);
    let name = display_name("abcdefghij", &c(json!({ "name": long })));
    assert_eq!(name.chars().count(), 255);
    assert_eq!(name, "é".repeat(255));
    let ascii = format!("{} tail", "a".repeat(254));
    let name = display_name("abcdefghij", &c(json!({ "name": ascii })));
    assert_eq!(name, "a".repeat(254), "cut, then no trailing space left");
    let exact = "b".repeat(255);
    assert_eq!(
        display_name("abcdefghij", &c(json!({ "preferred_username": exact }))),
        exact
    );
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

/// An email the IdP says is not verified is anyone's to claim: the backend never gets it.
#[test]
fn an_unverified_email_is_not_the_users() {
    for verified in [json!(false), json!("false"), json!("FALSE")] {
        let claims = c(json!({"email": "alice@example.test", "email_verified": verified}));
        assert_eq!(email(&claims), None, "{verified}");
    }
    for verified in [json!(true), json!("true"), json!(null)] {
        let claims = c(json!({"email": "alice@example.test", "email_verified": verified}));
        assert_eq!(email(&claims).as_deref(), Some("alice@example.test"));
    }
}
