//! Sessions: the record of who a logged-in user is and the tokens the sidecar holds for them,
//! the service that seals it into the store and finds it again ([`sessions`]), and the live
//! streams that end with it ([`streams`]). No HTTP here, no OIDC: `auth` creates and refreshes
//! sessions, `identity` turns them into what the upstream is told; both build on this.

pub mod sessions;
pub mod streams;

pub use sessions::Sessions;
pub use streams::LiveStreams;

use serde::{Deserialize, Serialize};

/// One logged-in user. Its `Debug` shows no token.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub iss: String,
    pub sub: String,
    #[serde(default)]
    pub sid: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// `email_verified` as the IdP last said it (`None`: not said), for `[authz]` to check
    /// again at a refresh that brings no new ID token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// The latest ID token: the `id_token_hint` of RP-initiated logout.
    pub id_token: String,
    /// Unix seconds: when the access token really expires (as the IdP said, no floor).
    pub access_expires_at: i64,
    /// Seconds the current access token was issued for (`expires_in`); 0 for sessions made
    /// before it was recorded. Bounds the refresh skew, so a short-lived token is refreshed
    /// about once per lifetime rather than on every request.
    #[serde(default)]
    pub access_lifetime: i64,
    pub created_at: i64,
    /// Unix seconds; the session is dead after this, whatever happens.
    pub expires_at: i64,
    /// OpenRag bridge: the backend user id and that user's token (sealed with the session).
    #[serde(default)]
    pub backend_user_id: Option<u64>,
    #[serde(default)]
    pub backend_token: Option<String>,
    /// The store key it was sealed for: a value copied under another key, by someone who can
    /// write the store but cannot seal (a shared Redis), opens as no session there, rather than
    /// as its user under another cookie. `None` in values written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_for: Option<String>,
    /// The identity as header values, built on the first request that needs them and reused
    /// by every later request of this opened session (never stored).
    #[serde(skip)]
    pub identity_headers: Memo<Box<[Option<http::HeaderValue>]>>,
    /// The opaque number its user holds places as ([`streams::LiveStreams::holder_of`]),
    /// worked out on the first request that needs it (never stored).
    #[serde(skip)]
    pub holder: Memo<u64>,
}

/// A value derived from a session and kept with it, computed at most once. A clone starts
/// empty: sessions are cloned to be changed (a refresh), and what was derived from the
/// original must not carry over into the changed copy. Never printed.
pub struct Memo<T>(std::sync::OnceLock<T>);

impl<T> Memo<T> {
    pub fn get_or_init(&self, init: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(init)
    }
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo(std::sync::OnceLock::new())
    }
}

impl<T> Clone for Memo<T> {
    fn clone(&self) -> Self {
        Memo::default()
    }
}

impl<T> std::fmt::Debug for Memo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |present: bool| if present { "[redacted]" } else { "None" };
        f.debug_struct("Session")
            .field("iss", &self.iss)
            .field("sub", &self.sub)
            .field("sid", &self.sid)
            .field("access_token", &"[redacted]")
            .field("refresh_token", &hidden(self.refresh_token.is_some()))
            .field("id_token", &"[redacted]")
            .field("access_expires_at", &self.access_expires_at)
            .field("expires_at", &self.expires_at)
            .field("backend_user_id", &self.backend_user_id)
            .field("backend_token", &hidden(self.backend_token.is_some()))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl Session {
    /// A session for unit tests: `sub`, refreshable, its access token issued at `now` for
    /// `lifetime` seconds, the session itself good for an hour.
    pub fn for_tests(sub: &str, now: i64, lifetime: i64) -> Session {
        Session {
            iss: "https://idp".into(),
            sub: sub.into(),
            sid: None,
            email: None,
            name: None,
            preferred_username: None,
            groups: vec![],
            email_verified: None,
            access_token: "at".into(),
            refresh_token: Some("rt".into()),
            id_token: "it".into(),
            access_expires_at: now + lifetime,
            access_lifetime: lifetime,
            created_at: now,
            expires_at: now + 3600,
            backend_user_id: None,
            backend_token: None,
            sealed_for: None,
            identity_headers: Memo::default(),
            holder: Memo::default(),
        }
    }
}

impl Session {
    pub fn is_live(&self, now: i64) -> bool {
        now <= self.ends_at()
    }

    /// The last instant (Unix seconds) it can be live: its absolute expiry, or without a
    /// refresh token its access token's expiry if that comes first.
    pub fn ends_at(&self) -> i64 {
        if self.refresh_token.is_some() {
            self.expires_at
        } else {
            self.expires_at.min(self.access_expires_at)
        }
    }

    /// Live and its access token still valid (used when a refresh could not happen).
    pub fn is_live_access(&self, now: i64) -> bool {
        now <= self.expires_at && now <= self.access_expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_no_token() {
        let s = Session {
            iss: "https://idp".into(),
            sub: "alice".into(),
            sid: None,
            email: None,
            name: None,
            preferred_username: None,
            groups: Vec::new(),
            email_verified: None,
            access_token: "AT-secret".into(),
            refresh_token: Some("RT-secret".into()),
            id_token: "IDT-secret".into(),
            access_expires_at: 1,
            access_lifetime: 1,
            created_at: 0,
            expires_at: 2,
            backend_user_id: Some(7),
            backend_token: Some("or-secret".into()),
            sealed_for: None,
            identity_headers: Memo::default(),
            holder: Memo::default(),
        };
        let shown = format!("{s:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
