//! The `next` and `path` targets: the post-login redirect target and the path checks in front of the upstream.
//! Part of the fuzz targets (`super`); never called by the sidecar.

use crate::auth::{gate, redirect};
use http::header::HeaderValue;
use percent_encoding::percent_decode;

const UI_ORIGIN: &str = "https://ui.example.com";

/// `sanitize_next` with one allowed origin: the result is `/`, a path that cannot leave the site
/// (not `//…` or `/\…`, and it stays on-site when resolved, raw or decoded once or twice), or a
/// URL on the allowed origin; it is at most 2048 bytes, a valid `Location` value, and sanitizing
/// it again returns it unchanged.
pub fn next(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    let allowed = vec![UI_ORIGIN.to_owned()];
    let out = redirect::sanitize_next(&input, &allowed);
    assert!(out.len() <= 2048, "{} bytes kept", out.len());
    assert!(
        HeaderValue::from_str(&out).is_ok(),
        "{input:?} gave {out:?}, not a valid Location"
    );
    assert_eq!(
        redirect::sanitize_next(&out, &allowed),
        out,
        "not idempotent for {input:?}"
    );
    let Ok(base) = url::Url::parse("https://rp.example/") else {
        return;
    };
    if out.starts_with('/') {
        assert!(
            !out.starts_with("//") && !out.starts_with("/\\"),
            "{input:?} gave {out:?}"
        );
        let once: Vec<u8> = percent_decode(out.as_bytes()).collect();
        let twice: Vec<u8> = percent_decode(&once).collect();
        for layer in [out.as_bytes(), &once, &twice] {
            let layer = String::from_utf8_lossy(layer);
            if let Ok(landed) = base.join(&layer) {
                assert_eq!(
                    landed.host_str(),
                    Some("rp.example"),
                    "{input:?} gave {out:?}, which lands on {landed}"
                );
            }
        }
    } else {
        let u = url::Url::parse(&out);
        assert!(
            out.starts_with(&format!("{UI_ORIGIN}/"))
                && u.is_ok_and(|u| u.origin().ascii_serialization() == UI_ORIGIN),
            "{input:?} gave {out:?}, neither a path nor the allowed origin"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// path

/// `ambiguous_path` on the path of a request target: when it says "not ambiguous", neither the
/// raw path nor the path percent-decoded once or twice has a `.` or `..` segment (`;`-parameters
/// removed from each segment), a backslash, or a `/` that decoding produced. A path without any
/// `%` is ambiguous exactly when the raw check says so (no false alarm on plain paths).
pub fn path(data: &[u8]) {
    let Ok(pq) = http::uri::PathAndQuery::try_from(data) else {
        return;
    };
    let path = pq.path();
    let ambiguous = gate::ambiguous_path(path);
    let raw = path.as_bytes();
    let once: Vec<u8> = percent_decode(raw).collect();
    let twice: Vec<u8> = percent_decode(&once).collect();
    let slashes = |l: &[u8]| l.iter().filter(|&&b| b == b'/').count();
    let reference = [raw, &once, &twice].iter().any(|l| layer_ambiguous(l))
        || slashes(&once) != slashes(raw)
        || slashes(&twice) != slashes(&once);
    if reference {
        assert!(ambiguous, "{path:?} passes as unambiguous");
    }
    if !path.contains('%') {
        assert_eq!(ambiguous, layer_ambiguous(raw), "{path:?}");
    }
}

/// A backslash, or a segment that is `.` or `..` once its `;`-parameters are dropped.
fn layer_ambiguous(layer: &[u8]) -> bool {
    layer.contains(&b'\\')
        || layer.split(|&b| b == b'/').any(|seg| {
            let seg = seg.split(|&b| b == b';').next().unwrap_or(seg);
            seg == b"." || seg == b".."
        })
}
