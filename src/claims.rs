//! Typed reads of claim values from verified JSON claims (ID token or userinfo), as OpenRag
//! reads them. A leaf: authentication (allow-lists, the session's profile) and the identity
//! modes (group sync) both read claims the same way.

use serde_json::{Map, Value};

/// Whether the IdP says the email is not verified (`email_verified` false, or the string
/// `"false"` in any case, as some IdPs send it). Such an email is anyone's to claim on an IdP
/// with self-registration: it is never taken as the user's.
pub fn email_unverified(c: &Map<String, Value>) -> bool {
    match c.get("email_verified") {
        Some(Value::Bool(b)) => !b,
        Some(Value::String(v)) => v.eq_ignore_ascii_case("false"),
        _ => false,
    }
}

/// Marks the email unverified unless the IdP said `email_verified: true` (or `"true"`), for
/// `email_verified_required`: an IdP that never sends the claim (Entra ID) may let users set
/// an address that is not theirs.
pub fn require_verified_email(c: &mut Map<String, Value>) {
    let verified = match c.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(v)) => v.eq_ignore_ascii_case("true"),
        _ => false,
    };
    // Claims that name no email say nothing of one: marked, they would discount the email
    // userinfo adds to a profile-less ID token (`profile::read`), verified or not.
    if !verified && c.contains_key("email") {
        c.insert("email_verified".into(), Value::Bool(false));
    }
}

/// The groups claim as OpenRag reads it: a string is one group, a list its strings; `None`
/// when it is missing, null or of another type (which never prunes a membership).
pub fn groups(c: &Map<String, Value>, claim: &str) -> Option<Vec<String>> {
    match c.get(claim) {
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        Some(Value::String(s)) => Some(vec![s.clone()]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_required_verification_discounts_all_but_a_said_true() {
        for (given, verified) in [
            (json!({"email": "a@b"}), false),
            (json!({"email": "a@b", "email_verified": null}), false),
            (json!({"email": "a@b", "email_verified": "yes"}), false),
            (json!({"email": "a@b", "email_verified": false}), false),
            (json!({"email": "a@b", "email_verified": true}), true),
            (json!({"email": "a@b", "email_verified": "TRUE"}), true),
        ] {
            let mut c = given.as_object().unwrap().clone();
            assert!(
                !email_unverified(&c)
                    || given["email_verified"] == json!(false)
                    || given["email_verified"] == json!("false")
            );
            require_verified_email(&mut c);
            assert_eq!(!email_unverified(&c), verified, "{given}");
        }
        let mut none = json!({"sub": "a"}).as_object().unwrap().clone();
        require_verified_email(&mut none);
        assert!(
            !none.contains_key("email_verified"),
            "no email, nothing said of one"
        );
    }

    #[test]
    fn groups_are_a_string_or_a_list_and_nothing_else() {
        let c = |v: Value| json!({ "g": v }).as_object().unwrap().clone();
        assert_eq!(groups(&c(json!("a")), "g"), Some(vec!["a".to_owned()]));
        assert_eq!(
            groups(&c(json!(["a", 1, "b"])), "g"),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(groups(&c(json!([])), "g"), Some(vec![]));
        assert_eq!(groups(&c(json!(null)), "g"), None);
        assert_eq!(groups(&c(json!({"a": 1})), "g"), None);
        assert_eq!(groups(&c(json!("a")), "other"), None);
    }
}
