//! Who may log in and what a session may reach (`[authz]`): the allow-lists checked at the
//! callback and at every refresh, and the path rules checked on every session request. Pure
//! functions of the settings and the user's claims or session: the callers decide what
//! happens to a refusal (a 403 page, an ended session) and count it.

use crate::config::access::{routed_form, Authz, BearerOnRuled};
use crate::proxy::headers::folds_to;
use serde_json::{Map, Value};
use std::borrow::Cow;

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
        if crate::claims::email_unverified(claims) {
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

/// Whether a session in `groups` may send this request (its path in canonical form, see
/// [`canonical`](super::canonical)): the first rule whose path and methods match decides; no
/// matching rule allows.
///
/// Rules deny by omission, so the request must pass under every reading a backend may give it:
/// - its method in any case (`delete` is `DELETE` to Django, Flask and Laravel), and the
///   methods it names in `X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override` (in
///   any spelling a backend folds to these: `X_HTTP_Method`) or a `_method` query parameter
///   (Rails, Laravel, Symfony, Express's `method-override`; its name decoded, and `.method`,
///   which PHP reads as `_method`); a rule for `GET` also covers `HEAD`, which servers answer
///   with the `GET` handler, and a method a handler blind to methods may serve as a `GET`
///   ([`read_as_get`]) must pass as a `GET` too;
/// - its path as sent, without `;` parameters (Tomcat and Spring drop them: `/admin;x/users`
///   is `/admin/users` there), in lower case (Express and ASP.NET route case-insensitively),
///   without one trailing slash (Express's default routing serves `/a/` as `/a`; and the
///   other way, a rule on `/admin/*` covers `/admin`), without a format suffix (`/admin/users.json` is `/admin/users` to Rails), and decoded once more (`%25` read as `%`: a backend or framework that decodes twice takes
///   `/%2561dmin` for `/admin`).
///
/// Each method the request may be taken as is judged by the first rule for that method, and all
/// must pass; a request naming more than [`MAX_NAMED`] methods, or a name that is no HTTP token
/// once trimmed, is refused. A method named in a form body (`_method` in Rails and Laravel
/// forms) is not seen: a rule on such a method should list `POST` too.
pub fn reaches(a: &Authz, parts: &http::request::Parts, groups: &[String]) -> bool {
    if a.rules.is_empty() {
        return true;
    }
    let Some(mut methods) = taken_as(parts) else {
        return false; // no backend's reading of it can be judged
    };
    // A method a handler blind to methods serves as a `GET` is judged as one too, besides as
    // itself (as itself: a rule further down, for every method, may be stricter than the one
    // for `GET`).
    if methods.iter().any(|m| read_as_get(m)) && !methods.iter().any(|m| m == "GET") {
        methods.push(Cow::Borrowed("GET"));
    }
    // Each method on its own, since each is a request some backend may run: the first rule
    // matching *that* method decides (one walk for all would let a narrow rule matching one
    // name, `[GET] → staff`, decide for a DELETE named beside it).
    path_readings(parts.uri.path()).iter().all(|path| {
        methods.iter().all(|m| {
            let m = std::slice::from_ref(m);
            reaches_as(a, m, path, false, groups) && reaches_as(a, m, path, true, groups)
        })
    })
}

/// Whether a bearer request without a session may be forwarded: not to a path a rule covers
/// (under any reading), unless `bearer_on_ruled_paths = "pass"`. The sidecar cannot tell a
/// bearer's groups, and any signed-in user can mint a backend token (OpenRag's
/// `regenerate_token`): passing it would let every user past the rules.
pub fn bearer_may_reach(a: &Authz, parts: &http::request::Parts) -> bool {
    a.bearer_on_ruled_paths == BearerOnRuled::Pass || reaches(a, parts, &[])
}

/// Whether a backend may answer method `m` with its `GET` handler: `OPTIONS` and methods
/// outside HTTP's own (`PROPFIND`, `FOO`), which a handler that does not look at the method
/// (Go's `http.HandleFunc`, Django function views, Express `app.all`, PHP) serves as it serves
/// a `GET`. Such a request must pass the rules as a `GET` too. (`HEAD` is a `GET` to every
/// server: a rule for `GET` covers it, [`reaches_as`].)
fn read_as_get(m: &str) -> bool {
    !["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(m))
}

/// [`reaches`] for one reading of the path, compared as sent or ignoring ASCII case.
fn reaches_as(a: &Authz, methods: &[Cow<str>], path: &str, fold: bool, groups: &[String]) -> bool {
    let covers = |ruled: &[http::Method]| {
        ruled.is_empty()
            || methods.iter().any(|m| {
                ruled.iter().any(|r| r.as_str().eq_ignore_ascii_case(m))
                    || (m.eq_ignore_ascii_case("HEAD") && ruled.contains(&http::Method::GET))
            })
    };
    for rule in &a.rules {
        // A prefix rule covers its own directory without the slash too: Express, Rails and
        // older Spring serve `/admin` as `/admin/`. (Here only: a public prefix must not.)
        let directory = rule.path.strip_suffix("/*").is_some_and(|dir| {
            !dir.is_empty()
                && if fold {
                    dir.eq_ignore_ascii_case(path)
                } else {
                    dir == path
                }
        });
        let path_matches = directory
            || if fold {
                super::gate::path_matches_ignoring_case(&rule.path, path)
            } else {
                super::gate::path_matches(std::slice::from_ref(&rule.path), path)
            };
        if path_matches && covers(&rule.methods) {
            return groups.iter().any(|g| rule.groups.contains(g));
        }
    }
    true
}

/// Whether the request names a method besides its own (an override header or `_method`), which
/// some backend would run instead.
pub fn names_another_method(parts: &http::request::Parts) -> bool {
    taken_as(parts).is_none_or(|m| m.len() > 1)
}

/// What [`reaches`] reads of a request, copied to judge it again later (a long-lived stream,
/// [`crate::session::streams::Judge`]): its method, its target and its method-override
/// headers, no other header (a per-request copy of them all would cost every request).
pub fn judged_head(parts: &http::request::Parts) -> http::request::Parts {
    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    for (name, v) in &parts.headers {
        if METHOD_OVERRIDES.iter().any(|o| folds_to(name.as_str(), o)) {
            head.headers.append(name.clone(), v.clone());
        }
    }
    head
}

/// Whether a header names a method (an override header in any spelling), whatever it names.
pub fn names_method_in_headers(headers: &http::HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| METHOD_OVERRIDES.iter().any(|o| folds_to(name.as_str(), o)))
}

/// `uri` without its `_method` query parameters (in any spelling [`names_method`] reads), the
/// others kept byte for byte; `None` when it has none.
pub fn without_method_params(uri: &http::Uri) -> Option<http::Uri> {
    let query = uri.query()?;
    let named = |pair: &&str| {
        let name = pair.split('=').next().unwrap_or_default();
        form_urlencoded::parse(name.as_bytes())
            .next()
            .is_some_and(|(n, _)| names_method(&n))
    };
    if !query.split('&').any(|p| named(&p)) {
        return None;
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !named(p)).collect();
    let path = uri.path();
    let target = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = target.parse().ok();
    http::Uri::from_parts(parts).ok()
}

/// Methods a request may name besides its own: one naming more is refused where rules apply
/// (no client names nine, and each name is compared with all before it).
const MAX_NAMED: usize = 8;

/// Headers that some frameworks take as the request's method.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The methods a backend may take this request as (compared ignoring case): its own and any
/// it names; `None` when it names more than [`MAX_NAMED`], or a name that is no HTTP token.
/// Borrowed from the request where it can be: this runs on every session request when rules
/// are set.
fn taken_as<'a>(parts: &'a http::request::Parts) -> Option<Vec<Cow<'a, str>>> {
    let mut methods = vec![Cow::Borrowed(parts.method.as_str())];
    // More names than any client sends, or a name no method has (a byte another stack trims,
    // `DELETE\xA0` to Node, that `trim` here does not): no reading of it can be judged.
    let mut unjudgeable = false;
    // Each comma-separated name on its own: Express's `method-override` and its Koa and Fastify
    // kin take the first of `DELETE, GET` (the form two header lines are joined into).
    let mut add = |m: Cow<'a, str>| {
        let names: Vec<Cow<'a, str>> = match m {
            Cow::Borrowed(b) => b.split(',').map(|n| Cow::Borrowed(n.trim())).collect(),
            Cow::Owned(o) => o
                .split(',')
                .map(|n| Cow::Owned(n.trim().to_owned()))
                .collect(),
        };
        for m in names {
            if !m.is_empty() && !methods.iter().any(|x| x.eq_ignore_ascii_case(&m)) {
                if methods.len() > MAX_NAMED || !m.bytes().all(is_tchar) {
                    unjudgeable = true;
                    return;
                }
                methods.push(m);
            }
        }
    };
    // In any spelling a lenient stack folds to the header's (`X_HTTP_Method_Override`
    // reaches a CGI or FastCGI backend as the same variable).
    for (name, v) in &parts.headers {
        if METHOD_OVERRIDES.iter().any(|o| folds_to(name.as_str(), o)) {
            add(String::from_utf8_lossy(v.as_bytes()));
        }
    }
    // Parameter names decoded as backends decode them (`%5Fmethod`, `+_method`).
    let query = parts.uri.query().unwrap_or_default();
    for (name, v) in form_urlencoded::parse(query.as_bytes()) {
        if names_method(&name) {
            add(v);
        }
    }
    (!unjudgeable).then_some(methods)
}

/// A byte of an HTTP token (RFC 9110 §5.6.2), which every method name is.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a query parameter's name (decoded) is `_method` to some backend: PHP drops leading
/// spaces and takes `.`, ` ` and `[` in a name for `_` (`.method` is `_method` there); the
/// case is ignored, which can only make a rule hold more often.
fn names_method(name: &str) -> bool {
    let name = name.trim_start_matches(' ').as_bytes();
    name.len() == 7
        && name.iter().zip(b"_method").all(|(&c, &m)| {
            c.eq_ignore_ascii_case(&m) || (m == b'_' && matches!(c, b'.' | b' ' | b'['))
        })
}

/// The paths a backend may take `path` as (case aside, which [`reaches_as`] folds): as sent,
/// decoded once more, without `;` parameters, each without one trailing slash, and each
/// without a format suffix; every one in the form the backend routes (percent-decoded once,
/// [`routed_form`]), as the rules were put at load.
fn path_readings(path: &str) -> Vec<Cow<'_, str>> {
    let mut out = encoded_readings(path);
    for reading in &mut out {
        if reading.contains('%') {
            *reading = Cow::Owned(routed_form(reading).into_owned());
        }
    }
    out
}

fn encoded_readings(path: &str) -> Vec<Cow<'_, str>> {
    let mut out = vec![Cow::Borrowed(path)];
    if path.contains("%25") {
        out.push(Cow::Owned(decoded_again(path)));
    }
    for i in 0..out.len() {
        if out[i].contains(';') {
            let plain = Cow::Owned(without_parameters(&out[i]));
            out.push(plain);
        }
    }
    for i in 0..out.len() {
        if let Some(trimmed) = out[i].strip_suffix('/').filter(|t| !t.is_empty()) {
            let trimmed = Cow::Owned(trimmed.to_owned());
            out.push(trimmed);
        }
    }
    for i in 0..out.len() {
        if let Some(plain) = without_format(&out[i]) {
            let plain = Cow::Owned(plain.to_owned());
            out.push(plain);
        }
    }
    out
}

/// `path` as a backend that decodes it more than once reads it: each `%25` taken for the `%`
/// it encodes (until none is left), then put in canonical form as the sidecar put the request
/// (`/%2561dmin` is `/admin` to it).
fn decoded_again(path: &str) -> String {
    // Taking `%25` for `%` until none is left turns a `%` and every `25` after it into one
    // `%`: done in one pass (a path of many `25`s would cost a pass each).
    let mut p = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find('%') {
        p.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        while let Some(after) = rest.strip_prefix("25") {
            rest = after;
        }
    }
    p.push_str(rest);
    super::canonical::canonical_path(&p).unwrap_or(p)
}

/// `path` without a format suffix on its last segment (`/admin/users.json` is `/admin/users`
/// to Rails, to Spring before 5.3, and to Django REST's format routes), if it has one.
fn without_format(path: &str) -> Option<&str> {
    let last = path.rfind('/')? + 1;
    let dot = path[last..].rfind('.')?;
    (dot > 0).then(|| &path[..last + dot])
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

    fn parts(method: &str, path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn rule(path: &str, methods: &[http::Method], groups: &[&str]) -> PathRule {
        PathRule {
            path: path.into(),
            methods: methods.to_vec(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn reach(a: &Authz, method: &http::Method, path: &str, groups: &[String]) -> bool {
        reaches(a, &parts(method.as_str(), path, &[]), groups)
    }

    /// A rule holds for the path the backend routes, however either is percent-encoded: the
    /// rule is decoded at load and every reading of the request before they are compared
    /// (Starlette routes on the decoded path). A non-ASCII partition written as is used to
    /// miss every browser's request (always encoded), and `R%26D` a client's raw `R&D`.
    #[test]
    fn a_rule_holds_however_it_or_the_request_is_percent_encoded() {
        use crate::config::access::{AuthzSection, RuleSection};
        let ruled = |path: &str| {
            let section = AuthzSection {
                rules: vec![RuleSection {
                    path: path.into(),
                    groups: crate::config::settings::StringList(vec!["eq".into()]),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let mut problems = Vec::new();
            let a = section.validate(None, &mut problems);
            assert!(problems.is_empty(), "{problems:?}");
            a
        };
        let eq = ["eq".to_owned()];
        for (rule, request) in [
            ("/p/équipe/*", "/p/%C3%A9quipe/users"),
            ("/p/%C3%A9quipe/*", "/p/%c3%a9quipe/users"),
            ("/p/%C3%A9quipe/*", "/p/équipe/users"),
            ("/p/R%26D/*", "/p/R&D/users"),
            ("/p/R&D/*", "/p/R%26D/users"),
            ("/p/a b/*", "/p/a%20b/users"),
            ("/%61dmin/*", "/admin/users"),
            ("//admin/*", "/admin/users"),
            ("/admin/*", "/%2561dmin/users"),
        ] {
            let a = ruled(rule);
            // (Raw UTF-8 in a request target is taken by hyper as it is.)
            let uri: http::Uri = request.parse().unwrap();
            let p = parts("GET", &uri.to_string(), &[]);
            assert!(!reaches(&a, &p, &[]), "{rule} let {request} through");
            assert!(
                reaches(&a, &p, &eq),
                "{rule} refused {request} to its group"
            );
            assert!(!bearer_may_reach(&a, &p), "{rule}: a bearer to {request}");
        }
        // Unrelated paths stay free.
        let a = ruled("/p/R%26D/*");
        assert!(reach(&a, &http::Method::GET, "/p/R%26E/users", &[]));
        // A rule whose escapes are no UTF-8 is refused at load.
        let section = AuthzSection {
            rules: vec![RuleSection {
                path: "/p/%C3/*".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut problems = Vec::new();
        section.validate(None, &mut problems);
        assert!(problems.iter().any(|p| p.contains("UTF-8")), "{problems:?}");
    }

    /// What a backend may read differently: the method's case, a method named in a header or
    /// the query, the path's case and a trailing slash. Each is ruled as the backend reads it.
    #[test]
    fn a_rule_holds_under_every_reading_a_backend_may_give() {
        let a = Authz {
            rules: vec![
                PathRule {
                    path: "/v1/*".into(),
                    methods: vec![http::Method::DELETE],
                    groups: vec!["writers".into()],
                },
                PathRule {
                    path: "/admin/users".into(),
                    methods: vec![],
                    groups: vec!["admins".into()],
                },
            ],
            ..Authz::default()
        };
        let staff = ["staff".to_owned()];
        let writers = ["writers".to_owned()];
        let refused = [
            parts("delete", "/v1/docs/1", &[]),
            parts("Delete", "/v1/docs/1", &[]),
            parts(
                "POST",
                "/v1/docs/1",
                &[("x-http-method-override", "DELETE")],
            ),
            parts("POST", "/v1/docs/1", &[("X-HTTP-Method", " delete ")]),
            parts("POST", "/v1/docs/1", &[("x-method-override", "DELETE")]),
            parts("POST", "/v1/docs/1?a=1&_method=DELETE", &[]),
            parts("POST", "/v1/docs/1?_method=%64elete", &[]),
            parts("DELETE", "/V1/docs/1", &[]),
            parts("GET", "/ADMIN/users", &[]),
            parts("GET", "/admin/Users", &[]),
            parts("GET", "/admin/users/", &[]),
            parts("GET", "/Admin/users/", &[]),
            parts("GET", "/admin;x/users/", &[]),
            parts("GET", "/%2561dmin/users", &[]),
            parts("GET", "/admin/%252575sers", &[]),
            parts("GET", "/%2541dmin;x/users/", &[]),
            parts("DELETE", "/%2576%2531/docs/1", &[]),
            parts("GET", "/%252525252561dmin/users", &[]),
            parts("POST", "/v1/docs/1?%5Fmethod=DELETE", &[]),
            parts("POST", "/v1/docs/1?.method=DELETE", &[]),
            parts("POST", "/v1/docs/1?%2Emethod=DELETE", &[]),
            parts("POST", "/v1/docs/1?+_METHOD=DELETE", &[]),
            parts("POST", "/v1/docs/1?[method=DELETE", &[]),
            parts(
                "POST",
                "/v1/docs/1",
                &[("x_http_method_override", "DELETE")],
            ),
            parts("POST", "/v1/docs/1", &[("x.http.method", "DELETE")]),
            parts("GET", "/admin/users.json", &[]),
            parts("GET", "/admin/Users.xml/", &[]),
            // A prefix rule's own directory, which backends serve as it with a slash.
            parts("DELETE", "/v1", &[]),
            parts("DELETE", "/V1", &[]),
            parts("DELETE", "/v1;x", &[]),
            parts("DELETE", "/v1.json", &[]),
            // A list in one override field, whose first name Express's `method-override` takes.
            parts(
                "POST",
                "/v1/docs/1",
                &[("x-http-method-override", "DELETE, GET")],
            ),
            parts(
                "POST",
                "/v1/docs/1",
                &[("x-http-method-override", "DELETE,")],
            ),
            parts("POST", "/v1/docs/1", &[("x_http_method", " delete ,x")]),
            // Named past any use: refused.
            parts(
                "POST",
                "/v1/docs/1",
                &[("x-http-method-override", "A,B,C,D,E,F,G,H,I,J,K")],
            ),
        ];
        for p in &refused {
            assert!(
                !reaches(&a, p, &staff),
                "{} {:?} {:?}",
                p.method,
                p.uri,
                p.headers
            );
        }
        assert!(reaches(&a, &parts("delete", "/v1/docs/1", &[]), &writers));
        assert!(reaches(
            &a,
            &parts("GET", "/ADMIN/users", &[]),
            &["admins".to_owned()]
        ));
        // What no reading makes a ruled request stays allowed.
        for p in [
            parts("POST", "/v1/docs/1", &[]),
            parts("GET", "/v1/docs/1?method=DELETE", &[]),
            parts("GET", "/v1/docs/1?__method=DELETE&x_method=DELETE", &[]),
            parts("GET", "/admin/users2", &[]),
            parts("GET", "/admin/users/.json", &[]),
            parts("GET", "/admin.users", &[]),
            parts("GET", "/", &[]),
            parts("DELETE", "/v1x", &[]),
            parts("DELETE", "/v", &[]),
            parts(
                "POST",
                "/v1/docs/1",
                &[("x-http-method-override", "GET, PUT")],
            ),
        ] {
            assert!(reaches(&a, &p, &staff), "{} {:?}", p.method, p.uri);
        }
    }

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
            bearer_on_ruled_paths: BearerOnRuled::Refuse,
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
        assert!(reach(&a, &get, "/admin/public", &g(&["staff"])));
        assert!(!reach(&a, &get, "/admin/x", &g(&["staff"])));
        assert!(
            !reach(&a, &get, "/admin", &g(&["staff"])),
            "the prefix's directory"
        );
        assert!(reach(&a, &get, "/administrator", &g(&["staff"])));
        assert!(reach(&a, &get, "/admin/x", &g(&["admins"])));
        assert!(reach(&a, &get, "/v1/x", &g(&[])), "GET is not ruled");
        assert!(!reach(&a, &http::Method::POST, "/v1/x", &g(&[])));
        assert!(reach(&a, &get, "/elsewhere", &g(&[])));
    }

    /// A stream's request judged again later from its copied head is judged as it was.
    #[test]
    fn a_judged_head_is_judged_as_its_request() {
        let a = Authz {
            rules: vec![
                rule("/admin/*", &[http::Method::GET], &["staff"]),
                rule("/admin/*", &[], &["admins"]),
            ],
            ..Authz::default()
        };
        let staff = ["staff".to_owned()];
        for p in [
            parts("GET", "/admin/ws", &[("cookie", "a=b")]),
            parts("GET", "/admin/ws", &[("X_HTTP_Method_Override", "DELETE")]),
            parts("GET", "/admin/ws?_method=DELETE", &[]),
            parts("GET", "/other/ws", &[("x-http-method", "PUT")]),
        ] {
            let head = judged_head(&p);
            assert!(head.headers.get("cookie").is_none(), "only what is judged");
            assert_eq!(
                reaches(&a, &head, &staff),
                reaches(&a, &p, &staff),
                "{:?}",
                p.uri
            );
        }
    }

    /// Each method a request may be taken as is judged by the first rule for *that* method: a
    /// narrow rule letting one method through does not decide for another named beside it. A
    /// request naming more methods than any client does is refused where rules apply.
    #[test]
    fn every_method_named_is_judged_by_its_own_first_rule() {
        let a = Authz {
            rules: vec![
                rule("/admin/*", &[http::Method::GET], &["staff", "admins"]),
                rule("/admin/*", &[], &["admins"]),
                rule("/docs/*", &[http::Method::POST], &["editors"]),
                rule("/docs/*", &[http::Method::DELETE], &["admins"]),
            ],
            ..Authz::default()
        };
        let staff = ["staff".to_owned()];
        let editors = ["editors".to_owned()];
        assert!(reaches(&a, &parts("GET", "/admin/users", &[]), &staff));
        let many = [("x-http-method-override", "DELETE,a,b,c,d,e,f,g,h")];
        for p in [
            parts("POST", "/admin/users/1", &many),
            parts("GET", "/admin/users/1", &many),
            parts("GET", "/admin/users/1?_method=DELETE", &[]),
            parts(
                "GET",
                "/admin/users/1",
                &[("x-http-method-override", "DELETE")],
            ),
        ] {
            assert!(
                !reaches(&a, &p, &staff),
                "{} {:?} {:?}",
                p.method,
                p.uri,
                p.headers
            );
        }
        assert!(reaches(&a, &parts("POST", "/docs/1", &[]), &editors));
        assert!(!reaches(
            &a,
            &parts("POST", "/docs/1?_method=DELETE", &[]),
            &editors
        ));
        let eight = [("x-http-method-override", "a,b,c,d,e,f,g,h")];
        assert!(
            reaches(&a, &parts("GET", "/elsewhere", &eight), &staff),
            "eight is a list"
        );
        let nine = [("x-http-method-override", "a,b,c,d,e,f,g,h,i")];
        assert!(
            !reaches(&a, &parts("GET", "/elsewhere", &nine), &staff),
            "nine is refused"
        );
        assert!(
            reaches(&Authz::default(), &parts("GET", "/x", &nine), &staff),
            "no rules"
        );
        // A name with a byte Node trims and Rust does not (latin1 0xA0), or none a method has.
        let mut odd = parts("POST", "/docs/1", &[]);
        let nbsp = http::HeaderValue::from_bytes(b"DELETE\xA0").unwrap();
        odd.headers.insert("x-http-method-override", nbsp);
        assert!(!reaches(&a, &odd, &editors));
        assert!(!reaches(
            &a,
            &parts("POST", "/docs/1?_method=DELETE%A0", &[]),
            &editors
        ));
        assert!(!reaches(
            &a,
            &parts("POST", "/docs/1?_method=DEL(ETE", &[]),
            &editors
        ));
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
        assert!(!reach(&a, &http::Method::HEAD, "/reports/q3", &staff));
        // Nor as any method a handler blind to methods serves as a `GET`.
        for m in ["OPTIONS", "PROPFIND", "FOO", "options"] {
            let m = http::Method::from_bytes(m.as_bytes()).unwrap();
            assert!(!reach(&a, &m, "/reports/q3", &staff), "{m}");
        }
        assert!(reach(&a, &http::Method::POST, "/reports/q3", &staff));
        // Judged as itself too: a `GET` rule does not decide for it where a stricter rule for
        // every method follows (a WebDAV reader's MKCOL).
        let dav = Authz {
            rules: vec![
                PathRule {
                    path: "/dav/*".into(),
                    methods: vec![http::Method::GET],
                    groups: vec!["readers".into()],
                },
                PathRule {
                    path: "/dav/*".into(),
                    methods: vec![],
                    groups: vec!["writers".into()],
                },
            ],
            ..Authz::default()
        };
        let readers = ["readers".to_owned()];
        let writers = ["writers".to_owned()];
        for m in ["MKCOL", "PROPFIND", "OPTIONS"] {
            let m = http::Method::from_bytes(m.as_bytes()).unwrap();
            assert!(!reach(&dav, &m, "/dav/x", &readers), "{m}");
            assert!(
                !reach(&dav, &m, "/dav/x", &writers),
                "{m}: as a GET, not a reader"
            );
        }
        assert!(reach(&dav, &http::Method::GET, "/dav/x", &readers));
        let both = ["readers".to_owned(), "writers".to_owned()];
        assert!(reach(
            &dav,
            &http::Method::from_bytes(b"MKCOL").unwrap(),
            "/dav/x",
            &both
        ));
        assert!(reach(
            &a,
            &http::Method::HEAD,
            "/reports/q3",
            &["auditors".to_owned()]
        ));
        for dodge in ["/admin;x/users", "/admin;/users", "/admin;jsessionid=1/x"] {
            assert!(!reach(&a, &http::Method::GET, dodge, &staff), "{dodge}");
        }
        assert!(reach(
            &a,
            &http::Method::GET,
            "/admin;x/users",
            &["admins".to_owned()]
        ));
        assert!(reach(&a, &http::Method::GET, "/docs;v=2/x", &staff));
    }
}
