//! Store keys: `<kind>:{<hex SHA-256 of the parts>}`. The store never sees the value a key is
//! for (a session id, a `sub`, a state), and the braces are a Redis Cluster hash tag, so each
//! key lives on the slot of its own hash. The one place keys are shaped.

use crate::crypto::digest;

/// The key of `kind` for `parts` (the parts are hashed, joined by NUL).
pub fn hashed(kind: &str, parts: &[&str]) -> String {
    let hash = digest(parts);
    let mut key = String::with_capacity(kind.len() + hash.len() + 3);
    key.push_str(kind);
    key.push_str(":{");
    key.push_str(&hash);
    key.push('}');
    key
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_hide_their_parts_behind_a_hash_tag() {
        let k = super::hashed("session", &["session", "secret-id"]);
        assert!(k.starts_with("session:{") && k.ends_with('}'), "{k}");
        assert_eq!(k.len(), "session:{}".len() + 64);
        assert!(!k.contains("secret-id"));
    }
}
