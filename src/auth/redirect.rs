//! Where a user may be sent after login: the `next` parameter, sanitized against open
//! redirects (docs/openrag-backend.md#next, and the open-redirect advisories of peer proxies).
//!
//! Pure functions. A value is kept only when it is a same-site path (`/…`, not `//…` or `/\…`,
//! no control characters or whitespace in any percent-decoded layer, no scheme or host), or an
//! absolute http(s) URL whose origin is on the allow-list. Everything else becomes `/`.

use percent_encoding::percent_decode_str;

/// Longest `next` kept. The value travels in the encrypted state cookie; beyond a few KB that
/// cookie exceeds what browsers store (4 KB), they drop it, and the login cannot complete.
pub const MAX_NEXT_BYTES: usize = 2048;

/// How many layers of percent-encoding are peeled when looking for tricks (`%252F%252F` …).
const DECODE_LAYERS: usize = 4;

/// Returns a safe post-login target for `next`.
pub fn sanitize_next(next: &str, allowed_origins: &[String]) -> String {
    if next.len() > MAX_NEXT_BYTES {
        return "/".to_owned();
    }
    if is_safe_path(next) {
        return next.to_owned();
    }
    if let Ok(u) = url::Url::parse(next) {
        let origin = u.origin().ascii_serialization();
        if matches!(u.scheme(), "http" | "https")
            && u.username().is_empty()
            && u.password().is_none()
            && allowed_origins.contains(&origin)
            && no_tricks(next)
        {
            // Serialized, a URL can outgrow what was given (`é` becomes `%C3%A9`).
            let out: String = u.into();
            if out.len() <= MAX_NEXT_BYTES {
                return out;
            }
        }
    }
    "/".to_owned()
}

fn is_safe_path(next: &str) -> bool {
    let b = next.as_bytes();
    if b.first() != Some(&b'/') || matches!(b.get(1), Some(b'/') | Some(b'\\')) {
        return false;
    }
    if !no_tricks(next) {
        return false;
    }
    // Resolved against any origin, a safe path must stay on that origin.
    let base = url::Url::parse("https://sidecar.invalid/").ok();
    match base.and_then(|b| b.join(next).ok()) {
        Some(u) => u.host_str() == Some("sidecar.invalid") && u.scheme() == "https",
        None => false,
    }
}

/// False when any percent-decoded layer has a control character, whitespace, a backslash, or
/// starts like a protocol-relative URL.
fn no_tricks(value: &str) -> bool {
    let mut layer = value.to_owned();
    for _ in 0..=DECODE_LAYERS {
        if layer
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        {
            return false;
        }
        if layer.starts_with("//") || layer.starts_with("/\\") {
            return false;
        }
        let decoded = percent_decode_str(&layer).decode_utf8_lossy().into_owned();
        if decoded == layer {
            break;
        }
        layer = decoded;
    }
    true
}

/// `/auth/login?next=<path and query, every reserved character percent-encoded>`, without any
/// `token` parameter: a `/static?token=…` link opened without a session must not copy the
/// token into a URL the browser shows, keeps in its history and sends on as `Referer`.
pub fn login_location(path_and_query: &str) -> String {
    let target = without_token_param(path_and_query);
    format!(
        "/auth/login?next={}",
        percent_encoding::utf8_percent_encode(&target, STRICT)
    )
}

/// `path_and_query` with every `token` query parameter removed.
fn without_token_param(path_and_query: &str) -> std::borrow::Cow<'_, str> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.into();
    };
    let is_token = |pair: &&str| {
        let name = pair.split('=').next().unwrap_or("");
        percent_decode_str(name).decode_utf8_lossy() == "token"
    };
    if !query.split('&').any(|p| is_token(&p)) {
        return path_and_query.into();
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_token(p)).collect();
    if kept.is_empty() {
        path.to_owned().into()
    } else {
        format!("{path}?{}", kept.join("&")).into()
    }
}

/// Everything but RFC 3986 unreserved characters is encoded, `/` included.
const STRICT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_with_queries_are_kept() {
        for ok in [
            "/",
            "/dashboard?foo=bar",
            "/static/app.js",
            "/a/b/../c",
            "/x?next=//evil.com",
        ] {
            // The last one is a query value, not a target: it stays on-site.
            assert_eq!(sanitize_next(ok, &[]), ok);
        }
    }

    #[test]
    fn the_reference_bad_inputs_fall_back_to_root() {
        for bad in [
            "",
            "//evil.com/phish",
            "/\\evil.com/phish",
            "/\\\\evil.com",
            "/path\r\nLocation: http://evil",
            "/path\n\nSet-Cookie: stolen=1",
            "/path\0admin",
            "//evil.com",
            "http://evil.com",
            "/%2F/evil.com",
            "/%252F%252Fevil.com",
            "/%5Cevil.com",
            "/%09/evil.com",
        ] {
            assert_eq!(sanitize_next(bad, &[]), "/", "{bad:?}");
        }
    }

    #[test]
    fn a_token_never_travels_in_next() {
        assert_eq!(
            login_location("/static/a.js?v=1&token=or-abc"),
            "/auth/login?next=%2Fstatic%2Fa.js%3Fv%3D1"
        );
        assert_eq!(
            login_location("/static/?t%6Fken=or-abc"),
            "/auth/login?next=%2Fstatic%2F"
        );
        assert_eq!(
            login_location("/static?tokens=1"),
            "/auth/login?next=%2Fstatic%3Ftokens%3D1"
        );
    }

    #[test]
    fn an_overlong_next_falls_back_to_root() {
        let long = format!("/{}", "a".repeat(MAX_NEXT_BYTES));
        assert_eq!(sanitize_next(&long, &[]), "/");
        let fits = format!("/{}", "a".repeat(MAX_NEXT_BYTES - 1));
        assert_eq!(sanitize_next(&fits, &[]), fits);
    }

    /// Found by fuzzing (`fuzz/corpus/next`): an allowed URL within the limit outgrew it once
    /// serialized, each non-ASCII character percent-encoded.
    #[test]
    fn an_allowed_url_longer_once_serialized_falls_back_to_root() {
        let allowed = vec!["https://ui.example.com".to_string()];
        let grows = format!("https://ui.example.com/{}", "\u{e9}".repeat(1000));
        assert!(grows.len() <= MAX_NEXT_BYTES);
        assert_eq!(sanitize_next(&grows, &allowed), "/");
        assert_eq!(
            sanitize_next("https://ui.example.com/caf\u{e9}", &allowed),
            "https://ui.example.com/caf%C3%A9"
        );
    }

    #[test]
    fn allow_listed_origins_are_accepted_exactly() {
        let allowed = vec!["https://ui.example.com".to_string()];
        assert_eq!(
            sanitize_next("https://ui.example.com/x?y=1", &allowed),
            "https://ui.example.com/x?y=1"
        );
        assert_eq!(
            sanitize_next("https://ui.example.com.evil.com/", &allowed),
            "/"
        );
        assert_eq!(sanitize_next("https://user@ui.example.com/", &allowed), "/");
        assert_eq!(
            sanitize_next("http://ui.example.com/", &allowed),
            "/",
            "scheme is part of the origin"
        );
    }

    /// ≥200 open-redirect payloads: every prefix trick × every target, raw, percent-encoded and
    /// double-encoded. Each must resolve, as a browser would resolve the `Location`, on-site.
    #[test]
    fn the_open_redirect_corpus_always_ends_on_site() {
        let prefixes = [
            "//",
            "///",
            "////",
            "\\\\",
            "/\\",
            "\\/",
            "/\\/",
            "/%2F",
            "/%2f/",
            "%2F%2F",
            "/%5C",
            "%5C%5C",
            "/%09/",
            "/\t/",
            "/\n/",
            "\r\n//",
            " //",
            "\t//",
            "/%0a/",
            "/%0d/",
            "/%00/",
            "http://",
            "https://",
            "HtTpS://",
            "http:/",
            "https:",
            "http:\\\\",
            "javascript:alert(1)//",
            "data:text/html,",
            "//user:pass@",
            "https://good.example@",
            "/%252F%252F",
            "/%25252F%25252F",
            "//%09",
            "/.%2F/",
            "\u{3000}//",
            "\u{00a0}//",
        ];
        let targets = [
            "evil.com",
            "evil.com/phish?x=1",
            "127.0.0.1:8080",
            "[::1]",
            "xn--80ak6aa92e.com",
            "\u{0435}vil.com",
        ];
        let mut corpus = Vec::new();
        for p in prefixes {
            for t in targets {
                let raw = format!("{p}{t}");
                corpus.push(raw.clone());
                let enc =
                    percent_encoding::utf8_percent_encode(&raw, percent_encoding::NON_ALPHANUMERIC)
                        .to_string();
                corpus.push(enc.clone());
                corpus.push(
                    percent_encoding::utf8_percent_encode(&enc, percent_encoding::NON_ALPHANUMERIC)
                        .to_string(),
                );
            }
        }
        let corpus: Vec<String> = corpus
            .into_iter()
            .map(|c| {
                c.replace("\\t", "\t")
                    .replace("\\n", "\n")
                    .replace("\\r", "\r")
            })
            .collect();
        assert!(corpus.len() >= 200, "{}", corpus.len());
        let base = url::Url::parse("https://rp.example/").unwrap();
        let allowed = vec!["https://ui.example.com".to_string()];
        for payload in &corpus {
            let out = sanitize_next(payload, &allowed);
            let landed = base.join(&out).unwrap();
            assert_eq!(
                landed.host_str(),
                Some("rp.example"),
                "{payload:?} escaped to {out:?}"
            );
            assert!(
                out.starts_with('/') && !out.starts_with("//") && !out.starts_with("/\\"),
                "{payload:?} gave {out:?}"
            );
        }
    }

    #[test]
    fn login_location_encodes_every_reserved_character() {
        assert_eq!(
            login_location("/static/a b?x=1&y=/z"),
            "/auth/login?next=%2Fstatic%2Fa%20b%3Fx%3D1%26y%3D%2Fz"
        );
    }
}
