//! The authentication layer's settings (`AUTH_MODE=oidc`): cookies, lifetimes, the IdP client,
//! Redis (its settings are `redis_settings.rs`), path lists and identity header names — their TOML shape, defaults and validation
//! (the OpenRag bridge's section is `bridge.rs`). Part of the `Settings` struct; split out to keep each file readable.

pub use super::bridge::{BridgeSection, BridgeSettings, TokenPolicy, MAX_VAULT_TTL_DAYS};
pub use super::redis_settings::{RedisConfig, RedisTopology};
use super::settings::{Settings, StringList};
use super::validate::existing_file;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Path lists; an entry ending in `*` is a prefix, any other entry is matched exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathSettings {
    /// Reached without a session and without identity (OpenRag's bypass list).
    pub public: StringList,
    /// Browser pages: an unauthenticated request is redirected to the login.
    pub ui: StringList,
    /// Public for API calls, but an HTML request (`Accept: text/html`) needs a session.
    pub html_login: StringList,
    /// A browser navigation (`GET` with `Sec-Fetch-Mode: navigate` or `Accept: text/html`) to
    /// any gated path is sent to the login, not only to a `ui` path. Unset: on with
    /// `identity = "headers"` (a generic backend's pages), off with `openrag` (OpenRag's rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser_login: Option<bool>,
    /// A request with `Authorization: Bearer …` and no session goes to the upstream untouched,
    /// for the backend to judge the token. Unset: on with `identity = "openrag"` (OpenRag checks
    /// its own tokens), off with `headers` (a backend that trusts the identity headers usually
    /// checks no token, so a made-up bearer would reach it unauthenticated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_passthrough: Option<bool>,
    /// Where a `token` query parameter is a credential, as a bearer is elsewhere: a request
    /// without a session that carries one is the backend's to judge, not sent to the login.
    /// Not a setting: OpenRag's `/static*` with `identity = "openrag"`, else none.
    #[serde(skip)]
    pub token_query: StringList,
}

impl Default for PathSettings {
    fn default() -> Self {
        let l = |v: &[&str]| StringList(v.iter().map(|s| s.to_string()).collect());
        PathSettings {
            public: l(&[
                "/health_check",
                "/ready",
                "/version",
                "/metrics",
                "/auth/chainlit-logout-signal",
                "/assets/*",
                "/chainlit",
                "/chainlit/*",
            ]),
            ui: l(&["/", "/static*", "/docs", "/redoc", "/openapi.json"]),
            html_login: l(&["/chainlit", "/chainlit/*"]),
            browser_login: None,
            bearer_passthrough: None,
            token_query: StringList::default(),
        }
    }
}

/// Identity header names (`identity = "headers"`); an empty name disables that header.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderSettings {
    pub user: String,
    pub email: String,
    pub preferred_username: String,
    pub groups: String,
    /// Off by default: the IdP access token is only sent upstream when a name is set.
    pub access_token: String,
}

impl Default for HeaderSettings {
    fn default() -> Self {
        HeaderSettings {
            user: "X-Forwarded-User".into(),
            email: "X-Forwarded-Email".into(),
            preferred_username: "X-Forwarded-Preferred-Username".into(),
            groups: "X-Forwarded-Groups".into(),
            access_token: String::new(),
        }
    }
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ClientAuth {
    /// `client_secret_basic` unless the IdP advertises only `client_secret_post`.
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "client_secret_basic")]
    Basic,
    #[serde(rename = "client_secret_post")]
    Post,
}

/// Settings of the authentication layer (meaningful with `AUTH_MODE=oidc`).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub session_cookie_name: String,
    /// `__Host-` names for the sidecar's cookies over https.
    pub cookie_host_prefix: bool,
    /// `session_cookie_persistent`: the session cookie carries `Max-Age`.
    pub session_cookie_persistent: bool,
    pub session_lifetime: Duration,
    /// A session without a request for this long ends (`session_idle_timeout_secs`, 0 = none).
    pub session_idle_timeout: Option<Duration>,
    /// Live sessions one user may hold (`max_sessions_per_user`, 0 = no limit).
    pub max_sessions_per_user: Option<usize>,
    pub allowed_redirect_origins: Vec<String>,
    /// Origins whose pages may act with the user's session besides our own (`auth::cross_site`).
    pub trusted_origins: super::origins::TrustedOrigins,
    /// `forward_preflights`: trusted origins' CORS preflights go to the upstream.
    pub forward_preflights: bool,
    pub token_endpoint_auth: ClientAuth,
    pub idp_ca_file: Option<PathBuf>,
    pub idp_timeout: Duration,
    pub discovery_refresh: Duration,
    pub refresh_skew: Duration,
    /// How long a login in flight stays valid (`login_timeout_secs`).
    pub login_timeout: Duration,
    /// The authorization request's `prompt`, when one is configured.
    pub prompt: Option<String>,
    /// The authorization request's `max_age` (`auth_max_age_secs`), when one is configured.
    pub max_age: Option<Duration>,
    /// `email_verified_required`: claims without `email_verified: true` are read as unverified.
    pub email_verified_required: bool,
    /// Front-channel logout may end the sessions of the `sub` named as `sid`.
    pub frontchannel_logout_by_sub: bool,
    /// Where back-channel logouts may come from (client addresses); empty = anywhere.
    pub backchannel_logout_from: Vec<ipnet::IpNet>,
    /// Where sessions live when not in memory.
    pub redis: Option<RedisConfig>,
    pub paths: PathSettings,
    pub headers: Vec<(IdentityField, http::HeaderName)>,
    pub bridge: BridgeSettings,
    /// Who may log in, what a session may reach.
    pub authz: super::access::Authz,
}

/// What an identity header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityField {
    User,
    Email,
    PreferredUsername,
    Groups,
    AccessToken,
}

impl Settings {
    pub(super) fn validate_auth(&self, problems: &mut Vec<String>) -> Option<AuthSettings> {
        let before = problems.len();
        let token_endpoint_auth =
            super::types::one_of("token_endpoint_auth", &self.token_endpoint_auth, problems)
                .unwrap_or(ClientAuth::Auto);
        let name = &self.session_cookie_name;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            problems.push(format!(
                "session_cookie_name '{name}' must be letters, digits, '_' or '-'"
            ));
        }
        if !(60..=86_400).contains(&self.login_timeout_secs) {
            problems.push("login_timeout_secs must be between 60 and 86400".to_string());
        }
        let idle = self.session_idle_timeout_secs;
        if idle != 0 && !(10..=self.session_lifetime_secs).contains(&idle) {
            problems.push(
                "session_idle_timeout_secs must be 0 (none), or from 10 to session_lifetime_secs"
                    .to_string(),
            );
        }
        if self.session_lifetime_secs < 60 {
            problems.push("session_lifetime_secs must be at least 60".to_string());
        }
        // Deadlines are computed from it: a huge value would overflow them.
        if self.session_lifetime_secs > 10 * 366 * 24 * 3600 {
            problems.push("session_lifetime_secs must be at most ten years".to_string());
        }
        let origins = self.validate_redirect_origins(problems);
        let trusted_origins = self.validate_trusted_origins(problems);
        for list in [&self.paths.public, &self.paths.ui, &self.paths.html_login] {
            for p in &list.0 {
                if !p.starts_with('/') {
                    problems.push(format!("paths: '{p}' must start with '/'"));
                }
            }
        }
        let mut headers = Vec::new();
        let h = &self.headers;
        for (field, raw) in [
            (IdentityField::User, &h.user),
            (IdentityField::Email, &h.email),
            (IdentityField::PreferredUsername, &h.preferred_username),
            (IdentityField::Groups, &h.groups),
            (IdentityField::AccessToken, &h.access_token),
        ] {
            if raw.trim().is_empty() {
                continue;
            }
            match http::HeaderName::from_bytes(raw.trim().as_bytes()) {
                Ok(n) => headers.push((field, n)),
                Err(_) => problems.push(format!("headers: '{raw}' is not a valid header name")),
            }
        }
        let idp_ca_file = self.idp_ca_file.as_ref().map(|f| {
            existing_file("idp_ca_file", f, problems);
            PathBuf::from(f)
        });
        let redis_ca_file = self.redis_ca_file.as_ref().map(|f| {
            existing_file("redis_ca_file", f, problems);
            PathBuf::from(f)
        });
        for (n, v) in [
            ("idp_timeout_secs", self.idp_timeout_secs),
            ("discovery_refresh_secs", self.discovery_refresh_secs),
            ("redis_timeout_ms", self.redis_timeout_ms),
            ("redis_logout_wait_ms", self.redis_logout_wait_ms),
        ] {
            if v == 0 {
                problems.push(format!("{n} must be at least 1"));
            }
        }
        // Every logout may wait this long (twice, behind another's round): a minute is already
        // more than any client waits for an answer.
        if self.redis_logout_wait_ms > 60_000 {
            problems.push("redis_logout_wait_ms must be at most 60000".to_string());
        }
        let prompt = self.prompt.split_whitespace().collect::<Vec<_>>();
        for p in &prompt {
            if !matches!(*p, "none" | "login" | "consent" | "select_account") {
                problems.push(format!(
                    "prompt: '{p}' is not none, login, consent or select_account"
                ));
            }
        }
        let prompt = (!prompt.is_empty()).then(|| prompt.join(" "));
        // A year: longer says nothing an IdP's own session does not (and keeps `auth_time`
        // arithmetic far from overflow).
        if self.auth_max_age_secs > 31_536_000 {
            problems.push("auth_max_age_secs must be at most 31536000 (a year)".to_string());
        }
        let backchannel_logout_from = super::validate::networks(
            "backchannel_logout_from",
            &self.backchannel_logout_from,
            problems,
        );
        let openrag = self.validate_openrag(problems);
        let redis = self.validate_redis(redis_ca_file, problems);
        let authz = self.authz.validate(None, problems);
        if problems.len() > before {
            return None;
        }
        Some(AuthSettings {
            bridge: openrag?,
            authz,
            session_cookie_name: name.clone(),
            cookie_host_prefix: self.cookie_host_prefix,
            session_cookie_persistent: self.session_cookie_persistent,
            session_lifetime: Duration::from_secs(self.session_lifetime_secs),
            session_idle_timeout: (self.session_idle_timeout_secs > 0)
                .then(|| Duration::from_secs(self.session_idle_timeout_secs)),
            max_sessions_per_user: (self.max_sessions_per_user > 0)
                .then_some(self.max_sessions_per_user),
            allowed_redirect_origins: origins,
            trusted_origins,
            forward_preflights: self.forward_preflights,
            token_endpoint_auth,
            idp_ca_file,
            idp_timeout: Duration::from_secs(self.idp_timeout_secs),
            discovery_refresh: Duration::from_secs(self.discovery_refresh_secs),
            refresh_skew: Duration::from_secs(self.refresh_skew_secs),
            login_timeout: Duration::from_secs(self.login_timeout_secs),
            prompt,
            max_age: (self.auth_max_age_secs > 0)
                .then(|| Duration::from_secs(self.auth_max_age_secs)),
            email_verified_required: self.email_verified_required,
            frontchannel_logout_by_sub: self.frontchannel_logout_by_sub,
            backchannel_logout_from,
            redis: redis?,
            paths: self.paths.for_identity(&self.identity),
            headers,
        })
    }
}

impl PathSettings {
    /// These settings as given, with the defaults that follow the identity mode (`identity`,
    /// as written) filled in: a reload that cannot change the running mode fills them in for
    /// that mode, not for the one it was asked for.
    pub fn for_identity(&self, identity: &str) -> PathSettings {
        let is = |mode: &str| identity.trim().eq_ignore_ascii_case(mode);
        PathSettings {
            browser_login: Some(self.browser_login.unwrap_or_else(|| is("headers"))),
            bearer_passthrough: Some(self.bearer_passthrough.unwrap_or_else(|| is("openrag"))),
            // OpenRag takes `?token=` on `/static*` (scripts, links to files).
            token_query: if is("openrag") {
                StringList(vec!["/static*".to_owned()])
            } else {
                StringList::default()
            },
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;

    /// Found while fuzzing (`fuzz/corpus/dotenv`): `vault_ttl_days * 24 * 3600` overflowed (a
    /// panic where overflow is checked, a short TTL where it wraps).
    #[test]
    fn a_vault_ttl_too_large_is_refused() {
        let mut s = Settings::default();
        s.openrag.vault_ttl_days = 999_999_999_999_999;
        let mut problems = Vec::new();
        assert!(s.validate(&mut problems).is_none());
        assert!(
            problems
                .iter()
                .any(|p| p.contains("vault_ttl_days must be at most 36500")),
            "{problems:?}"
        );
    }
}
