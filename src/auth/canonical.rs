//! One spelling per path, before anything decides on it: percent-encoded unreserved characters
//! (`%61` for `a`, RFC 3986 §2.3) are decoded and runs of slashes merged, and the request goes
//! upstream in that form. Every path decision (the sidecar's own routes, public prefixes, the
//! `[[authz.rules]]`, the OpenRag bridge's guards) compares raw bytes, while the backend
//! (uvicorn, nginx, Spring…) decodes and often merges: without this, `/%61dmin/users` or
//! `//admin/users` would pass a rule written for `/admin/*` and still reach `/admin/users`.
//! Decoding only what is unreserved changes no meaning (RFC 3986 says such URIs are
//! equivalent); escapes of reserved or ambiguous characters are left for
//! [`gate::ambiguous_path`](super::gate::ambiguous_path) to judge. A `%` that starts no escape
//! is refused: decoding around it could make a new one (`/%6%31dmin` would become `/%61dmin`,
//! which the backend decodes once more). Merging slashes is nginx's default (`merge_slashes`)
//! and deliberate here: a path that embeds a URL (`/fetch/https://x`) loses a slash. The query
//! is not touched. Knows nothing of sessions or the upstream.

use http::uri::{PathAndQuery, Uri};

/// Why a path has no canonical form.
#[derive(Debug)]
pub enum Malformed {
    /// A `%` not followed by two hexadecimal digits.
    Escape,
    /// The rebuilt target is not a valid URI (decoding unreserved characters cannot cause it).
    Uri(http::Error),
}

/// The request target with its path in canonical form, or `None` when it already is (the
/// common case, found with one scan and no allocation).
pub fn canonical_uri(uri: &Uri) -> Result<Option<Uri>, Malformed> {
    let path = uri.path();
    if stray_percent(path.as_bytes()) {
        return Err(Malformed::Escape);
    }
    let Some(canonical) = canonical_path(path) else {
        return Ok(None);
    };
    let target = match uri.query() {
        Some(q) => format!("{canonical}?{q}"),
        None => canonical,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(target).map_err(|e| Malformed::Uri(e.into()))?);
    Ok(Some(
        Uri::from_parts(parts).map_err(|e| Malformed::Uri(e.into()))?,
    ))
}

/// Whether some `%` is not followed by two hexadecimal digits.
fn stray_percent(b: &[u8]) -> bool {
    b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// `path` with unreserved escapes decoded and slashes merged; `None` when nothing changes.
pub fn canonical_path(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let changes = b.windows(2).any(|w| w == b"//")
        || b.iter()
            .enumerate()
            .any(|(i, &c)| c == b'%' && unreserved_escape(&b[i + 1..]).is_some());
    if !changes {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if let Some(d) = unreserved_escape(&b[i + 1..]) {
                out.push(d);
                i += 3;
                continue;
            }
        }
        if !(c == b'/' && out.last() == Some(&b'/')) {
            out.push(c);
        }
        i += 1;
    }
    // Only ASCII was decoded and only ASCII removed: still the valid UTF-8 it was.
    String::from_utf8(out).ok()
}

/// The character a `%XY` escape (given the bytes after `%`) stands for, if it is unreserved:
/// ALPHA, DIGIT, `-`, `.`, `_`, `~`.
fn unreserved_escape(rest: &[u8]) -> Option<u8> {
    let hex = |c: u8| (c as char).to_digit(16);
    let (hi, lo) = (hex(*rest.first()?)?, hex(*rest.get(1)?)?);
    let c = u8::try_from(hi * 16 + lo).ok()?;
    (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_escapes_are_decoded_and_slashes_merged() {
        for (raw, want) in [
            ("/%61dmin/users", "/admin/users"),
            ("/%41DMIN", "/ADMIN"),
            ("/users/%31/regenerate_toke%6E", "/users/1/regenerate_token"),
            ("/auth/%63hainlit-session", "/auth/chainlit-session"),
            ("//admin/users", "/admin/users"),
            ("/admin///users//", "/admin/users/"),
            ("/a%2db%5fc%7ed%2Ee", "/a-b_c~d.e"),
            // A decoded dot segment is left for the ambiguity check to refuse.
            ("/%2e%2e/admin", "/../admin"),
        ] {
            assert_eq!(canonical_path(raw).as_deref(), Some(want), "{raw}");
        }
    }

    #[test]
    fn a_percent_that_starts_no_escape_is_refused() {
        for bad in [
            "/%6%31dmin/users",
            "/%%36%31dmin",
            "/a%",
            "/a%6",
            "/a%zz",
            "/auth/%6%33hainlit-session",
        ] {
            let u: Uri = bad.parse().unwrap();
            assert!(matches!(canonical_uri(&u), Err(Malformed::Escape)), "{bad}");
        }
        let fine: Uri = "/a%20b/%2561?q=%".parse().unwrap();
        assert!(
            canonical_uri(&fine).unwrap().is_none(),
            "the query is not judged"
        );
    }

    #[test]
    fn reserved_and_malformed_escapes_stay_as_they_are() {
        for same in [
            "/",
            "/admin/users",
            "/a%2fb",
            "/a%20b",
            "/a%25b",
            "/%2561dmin",
            "/a%",
            "/a%6",
            "/a%zz",
            "/caf%C3%A9",
        ] {
            assert_eq!(canonical_path(same), None, "{same}");
        }
        assert_eq!(
            canonical_path("/%2561%61").as_deref(),
            Some("/%2561a"),
            "only one layer is decoded"
        );
    }

    #[test]
    fn the_query_is_kept_and_absolute_targets_keep_their_authority() {
        let u: Uri = "/%61pi//x?next=%61//b".parse().unwrap();
        let c = canonical_uri(&u).unwrap().unwrap();
        assert_eq!(c.to_string(), "/api/x?next=%61//b");
        let u: Uri = "http://h.example/%61".parse().unwrap();
        assert_eq!(
            canonical_uri(&u).unwrap().unwrap().to_string(),
            "http://h.example/a"
        );
        let plain: Uri = "/api/x?q=%61".parse().unwrap();
        assert!(canonical_uri(&plain).unwrap().is_none());
    }
}
