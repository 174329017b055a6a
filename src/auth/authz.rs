//! Who may log in and what a session may reach (`[authz]`): the allow-lists checked at the
//! callback and at every refresh, and the path rules checked on every session request. Pure
//! functions of the settings and the user's claims or session: the callers decide what
//! happens to a refusal (a 403 page, an ended session) and count it.

use crate::config::access::Authz;
use serde_json::{Map, Value};

/// Why a login is refused; the label of `sso_sidecar_logins_refused_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// In none of `allowed_groups`.
    Group,
    /// The email is in none of the allowed domains or addresses (or there is none).
    Email,
    /// The IdP says the email is not verified (`email_verified: false`).
    EmailUnverified,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Group => "group",
            Refusal::Email => "email",
            Refusal::EmailUnverified => "email_unverified",
        }
    }
}

/// Whether the user these claims describe may have a session: every configured rule holds
/// (groups AND email); none configured admits everyone the IdP authenticates.
pub fn admits(a: &Authz, claims: &Map<String, Value>) -> Result<(), Refusal> {
    if !a.allowed_groups.is_empty() {
        let groups = crate::claims::groups(claims, &a.groups_claim).unwrap_or_default();
        if !groups.iter().any(|g| a.allowed_groups.contains(g)) {
            return Err(Refusal::Group);
        }
    }
    if a.restricts_email() {
        let unverified = matches!(claims.get("email_verified"), Some(Value::Bool(false)))
            || claims
                .get("email_verified")
                .and_then(Value::as_str)
                .is_some_and(|v| v.eq_ignore_ascii_case("false"));
        if unverified {
            return Err(Refusal::EmailUnverified);
        }
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .map(|e| e.trim().to_ascii_lowercase())
            .unwrap_or_default();
        // One `@` after a non-empty local part: `x@evil.example@corp.example` is in no domain
        // (a mail system may deliver it to evil.example).
        let domain = match email.split_once('@') {
            Some((local, d)) if !local.is_empty() && !d.contains('@') => d,
            _ => "",
        };
        let listed = !email.is_empty() && a.allowed_emails.contains(&email);
        let in_domain = !domain.is_empty() && a.allowed_email_domains.iter().any(|d| d == domain);
        if !listed && !in_domain {
            return Err(Refusal::Email);
        }
    }
    Ok(())
}

/// Whether a session in `groups` may send `method` to `path` (in canonical form, see
/// [`canonical`](super::canonical)): the first rule whose path and methods match decides; no
/// matching rule allows. A rule for `GET` also covers `HEAD`, which servers answer with the
/// `GET` handler. A path with `;` parameters must also pass as it is without them: Tomcat
/// and Spring drop them, so `/admin;x/users` is `/admin/users` there.
pub fn reaches(a: &Authz, method: &http::Method, path: &str, groups: &[String]) -> bool {
    reaches_as(a, method, path, groups)
        && (!path.contains(';') || reaches_as(a, method, &without_parameters(path), groups))
}

fn reaches_as(a: &Authz, method: &http::Method, path: &str, groups: &[String]) -> bool {
    let covers = |methods: &[http::Method]| {
        methods.is_empty()
            || methods.contains(method)
            || (method == http::Method::HEAD && methods.contains(&http::Method::GET))
    };
    for rule in &a.rules {
        let path_matches = super::gate::path_matches(std::slice::from_ref(&rule.path), path);
        if path_matches && covers(&rule.methods) {
            return groups.iter().any(|g| rule.groups.contains(g));
        }
    }
    true
}

/// `path` with every segment's `;` parameters removed.
fn without_parameters(path: &str) -> String {
    path.split('/')
        .map(|seg| seg.split(';').next().unwrap_or(seg))
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::access::PathRule;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn nothing_configured_admits_everyone() {
        assert_eq!(admits(&Authz::default(), &claims(json!({}))), Ok(()));
    }

    #[test]
    fn groups_and_emails_must_both_hold() {
        let a = Authz {
            allowed_groups: vec!["staff".into()],
            allowed_email_domains: vec!["example.com".into()],
            allowed_emails: ["guest@other.org".to_owned()].into(),
            groups_claim: "groups".into(),
            rules: vec![],
        };
        let ok = json!({"groups": ["staff"], "email": "A@Example.com"});
        assert_eq!(admits(&a, &claims(ok)), Ok(()));
        let guest = json!({"groups": "staff", "email": "guest@other.org", "email_verified": true});
        assert_eq!(admits(&a, &claims(guest)), Ok(()));
        for (c, why) in [
            (
                json!({"groups": ["other"], "email": "a@example.com"}),
                Refusal::Group,
            ),
            (json!({"email": "a@example.com"}), Refusal::Group),
            (
                json!({"groups": ["staff"], "email": "a@evil.com"}),
                Refusal::Email,
            ),
            (
                json!({"groups": ["staff"], "email": "a@sub.example.com"}),
                Refusal::Email,
            ),
            (
                json!({"groups": ["staff"], "email": "example.com"}),
                Refusal::Email,
            ),
            (
                json!({"groups": ["staff"], "email": "x@evil.com@example.com"}),
                Refusal::Email,
            ),
            (
                json!({"groups": ["staff"], "email": "@example.com"}),
                Refusal::Email,
            ),
            (json!({"groups": ["staff"]}), Refusal::Email),
            (
                json!({"groups": ["staff"], "email": "a@example.com", "email_verified": false}),
                Refusal::EmailUnverified,
            ),
            (
                json!({"groups": ["staff"], "email": "a@example.com", "email_verified": "false"}),
                Refusal::EmailUnverified,
            ),
        ] {
            assert_eq!(admits(&a, &claims(c.clone())), Err(why), "{c}");
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let rule = |path: &str, methods: &[http::Method], groups: &[&str]| PathRule {
            path: path.into(),
            methods: methods.to_vec(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        let a = Authz {
            rules: vec![
                rule("/admin/public", &[], &["staff"]),
                rule("/admin/*", &[], &["admins"]),
                rule("/v1/*", &[http::Method::POST], &["writers"]),
            ],
            ..Authz::default()
        };
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let get = http::Method::GET;
        assert!(reaches(&a, &get, "/admin/public", &g(&["staff"])));
        assert!(!reaches(&a, &get, "/admin/x", &g(&["staff"])));
        assert!(reaches(&a, &get, "/admin/x", &g(&["admins"])));
        assert!(reaches(&a, &get, "/v1/x", &g(&[])), "GET is not ruled");
        assert!(!reaches(&a, &http::Method::POST, "/v1/x", &g(&[])));
        assert!(reaches(&a, &get, "/elsewhere", &g(&[])));
    }

    #[test]
    fn head_is_ruled_as_get_and_path_parameters_do_not_dodge_a_rule() {
        let a = Authz {
            rules: vec![
                PathRule {
                    path: "/reports/*".into(),
                    methods: vec![http::Method::GET],
                    groups: vec!["auditors".into()],
                },
                PathRule {
                    path: "/admin/*".into(),
                    methods: vec![],
                    groups: vec!["admins".into()],
                },
            ],
            ..Authz::default()
        };
        let staff = ["staff".to_owned()];
        assert!(!reaches(&a, &http::Method::HEAD, "/reports/q3", &staff));
        assert!(reaches(
            &a,
            &http::Method::HEAD,
            "/reports/q3",
            &["auditors".to_owned()]
        ));
        for dodge in ["/admin;x/users", "/admin;/users", "/admin;jsessionid=1/x"] {
            assert!(!reaches(&a, &http::Method::GET, dodge, &staff), "{dodge}");
        }
        assert!(reaches(
            &a,
            &http::Method::GET,
            "/admin;x/users",
            &["admins".to_owned()]
        ));
        assert!(reaches(&a, &http::Method::GET, "/docs;v=2/x", &staff));
    }
}
