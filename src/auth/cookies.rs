//! The sidecar's cookies: the session cookie (a random id only) and the short-lived, encrypted
//! login-state cookie. Builds `Set-Cookie` values and reads and strips the `Cookie` header.
//!
//! Knows nothing of OIDC or the store. Every cookie is host-only (no `Domain`), `Path=/`,
//! `HttpOnly`, `SameSite=Lax`, and `Secure` when the public scheme is https; over https the
//! names carry the `__Host-` prefix, so no other host (a sibling subdomain) can plant one. A
//! request that carries one of our cookies more than once is treated as carrying none of it:
//! which copy a browser sends first is not ours to choose (cookie tossing).

use cookie::time::{self, Duration as TimeDuration};
use cookie::{Cookie, SameSite};
use http::header::{self, HeaderMap, HeaderValue};

/// Cookie names and attributes.
#[derive(Debug, Clone)]
pub struct CookieJar {
    pub session: String,
    pub state: String,
    /// The names without the `__Host-` prefix when it is used (a browser may still hold
    /// cookies set before it was turned on): stripped like ours, never read.
    legacy: Option<(String, String)>,
}

/// The prefix browsers reserve for cookies that are `Secure`, `Path=/` and host-only.
pub const HOST_PREFIX: &str = "__Host-";

impl CookieJar {
    /// `host_prefix`: name the cookies `__Host-…` (only valid when they are `Secure`).
    pub fn new(session_name: &str, host_prefix: bool) -> Self {
        let state = format!("{session_name}_state");
        if host_prefix {
            CookieJar {
                session: format!("{HOST_PREFIX}{session_name}"),
                state: format!("{HOST_PREFIX}{state}"),
                legacy: Some((session_name.to_owned(), state)),
            }
        } else {
            CookieJar {
                session: session_name.to_owned(),
                state,
                legacy: None,
            }
        }
    }

    pub fn set(&self, name: &str, value: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
        let c = Cookie::build((name.to_owned(), value.to_owned()))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(secure)
            .max_age(TimeDuration::seconds(max_age_secs.max(1)))
            .build();
        HeaderValue::from_str(&c.encoded().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    pub fn clear(&self, name: &str, secure: bool) -> HeaderValue {
        let c = Cookie::build((name.to_owned(), ""))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(secure)
            .max_age(TimeDuration::ZERO)
            .expires(time::OffsetDateTime::UNIX_EPOCH)
            .build();
        HeaderValue::from_str(&c.encoded().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The value of cookie `name` in the request, if it is there exactly once. Names are
    /// compared as sent, never decoded: browsers enforce the `__Host-` prefix on the literal
    /// name only, so a sibling subdomain may set `__Host%2Dsso_sidecar_session` with a
    /// `Domain`, and a decoded comparison would take it for ours (cookie tossing). Such a
    /// cookie is ignored here and still stripped before the upstream ([`CookieJar::strip`]).
    pub fn get(&self, headers: &HeaderMap, name: &str) -> Option<String> {
        let mut found = None;
        for value in headers.get_all(header::COOKIE) {
            // Pair by pair, not header by header: one cookie with a non-ASCII byte (another
            // application's on this host) must not hide ours.
            for pair in value.as_bytes().split(|&b| b == b';') {
                let Some(value) = pair_value(pair, name) else {
                    continue;
                };
                if value.is_some() {
                    if found.is_some() {
                        // Twice: one of them was planted; trust neither.
                        return None;
                    }
                    found = value;
                }
            }
        }
        found
    }

    /// Whether a `Cookie` pair is one of the sidecar's own (names compared decoded, as `get`
    /// does: `sso%5Fsidecar%5Fsession` is ours too).
    fn is_own(&self, pair: &[u8]) -> bool {
        let raw = pair.split(|&b| b == b'=').next().unwrap_or_default();
        let trimmed = raw.trim_ascii();
        // Plain ASCII (every cookie name in practice): compared as bytes. A header value's only
        // ASCII white space is space and tab, which is all `str::trim` would take off too.
        if trimmed.is_ascii() && !trimmed.contains(&b'%') {
            let is = |n: &str| trimmed == n.as_bytes();
            return is(&self.session)
                || is(&self.state)
                || self.legacy.as_ref().is_some_and(|(s, t)| is(s) || is(t));
        }
        let raw = String::from_utf8_lossy(raw);
        let raw = raw.trim();
        let name = if raw.contains('%') {
            percent_encoding::percent_decode_str(raw).decode_utf8_lossy()
        } else {
            std::borrow::Cow::Borrowed(raw)
        };
        let name = name.as_ref();
        name == self.session
            || name == self.state
            || self
                .legacy
                .as_ref()
                .is_some_and(|(s, t)| name == s || name == t)
    }

    /// Removes the sidecar's own cookies from the `Cookie` header, so the upstream never sees
    /// them; other cookies are kept byte for byte (non-ASCII ones too).
    pub fn strip(&self, headers: &mut HeaderMap) {
        let pairs = || {
            headers
                .get_all(header::COOKIE)
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
                .map(<[u8]>::trim_ascii)
                .filter(|pair| !pair.is_empty())
        };
        // The common cases, without rebuilding the header: none of ours, or only ours.
        let (mut own, mut other) = (false, false);
        for pair in pairs() {
            if self.is_own(pair) {
                own = true;
            } else {
                other = true;
            }
        }
        if !own {
            return;
        }
        let kept: Vec<&[u8]> = if other {
            pairs().filter(|pair| !self.is_own(pair)).collect()
        } else {
            Vec::new()
        };
        let rebuilt = (!kept.is_empty()).then(|| HeaderValue::from_bytes(&kept.join(&b"; "[..])));
        headers.remove(header::COOKIE);
        if let Some(Ok(v)) = rebuilt {
            headers.insert(header::COOKIE, v);
        }
    }
}

/// What a `Cookie` pair says of cookie `name`: `None` when it is another cookie's, else its
/// value as a full parse by the `cookie` crate gives it (`Some(None)`: unreadable). Pairs that
/// are not UTF-8 are other cookies'.
fn pair_value(pair: &[u8], name: &str) -> Option<Option<String>> {
    let pair = std::str::from_utf8(pair).ok()?;
    let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
    // Only the white space a `Cookie` header puts around names (RFC 6265 §5.2: space and
    // tab). `str::trim` would also take off Unicode spaces, and a name that starts with
    // U+2000 does not start with `__Host-` for the browser, which then lets a sibling
    // subdomain set it with a `Domain`: read as ours, it would plant a login state or a
    // session ("cookie chaos"). `strip` still removes such a cookie: removing more is safe.
    if raw_name.trim_matches([' ', '\t']) != name {
        return None;
    }
    // Nothing to decode: the value is the trimmed text, as the full parse gives.
    Some(if pair.contains('=') && !raw_value.contains('%') {
        Some(raw_value.trim().to_owned())
    } else {
        Cookie::parse_encoded(pair.trim())
            .ok()
            .map(|c| c.value().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_prefixed_names_and_planted_duplicates() {
        let jar = CookieJar::new("sso_sidecar_session", true);
        assert_eq!(jar.session, "__Host-sso_sidecar_session");
        assert_eq!(jar.state, "__Host-sso_sidecar_session_state");
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-sso_sidecar_session=A; x=1"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-sso_sidecar_session=B"),
        );
        assert_eq!(jar.get(&h, &jar.session), None, "two copies: trust neither");
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "sso_sidecar_session=old; __Host-sso_sidecar_session=A; sso_sidecar_session_state=s; y=2",
            ),
        );
        assert_eq!(jar.get(&h, &jar.session).as_deref(), Some("A"));
        jar.strip(&mut h);
        assert_eq!(
            h[header::COOKIE],
            "y=2",
            "unprefixed names are stripped too"
        );
        // Tossed from a sibling subdomain: the prefix encoded, so the browser took it with a
        // Domain. Not ours to read, whether alone or beside the real one; stripped all the same.
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host%2Dsso_sidecar_session=T"),
        );
        assert_eq!(jar.get(&h, &jar.session), None);
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-sso_sidecar_session=A"),
        );
        assert_eq!(jar.get(&h, &jar.session).as_deref(), Some("A"));
        jar.strip(&mut h);
        assert!(h.get(header::COOKIE).is_none());
    }

    /// Found by fuzzing (`fuzz/corpus/cookie`): a `Cookie` header with one non-ASCII byte was
    /// skipped whole, so the session in it was neither read (login loop) nor stripped (its id
    /// went upstream), and a non-ASCII header next to ours was dropped by `strip`.
    #[test]
    fn a_non_ascii_cookie_neither_hides_nor_leaks_ours() {
        let jar = CookieJar::new("sso_sidecar_session", false);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"pref=caf\xc3\xa9; sso_sidecar_session=SID").unwrap(),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"lang=\xe9t\xe9").unwrap(),
        );
        assert_eq!(jar.get(&h, "sso_sidecar_session").as_deref(), Some("SID"));
        jar.strip(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(
            h[header::COOKIE].as_bytes(),
            b"pref=caf\xc3\xa9; lang=\xe9t\xe9"
        );
    }

    #[test]
    fn set_cookie_has_the_safe_attributes() {
        let jar = CookieJar::new("sso_sidecar_session", false);
        let v = jar.set("sso_sidecar_session", "abc", 3600, true);
        let s = v.to_str().unwrap();
        for attr in [
            "sso_sidecar_session=abc",
            "HttpOnly",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=3600",
            "Secure",
        ] {
            assert!(s.contains(attr), "{attr} missing in {s}");
        }
        assert!(!s.contains("Domain"), "{s}");
        assert!(!jar
            .set("x", "y", 10, false)
            .to_str()
            .unwrap()
            .contains("Secure"));
        assert!(jar
            .clear("x", false)
            .to_str()
            .unwrap()
            .contains("Max-Age=0"));
    }

    #[test]
    fn own_cookies_are_read_and_stripped_others_kept() {
        let jar = CookieJar::new("sso_sidecar_session", false);
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; sso_sidecar_session=SID; b=2"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("sso_sidecar_session_state=ST; c=3"),
        );
        assert_eq!(jar.get(&h, "sso_sidecar_session").as_deref(), Some("SID"));
        assert_eq!(
            jar.get(&h, "sso_sidecar_session_state").as_deref(),
            Some("ST")
        );
        jar.strip(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2; c=3");
        let mut only = HeaderMap::new();
        only.insert(
            header::COOKIE,
            HeaderValue::from_static("sso_sidecar_session=SID"),
        );
        jar.strip(&mut only);
        assert!(only.get(header::COOKIE).is_none());
    }

    #[test]
    fn a_unicode_space_before_a_prefixed_name_is_not_our_cookie() {
        let jar = CookieJar::new("sso_sidecar_session", true);
        for space in ["\u{2000}", "\u{00a0}", "\u{3000}", "\u{85}"] {
            let planted = format!("{space}__Host-sso_sidecar_session=T");
            let mut h = HeaderMap::new();
            h.insert(
                header::COOKIE,
                HeaderValue::from_bytes(planted.as_bytes()).unwrap(),
            );
            assert_eq!(jar.get(&h, &jar.session), None, "{planted:?} alone");
            assert_eq!(jar.get(&h, &jar.state), None);
            let both = format!("{planted}; __Host-sso_sidecar_session=A; x=1");
            h.insert(
                header::COOKIE,
                HeaderValue::from_bytes(both.as_bytes()).unwrap(),
            );
            assert_eq!(
                jar.get(&h, &jar.session).as_deref(),
                Some("A"),
                "{both:?}: the real cookie is read, the planted one is not a second copy"
            );
            jar.strip(&mut h);
            assert_eq!(
                h[header::COOKIE],
                "x=1",
                "the planted cookie is stripped too"
            );
        }
    }

    #[test]
    fn reading_a_cookie_agrees_with_a_full_parse() {
        let jar = CookieJar::new("sid", false);
        for header in [
            "sid=A",
            "x=1;sid=B",
            "  sid =  C  ; sid=second",
            "s%69d=D",
            "s%69d=D; sid=D2",
            "__Host%2Dsid=D3",
            "x=%41; sid=%45",
            "sidx=1; xsid=2; sid=F",
            "sid",
            "=sid; sid=G",
            "sid=\"H\"",
            "a=1;;; sid=I=J",
            "sid= K ",
            "sid=L%20M; sid=other",
            "sid=\"N",
            "sid=; sid=P",
            " sid=Q",
            "x; sid=R",
            "sid=S T",
            "",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, HeaderValue::from_str(header).unwrap());
            // Names as sent (`s%69d` is not `sid`), values decoded.
            let all: Vec<String> = Cookie::split_parse(header)
                .zip(Cookie::split_parse_encoded(header))
                .filter_map(|(raw, decoded)| Some((raw.ok()?, decoded.ok()?)))
                .filter(|(raw, _)| raw.name() == "sid")
                .map(|(_, c)| c.value().to_owned())
                .collect();
            // Present twice = absent (cookie tossing).
            let full = (all.len() == 1).then(|| all[0].clone());
            assert_eq!(jar.get(&h, "sid"), full, "{header}");
        }
    }
}
