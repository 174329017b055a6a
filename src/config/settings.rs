//! The sidecar's own settings (`SSO_SIDECAR_*` and the TOML keys): their names and defaults
//! (their validation into typed values is `validate`'s).
//!
//! Every key lives here once, with its default; `config/sso-sidecar.example.toml` documents the
//! same keys and a unit test keeps the two in step. No I/O beyond checking that files exist.

use super::auth::{BridgeSection, HeaderSettings, PathSettings};
use super::connections::ConnectionSettings;
use serde::{Deserialize, Serialize};

/// Raw settings as layered by figment. Unknown keys in a TOML file are refused (typos fail fast).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Public listener (`SSO_SIDECAR_LISTEN`).
    pub listen: String,
    /// Backend base URL (`SSO_SIDECAR_UPSTREAM`).
    pub upstream: String,
    /// Admin listener for /healthz, /readyz, /metrics (`SSO_SIDECAR_ADMIN_LISTEN`).
    pub admin_listen: String,
    /// Redis URL; sessions stay in memory when unset (`SSO_SIDECAR_REDIS_URL`).
    pub redis_url: Option<String>,
    /// `openrag` or `headers` (`SSO_SIDECAR_IDENTITY`).
    pub identity: String,
    /// `json` or `pretty` (`SSO_SIDECAR_LOG_FORMAT`).
    pub log_format: String,
    /// Default log filter when `RUST_LOG` is unset (`SSO_SIDECAR_LOG_LEVEL`).
    pub log_level: String,
    /// Proxies (IPs or CIDRs) whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: StringList,
    /// Seconds to wait for in-flight requests on SIGTERM/SIGINT.
    pub shutdown_timeout_secs: u64,
    /// Re-read the configuration when a file it was read from changes, checked this often
    /// (0: only on SIGHUP).
    pub reload_watch_secs: u64,
    /// Worker threads serving the public listener (0 = one per CPU).
    pub workers: usize,
    /// Seconds allowed to connect to the upstream.
    pub upstream_connect_timeout_secs: u64,
    /// Seconds allowed for the upstream to send its response headers, counted from when the
    /// request starts waiting for an upstream connection, or for a request with a body from
    /// the body's last move while it streams (504 after that): a backend may read a whole
    /// upload before it answers.
    pub upstream_timeout_secs: u64,
    /// Seconds a request body may stream upstream, in all, before the response head: the
    /// bound on what its moves add to `upstream_timeout_secs` (a client trickling a body holds
    /// an upstream connection and its place meanwhile).
    pub upstream_body_timeout_secs: u64,
    /// Seconds an idle pooled upstream connection is kept. Below the backend's own keep-alive
    /// timeout (uvicorn closes idle connections after 5 s), so the sidecar never sends on a
    /// connection the backend is closing.
    pub upstream_idle_timeout_secs: u64,
    /// PEM file of CA certificates trusted for an `https://` upstream (system roots otherwise).
    pub upstream_ca_file: Option<String>,
    /// Send the client's `Host` upstream instead of the upstream's own authority.
    pub preserve_host: bool,
    /// A path of the upstream that `/readyz` also asks (`GET`, any 2xx or 3xx is ready), so
    /// that a pod whose backend is still starting gets no traffic; empty: not asked.
    pub upstream_ready_path: String,
    /// Milliseconds that question may take (below the readiness probe's own timeout, 1 s by
    /// default in Kubernetes).
    pub upstream_ready_timeout_ms: u64,
    /// Largest request head accepted (431 above it).
    pub max_request_header_bytes: usize,
    /// TLS on the public listener.
    pub tls: TlsSettings,
    /// Name of the session cookie (it carries only a random id).
    pub session_cookie_name: String,
    /// Over https, name the session and login-state cookies `__Host-<name>`: a cookie no other
    /// host (a sibling subdomain) can set or overwrite.
    pub cookie_host_prefix: bool,
    /// The session cookie carries `Max-Age` (the session's remaining lifetime, as OpenRag's);
    /// false: a browser-session cookie, which the browser drops when it closes (the session
    /// itself still ends at its lifetime).
    pub session_cookie_persistent: bool,
    /// Absolute session lifetime when the IdP issued a refresh token; never extended.
    pub session_lifetime_secs: u64,
    /// A session unused for this long ends (0: never, as in OpenRag).
    pub session_idle_timeout_secs: u64,
    /// Live sessions one user may hold; a login beyond it ends their oldest (0: no limit).
    pub max_sessions_per_user: usize,
    /// Absolute origins (`https://ui.example.com`) a post-login `next` may point to.
    pub allowed_redirect_origins: StringList,
    /// Other origins whose pages may send requests with the user's session (credentialed
    /// CORS from a front end of ours); `*` turns the cross-site check off.
    pub trusted_origins: StringList,
    /// Forward trusted origins' CORS preflights to the upstream, which answers them, instead
    /// of answering them here. Off by default: a preflight carries no credential, and a
    /// backend that runs its handlers for `OPTIONS` would serve an anonymous client.
    pub forward_preflights: bool,
    /// `auto`, `client_secret_basic` or `client_secret_post`.
    pub token_endpoint_auth: String,
    /// PEM CA bundle trusted for the IdP; system roots when unset.
    pub idp_ca_file: Option<String>,
    /// Seconds allowed for one call to the IdP.
    pub idp_timeout_secs: u64,
    /// Seconds between two discovery refreshes once loaded.
    pub discovery_refresh_secs: u64,
    /// Refresh the access token when it expires within this many seconds (at most a quarter of
    /// the token's lifetime).
    pub refresh_skew_secs: u64,
    /// Seconds a login may take between `/auth/login` and `/auth/callback` (the IdP's login
    /// page, MFA included).
    pub login_timeout_secs: u64,
    /// The `prompt` of the authorization request (`consent`, `login`…); empty: none, as OpenRag.
    pub prompt: String,
    /// OIDC `max_age` of the authorization request: the IdP must have authenticated the user
    /// within this many seconds (or do it again), and the ID token's `auth_time` must say so;
    /// 0: not asked.
    pub auth_max_age_secs: u64,
    /// An email counts as the user's only when the IdP says `email_verified: true`; by
    /// default only an explicit `false` discounts it.
    pub email_verified_required: bool,
    /// Front-channel logout: when no session carries the `sid` sent, end the sessions of the
    /// user whose `sub` it is (LemonLDAP::NG sends the user id as `sid`). Off by default: the
    /// request is unauthenticated, so with it on anyone who knows a user id can log them out.
    pub frontchannel_logout_by_sub: bool,
    /// Client addresses and networks back-channel logouts may come from (the IdP's); empty:
    /// anywhere. Read through `trusted_proxies`, as every client address.
    pub backchannel_logout_from: StringList,
    /// Prefix of every Redis key.
    pub redis_key_prefix: String,
    /// `single` (redis_url), `sentinel` or `cluster` (both use redis_nodes).
    pub redis_mode: String,
    /// Sentinel addresses (sentinel mode) or seed nodes (cluster mode), as redis:// URLs.
    pub redis_nodes: StringList,
    /// The master name the sentinels watch.
    pub redis_sentinel_master: String,
    /// Connect to the Sentinel-provided master over TLS.
    pub redis_sentinel_tls: bool,
    /// ACL user and password of the data servers (also `SSO_SIDECAR_REDIS_PASSWORD_FILE`).
    pub redis_username: Option<String>,
    pub redis_password: Option<String>,
    /// The sentinels' own credentials (also `SSO_SIDECAR_REDIS_SENTINEL_PASSWORD_FILE`).
    pub redis_sentinel_username: Option<String>,
    pub redis_sentinel_password: Option<String>,
    /// PEM CA bundle trusted for `rediss://`; system roots when unset.
    pub redis_ca_file: Option<String>,
    /// Milliseconds allowed to connect to Redis and for each command.
    pub redis_timeout_ms: u64,
    /// Keep session reads in a client-side cache that Redis keeps coherent (`CLIENT TRACKING`,
    /// single server only).
    pub redis_client_cache: bool,
    /// Entries of that cache per worker thread.
    pub redis_client_cache_entries: usize,
    /// Replicas a logout waits for (`WAIT`) before it is answered, so that a failover right
    /// after it does not bring the session back: a whole number, or `auto` (1 with Sentinel, 0
    /// otherwise).
    #[serde(deserialize_with = "text_or_number")]
    pub redis_logout_replicas: String,
    /// How long a logout waits for them at most (then it is answered, and counted).
    pub redis_logout_wait_ms: u64,
    /// Which paths are public, which are UI pages (login redirect) — all others answer 401.
    pub paths: PathSettings,
    /// Header names of `identity = "headers"`.
    pub headers: HeaderSettings,
    /// The OpenRag identity bridge (`identity = "openrag"`).
    pub openrag: BridgeSection,
    /// Client connection deadlines and caps, upstream connection cap, stream revocation.
    pub connections: ConnectionSettings,
    /// Who may log in and which groups reach which paths.
    pub authz: super::access::AuthzSection,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// A list given either as an array (TOML) or as a comma-separated string (environment).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(from = "ListOrCsv", into = "Vec<String>")]
pub struct StringList(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum ListOrCsv {
    List(Vec<String>),
    Csv(String),
}

impl From<ListOrCsv> for StringList {
    fn from(v: ListOrCsv) -> Self {
        let items = match v {
            ListOrCsv::List(l) => l,
            // `[]` in a variable is the empty list, as in TOML (start-up's own advice says
            // to write it); taken as an entry it was refused as a path or an address.
            ListOrCsv::Csv(s) if s.trim() == "[]" => Vec::new(),
            ListOrCsv::Csv(s) => s.split(',').map(str::to_owned).collect(),
        };
        StringList(
            items
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }
}

impl From<StringList> for Vec<String> {
    fn from(l: StringList) -> Self {
        l.0
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "0.0.0.0:8000".into(),
            upstream: "http://127.0.0.1:8080".into(),
            admin_listen: "0.0.0.0:9090".into(),
            redis_url: None,
            identity: "openrag".into(),
            log_format: "json".into(),
            log_level: "info".into(),
            trusted_proxies: StringList::default(),
            shutdown_timeout_secs: 30,
            reload_watch_secs: 0,
            workers: 0,
            upstream_connect_timeout_secs: 5,
            upstream_timeout_secs: 60,
            upstream_body_timeout_secs: 3600,
            upstream_idle_timeout_secs: 4,
            upstream_ca_file: None,
            preserve_host: false,
            upstream_ready_path: String::new(),
            upstream_ready_timeout_ms: 800,
            max_request_header_bytes: 32 * 1024,
            tls: TlsSettings::default(),
            session_cookie_name: "sso_sidecar_session".into(),
            cookie_host_prefix: true,
            session_cookie_persistent: true,
            session_lifetime_secs: 7 * 24 * 3600,
            session_idle_timeout_secs: 0,
            max_sessions_per_user: 50,
            allowed_redirect_origins: StringList::default(),
            trusted_origins: StringList::default(),
            forward_preflights: false,
            token_endpoint_auth: "auto".into(),
            idp_ca_file: None,
            idp_timeout_secs: 10,
            discovery_refresh_secs: 3600,
            refresh_skew_secs: 60,
            login_timeout_secs: 600,
            prompt: String::new(),
            auth_max_age_secs: 0,
            email_verified_required: false,
            frontchannel_logout_by_sub: false,
            backchannel_logout_from: StringList::default(),
            redis_key_prefix: "sso-sidecar:".into(),
            redis_mode: "single".into(),
            redis_nodes: StringList::default(),
            redis_sentinel_master: "mymaster".into(),
            redis_sentinel_tls: false,
            redis_username: None,
            redis_password: None,
            redis_sentinel_username: None,
            redis_sentinel_password: None,
            redis_ca_file: None,
            redis_timeout_ms: 2000,
            redis_client_cache: true,
            redis_client_cache_entries: 2048,
            redis_logout_replicas: "auto".into(),
            redis_logout_wait_ms: 1000,
            paths: PathSettings::default(),
            headers: HeaderSettings::default(),
            openrag: BridgeSection::default(),
            connections: ConnectionSettings::default(),
            authz: super::access::AuthzSection::default(),
        }
    }
}

/// Top-level key names, used to tell our variables from foreign ones under our prefix.
pub fn top_level_keys() -> Vec<String> {
    match serde_json::to_value(Settings::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityMode {
    OpenRag,
    Headers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// A setting that is a word or a whole number (`redis_logout_replicas = "auto"` or `= 2`): a
/// number is read as its digits.
fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrNumber {
        Text(String),
        Number(i64),
    }
    Ok(match TextOrNumber::deserialize(d)? {
        TextOrNumber::Text(t) => t,
        TextOrNumber::Number(n) => n.to_string(),
    })
}
