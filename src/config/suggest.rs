//! Did-you-mean for names the configuration does not know: unknown `SSO_SIDECAR_*` and `OIDC_*`
//! variables (warned about, not fatal: Kubernetes injects variables of its own), unknown TOML
//! keys (`toml_keys`), and OpenRag booleans set to something OpenRag reads as false.

use super::Settings;
use serde_json::Value;

/// The closest of `candidates` to `name`: within a small edit distance, or one that extends
/// it (`OIDC_AUTO_PROVISION` → `OIDC_AUTO_PROVISION_LOGIN`).
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| {
            let d = if c.starts_with(name) && name.len() >= 6 {
                1
            } else {
                distance(name, c)
            };
            (d, c)
        })
        .filter(|(d, c)| *d <= 2.max(c.len() / 6))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance.
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// OpenRag's variables the sidecar reads (and their `_FILE` twins where they are secrets).
pub const OPENRAG_VARIABLES: [&str; 20] = [
    "AUTH_MODE",
    "AUTH_TOKEN",
    "OIDC_ENDPOINT",
    "OIDC_CLIENT_ID",
    "OIDC_CLIENT_SECRET",
    "OIDC_REDIRECT_URI",
    "OIDC_TOKEN_ENCRYPTION_KEY",
    "OIDC_SCOPES",
    "OIDC_CLAIM_SOURCE",
    "OIDC_CLAIM_MAPPING",
    "OIDC_AUTO_PROVISION_LOGIN",
    "OIDC_POST_LOGOUT_REDIRECT_URI",
    "OIDC_CLAIM_GROUPS",
    "OIDC_GROUP_PREFIX",
    "OIDC_GROUP_PATTERN",
    "OIDC_GROUP_SYNC_PRUNE",
    "RATE_LIMIT_ENABLED",
    "RATE_LIMIT_AUTH",
    "RATE_LIMIT_AUTH_FAILURE",
    "INDEXERUI_URL",
];

/// Every `SSO_SIDECAR_*` variable a setting answers to.
pub fn sidecar_variables() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(Value::Object(map)) = serde_json::to_value(Settings::default()) {
        for (k, v) in map {
            let top = k.to_ascii_uppercase();
            match v {
                Value::Object(inner) => {
                    for i in inner.keys() {
                        out.push(format!("SSO_SIDECAR_{top}__{}", i.to_ascii_uppercase()));
                    }
                }
                _ => out.push(format!("SSO_SIDECAR_{top}")),
            }
        }
    }
    for extra in [
        "SSO_SIDECAR_PATHS__BROWSER_LOGIN",
        "SSO_SIDECAR_PATHS__BEARER_PASSTHROUGH",
        "SSO_SIDECAR_TLS__CERT_FILE",
        "SSO_SIDECAR_TLS__KEY_FILE",
        "SSO_SIDECAR_OPENRAG__TOKEN_FILE",
        "SSO_SIDECAR_AUTHZ__ALLOWED_EMAILS_FILE",
        "SSO_SIDECAR_AUTHZ__GROUPS_CLAIM",
        "SSO_SIDECAR_CONFIG",
        "SSO_SIDECAR_ENV_FILE",
    ] {
        out.push(extra.to_owned());
    }
    out
}

/// A setting of a section written with one underscore where two belong
/// (`SSO_SIDECAR_AUTHZ_ALLOWED_GROUPS`): the setting it means, when `name` is exactly that.
/// Refused rather than warned about, as the setting would otherwise be left at its default
/// (an allow-list, TLS: off); no variable Kubernetes makes up has that shape.
pub fn single_underscore_twin<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .find(|k| k.contains("__") && k.replacen("__", "_", 1) == name)
        .map(String::as_str)
}

/// The warning for an unknown variable, with a suggestion when one is close.
pub fn unknown_variable(name: &str, known: &[String]) -> String {
    match closest(name, known.iter().map(String::as_str)) {
        Some(s) => format!("ignoring unknown variable {name} (did you mean {s}?)"),
        None => format!("ignoring unknown variable {name}"),
    }
}

/// Unknown `OIDC_*` and `RATE_LIMIT_*` variables among `names`, each with a suggestion when one
/// is close.
pub fn unknown_openrag_variables<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let secrets = super::sources::SECRET_VARS;
    let known: Vec<String> = OPENRAG_VARIABLES
        .iter()
        .map(|v| v.to_string())
        .chain(secrets.iter().map(|v| format!("{v}_FILE")))
        .collect();
    names
        .filter(|n| {
            (n.starts_with("OIDC_") || n.starts_with("RATE_LIMIT_"))
                && !known.iter().any(|k| k == n)
        })
        .map(|n| match n.strip_suffix("_FILE") {
            // A file twin of a variable that has none: said plainly, not taken for a typo.
            Some(base) if OPENRAG_VARIABLES.contains(&base) => format!(
                "ignoring {n}: only secrets are read from a file ({}); set {base} itself",
                secrets
                    .iter()
                    .filter(|s| s.starts_with("OIDC_"))
                    .map(|s| format!("{s}_FILE"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => unknown_variable(n, &known),
        })
        .collect()
}

/// OpenRag's variables that only the OpenRag bridge acts on (user provisioning, claim mapping,
/// group sync): with `identity = "headers"` each one set is named as having no effect.
pub fn bridge_only(vars: &super::sources::Vars) -> Vec<String> {
    [
        "OIDC_AUTO_PROVISION_LOGIN",
        "OIDC_CLAIM_MAPPING",
        "OIDC_GROUP_PREFIX",
        "OIDC_GROUP_PATTERN",
        "OIDC_GROUP_SYNC_PRUNE",
    ]
    .into_iter()
    // OpenRag's stock `.env` spells the booleans out as `false`: that sets nothing.
    .filter(|n| {
        vars.non_empty(n)
            .is_some_and(|v| !v.eq_ignore_ascii_case("false"))
    })
    .map(|n| {
        format!(
            "{n} has no effect with SSO_SIDECAR_IDENTITY=headers: only the OpenRag bridge \
             (identity openrag) provisions users and syncs claims and groups"
        )
    })
    .collect()
}

/// Settings that the configuration as a whole leaves unread, or reads only in part:
/// `[openrag]` with identity headers, `[headers]` with the bridge (its names are stripped from
/// requests, never sent), and a token file without the `file` policy (the only one that reads
/// it). Each is named: the operator set it for a reason.
pub fn unused_by_mode(raw: &Settings, bridge: bool) -> Vec<String> {
    let mut out = Vec::new();
    if !bridge && differs(&raw.openrag, &super::bridge::BridgeSection::default()) {
        out.push(
            "[openrag] settings have no effect with identity = \"headers\": only the OpenRag \
             bridge (identity = \"openrag\") reads them"
                .to_string(),
        );
    }
    if bridge && differs(&raw.headers, &super::auth::HeaderSettings::default()) {
        out.push(
            "[headers] names are only stripped from requests with identity = \"openrag\", \
             never sent: the bridge sends the backend's own token"
                .to_string(),
        );
    }
    let file_policy = raw.openrag.token_policy.trim().eq_ignore_ascii_case("file");
    if bridge && raw.openrag.token_file.is_some() && !file_policy {
        out.push(format!(
            "openrag.token_file is set but openrag.token_policy is \"{}\": the file is read \
             only with token_policy = \"file\"",
            raw.openrag.token_policy
        ));
    }
    out
}

/// `paths.public` left at its default (OpenRag's own unauthenticated paths: `/metrics`,
/// `/version`, `/assets/*`, `/chainlit*`…) with identity headers, which is for other backends:
/// there those paths answer without a session, whatever they serve.
pub fn openrag_public_paths(raw: &Settings) -> Option<String> {
    let default = super::auth::PathSettings::default().public;
    (raw.paths.public == default).then(|| {
        format!(
            "paths.public is OpenRag's list by default ({}), and with identity = \"headers\" \
             those paths of your backend answer without a session: set paths.public \
             (SSO_SIDECAR_PATHS__PUBLIC) to your backend's own public paths, or [] for none",
            default.0.join(", ")
        )
    })
}

/// Identity headers sent to a backend on another host: whoever else reaches that backend can
/// send `X-Forwarded-User` too, and the sidecar has no way to prove its requests are its own.
pub fn headers_to_another_host(upstream: &str) -> Option<String> {
    let u = url::Url::parse(upstream).ok()?;
    (u.host().is_some() && !on_this_host(&u)).then(|| {
        format!(
            "identity = \"headers\" and the upstream {upstream} is not on this host: make it \
             accept requests from the sidecar only (a NetworkPolicy, a firewall, a listener on \
             a private interface), or any client that reaches it can name any user in the \
             identity headers"
        )
    })
}

/// `OIDC_POST_LOGOUT_REDIRECT_URI` on the sidecar's own origin: after logout the user lands
/// on a protected page and is signed in again at once (a re-login loop).
pub fn relogin_loop(o: &super::openrag_env::OidcSettings) -> Option<String> {
    let after = o.post_logout_redirect_uri.as_ref()?;
    (after.origin() == o.redirect_uri.origin()).then(|| {
        format!(
            "OIDC_POST_LOGOUT_REDIRECT_URI ({after}) points back at the sidecar: after logout \
             the user lands on a protected page and is logged in again at once (re-login \
             loop); point it at a page outside the protected application"
        )
    })
}

/// Group sync's refinements set without `OIDC_CLAIM_GROUPS`, which turns group sync on: they
/// do nothing.
pub fn group_sync_without_claim(vars: &super::sources::Vars) -> Vec<String> {
    if vars.non_empty("OIDC_CLAIM_GROUPS").is_some() {
        return Vec::new();
    }
    // Set to what they default to (OpenRag's stock `.env` may spell the defaults out), they
    // change nothing either way.
    use super::access::{DEFAULT_GROUP_PATTERN, DEFAULT_GROUP_PREFIX};
    [
        ("OIDC_GROUP_PREFIX", DEFAULT_GROUP_PREFIX),
        ("OIDC_GROUP_PATTERN", DEFAULT_GROUP_PATTERN),
        ("OIDC_GROUP_SYNC_PRUNE", "false"),
    ]
    .into_iter()
    .filter(|(n, default)| {
        vars.non_empty(n)
            .is_some_and(|v| !v.trim().eq_ignore_ascii_case(default))
    })
    .map(|(n, _)| format!("{n} has no effect without OIDC_CLAIM_GROUPS, which turns group sync on"))
    .collect()
}

/// Whether two settings sections differ (compared by their serialisation).
fn differs<T: serde::Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_value(a).ok() != serde_json::to_value(b).ok()
}

/// OpenRag's boolean variables, which it (and so the sidecar) reads as true only when `true`.
pub const OPENRAG_BOOLEANS: [&str; 3] = [
    "OIDC_AUTO_PROVISION_LOGIN",
    "OIDC_GROUP_SYNC_PRUNE",
    "RATE_LIMIT_ENABLED",
];

/// A warning when an OpenRag boolean holds a value that reads as true elsewhere but false in
/// OpenRag (only `true`, in any case, is true).
pub fn false_boolean(name: &str, value: Option<&str>) -> Option<String> {
    let v = value?.trim();
    if v.is_empty() && name == "RATE_LIMIT_ENABLED" {
        // A compose file's `${RATE_LIMIT_ENABLED}` with the variable unset: limits off.
        return Some(format!(
            "{name} is set but empty, which turns the rate limits off (as in OpenRag): set it \
             to true, or unset it for the default (on)"
        ));
    }
    let looks_true = ["yes", "y", "on", "1", "enable", "enabled"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t));
    looks_true.then(|| {
        format!("{name}={v} is false: OpenRag reads only \"true\" (in any case) as true, so does the sidecar")
    })
}

/// `OIDC_SCOPES` with a comma beside a whole `openid` (`openid email,profile`): the IdP is asked
/// for one scope named `email,profile`, and the claims it would bring are missing at login.
/// (Without `openid` it is refused, with the same hint.)
pub fn comma_in_scopes(scopes: Option<&str>) -> Option<String> {
    let scopes = scopes?;
    (scopes.contains(',') && scopes.split_whitespace().any(|s| s == "openid")).then(|| {
        format!(
            "OIDC_SCOPES '{scopes}' has a comma: the list is space-separated (openid email \
             profile), so the IdP is asked for a scope with a comma in its name"
        )
    })
}

/// A warning when the IdP is `http://` to a host other than this machine's loopback.
pub fn plain_http_idp(issuer: &str) -> Option<String> {
    plain_http_beyond_loopback(issuer).then(|| {
        format!(
            "OIDC_ENDPOINT {issuer} is plain http: anyone on the way to the IdP can swap its \
             signing keys and forge logins; use https outside a local test"
        )
    })
}

/// The public address is plain http beyond this host: the browser sends the session cookie
/// and the authorization code in clear (and cookies lose `Secure` and the `__Host-` prefix).
pub fn plain_http_redirect(redirect_uri: &str) -> Option<String> {
    plain_http_beyond_loopback(redirect_uri).then(|| {
        format!(
            "OIDC_REDIRECT_URI {redirect_uri} is plain http: session cookies and authorization \
             codes cross the network in clear; use https (TLS at the ingress, or tls.cert_file) \
             outside a local test"
        )
    })
}

/// Whether `url` is `http://` to a host other than this one.
fn plain_http_beyond_loopback(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    u.scheme() == "http" && !on_this_host(&u)
}

/// Whether `u`'s host is this machine's loopback (`localhost`, `127.0.0.0/8`, `::1`).
fn on_this_host(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `trusted_proxies` holding every address (`0.0.0.0/0`, `::/0`): any client may then name
/// its own address in `X-Forwarded-For` (past the rate limits and per-address caps) and its
/// own scheme and host.
pub fn trusting_everyone(nets: &[ipnet::IpNet]) -> Option<String> {
    nets.iter().find(|n| n.prefix_len() == 0).map(|n| {
        format!(
            "trusted_proxies contains {n}, every address: any client reaching the sidecar \
             directly can choose the address the rate limits and per-address caps see (and \
             X-Forwarded-Proto/Host); list the ingress's addresses only"
        )
    })
}

/// An exact rule for a directory (`/admin`) listed after a prefix rule on it (`/admin/*`):
/// the prefix rule covers the directory too (backends serve `/admin` as `/admin/`), and the
/// first matching rule decides, so the exact rule is never reached for the methods both cover.
pub fn shadowed_rules(rules: &[super::access::PathRule]) -> Vec<String> {
    let mut out = Vec::new();
    for (j, exact) in rules.iter().enumerate() {
        let earlier = rules[..j].iter().position(|r| {
            r.path
                .strip_suffix("/*")
                .is_some_and(|dir| dir.eq_ignore_ascii_case(&exact.path))
                && (r.methods.is_empty()
                    || exact.methods.is_empty()
                    || r.methods.iter().any(|m| exact.methods.contains(m)))
        });
        if let Some(i) = earlier {
            out.push(format!(
                "authz.rules[{j}] ('{}') comes after authz.rules[{i}] ('{}'), which covers \
                 '{}' too and decides first: list the exact rule before it",
                exact.path, rules[i].path, exact.path
            ));
        }
    }
    out
}

/// What `AUTH_MODE=token` (pass-through: the backend checks its own tokens) leaves unused
/// although it is set: the sidecar authenticates nothing, so a backend that trusts identity
/// headers, or counts on `[[authz.rules]]`, is open to every client. A warning each, not an
/// error: a pass-through for a moment (debugging, a migration) is legitimate.
pub fn token_mode_ignores(
    v: &super::validate::Validated,
    vars: &super::sources::Vars,
) -> Vec<String> {
    let mut out = Vec::new();
    let pass =
        "with AUTH_MODE=token the sidecar authenticates nothing and passes every request through";
    if v.identity == super::IdentityMode::Headers {
        out.push(format!(
            "{pass}: SSO_SIDECAR_IDENTITY=headers sends no identity (the clients' own identity headers are removed; set AUTH_MODE=oidc)"
        ));
    }
    if !v.auth.authz.rules.is_empty() {
        out.push(format!(
            "{pass}: [[authz.rules]] are not applied (set AUTH_MODE=oidc)"
        ));
    }
    if vars.non_empty("OIDC_ENDPOINT").is_some() {
        out.push(format!(
            "{pass}: OIDC_ENDPOINT is set but unused (set AUTH_MODE=oidc to sign users in)"
        ));
    }
    out
}

/// `trusted_origins = "*"` without `forward_preflights`: the sidecar answers every CORS
/// preflight allowing nothing (it trusts no origin in particular), so every cross-origin
/// request that needs one fails in the browser, whatever the backend's CORS policy says.
pub fn preflights_refused(a: &super::AuthSettings) -> Option<String> {
    (a.trusted_origins == super::origins::TrustedOrigins::Any && !a.forward_preflights).then(|| {
        "trusted_origins is \"*\" and forward_preflights is off: the sidecar answers every CORS \
         preflight itself, allowing nothing, so cross-origin requests that need one fail in the \
         browser; list the origins in trusted_origins (their preflights are then allowed), or \
         set forward_preflights = true (SSO_SIDECAR_FORWARD_PREFLIGHTS) if the backend answers \
         OPTIONS without running its handlers"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_plain_http_idp_off_this_host_is_warned_about() {
        let w = super::plain_http_idp("http://idp.example/realms/r").unwrap_or_default();
        assert!(
            w.contains("OIDC_ENDPOINT http://idp.example/realms/r is plain http"),
            "{w}"
        );
        for fine in [
            "https://idp.example",
            "http://127.0.0.1:9000",
            "http://localhost:8080/",
        ] {
            assert_eq!(super::plain_http_idp(fine), None, "{fine}");
        }
    }

    use super::*;

    #[test]
    fn typos_get_the_name_they_meant() {
        let known = sidecar_variables();
        assert_eq!(
            unknown_variable("SSO_SIDECAR_OPENRAG_TOKEN_POLICY", &known),
            "ignoring unknown variable SSO_SIDECAR_OPENRAG_TOKEN_POLICY (did you mean SSO_SIDECAR_OPENRAG__TOKEN_POLICY?)"
        );
        assert!(unknown_variable("SSO_SIDECAR_LISTN", &known)
            .ends_with("(did you mean SSO_SIDECAR_LISTEN?)"));
        assert_eq!(
            unknown_variable("SSO_SIDECAR_SERVICE_PORT_HTTP", &known),
            "ignoring unknown variable SSO_SIDECAR_SERVICE_PORT_HTTP"
        );
        let oidc = unknown_openrag_variables(
            [
                "OIDC_AUTO_PROVISION",
                "OIDC_SCOPES",
                "OIDC_CLIENT_SECRET_FILE",
                "OIDC_ENDPIONT",
            ]
            .into_iter(),
        );
        assert_eq!(oidc.len(), 2, "{oidc:?}");
        assert!(
            oidc[0].ends_with("(did you mean OIDC_AUTO_PROVISION_LOGIN?)"),
            "{oidc:?}"
        );
        assert!(
            oidc[1].ends_with("(did you mean OIDC_ENDPOINT?)"),
            "{oidc:?}"
        );
    }

    #[test]
    fn booleans_that_openrag_reads_as_false_are_named() {
        for v in ["yes", "on", "1", "Y"] {
            let w = false_boolean("OIDC_AUTO_PROVISION_LOGIN", Some(v)).unwrap();
            assert!(w.contains("is false"), "{w}");
        }
        assert!(false_boolean("OIDC_AUTO_PROVISION_LOGIN", Some("TRUE")).is_none());
        assert!(false_boolean("OIDC_AUTO_PROVISION_LOGIN", Some("false")).is_none());
        assert!(false_boolean("OIDC_AUTO_PROVISION_LOGIN", None).is_none());
    }

    #[test]
    fn file_twins_of_plain_variables_are_named_as_ignored() {
        let w = unknown_openrag_variables(
            [
                "OIDC_CLIENT_SECRET_FILE",
                "OIDC_POST_LOGOUT_REDIRECT_URI_FILE",
                "OIDC_SCOPE",
                "OIDC_ENDPOINT",
            ]
            .into_iter(),
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("ignoring OIDC_POST_LOGOUT_REDIRECT_URI_FILE: only secrets")
                && w[0].contains("OIDC_CLIENT_SECRET_FILE")
                && w[0].ends_with("set OIDC_POST_LOGOUT_REDIRECT_URI itself"),
            "{w:?}"
        );
        assert!(w[1].contains("did you mean OIDC_SCOPES"), "{w:?}");
    }
}
