//! Configuration: layering, validation, and the typed [`Config`] the rest of the program reads.
//!
//! Layers, later wins: built-in defaults < TOML file (`--config` or `SSO_SIDECAR_CONFIG`) <
//! `.env` file (`SSO_SIDECAR_ENV_FILE`, else `./.env` when present) < process environment.
//! The sidecar's own settings are `SSO_SIDECAR_*` (nested keys joined with `__`); OpenRag's own
//! names are read by [`openrag`]. Validation collects every problem before reporting, so an
//! operator fixes a deployment in one round. This module opens files and nothing else: no
//! sockets, no clients.

pub mod access;
pub mod auth;
pub mod bridge;
pub mod connections;
pub mod dotenv;
pub mod openrag_env;
pub mod origins;
pub mod redis_settings;
pub mod reload;
pub mod settings;
pub mod sources;
pub mod suggest;
pub mod toml_keys;
pub mod types;
pub mod validate;

pub use auth::{
    AuthSettings, BridgeSettings, ClientAuth, IdentityField, PathSettings, RedisConfig,
    RedisTopology, TokenPolicy,
};
pub use connections::{Balance, ConnectionLimits};
pub use openrag_env::{AuthMode, ClaimSource, OidcSettings, OpenRagVars};
pub use reload::{refusal as reload_refusal, restart_required, Reloadable};
pub use settings::{IdentityMode, LogFormat, Settings};
pub use validate::{ProxySettings, TlsFiles};

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use sources::{Vars, VarsProvider};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// TLS on the public listener, when configured.
    pub tls: Option<TlsFiles>,
    pub proxy: ProxySettings,
    pub identity: IdentityMode,
    pub log_format: LogFormat,
    /// Default log filter; `RUST_LOG` overrides it.
    pub log_level: String,
    pub shutdown_timeout: Duration,
    /// Worker threads serving the public listener.
    pub workers: usize,
    pub connections: ConnectionLimits,
    /// OpenRag's own variables (`AUTH_MODE`, `OIDC_*`…), read as OpenRag reads them.
    pub openrag_env: OpenRagVars,
    pub auth: AuthSettings,
    /// Non-fatal findings, logged once telemetry is up.
    pub warnings: Vec<String>,
    /// The TOML file this configuration was read from, if any.
    pub source_file: Option<PathBuf>,
    /// The `.env` file it was read from, if any.
    pub env_file: Option<PathBuf>,
    /// The sidecar's settings as layered, before validation: what a reload compares.
    pub raw: reload::RawSettings,
}

impl Config {
    pub fn auth_mode(&self) -> AuthMode {
        self.openrag_env.auth_mode
    }
}

/// Every problem found, in the order found. Displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
/// The problems, and which files they were read from: a `.env` other than the one meant
/// (another working directory) is a common cause, and shows only there.
pub struct ConfigErrors(pub Vec<String>, pub String);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        writeln!(f, "  ({})", self.1)
    }
}

/// The sidecar's variables whose value in the process environment is wrapped in quotes: a
/// `.env` file's quotes are taken off as python-dotenv does, but `docker run --env-file`,
/// Compose's `environment:` lists and Kubernetes keep them, and the value is then read with
/// them (`OIDC_SCOPES must include 'openid', got '"openid email"'`). Said beside the problems.
fn quoted_in_environment(env: &[(String, String)]) -> Vec<String> {
    env.iter()
        .filter(|(name, _)| {
            name.starts_with("SSO_SIDECAR_") || suggest::OPENRAG_VARIABLES.contains(&name.as_str())
        })
        .filter(|(_, v)| {
            let v = v.trim();
            v.len() >= 2
                && ((v.starts_with('"') && v.ends_with('"'))
                    || (v.starts_with('\'') && v.ends_with('\'')))
        })
        .map(|(name, _)| {
            format!(
                "{name} is wrapped in quotes in the process environment, which keeps them (docker \
                 --env-file, Compose, Kubernetes; only a .env file read by the sidecar has them \
                 taken off): write the value without quotes"
            )
        })
        .collect()
}

/// Which files a configuration was read from, for [`ConfigErrors`].
fn files_read(config_file: Option<&Path>, env_path: &Path) -> String {
    let toml = config_file.map_or("no TOML file".to_owned(), |p| {
        format!("TOML file {}", p.display())
    });
    let env = if env_path.is_file() {
        format!(".env {}", env_path.display())
    } else {
        format!("no .env at {}", env_path.display())
    };
    format!("read: {toml}; {env}")
}

impl std::error::Error for ConfigErrors {}

/// What `load` needs from the outside world, passed in so tests never touch the real process.
pub struct Inputs {
    /// `--config FILE` from the command line.
    pub config_file: Option<PathBuf>,
    /// The process environment.
    pub env: Vec<(String, String)>,
    /// Names of variables of the process environment that are not UTF-8 (lossily shown):
    /// left out of `env`, and a problem only when the sidecar reads one.
    pub unreadable: Vec<String>,
    /// Directory in which a default `.env` is looked for.
    pub cwd: PathBuf,
}

impl Inputs {
    /// The real process: its environment and working directory.
    pub fn from_process(config_file: Option<PathBuf>) -> Self {
        // Not `std::env::vars()`: it panics on any variable that is not UTF-8, even one the
        // sidecar never reads (a binary Secret mounted with `envFrom`).
        let mut env = Vec::new();
        let mut unreadable = Vec::new();
        for (k, v) in std::env::vars_os() {
            match (k.into_string(), v.into_string()) {
                (Ok(k), Ok(v)) => env.push((k, v)),
                (k, _) => unreadable.push(k.unwrap_or_else(|k| k.to_string_lossy().into_owned())),
            }
        }
        Inputs {
            config_file,
            env,
            unreadable,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        }
    }

    fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }
}

/// Loads and validates the whole configuration, reporting every problem at once.
pub fn load(inputs: Inputs) -> Result<Config, ConfigErrors> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    for name in &inputs.unreadable {
        // `AUTH_TOKEN_FILE` names a secret's file as `AUTH_TOKEN` would hold it.
        let read_as = name.strip_suffix("_FILE").unwrap_or(name);
        if name.starts_with("SSO_SIDECAR_") || suggest::OPENRAG_VARIABLES.contains(&read_as) {
            problems.push(format!("{name} is not valid UTF-8"));
        }
    }

    let config_file = inputs
        .config_file
        .clone()
        .or_else(|| inputs.env_var("SSO_SIDECAR_CONFIG").map(PathBuf::from));
    if let Some(path) = &config_file {
        if !path.is_file() {
            problems.push(format!("config file {} does not exist", path.display()));
        }
    }

    let env_path = match inputs.env_var("SSO_SIDECAR_ENV_FILE") {
        Some(p) => PathBuf::from(p),
        None => inputs.cwd.join(".env"),
    };
    let explicit = inputs.env_var("SSO_SIDECAR_ENV_FILE").is_some();
    let dotenv = read_env_file(&env_path, explicit, &mut problems);
    // Read from the process environment only (they say where the files are): in `.env` they
    // would be ignored, and a `[[authz.rules]]` file never loaded means no rules.
    for (name, value) in &dotenv {
        // python-dotenv and Compose expand `${VAR}`; taken literally, `OIDC_CLIENT_SECRET=
        // ${KC_SECRET}` passes `check` and fails the first login with `invalid_client`.
        let ours =
            name.starts_with("SSO_SIDECAR_") || suggest::OPENRAG_VARIABLES.contains(&name.as_str());
        if ours && value.contains("${") && inputs.env_var(name).is_none() {
            warnings.push(format!(
                "{name} in {} contains '${{', which is taken literally here (no variable is \
                 expanded in .env): write the value itself, or set {name} in the environment",
                env_path.display()
            ));
        }
        if sources::BOOTSTRAP_VARS.contains(&name.as_str()) && inputs.env_var(name).is_none() {
            warnings.push(format!(
                "{name} is set in {} and ignored there: it is read from the process environment \
                 only (or use --config)",
                env_path.display()
            ));
        }
    }
    let env_file = env_path.is_file().then(|| env_path.clone());
    let mut vars = Vars::layer(dotenv, inputs.env.clone());
    vars.resolve_secret_files(&mut problems);

    let known = settings::top_level_keys();
    let (sidecar_vars, unknown) = vars.sidecar_vars(&known);
    let sidecar_names = suggest::sidecar_variables();
    for name in unknown {
        match suggest::single_underscore_twin(&name, &sidecar_names) {
            Some(meant) => problems.push(format!(
                "unknown variable {name}: a setting of a section takes two underscores after \
                 the section's name: {meant}"
            )),
            None => warnings.push(suggest::unknown_variable(&name, &sidecar_names)),
        }
    }
    warnings.extend(suggest::unknown_openrag_variables(vars.names()));
    for name in suggest::OPENRAG_BOOLEANS {
        warnings.extend(suggest::false_boolean(name, vars.get(name)));
    }
    warnings.extend(suggest::comma_in_scopes(vars.non_empty("OIDC_SCOPES")));

    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    let mut unknown_keys = Vec::new();
    if let Some(path) = config_file.as_ref().filter(|p| p.is_file()) {
        // Values of the wrong type are named and left out, so the rest is still checked.
        match Figment::from(Toml::file_exact(path)).extract::<serde_json::Value>() {
            Ok(table) => {
                let file = path.display().to_string();
                let kept = types::toml_values(&file, table, &mut problems);
                figment = figment.merge(Serialized::defaults(kept));
                unknown_keys = toml_keys::unknown_keys(path);
            }
            Err(e) => problems.extend(e.into_iter().map(|e| without_source(&e.to_string()))),
        }
    }
    let mut typed = Vec::new();
    for (key, raw) in sidecar_vars {
        let name = format!(
            "SSO_SIDECAR_{}",
            key.replace('.', "__").to_ascii_uppercase()
        );
        // A section's setting it does not have: named with a suggestion and left out, so that
        // it hides no other problem (figment would stop at it, naming neither the variable nor
        // what was meant).
        if let Some((section, k)) = key.split_once('.') {
            if !toml_keys::is_known(Some(section), k) {
                let meant = suggest::closest(&name, sidecar_names.iter().map(String::as_str));
                problems.push(match meant {
                    Some(m) => format!("unknown variable {name} (did you mean {m}?)"),
                    None => format!("unknown variable {name}"),
                });
                continue;
            }
        }
        // An allow-list variable set to nothing (a compose file's `${GROUPS}` with GROUPS
        // unset) would replace the file's list with none, which lets everyone in.
        if key.starts_with("authz.allowed_") && raw.split(',').all(|v| v.trim().is_empty()) {
            problems.push(format!(
                "{name} is set but empty, which would let everyone the IdP authenticates in: \
                 list who may log in, or unset the variable"
            ));
            continue;
        }
        match types::env_value(&name, &key, &raw) {
            Ok(v) => typed.push((key, v)),
            Err(problem) => problems.push(problem),
        }
    }
    figment = figment.merge(VarsProvider::new(typed));
    let reported_unknown = !unknown_keys.is_empty();
    problems.extend(unknown_keys);
    let settings: Option<Settings> = match figment.extract() {
        Ok(s) => Some(s),
        Err(errors) => {
            // Unknown keys are all listed above, each with a suggestion.
            problems.extend(
                errors
                    .into_iter()
                    .filter(|e| {
                        !(reported_unknown
                            && matches!(e.kind, figment::error::Kind::UnknownField(..)))
                    })
                    .map(|e| e.to_string()),
            );
            None
        }
    };

    let openrag = openrag_env::parse(&vars, &mut problems);
    let raw = settings.clone();
    let validated = settings.and_then(|s| s.validate(&mut problems));

    if let (Some(v), Some(o)) = (&validated, &openrag) {
        if o.auth_mode == AuthMode::Oidc
            && v.identity == IdentityMode::OpenRag
            && o.auth_token.is_none()
        {
            problems.push(
                "AUTH_TOKEN (or AUTH_TOKEN_FILE) is required with AUTH_MODE=oidc and SSO_SIDECAR_IDENTITY=openrag: \
                 the identity bridge uses the backend's admin API (or set SSO_SIDECAR_IDENTITY=headers)"
                    .to_string(),
            );
        }
    }
    match (validated, openrag, raw) {
        (Some(v), Some(openrag), Some(raw)) if problems.is_empty() => {
            if openrag.auth_mode == AuthMode::Oidc && v.auth.redis.is_none() {
                warnings.push(
                    "sessions are kept in memory: run a single replica, or set SSO_SIDECAR_REDIS_URL"
                        .to_string(),
                );
            }
            if openrag.auth_mode == AuthMode::Oidc && v.identity == IdentityMode::Headers {
                warnings.extend(suggest::bridge_only(&vars));
                warnings.extend(suggest::openrag_public_paths(&raw));
                warnings.extend(suggest::headers_to_another_host(&raw.upstream));
            }
            warnings.extend(suggest::unused_by_mode(
                &raw,
                v.identity == IdentityMode::OpenRag,
            ));
            if v.identity == IdentityMode::OpenRag {
                warnings.extend(suggest::group_sync_without_claim(&vars));
            }
            if openrag.auth_mode == AuthMode::Token {
                warnings.extend(suggest::token_mode_ignores(&v, &vars));
                if vars.non_empty("AUTH_MODE").is_none() && env_file.is_none() {
                    // OpenRag's `.env` not found (another working directory, a unit file
                    // without one): the pass-through is then a surprise, not a choice.
                    warnings.push(format!(
                        "AUTH_MODE is not set and no .env was found at {}: the sidecar passes every \
                         request through and authenticates nothing (set AUTH_MODE=oidc, or \
                         SSO_SIDECAR_ENV_FILE to the sidecar's .env, with OpenRag's SSO \
                         variables)",
                        env_path.display()
                    ));
                }
            }
            if let Some(o) = &openrag.oidc {
                warnings.extend(suggest::plain_http_idp(&o.issuer));
                warnings.extend(suggest::plain_http_redirect(o.redirect_uri.as_str()));
                warnings.extend(suggest::relogin_loop(o));
            }
            warnings.extend(suggest::trusting_everyone(&v.proxy.trusted_proxies));
            if openrag.auth_mode == AuthMode::Oidc {
                warnings.extend(suggest::preflights_refused(&v.auth));
            }
            warnings.extend(suggest::shadowed_rules(&v.auth.authz.rules));
            // Quotes kept by the environment fail nothing at start-up when the value is a
            // secret: the first login would, with the IdP's `invalid_client`.
            warnings.extend(quoted_in_environment(&inputs.env));
            let mut auth = v.auth;
            // As OpenRag does: its admin UI's origin is one a login may return to.
            if let Some(ui) = vars.non_empty("INDEXERUI_URL") {
                match origins::indexer_ui_origin(ui) {
                    Ok(o) if !auth.allowed_redirect_origins.contains(&o) => {
                        auth.allowed_redirect_origins.push(o)
                    }
                    Ok(_) => {}
                    Err(w) => warnings.push(w),
                }
            }
            // `[authz] groups_claim` defaults to OpenRag's `OIDC_CLAIM_GROUPS`, else `groups`.
            if auth.authz.groups_claim.is_empty() {
                auth.authz.groups_claim = default_groups_claim(&openrag);
            }
            Ok(Config {
                listen: v.listen,
                admin_listen: v.admin_listen,
                tls: v.tls,
                proxy: v.proxy,
                identity: v.identity,
                log_format: v.log_format,
                log_level: v.log_level,
                shutdown_timeout: v.shutdown_timeout,
                workers: v.workers,
                connections: v.connections,
                openrag_env: openrag,
                auth,
                warnings,
                source_file: config_file,
                env_file,
                raw: reload::RawSettings(raw),
            })
        }
        _ => {
            problems.extend(quoted_in_environment(&inputs.env));
            Err(ConfigErrors(
                problems,
                files_read(config_file.as_deref(), &env_path),
            ))
        }
    }
}

/// A TOML syntax error without the source line the parser quotes: that line may be a secret
/// (`redis_password = "…` left unclosed), and problems reach stderr and, on a reload, the log.
/// What is left names the line and column and what was expected.
fn without_source(message: &str) -> String {
    message
        .lines()
        .filter(|l| !l.contains('|'))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn read_env_file(path: &Path, explicit: bool, problems: &mut Vec<String>) -> Vec<(String, String)> {
    if !path.exists() {
        if explicit {
            problems.push(format!(
                "SSO_SIDECAR_ENV_FILE {} does not exist",
                path.display()
            ));
        }
        return Vec::new();
    }
    sources::read_dotenv(path).unwrap_or_else(|e| {
        problems.push(format!("cannot read .env file {e}"));
        Vec::new()
    })
}

#[cfg(test)]
pub(crate) mod tests;

/// `[authz] groups_claim` when the file names none: OpenRag's `OIDC_CLAIM_GROUPS`, else
/// `groups`.
fn default_groups_claim(openrag: &OpenRagVars) -> String {
    openrag
        .group_sync
        .as_ref()
        .map_or_else(|| "groups".to_owned(), |g| g.claim.clone())
}
