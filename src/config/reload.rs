//! The one reload model: what a SIGHUP may change while running ([`Reloadable`], named by
//! [`RELOADABLE_KEYS`]) and what needs a restart — everything else, derived by comparing the
//! raw settings key by key, so a key added later is reported without anyone listing it here.

use super::{Config, IdentityField, PathSettings, Settings};
use std::time::Duration;

/// The keys of [`Settings`] a reload applies; every other key needs a restart.
pub const RELOADABLE_KEYS: [&str; 7] = [
    "authz",
    "log_level",
    "upstream_timeout_secs",
    "paths",
    "allowed_redirect_origins",
    "trusted_origins",
    "headers",
];

/// The raw settings a configuration was built from. Never printed: they hold secrets in clear.
#[derive(Clone)]
pub struct RawSettings(pub Settings);

impl std::fmt::Debug for RawSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawSettings([redacted])")
    }
}

/// The settings a reload applies, validated.
#[derive(Debug, Clone)]
pub struct Reloadable {
    pub log_level: String,
    pub upstream_timeout: Duration,
    pub paths: PathSettings,
    pub allowed_redirect_origins: Vec<String>,
    pub trusted_origins: super::origins::TrustedOrigins,
    pub headers: Vec<(IdentityField, http::HeaderName)>,
    pub authz: super::access::Authz,
}

impl Reloadable {
    pub fn of(c: &Config) -> Self {
        Reloadable {
            log_level: c.log_level.clone(),
            upstream_timeout: c.proxy.upstream_timeout,
            paths: c.auth.paths.clone(),
            allowed_redirect_origins: c.auth.allowed_redirect_origins.clone(),
            trusted_origins: c.auth.trusted_origins.clone(),
            headers: c.auth.headers.clone(),
            authz: c.auth.authz.clone(),
        }
    }

    /// `next`'s reloadable settings as the running configuration `current` can take them: the
    /// defaults that follow settings needing a restart (the identity mode for `[paths]`,
    /// `OIDC_CLAIM_GROUPS` for `[authz] groups_claim`) follow their running values, or a
    /// reload that changed the identity mode would apply another mode's paths to the
    /// running one (bearer pass-through turned on in front of a header-trusting backend).
    pub fn under(current: &Config, next: &Config) -> Self {
        let mut r = Reloadable::of(next);
        r.paths = next.raw.0.paths.for_identity(&current.raw.0.identity);
        let claim_given = next.raw.0.authz.groups_claim.as_deref().map(str::trim);
        if claim_given.is_none_or(str::is_empty) {
            // The default as the running OIDC_CLAIM_GROUPS makes it (not the running value:
            // that may be a claim the file named and no longer does).
            r.authz.groups_claim = super::default_groups_claim(&current.openrag_env);
        }
        r
    }
}

impl Config {
    /// Takes `next`'s reloadable settings, keeping everything else (what a reload does).
    pub fn take_reloadable(&mut self, next: &Config) {
        let r = Reloadable::under(self, next);
        self.log_level = r.log_level;
        self.proxy.upstream_timeout = r.upstream_timeout;
        self.auth.paths = r.paths;
        self.auth.allowed_redirect_origins = r.allowed_redirect_origins;
        self.auth.trusted_origins = r.trusted_origins;
        self.auth.headers = r.headers;
        self.auth.authz = r.authz;
        self.env_file = next.env_file.clone();
        if let (Ok(serde_json::Value::Object(mut mine)), Ok(serde_json::Value::Object(theirs))) = (
            serde_json::to_value(&self.raw.0),
            serde_json::to_value(&next.raw.0),
        ) {
            for key in RELOADABLE_KEYS {
                if let Some(v) = theirs.get(key) {
                    mine.insert(key.to_owned(), v.clone());
                }
            }
            if let Ok(raw) = serde_json::from_value(serde_json::Value::Object(mine)) {
                self.raw = RawSettings(raw);
            }
        }
    }
}

/// Why a reload must apply nothing of `next`:
/// - the `.env` file the running configuration was read from is gone (deleted, or caught
///   mid-rename by the SIGHUP). Its absence is no error at start, so `next` loads without its
///   values, and applying `next`'s reloadable settings would drop whatever the file set among
///   them, an allow-list included (everyone let in);
/// - `next` lifts an access restriction whole: the allowed groups, the allowed emails and
///   domains, or the path rules, set now and absent in `next`. A file emptied or caught half
///   written looks exactly like that, and the cost of getting it wrong is everyone the IdP
///   authenticates let in; so removing one takes a restart, while changing one stays live.
pub fn refusal(current: &Config, next: &Config) -> Option<String> {
    if let (Some(path), None) = (&current.env_file, &next.env_file) {
        return Some(format!(
            "the .env file {} that the running configuration was read from is gone: restore it, \
             or restart to run without it",
            path.display()
        ));
    }
    let (was, now) = (&current.auth.authz, &next.auth.authz);
    let lifted: Vec<&str> = [
        (
            "authz.allowed_groups",
            !was.allowed_groups.is_empty() && now.allowed_groups.is_empty(),
        ),
        (
            "authz.allowed_emails and allowed_email_domains",
            was.restricts_email() && !now.restricts_email(),
        ),
        ("authz.rules", !was.rules.is_empty() && now.rules.is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, gone)| gone.then_some(name))
    .collect();
    (!lifted.is_empty()).then(|| {
        format!(
            "the new configuration removes {} entirely, which would let in everyone the IdP \
             authenticates (a settings file emptied or caught half written looks the same): \
             a reload may change these but not remove them; restart to remove them",
            lifted.join(", ")
        )
    })
}

/// The settings that differ between `a` and `b` but cannot change while running: a reload
/// keeps their running values and names them in the log (names only, never values).
pub fn restart_required(a: &Config, b: &Config) -> Vec<String> {
    let mut keys = restart_keys(&a.raw.0, &b.raw.0);
    keys.extend(openrag_changes(&a.openrag_env, &b.openrag_env));
    keys
}

/// OpenRag's variables that differ, secrets included (compared by value, named only): their
/// debug form redacts secrets, so a rotated client secret or admin token compared equal and a
/// reload said nothing of it.
fn openrag_changes(a: &super::OpenRagVars, b: &super::OpenRagVars) -> Vec<String> {
    let debug =
        |x: &dyn std::fmt::Debug, y: &dyn std::fmt::Debug| format!("{x:?}") != format!("{y:?}");
    let secret = |x: Option<&crate::secret::Secret<String>>,
                  y: Option<&crate::secret::Secret<String>>| {
        x.map(|s| s.expose()) != y.map(|s| s.expose())
    };
    let mut out = Vec::new();
    let mut check = |name: &str, differs: bool| {
        if differs {
            out.push(name.to_owned());
        }
    };
    check("AUTH_MODE", a.auth_mode != b.auth_mode);
    check(
        "AUTH_TOKEN",
        secret(a.auth_token.as_ref(), b.auth_token.as_ref()),
    );
    match (&a.oidc, &b.oidc) {
        (Some(x), Some(y)) => {
            check("OIDC_ENDPOINT", x.issuer != y.issuer);
            check("OIDC_CLIENT_ID", x.client_id != y.client_id);
            check(
                "OIDC_CLIENT_SECRET",
                secret(Some(&x.client_secret), Some(&y.client_secret)),
            );
            // As written: that is what the IdP is sent, and compares byte for byte.
            check(
                "OIDC_REDIRECT_URI",
                x.redirect_uri_as_written != y.redirect_uri_as_written,
            );
            check("OIDC_TOKEN_ENCRYPTION_KEY", !x.keys.same_keys(&y.keys));
            check("OIDC_SCOPES", x.scopes != y.scopes);
            check("OIDC_CLAIM_SOURCE", debug(&x.claim_source, &y.claim_source));
            check(
                "OIDC_POST_LOGOUT_REDIRECT_URI",
                x.post_logout_redirect_uri_as_written != y.post_logout_redirect_uri_as_written,
            );
        }
        (x, y) => check("OIDC_* variables", x.is_some() != y.is_some()),
    }
    check(
        "OIDC_CLAIM_MAPPING",
        debug(&a.claim_mapping, &b.claim_mapping),
    );
    check(
        "OIDC_AUTO_PROVISION_LOGIN",
        a.auto_provision != b.auto_provision,
    );
    check(
        "OIDC_CLAIM_GROUPS and OIDC_GROUP_*",
        debug(&a.group_sync, &b.group_sync),
    );
    check("RATE_LIMIT_*", debug(&a.rate_limits, &b.rate_limits));
    out
}

/// The keys (`name`, or `section.name` inside a table) whose values differ, reloadable ones
/// left out. Secrets are compared too (a changed Redis password needs a restart).
pub fn restart_keys(a: &Settings, b: &Settings) -> Vec<String> {
    let (Ok(serde_json::Value::Object(x)), Ok(serde_json::Value::Object(y))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return vec!["(settings could not be compared)".to_owned()];
    };
    let mut out = Vec::new();
    for (key, left) in &x {
        let right = y.get(key).unwrap_or(&serde_json::Value::Null);
        if left == right || RELOADABLE_KEYS.contains(&key.as_str()) {
            continue;
        }
        match (left, right) {
            (serde_json::Value::Object(l), serde_json::Value::Object(r)) => {
                for (inner, v) in l {
                    if r.get(inner) != Some(v) {
                        out.push(format!("{key}.{inner}"));
                    }
                }
            }
            _ => out.push(key.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A different value of the same shape.
    fn changed(v: &Value) -> Value {
        match v {
            Value::Bool(b) => Value::Bool(!b),
            Value::Number(n) => Value::from(n.as_u64().unwrap_or(0) + 1),
            Value::String(s) => Value::String(format!("{s}x")),
            Value::Array(a) => {
                let mut a = a.clone();
                a.push(Value::String("/changed".into()));
                Value::Array(a)
            }
            Value::Null => Value::String("changed".into()),
            Value::Object(_) => unreachable!("tables are walked key by key"),
        }
    }

    /// An implicit `./.env` gone at a SIGHUP would otherwise take its settings with it (here an
    /// allow-list, whose absence lets everyone in): the reload is refused.
    #[test]
    fn a_reload_without_the_env_file_read_at_start_is_refused() {
        use crate::config::tests::inputs;
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join(".env");
        std::fs::write(&env, "SSO_SIDECAR_AUTHZ__ALLOWED_GROUPS=admins\n").unwrap();
        let mut current = crate::config::load(inputs(dir.path(), None, &[])).unwrap();
        assert_eq!(current.auth.authz.allowed_groups, ["admins"]);
        let same = crate::config::load(inputs(dir.path(), None, &[])).unwrap();
        assert_eq!(refusal(&current, &same), None);
        current.take_reloadable(&same);
        std::fs::remove_file(&env).unwrap();
        let next = crate::config::load(inputs(dir.path(), None, &[])).unwrap();
        assert!(
            next.auth.authz.allowed_groups.is_empty(),
            "what would apply"
        );
        let why = refusal(&current, &next).expect("refused");
        assert!(why.contains(".env") && why.contains("gone"), "{why}");
        // Once running without it (a restart), a reload without it is no change.
        assert_eq!(refusal(&next, &next), None);
    }

    /// A `.env` emptied (truncated, then not yet written) at a SIGHUP: its allow-lists and
    /// rules would be dropped, so the reload is refused; changing them is still a reload.
    #[test]
    fn a_reload_that_lifts_an_access_restriction_whole_is_refused() {
        use crate::config::tests::inputs;
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join(".env");
        // `.env` text, and a TOML file's `[authz]` (where rules are written).
        let load = |text: &str, toml: &str| {
            std::fs::write(&env, text).unwrap();
            crate::config::load(inputs(dir.path(), Some(toml), &[])).unwrap()
        };
        let rule =
            |group: &str| format!("[[authz.rules]]\npath = \"/admin/*\"\ngroups = [\"{group}\"]\n");
        let current = load(
            "SSO_SIDECAR_AUTHZ__ALLOWED_GROUPS=admins\n\
             SSO_SIDECAR_AUTHZ__ALLOWED_EMAIL_DOMAINS=example.test\n",
            &rule("admins"),
        );
        assert_eq!(current.auth.authz.rules.len(), 1, "the rule is read");
        let emptied = load("", "");
        let why = refusal(&current, &emptied).expect("refused");
        assert!(
            why.contains(
                "authz.allowed_groups, authz.allowed_emails and allowed_email_domains, authz.rules"
            ),
            "{why}"
        );
        // Each alone.
        for (text, toml, named) in [
            (
                "SSO_SIDECAR_AUTHZ__ALLOWED_GROUPS=admins\n",
                "",
                "allowed_groups",
            ),
            (
                "SSO_SIDECAR_AUTHZ__ALLOWED_EMAILS=a@example.test\n",
                "",
                "allowed_emails",
            ),
            ("", rule("admins").as_str(), "authz.rules"),
        ] {
            let alone = load(text, toml);
            let why = refusal(&alone, &emptied).expect(named);
            assert!(why.contains(named) && why.contains("restart"), "{why}");
        }
        // Changed, not removed: applied.
        let changed = load(
            "SSO_SIDECAR_AUTHZ__ALLOWED_GROUPS=staff\n\
             SSO_SIDECAR_AUTHZ__ALLOWED_EMAILS=a@example.test\n",
            &rule("staff"),
        );
        assert_eq!(refusal(&current, &changed), None);
        // Added to an open configuration: applied.
        assert_eq!(refusal(&emptied, &current), None);
    }

    #[test]
    fn every_change_but_the_reloadable_ones_is_reported() {
        let base = serde_json::to_value(Settings::default()).unwrap();
        let Value::Object(map) = &base else { panic!() };
        let mut checked = 0;
        for (key, v) in map {
            let paths: Vec<(String, Vec<&str>)> = match v {
                Value::Object(inner) => inner
                    .keys()
                    .map(|k| (format!("{key}.{k}"), vec![key.as_str(), k.as_str()]))
                    .collect(),
                _ => vec![(key.clone(), vec![key.as_str()])],
            };
            for (name, path) in paths {
                let mut next = base.clone();
                let mut slot = &mut next;
                for p in &path {
                    slot = slot.get_mut(*p).unwrap();
                }
                *slot = match (name.as_str(), &*slot) {
                    // An array of tables: one more table of its shape.
                    ("authz.rules", _) => serde_json::json!([{"path": "/changed"}]),
                    (_, v) => changed(v),
                };
                let next: Settings =
                    serde_json::from_value(next).unwrap_or_else(|e| panic!("{name}: {e}"));
                let reported = restart_keys(&Settings::default(), &next);
                if RELOADABLE_KEYS.contains(&key.as_str()) {
                    assert!(reported.is_empty(), "{name} is reloadable: {reported:?}");
                } else {
                    assert_eq!(reported, vec![name.clone()], "{name}");
                }
                checked += 1;
            }
        }
        assert!(checked > 40, "{checked} keys checked");
    }
}
