//! `[openrag]`: the OpenRag identity bridge's settings (`identity = "openrag"`) — the token
//! policy for users the vault does not know, the admin API's deadline, the vault's lifetime —
//! their TOML shape, defaults and validation. Part of the `Settings` struct.

use super::settings::Settings;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[openrag]`: the OpenRag identity bridge (`identity = "openrag"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeSection {
    /// What to do for an existing backend user whose token the vault lacks:
    /// `deny`, `regenerate` (invalidates the user's previous token) or `file`.
    pub token_policy: String,
    /// With `token_policy = "file"`: a JSON object mapping IdP `sub` to the user's OpenRag token.
    pub token_file: Option<String>,
    /// Seconds allowed for one call to the backend's users API.
    pub admin_timeout_secs: u64,
    /// Days a user's token stays in the vault after their last login.
    pub vault_ttl_days: u64,
}

impl Default for BridgeSection {
    fn default() -> Self {
        BridgeSection {
            token_policy: "deny".into(),
            token_file: None,
            admin_timeout_secs: 10,
            vault_ttl_days: 90,
        }
    }
}

/// Longest `openrag.vault_ttl_days` accepted (a hundred years).
pub const MAX_VAULT_TTL_DAYS: u64 = 36_500;

/// How the bridge obtains a token for an existing user the vault does not know.
#[derive(Debug, Clone)]
pub enum TokenPolicy {
    Deny,
    Regenerate,
    File(std::sync::Arc<std::collections::HashMap<String, crate::secret::Secret<String>>>),
}

#[derive(Debug, Clone)]
pub struct BridgeSettings {
    pub policy: TokenPolicy,
    pub admin_timeout: Duration,
    pub vault_ttl: Duration,
}

/// The names `openrag.token_policy` takes ([`TokenPolicy`] adds the file's tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PolicyName {
    Deny,
    Regenerate,
    File,
}

impl Settings {
    pub(super) fn validate_openrag(&self, problems: &mut Vec<String>) -> Option<BridgeSettings> {
        let o = &self.openrag;
        let policy = match super::types::one_of("openrag.token_policy", &o.token_policy, problems)?
        {
            PolicyName::Deny => TokenPolicy::Deny,
            PolicyName::Regenerate => TokenPolicy::Regenerate,
            PolicyName::File => match &o.token_file {
                None => {
                    problems.push(
                        "openrag.token_policy = \"file\" needs openrag.token_file".to_string(),
                    );
                    return None;
                }
                Some(path) => match std::fs::read_to_string(path)
                    .map_err(|e| e.to_string())
                    .and_then(|t| {
                        // Where, never what: serde's message quotes the value it met, which
                        // may be a token (a file holding a bare JSON string).
                        serde_json::from_str::<std::collections::HashMap<String, String>>(&t)
                            .map_err(|e| {
                                format!("not valid at line {} column {}", e.line(), e.column())
                            })
                    }) {
                    Ok(map) => TokenPolicy::File(std::sync::Arc::new(
                        map.into_iter()
                            .map(|(k, v)| (k, crate::secret::Secret::new(v)))
                            .collect(),
                    )),
                    Err(e) => {
                        problems.push(format!("openrag.token_file {path}: {e} (expected a JSON object mapping sub to token)"));
                        return None;
                    }
                },
            },
        };
        if o.admin_timeout_secs == 0 || o.vault_ttl_days == 0 {
            problems.push(
                "openrag.admin_timeout_secs and openrag.vault_ttl_days must be at least 1"
                    .to_string(),
            );
        }
        // Days become seconds, then deadlines: a huge value would overflow both.
        if o.vault_ttl_days > MAX_VAULT_TTL_DAYS {
            problems.push(format!(
                "openrag.vault_ttl_days must be at most {MAX_VAULT_TTL_DAYS}, got {}",
                o.vault_ttl_days
            ));
            return None;
        }
        Some(BridgeSettings {
            policy,
            admin_timeout: Duration::from_secs(o.admin_timeout_secs),
            vault_ttl: Duration::from_secs(o.vault_ttl_days * 24 * 3600),
        })
    }
}
