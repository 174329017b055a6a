//! Claim sync at login (OpenRag's `OIDC_AUTO_PROVISION_LOGIN` sync, then `OIDC_CLAIM_MAPPING`):
//! the backend user's display name and email follow the IdP. Only what really changed is
//! written: the users list of OpenRag 1.1.8 shows no email, so the bridge remembers a digest of
//! what it last wrote per field and user (in the store, shared by replicas) instead of
//! comparing with the backend. A failed write is logged, never fatal.

use super::admin::BackendUser;
use super::OpenRagBridge;
use serde_json::{json, Map, Value};

impl OpenRagBridge {
    /// Where the digest of the last value written to `field` of `sub`'s backend user is kept.
    fn synced_key(&self, sub: &str, field: &str) -> String {
        crate::store::keys::hashed("synced", &["synced", &self.issuer, sub, field])
    }

    /// Auto-provision sync, then `OIDC_CLAIM_MAPPING` (which may override it), as OpenRag does:
    /// only changed, non-null values are written; a failed write is logged, never fatal.
    pub(super) async fn sync_claims(
        &self,
        sub: &str,
        user: &BackendUser,
        claims: &Map<String, Value>,
    ) {
        let mut patch = Map::new();
        if self.auto_provision {
            patch.insert("display_name".into(), json!(display_name(sub, claims)));
            if let Some(e) = email(claims) {
                patch.insert("email".into(), json!(e));
            }
        }
        for m in &self.claim_mapping {
            if let Some(v) = claims
                .get(&m.claim)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|v| !v.is_empty())
            {
                if m.field == "email" && crate::claims::email_unverified(claims) {
                    continue;
                }
                let v = if m.field == "email" {
                    v.to_lowercase()
                } else {
                    // Mapped names too: a PATCH above the limit fails at every login.
                    within_limit(v)
                };
                patch.insert(m.field.clone(), json!(v));
            }
        }
        patch.retain(|field, v| {
            let current = match field.as_str() {
                "display_name" => user.display_name.as_deref(),
                _ => user.email.as_deref(),
            };
            Some(v.as_str().unwrap_or_default()) != current
        });
        // A field the backend does not report (OpenRag 1.1.8's users list has no email) is
        // compared with what the sidecar last wrote, kept as a digest: no write at every login.
        let mut unchanged = Vec::new();
        for (field, v) in &patch {
            let reported = match field.as_str() {
                "display_name" => user.display_name.is_some(),
                _ => user.email.is_some(),
            };
            let written = self.store.get(&self.synced_key(sub, field)).await;
            if !reported && written.ok().flatten().as_deref() == Some(synced_digest(v).as_bytes()) {
                unchanged.push(field.clone());
            }
        }
        for f in unchanged {
            patch.remove(&f);
        }
        if patch.is_empty() {
            return;
        }
        match self
            .admin
            .patch_user(user.id, Value::Object(patch.clone()))
            .await
        {
            Ok(()) => {
                self.directory.amend(sub, |u| {
                    if let Some(d) = patch.get("display_name").and_then(Value::as_str) {
                        u.display_name = Some(d.to_owned());
                    }
                    if let Some(e) = patch.get("email").and_then(Value::as_str) {
                        u.email = Some(e.to_owned());
                    }
                });
                for (field, v) in &patch {
                    let key = self.synced_key(sub, field);
                    let digest = synced_digest(v);
                    let _ = self
                        .store
                        .put(&key, digest.as_bytes(), self.settings.vault_ttl)
                        .await;
                }
                tracing::info!(sub, fields = ?patch.keys().collect::<Vec<_>>(), "backend user synced from claims");
            }
            Err(e) => tracing::warn!(sub, error = %e, "claim sync failed"),
        }
    }
}

/// A value as the sync remembers it: hashed, so the store holds no readable email.
fn synced_digest(v: &Value) -> String {
    crate::crypto::digest(&[&v.to_string()])
}

/// Longest display name the backend accepts (`POST /users/` answers 400 above it, and that
/// would fail every login of the user; its limit counts characters, as `chars()` does).
const MAX_DISPLAY_NAME_CHARS: usize = 255;

/// `name` cut to [`MAX_DISPLAY_NAME_CHARS`] characters (so on a char boundary).
fn within_limit(name: &str) -> String {
    name.chars()
        .take(MAX_DISPLAY_NAME_CHARS)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

/// name → preferred_username → "given family" → `oidc-<first 8 of sub>` (docs/openrag-backend.md#users),
/// at most [`MAX_DISPLAY_NAME_CHARS`] characters.
pub fn display_name(sub: &str, claims: &Map<String, Value>) -> String {
    within_limit(&display_name_in_full(sub, claims))
}

fn display_name_in_full(sub: &str, claims: &Map<String, Value>) -> String {
    let s = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(n) = s("name").or_else(|| s("preferred_username")) {
        return n.to_owned();
    }
    let full = format!(
        "{} {}",
        s("given_name").unwrap_or(""),
        s("family_name").unwrap_or("")
    );
    if !full.trim().is_empty() {
        return full.trim().to_owned();
    }
    format!("oidc-{}", sub.chars().take(8).collect::<String>())
}

/// The user's email as the backend gets it: none when the IdP says it is not verified (an
/// account created or updated with someone else's address would be found by it, and block
/// the real owner's first login as "email taken").
pub(super) fn email(claims: &Map<String, Value>) -> Option<String> {
    if crate::claims::email_unverified(claims) {
        return None;
    }
    claims
        .get("email")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_lowercase)
}
