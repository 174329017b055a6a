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
    /// The session cookie carries `Max-Age` (else the browser keeps it until it closes).
    persistent_session: bool,
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
                persistent_session: true,
            }
        } else {
            CookieJar {
                session: session_name.to_owned(),
                state,
                legacy: None,
                persistent_session: true,
            }
        }
    }

    pub fn set(&self, name: &str, value: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
        Self::build(name, value, Some(max_age_secs), secure)
    }

    /// The same, false: the session cookie is set without `Max-Age`, a browser-session cookie.
    pub fn with_persistent_session(mut self, persistent: bool) -> Self {
        self.persistent_session = persistent;
        self
    }

    /// The session cookie with `id`, for a session `lifetime_secs` from its end; without
    /// `Max-Age` when the jar is not persistent. The store ends the session either way.
    pub fn set_session(&self, id: &str, lifetime_secs: i64, secure: bool) -> HeaderValue {
        let max_age = self.persistent_session.then_some(lifetime_secs);
        Self::build(&self.session, id, max_age, secure)
    }

    fn build(name: &str, value: &str, max_age_secs: Option<i64>, secure: bool) -> HeaderValue {
        let mut c = Cookie::build((name.to_owned(), value.to_owned()))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(secure);
        if let Some(secs) = max_age_secs {
            c = c.max_age(TimeDuration::seconds(secs.max(1)));
        }
        HeaderValue::from_str(&c.build().encoded().to_string())
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

    /// Drops the upstream's `Set-Cookie` lines that set a cookie the sidecar reads as its own
    /// (names compared as [`CookieJar::strip`] compares them): the browser takes them, since
    /// they come from the same origin (a `__Host-` prefix does not stop them), and a backend
    /// that reflects a name and value (or is made to) would otherwise plant another person's
    /// session or login state in the browser (session fixation).
    pub fn drop_own_set_cookies(&self, headers: &mut HeaderMap) {
        let own = |v: &HeaderValue| {
            let pair = v
                .as_bytes()
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default();
            // A nameless cookie (`=sso_sidecar_session=X`): the browser sends its value
            // alone, `sso_sidecar_session=X`, which reads as ours.
            let nameless = pair
                .iter()
                .position(|&b| b == b'=')
                .filter(|&i| pair[..i].trim_ascii().is_empty())
                .map(|i| &pair[i + 1..]);
            self.is_own(pair) || nameless.is_some_and(|value| self.is_own(value))
        };
        if !headers.get_all(header::SET_COOKIE).iter().any(own) {
            return;
        }
        let kept: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter(|v| !own(v))
            .cloned()
            .collect();
        headers.remove(header::SET_COOKIE);
        for v in kept {
            headers.append(header::SET_COOKIE, v);
        }
        // Once a minute at most: a backend doing it on every response must not flood the log.
        static SAID_AT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(i64::MIN);
        if crate::clock::turn_every(&SAID_AT, 60) {
            tracing::warn!(
                "the upstream set one of the sidecar's own cookies: dropped (said once a minute)"
            );
        }
    }
}

/// What a `Cookie` pair says of cookie `name`: `None` when it is another cookie's, else its
/// value as a full parse by the `cookie` crate gives it (`Some(None)`: unreadable). Pairs that
/// are not UTF-8 are other cookies'.
fn pair_value(pair: &[u8], name: &str) -> Option<Option<String>> {
    // On every request, for every cookie the browser sends: the name is compared as bytes
    // before anything else is looked at, so other cookies cost a scan for `=` and nothing more.
    let eq = pair.iter().position(|&b| b == b'=');
    let raw_name = &pair[..eq.unwrap_or(pair.len())];
    // Only the white space a `Cookie` header puts around names (RFC 6265 §5.2: space and
    // tab). `str::trim` would also take off Unicode spaces, and a name that starts with
    // U+2000 does not start with `__Host-` for the browser, which then lets a sibling
    // subdomain set it with a `Domain`: read as ours, it would plant a login state or a
    // session ("cookie chaos"). `strip` still removes such a cookie: removing more is safe.
    if trim_space_tab(raw_name) != name.as_bytes() {
        return None;
    }
    // Pairs that are not UTF-8 are other cookies', whatever their name.
    let pair = std::str::from_utf8(pair).ok()?;
    let raw_value = eq.map_or("", |i| &pair[i + 1..]);
    // Nothing to decode: the value is the trimmed text, as the full parse gives.
    Some(if eq.is_some() && !raw_value.contains('%') {
        Some(raw_value.trim().to_owned())
    } else {
        Cookie::parse_encoded(pair.trim())
            .ok()
            .map(|c| c.value().to_owned())
    })
}

/// `bytes` without the spaces and tabs around it.
fn trim_space_tab(bytes: &[u8]) -> &[u8] {
    let st = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !st(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !st(b)).map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

#[cfg(test)]
mod tests;
