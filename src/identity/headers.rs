//! `identity = "headers"`: the user's identity as request headers.
//!
//! Security invariant: on every path — authenticated, public, bearer pass-through — every
//! client-supplied variant of every identity header (any case, `_` or `.` for `-`) is removed
//! before ours are written, so a client can never speak for a user. The default names are
//! stripped too when they were renamed, in case the backend still reads them, and so are the
//! names a reload renamed (the backend may not have been told yet).

use crate::config::IdentityField;
use crate::proxy::headers::{folded_name, remove_folded};
use crate::session::Session;
use http::{HeaderMap, HeaderName, HeaderValue};

const DEFAULT_NAMES: [&str; 5] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
];

pub struct HeaderIdentity {
    names: Vec<(IdentityField, HeaderName)>,
    /// Folded names removed from every request.
    strip: Vec<String>,
}

impl HeaderIdentity {
    pub fn new(names: Vec<(IdentityField, HeaderName)>) -> Self {
        // Names of our own, not clones sharing the configuration's buffers: each worker has
        // its own `HeaderIdentity`, and these are reference-counted on every request.
        let names: Vec<(IdentityField, HeaderName)> = names
            .into_iter()
            .map(|(f, n)| {
                (
                    f,
                    HeaderName::from_bytes(n.as_str().as_bytes()).unwrap_or(n),
                )
            })
            .collect();
        let mut strip: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
        for (_, n) in &names {
            let f = folded_name(n.as_str());
            if !strip.contains(&f) {
                strip.push(f);
            }
        }
        HeaderIdentity { names, strip }
    }

    /// The identity `names` a reload brings, still stripping every name this one stripped.
    pub fn renamed(&self, names: Vec<(IdentityField, HeaderName)>) -> Self {
        let mut next = HeaderIdentity::new(names);
        for f in &self.strip {
            if !next.strip.contains(f) {
                next.strip.push(f.clone());
            }
        }
        next
    }

    /// Removes every client-supplied identity header.
    pub fn strip(&self, headers: &mut HeaderMap) {
        remove_folded(headers, &self.strip);
    }

    /// Writes the session's identity. Values that cannot be a header value (control
    /// characters from a hostile IdP) are left out rather than mangled.
    pub fn inject(&self, headers: &mut HeaderMap, s: &Session) {
        let values = s.identity_headers.get_or_init(|| identity_values(s));
        for (field, name) in &self.names {
            if let Some(Some(v)) = values.get(slot(*field)) {
                headers.insert(name.clone(), v.clone());
            }
        }
    }
}

/// A session's identity as header values, one per [`IdentityField`] (in [`slot`] order), made
/// once per opened session and kept with it: validating them on every request is wasted work.
fn identity_values(s: &Session) -> Box<[Option<HeaderValue>]> {
    let value = |v: &str| HeaderValue::from_str(v).ok();
    let token = HeaderValue::from_str(&s.access_token).ok().map(|mut v| {
        // Kept out of debug output and out of HTTP/2 header compression tables.
        v.set_sensitive(true);
        v
    });
    Box::new([
        value(&s.sub),
        // An email the IdP says is not verified is anyone's to claim (self-registration):
        // not passed on as the user's (oauth2-proxy refuses such logins by default).
        s.email
            .as_deref()
            .filter(|_| s.email_verified != Some(false))
            .and_then(value),
        s.preferred_username.as_deref().and_then(value),
        (!s.groups.is_empty())
            .then(|| joined_groups(&s.groups))
            .and_then(|g| value(&g)),
        token,
    ])
}

/// The groups comma-joined, a comma or `%` inside a name percent-encoded (`%2C`, `%25`): a
/// group named `staff,admins` must not reach the backend as two groups.
fn joined_groups(groups: &[String]) -> String {
    let mut out = String::new();
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if g.contains([',', '%']) {
            out.push_str(&g.replace('%', "%25").replace(',', "%2C"));
        } else {
            out.push_str(g);
        }
    }
    out
}

fn slot(field: IdentityField) -> usize {
    match field {
        IdentityField::User => 0,
        IdentityField::Email => 1,
        IdentityField::PreferredUsername => 2,
        IdentityField::Groups => 3,
        IdentityField::AccessToken => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's request carrying each of `names`, valued "spoof".
    fn spoofed(names: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for n in names {
            h.insert(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static("spoof"),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        h.keys().map(|k| k.as_str()).collect()
    }

    #[test]
    fn every_spelling_of_an_identity_header_is_stripped() {
        let id = HeaderIdentity::new(vec![(
            IdentityField::User,
            HeaderName::from_static("x-remote-user"),
        )]);
        let mut h = spoofed(&[
            "x-forwarded-user",
            "X_Forwarded_User",
            "x.forwarded.email",
            "x-remote-user",
            "x_remote_user",
            "x-forwarded-groups",
            "x-other",
        ]);
        id.strip(&mut h);
        assert_eq!(names(&h), ["x-other"]);
    }

    /// A reload that renames a header keeps stripping the old name: the backend may still
    /// read it until it is told of the new one.
    #[test]
    fn a_name_a_reload_renamed_is_still_stripped() {
        let before = HeaderIdentity::new(vec![(
            IdentityField::User,
            HeaderName::from_static("x-remote-user"),
        )]);
        let after = before.renamed(vec![(
            IdentityField::User,
            HeaderName::from_static("x-auth-user"),
        )]);
        let mut h = spoofed(&["x-remote-user", "x_auth_user", "x-other"]);
        after.strip(&mut h);
        assert_eq!(names(&h), ["x-other"]);
    }

    #[test]
    fn groups_keep_their_commas_and_an_unverified_email_is_not_passed_on() {
        let mut s = Session::for_tests("alice", 0, 60);
        s.groups = vec!["staff,admins".into(), "100%".into(), "ops".into()];
        s.email = Some("victim@corp.example".into());
        let v = identity_values(&s);
        assert_eq!(
            v[slot(IdentityField::Groups)].as_ref().unwrap(),
            "staff%2Cadmins,100%25,ops"
        );
        assert_eq!(
            v[slot(IdentityField::Email)].as_ref().unwrap(),
            "victim@corp.example"
        );
        s.email_verified = Some(false);
        assert!(identity_values(&s)[slot(IdentityField::Email)].is_none());
        s.email_verified = Some(true);
        assert!(identity_values(&s)[slot(IdentityField::Email)].is_some());
    }
}
