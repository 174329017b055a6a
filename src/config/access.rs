//! Access control settings: OpenRag's own variables for group → partition sync and rate limits
//! (`OIDC_CLAIM_GROUPS`, `OIDC_GROUP_*`, `RATE_LIMIT_*`, parsed with OpenRag's rules and error
//! messages), and the sidecar's `[authz]` section (who may log in, which groups reach which
//! paths; reloadable). Parsing and validation only: no I/O but the allowed-emails file.

use super::settings::StringList;
use super::sources::Vars;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::Duration;

/// OpenRag's default `OIDC_GROUP_PREFIX` and `OIDC_GROUP_PATTERN`.
pub const DEFAULT_GROUP_PREFIX: &str = "/openrag/";
pub const DEFAULT_GROUP_PATTERN: &str = "(.+)/(owner|editor|viewer)$";

/// Group → partition sync (`OIDC_CLAIM_GROUPS` set).
#[derive(Debug, Clone)]
pub struct GroupSync {
    pub claim: String,
    pub prefix: String,
    /// `OIDC_GROUP_PATTERN`, anchored at the start.
    pub pattern: regex::Regex,
    pub prune: bool,
}

/// One rate-limit budget: `limit` events per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: u64,
    pub window: Duration,
}

/// `RATE_LIMIT_*`: `None` when `RATE_LIMIT_ENABLED` is not `true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Every `/auth/*` request.
    pub auth: Budget,
    /// The sidecar's own 401 and 403 answers.
    pub failure: Budget,
}

/// The `limits` syntax OpenRag uses: `N/second|minute|hour|day` (also `N per minute`).
pub fn parse_budget(name: &str, raw: &str) -> Result<Budget, String> {
    let bad = || {
        format!(
            "{name} must look like '60/minute' (N per second, minute, hour or day), got '{raw}'"
        )
    };
    let lower = raw.trim().to_ascii_lowercase();
    let (n, unit) = lower
        .split_once('/')
        .or_else(|| lower.split_once(" per "))
        .ok_or_else(bad)?;
    let limit: u64 = n.trim().parse().map_err(|_| bad())?;
    let secs = match unit.trim().trim_end_matches('s') {
        "second" => 1,
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        _ => return Err(bad()),
    };
    if limit == 0 {
        return Err(bad());
    }
    Ok(Budget {
        limit,
        window: Duration::from_secs(secs),
    })
}

/// `RATE_LIMIT_ENABLED` (default `true`; only the literal `true` is true, as OpenRag), then
/// `RATE_LIMIT_AUTH` (default 60/minute) and `RATE_LIMIT_AUTH_FAILURE` (default: the `/auth/*`
/// budget when that is set, else 20/minute — OpenRag's fallback).
pub fn parse_rate_limits(vars: &Vars, problems: &mut Vec<String>) -> Option<RateLimits> {
    if let Some(v) = vars.get("RATE_LIMIT_ENABLED") {
        if !super::openrag_env::parse_bool(Some(v)) {
            return None;
        }
    }
    let mut read =
        |name: &str, dflt: &str| match parse_budget(name, vars.non_empty(name).unwrap_or(dflt)) {
            Ok(b) => Some(b),
            Err(e) => {
                problems.push(e);
                None
            }
        };
    let auth = read("RATE_LIMIT_AUTH", "60/minute");
    let failure_default = if vars.non_empty("RATE_LIMIT_AUTH").is_some() {
        vars.non_empty("RATE_LIMIT_AUTH")
            .unwrap_or("20/minute")
            .to_owned()
    } else {
        "20/minute".to_owned()
    };
    let failure = read("RATE_LIMIT_AUTH_FAILURE", &failure_default);
    Some(RateLimits {
        auth: auth?,
        failure: failure?,
    })
}

/// `OIDC_CLAIM_GROUPS` and friends; the pattern is checked in both modes, as OpenRag does.
pub fn parse_group_sync(vars: &Vars, problems: &mut Vec<String>) -> Option<GroupSync> {
    let raw = vars
        .non_empty("OIDC_GROUP_PATTERN")
        .unwrap_or(DEFAULT_GROUP_PATTERN);
    let pattern = match regex::Regex::new(raw) {
        Err(e) => {
            problems.push(format!("Invalid OIDC_GROUP_PATTERN '{raw}': {e}"));
            return None;
        }
        // `captures_len` counts the implicit group 0.
        Ok(r) if r.captures_len() - 1 != 2 => {
            problems.push(format!(
                "OIDC_GROUP_PATTERN '{raw}' must expose exactly two capture groups (group 1 = \
                 partition, group 2 = role); got {}. Use non-capturing (?:...) groups for any \
                 internal grouping.",
                r.captures_len() - 1
            ));
            return None;
        }
        // Anchored at the start, as Python's `re.match` is (the `$` is the pattern's own).
        Ok(_) => match regex::Regex::new(&format!("^(?:{raw})")) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("Invalid OIDC_GROUP_PATTERN '{raw}': {e}"));
                return None;
            }
        },
    };
    let claim = vars.non_empty("OIDC_CLAIM_GROUPS")?.trim().to_owned();
    Some(GroupSync {
        claim,
        prefix: vars
            .get("OIDC_GROUP_PREFIX")
            .unwrap_or(DEFAULT_GROUP_PREFIX)
            .to_owned(),
        pattern,
        prune: super::openrag_env::parse_bool(vars.get("OIDC_GROUP_SYNC_PRUNE")),
    })
}

/// `[authz]` as written (TOML, or `SSO_SIDECAR_AUTHZ__…`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthzSection {
    /// The user must be in at least one of these groups.
    pub allowed_groups: StringList,
    /// The user's (verified) email must be in one of these domains.
    pub allowed_email_domains: StringList,
    /// … or be one of these addresses.
    pub allowed_emails: StringList,
    /// A file with one allowed email per line (`#` comments), added to `allowed_emails`.
    pub allowed_emails_file: Option<String>,
    /// The claim groups are read from (default: `OIDC_CLAIM_GROUPS`, else `groups`).
    pub groups_claim: Option<String>,
    /// Path rules, first match decides.
    pub rules: Vec<RuleSection>,
    /// What a bearer request without a session gets on a path a rule covers: `refuse` (403:
    /// its groups are unknown, and any user can mint a backend token) or `pass` (the backend
    /// judges it). Default `refuse`.
    pub bearer_on_ruled_paths: Option<String>,
}

/// `authz.bearer_on_ruled_paths`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BearerOnRuled {
    #[default]
    Refuse,
    Pass,
}

/// One `[[authz.rules]]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuleSection {
    /// An exact path, or a prefix ending in `*` (as the path lists).
    pub path: String,
    /// Methods the rule applies to (all when empty).
    pub methods: StringList,
    /// Groups allowed through (any of); empty = nobody.
    pub groups: StringList,
}

/// `[authz]`, validated.
#[derive(Debug, Clone, Default)]
pub struct Authz {
    pub allowed_groups: Vec<String>,
    /// Lower-cased, without a leading `@`.
    pub allowed_email_domains: Vec<String>,
    /// Lower-cased.
    pub allowed_emails: HashSet<String>,
    pub groups_claim: String,
    pub rules: Vec<PathRule>,
    pub bearer_on_ruled_paths: BearerOnRuled,
}

#[derive(Debug, Clone)]
pub struct PathRule {
    pub path: String,
    pub methods: Vec<http::Method>,
    pub groups: Vec<String>,
}

/// A path as a backend routes it, and as `[[authz.rules]]` compare it: percent-decoded once
/// (Starlette matches its routes on the decoded path; a byte sequence that is not UTF-8 becomes
/// U+FFFD, as Python's `unquote` makes it) and runs of slashes merged (as the sidecar merges a
/// request's). A rule written `/partition/équipe/*` or `/partition/%C3%A9quipe/*` then holds
/// for a request spelled either way, and `/partition/R%26D/*` for `/partition/R&D/x`.
pub fn routed_form(path: &str) -> std::borrow::Cow<'_, str> {
    let decoded = if path.contains('%') {
        std::borrow::Cow::Owned(
            percent_encoding::percent_decode_str(path)
                .decode_utf8_lossy()
                .into_owned(),
        )
    } else {
        std::borrow::Cow::Borrowed(path)
    };
    if !decoded.contains("//") {
        return decoded;
    }
    let mut merged = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    std::borrow::Cow::Owned(merged)
}

impl Authz {
    /// Whether an email rule is configured (groups and emails are checked independently).
    pub fn restricts_email(&self) -> bool {
        !self.allowed_email_domains.is_empty() || !self.allowed_emails.is_empty()
    }
}

impl AuthzSection {
    /// Validates the section; `groups_claim` defaults to `OIDC_CLAIM_GROUPS`, else `groups`.
    pub fn validate(&self, default_claim: Option<&str>, problems: &mut Vec<String>) -> Authz {
        let mut emails: HashSet<String> = self
            .allowed_emails
            .0
            .iter()
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        if let Some(file) = &self.allowed_emails_file {
            match std::fs::read_to_string(file) {
                Ok(text) => {
                    let listed: Vec<String> = text
                        .lines()
                        .map(|l| {
                            l.split('#')
                                .next()
                                .unwrap_or("")
                                .trim()
                                .to_ascii_lowercase()
                        })
                        .filter(|l| !l.is_empty())
                        .collect();
                    // An empty list restricts nothing: a file caught empty (half written when
                    // SIGHUP re-read it) must not let everyone in.
                    if listed.is_empty() {
                        problems.push(format!(
                            "authz.allowed_emails_file {file} lists no address, which would \
                             let everyone the IdP authenticates in"
                        ));
                    }
                    emails.extend(listed);
                }
                Err(e) => problems.push(format!("authz.allowed_emails_file {file}: {e}")),
            }
        }
        let mut rules = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("authz.rules[{i}]");
            if !r.path.starts_with('/') {
                problems.push(format!("{at}.path must start with '/', got '{}'", r.path));
            }
            if r.path.trim_end_matches('*').contains('*') {
                problems.push(format!(
                    "{at}.path: '*' is allowed only at the end (a prefix), got '{}'",
                    r.path
                ));
            }
            let mut methods = Vec::new();
            for m in &r.methods.0 {
                match http::Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()) {
                    Ok(m) => methods.push(m),
                    Err(_) => problems.push(format!("{at}.methods: '{m}' is not an HTTP method")),
                }
            }
            if std::str::from_utf8(
                &percent_encoding::percent_decode_str(&r.path).collect::<Vec<u8>>(),
            )
            .is_err()
            {
                problems.push(format!(
                    "{at}.path: its percent-escapes do not decode to UTF-8, got '{}'",
                    r.path
                ));
            }
            rules.push(PathRule {
                path: routed_form(&r.path).into_owned(),
                methods,
                groups: r.groups.0.iter().map(|g| g.trim().to_owned()).collect(),
            });
        }
        Authz {
            allowed_groups: self
                .allowed_groups
                .0
                .iter()
                .map(|g| g.trim().to_owned())
                .collect(),
            allowed_email_domains: self
                .allowed_email_domains
                .0
                .iter()
                .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .collect(),
            allowed_emails: emails,
            groups_claim: self
                .groups_claim
                .clone()
                .filter(|c| !c.trim().is_empty())
                .or(default_claim.map(str::to_owned))
                .unwrap_or_default(),
            rules,
            bearer_on_ruled_paths: self
                .bearer_on_ruled_paths
                .as_deref()
                .and_then(|v| super::types::one_of("authz.bearer_on_ruled_paths", v, problems))
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_use_the_limits_syntax() {
        assert_eq!(
            parse_budget("X", "60/minute"),
            Ok(Budget {
                limit: 60,
                window: Duration::from_secs(60)
            })
        );
        assert_eq!(
            parse_budget("X", "5 per second").map(|b| b.window),
            Ok(Duration::from_secs(1))
        );
        assert_eq!(parse_budget("X", "100/hours").map(|b| b.limit), Ok(100));
        for bad in ["", "60", "x/minute", "60/fortnight", "0/minute"] {
            assert!(parse_budget("RATE_LIMIT_AUTH", bad)
                .unwrap_err()
                .starts_with("RATE_LIMIT_AUTH must look like"));
        }
    }

    #[test]
    fn paths_and_methods_are_checked() {
        let s = AuthzSection {
            rules: vec![
                RuleSection {
                    path: "admin/*".into(),
                    methods: StringList(vec!["G ET".into()]),
                    groups: StringList(vec![]),
                },
                RuleSection {
                    path: "/a*/b".into(),
                    ..Default::default()
                },
            ],
            bearer_on_ruled_paths: Some("maybe".into()),
            ..Default::default()
        };
        let mut problems = Vec::new();
        s.validate(None, &mut problems);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[3].contains("'refuse' or 'pass', got 'maybe'"));
        let a = AuthzSection::default().validate(None, &mut problems);
        assert_eq!(
            a.bearer_on_ruled_paths,
            BearerOnRuled::Refuse,
            "the default"
        );
    }
}
