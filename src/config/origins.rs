//! The origin lists of the settings: where a post-login `next` may lead
//! (`allowed_redirect_origins`) and whose pages may act with the user's session
//! (`trusted_origins`, enforced by `auth::cross_site`). Validates and serialises them as
//! browsers write an origin; decides nothing about requests.

use super::Settings;

/// The other origins whose pages may send requests with the user's session, or all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedOrigins {
    /// `trusted_origins = ["*"]`: the check is off.
    Any,
    /// Serialised origins (`https://ui.example.com`), compared byte for byte with `Origin`.
    These(Vec<String>),
}

impl TrustedOrigins {
    /// Whether an `Origin` header's value is trusted (byte for byte, as browsers serialise it).
    pub fn contains(&self, origin: &[u8]) -> bool {
        match self {
            TrustedOrigins::Any => true,
            TrustedOrigins::These(list) => list.iter().any(|t| t.as_bytes() == origin),
        }
    }
}

impl Default for TrustedOrigins {
    fn default() -> Self {
        TrustedOrigins::These(Vec::new())
    }
}

impl Settings {
    /// `allowed_redirect_origins`: absolute http(s) origins, as `trusted_origins` takes them.
    /// A path (`https://ui.example.com/app`) is refused rather than dropped, which would allow
    /// the whole origin; a wildcard host, which could never match, too.
    pub(super) fn validate_redirect_origins(&self, problems: &mut Vec<String>) -> Vec<String> {
        let mut origins = Vec::new();
        for o in &self.allowed_redirect_origins.0 {
            match origin_of(o) {
                Some(origin) => origins.push(origin),
                None => problems.push(format!(
                    "allowed_redirect_origins: '{o}' is not an http(s) origin (scheme://host[:port])"
                )),
            }
        }
        origins
    }

    /// `trusted_origins`: `*` alone, or absolute http(s) origins, serialised as browsers send
    /// them in `Origin` (`https://ui.example.com`, no path, default port left out).
    pub(super) fn validate_trusted_origins(&self, problems: &mut Vec<String>) -> TrustedOrigins {
        let list = &self.trusted_origins.0;
        if list.iter().any(|o| o.trim() == "*") {
            if list.len() > 1 {
                problems.push("trusted_origins: '*' must stand alone".to_string());
            }
            return TrustedOrigins::Any;
        }
        let mut origins = Vec::new();
        for o in list {
            match origin_of(o) {
                Some(origin) => origins.push(origin),
                None => problems.push(format!(
                    "trusted_origins: '{o}' is not an http(s) origin (scheme://host[:port]) or '*'"
                )),
            }
        }
        TrustedOrigins::These(origins)
    }
}

/// OpenRag's `INDEXERUI_URL` (its admin UI's address), which OpenRag adds to the origins a
/// post-login `next` may name: its origin, or why it cannot be one.
pub(super) fn indexer_ui_origin(value: &str) -> Result<String, String> {
    origin_of(value.trim().trim_end_matches('/')).ok_or_else(|| {
        format!("INDEXERUI_URL '{value}' is not an http(s) origin (scheme://host[:port]): not added to the origins a login may return to")
    })
}

/// `o` as browsers serialise an origin (`https://ui.example.com`, default port left out), if
/// it is one: http(s), a host without wildcard, no path, query or fragment.
fn origin_of(o: &str) -> Option<String> {
    let u = url::Url::parse(o.trim()).ok()?;
    let plain = matches!(u.scheme(), "http" | "https")
        && u.host_str().is_some_and(|h| !h.contains('*'))
        && u.path() == "/"
        && u.query().is_none()
        && u.fragment().is_none();
    plain.then(|| u.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::StringList;

    fn trusted(list: &[&str]) -> (TrustedOrigins, Vec<String>) {
        let s = Settings {
            trusted_origins: StringList(list.iter().map(|o| o.to_string()).collect()),
            ..Settings::default()
        };
        let mut problems = Vec::new();
        let t = s.validate_trusted_origins(&mut problems);
        (t, problems)
    }

    #[test]
    fn trusted_origins_are_origins_or_a_lone_star() {
        let (t, p) = trusted(&["https://UI.example.com:443", "http://a.test:8080"]);
        assert!(p.is_empty(), "{p:?}");
        let want = vec!["https://ui.example.com".into(), "http://a.test:8080".into()];
        assert_eq!(t, TrustedOrigins::These(want));
        assert_eq!(trusted(&["*"]), (TrustedOrigins::Any, vec![]));
        assert_eq!(trusted(&["*", "https://a.test"]).1.len(), 1);
        for bad in [
            "https://*.example.com",
            "https://a.test/app",
            "ftp://a.test",
            "a.test",
        ] {
            assert_eq!(trusted(&[bad]).1.len(), 1, "{bad}");
        }
    }

    /// The same rule for `allowed_redirect_origins`: a path was dropped (allowing the whole
    /// origin) and a wildcard host accepted (matching nothing), silently.
    #[test]
    fn redirect_origins_are_origins_too() {
        let redirect = |list: &[&str]| {
            let s = Settings {
                allowed_redirect_origins: StringList(list.iter().map(|o| o.to_string()).collect()),
                ..Settings::default()
            };
            let mut problems = Vec::new();
            (s.validate_redirect_origins(&mut problems), problems)
        };
        let (ok, p) = redirect(&["https://UI.example.com:443", "http://a.test:8080/"]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(ok, vec!["https://ui.example.com", "http://a.test:8080"]);
        for bad in [
            "https://ui.example.com/app",
            "https://*.example.com",
            "a.test",
        ] {
            assert_eq!(redirect(&[bad]).1.len(), 1, "{bad}");
        }
    }
}
