//! Fuzz targets: one plain function per target, each taking the fuzzer's bytes, calling the real
//! code and asserting what must hold for every input — not only that nothing panics.
//!
//! Each invariant is checked against a small reference written here, independently of the code
//! under test. The cargo-fuzz crate in `fuzz/` wraps each function in a `fuzz_target!`
//! (`scripts/fuzz-check` builds them and replays the corpus), and the unit test at the bottom
//! replays the committed corpus `fuzz/corpus/<target>/` on the stable toolchain. Never called
//! by the sidecar itself; hidden from the docs.

use crate::auth::{backchannel, cookies::CookieJar, gate, id_token, jwt, redirect};
use crate::config::{self, sources};
use crate::proxy::headers::{self as proxy_headers, Peer};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use percent_encoding::percent_decode;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A fuzz target: the fuzzer's bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory and its `fuzz_targets/<name>.rs`.
pub const TARGETS: &[(&str, Target)] = &[
    ("cookie", cookie),
    ("next", next),
    ("path", path),
    ("jwt", jwt),
    ("dotenv", dotenv),
    ("header_fold", header_fold),
];

// ---------------------------------------------------------------------------------------------
// cookie

/// The session cookie name the fuzzed jar uses (the default setting).
const SESSION: &str = "sso_sidecar_session";

/// `Cookie` headers, one per `\n`-separated line of `data[1..]`; bit 0 of `data[0]` turns the
/// `__Host-` prefix on. `get` must agree with a full parse by the `cookie` crate (a name present
/// more than once is absent); after `strip` none of the jar's names (prefixed or not, raw or
/// percent-encoded) is left in any `Cookie` header, and every other pair is still there, in
/// order, byte for byte.
pub fn cookie(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let host_prefix = flags & 1 == 1;
    let jar = CookieJar::new(SESSION, host_prefix);
    let mut own = vec![jar.session.clone(), jar.state.clone()];
    if host_prefix {
        own.push(SESSION.to_owned());
        own.push(format!("{SESSION}_state"));
    }
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(header::COOKIE, v);
        }
    }

    for name in [&jar.session, &jar.state] {
        assert_eq!(
            jar.get(&headers, name),
            reference_get(&headers, name),
            "get({name:?}) disagrees with a full parse of {headers:?}"
        );
    }

    let before: Vec<Vec<u8>> = cookie_pairs(&headers)
        .into_iter()
        .filter(|p| !own.contains(&pair_name(p)))
        .collect();
    let mut stripped = headers.clone();
    jar.strip(&mut stripped);
    for name in [&jar.session, &jar.state] {
        assert_eq!(
            jar.get(&stripped, name),
            None,
            "{name:?} readable after strip"
        );
    }
    let after = cookie_pairs(&stripped);
    for p in &after {
        assert!(
            !own.contains(&pair_name(p)),
            "own cookie {:?} left after strip of {headers:?}",
            String::from_utf8_lossy(p)
        );
    }
    assert_eq!(
        after, before,
        "other cookies not kept byte for byte: {headers:?} became {stripped:?}"
    );
}

/// Every non-empty `;`-separated pair of every `Cookie` header, trimmed, as bytes.
fn cookie_pairs(headers: &HeaderMap) -> Vec<Vec<u8>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// A pair's name as a server that trims it (Unicode white space, as the `cookie` crate does)
/// and percent-decodes it reads it.
fn pair_name(pair: &[u8]) -> String {
    let raw = pair.split(|&b| b == b'=').next().unwrap_or_default();
    let raw = String::from_utf8_lossy(raw);
    percent_decode(raw.trim().as_bytes())
        .decode_utf8_lossy()
        .into_owned()
}

/// The value of `name` by the `cookie` crate's full parse of each pair that is text: `Some` only
/// when exactly one pair has that name, as sent.
fn reference_get(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found: Vec<String> = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        for pair in v.as_bytes().split(|&b| b == b';') {
            let Ok(pair) = std::str::from_utf8(pair) else {
                continue;
            };
            // The name as sent (never decoded: see `CookieJar::get`), the value decoded.
            let raw = cookie::Cookie::parse(pair.trim());
            if let (Ok(raw), Ok(c)) = (raw, cookie::Cookie::parse_encoded(pair.trim())) {
                if raw.name() == name {
                    found.push(c.value().to_owned());
                }
            }
        }
    }
    (found.len() == 1).then(|| found.remove(0))
}

// ---------------------------------------------------------------------------------------------
// next

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

// ---------------------------------------------------------------------------------------------
// jwt

const ISSUER: &str = "https://idp.example.com/realms/openrag";
const CLIENT_ID: &str = "openrag";
const NONCE: &str = "n-0S6_WzA2Mj";
/// "Now" for the claim checks: 2023-11-14T22:13:20Z.
const NOW: i64 = 1_700_000_000;
const SKEW: i64 = crate::auth::oidc::CLOCK_SKEW_SECS;
const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Seed of the one Ed25519 key whose tokens may verify (signatures are deterministic).
const ED_SEED: [u8; 32] = *b"sso-sidecar fuzz key, not secret";

/// A compact JWS: `data` as text (lossy, as a form or JSON string would give it), or, when it
/// starts with `!`, assembled from `!header\npayload\nsignature` (each base64url-encoded here,
/// so that mutations reach the JSON; a missing signature or `sign` means the fixed Ed25519 key's
/// signature). With no keys it never verifies, and `none`/HMAC algorithms are refused before any
/// key is looked at; with a fixed JWKS (an RSA and a P-256 key whose private halves were thrown
/// away, and one Ed25519 key) it verifies exactly when it carries the Ed25519 key's own
/// signature of its first two segments. `header` agrees with a plain JSON decode of the first
/// segment, which must be an object. The payload, verified or not, goes through the ID-token and
/// logout-token claim rules, whose acceptances are re-checked here.
pub fn jwt(data: &[u8]) {
    let token = match data.strip_prefix(b"!") {
        Some(parts) => assemble_jws(parts),
        None => String::from_utf8_lossy(data).into_owned(),
    };
    let token = token.as_str();
    let segments: Vec<&str> = token.split('.').collect();
    let header_json = segment_json(segments[0]);

    match jwt::header(token) {
        Ok(h) => {
            let Some(Value::Object(m)) = &header_json else {
                panic!("header() accepted {:?}, not a JSON object", segments[0]);
            };
            assert_eq!(m.get("alg").and_then(Value::as_str), Some(h.alg.as_str()));
            assert_eq!(m.get("kid").and_then(Value::as_str), h.kid.as_deref());
        }
        Err(e) => assert_eq!(e, jwt::JwtError::Malformed),
    }

    let header_alg = match &header_json {
        Some(Value::Object(m)) => m.get("alg").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    let refused_alg = header_alg
        .as_deref()
        .is_some_and(|a| a == "none" || a.to_ascii_uppercase().starts_with("HS"));

    let empty = jwt::verify(token, &jwt::Jwks::new(Vec::new()));
    match &empty {
        Ok(_) => panic!("{token:?} verified with no keys"),
        Err(e) if segments.len() != 3 => assert_eq!(*e, jwt::JwtError::Malformed, "{token:?}"),
        Err(e) if refused_alg => assert!(
            matches!(
                e,
                jwt::JwtError::AlgorithmNotAllowed(_) | jwt::JwtError::Malformed
            ),
            "{token:?}: {e:?}"
        ),
        Err(_) => {}
    }

    let fixed = fixed_jwks();
    let verified = jwt::verify(token, &fixed.jwks);
    let genuine = segments.len() == 3 && ed_signed(&segments, &fixed.ed);
    match &verified {
        Ok(v) => {
            assert!(genuine, "{token:?} verified without the key's signature");
            assert_eq!(v.header.alg, "EdDSA");
            assert_eq!(
                Some(Value::Object(v.claims.clone())),
                segment_json(segments[1])
            );
        }
        Err(e) => assert!(
            !genuine || matches!(e, jwt::JwtError::Malformed),
            "{token:?}, signed by the key, refused: {e:?}"
        ),
    }
    if refused_alg {
        assert!(verified.is_err());
    }

    if let Some(Value::Object(c)) = segments.get(1).and_then(|s| segment_json(s)) {
        id_token_claims(&c);
        logout_token_claims(&c);
    }
    if let Some(alg) = &header_alg {
        let h = jwt::half_hash(alg, token);
        let len = match alg.as_str() {
            "RS256" | "PS256" | "ES256" => Some(22),
            "RS384" | "PS384" | "ES384" => Some(32),
            "RS512" | "PS512" | "EdDSA" => Some(43),
            _ => None,
        };
        assert_eq!(h.map(|h| h.len()), len, "half_hash({alg:?})");
    }
}

/// `header\npayload\nsignature` as a compact JWS, signed with the fixed Ed25519 key when the
/// signature is missing or `sign`.
fn assemble_jws(parts: &[u8]) -> String {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut parts = parts.splitn(3, |&b| b == b'\n');
    let header = parts.next().unwrap_or_default();
    let payload = parts.next().unwrap_or_default();
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = match parts.next() {
        None | Some(b"sign") => b64(fixed_jwks().ed.sign(input.as_bytes()).as_ref()),
        Some(sig) => b64(sig),
    };
    format!("{input}.{signature}")
}

/// A base64url segment decoded as JSON, if it is that.
fn segment_json(s: &str) -> Option<Value> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

struct Fixed {
    jwks: jwt::Jwks,
    rp: id_token::RelyingParty,
    ed: ring::signature::Ed25519KeyPair,
}

fn fixed_jwks() -> &'static Fixed {
    static FIXED: std::sync::OnceLock<Option<Fixed>> = std::sync::OnceLock::new();
    let fixed = FIXED.get_or_init(|| {
        use base64::Engine;
        use ring::signature::KeyPair;
        let ed = ring::signature::Ed25519KeyPair::from_seed_unchecked(&ED_SEED).ok()?;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ed.public_key());
        let jwks = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "use": "sig", "e": "AQAB",
             "n": "yhePCZwcDqmGB0-b38ui09PubXEsQifGrpu6a27r_zxvGakROBDhsQG5z9I7YhKJNf5wZzZcLDClXeFD21WVXdjAb1BUp-mm2WaLu65d4K7L5Q8x0kg5nTff-Aa8Al1UVDs5ZkpowWlF7Ui2R11SkMPceZjngBktBR5f0nRVQEMVv_5whjpfxoAHHN-7aWAjT0V--qQOUiNP_V96iZeIhuTt4BuZvFHoRCkIhR3ztQ2MG4-vgVnvZPjpEsuc3EuHt2oIfhaCjrtm1nGxTWmlHShKtRbPO4Vt3MldrU4PK1ZGiXw-5GhquStR-ELMvxTe9DCKcKka4eIT5WBI1lNmwQ"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "alg": "ES256",
             "x": "QObaIP7Yh5URDdP0hxXvuzb40B2tPOnhW7A4Lj1Anp4",
             "y": "U7bRDpf05ibHZ2gulN0OOKzpwyE8qkjgOiRuuRW7w_0"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": x},
        ]}))
        .ok()?;
        let rp = id_token::relying_party(ISSUER, CLIENT_ID, serde_json::from_value(
            serde_json::to_value(&jwks).ok()?,
        ).ok()?)?;
        Some(Fixed { jwks, rp, ed })
    });
    match fixed {
        Some(f) => f,
        None => panic!("the fixed JWKS does not build"),
    }
}

/// Whether the token is `EdDSA` (kid absent or `ed`) with the fixed Ed25519 key's signature of
/// its signing input and a JSON-object payload: exactly what `verify` must accept.
fn ed_signed(segments: &[&str], ed: &ring::signature::Ed25519KeyPair) -> bool {
    use base64::Engine;
    let Some(Value::Object(h)) = segment_json(segments[0]) else {
        return false;
    };
    let kid_ok = match h.get("kid") {
        None | Some(Value::Null) => true,
        Some(k) => k.as_str() == Some("ed"),
    };
    let typ_ok = matches!(
        h.get("typ"),
        None | Some(Value::Null) | Some(Value::String(_))
    );
    if h.get("alg").and_then(Value::as_str) != Some("EdDSA") || !kid_ok || !typ_ok {
        return false;
    }
    if !matches!(segment_json(segments[1]), Some(Value::Object(_))) {
        return false;
    }
    let message = format!("{}.{}", segments[0], segments[1]);
    let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(ed.sign(message.as_bytes()).as_ref());
    segments[2] == expected
}

/// An ID token with these claims, genuinely signed, accepted by the `openidconnect`-based
/// verification (with and without a nonce expected) names us, is current, and carries the
/// nonce when one is expected.
fn id_token_claims(c: &Map<String, Value>) {
    use base64::Engine;
    let fixed = fixed_jwks();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"EdDSA","kid":"ed"}"#),
        b64(Value::Object(c.clone()).to_string().as_bytes())
    );
    let token = format!("{input}.{}", b64(fixed.ed.sign(input.as_bytes()).as_ref()));
    for nonce in [Some(NONCE), None] {
        if id_token::verify_id_token(&fixed.rp, &token, nonce, None, NOW).is_err() {
            continue;
        }
        assert_eq!(c.get("iss").and_then(Value::as_str), Some(ISSUER));
        let audiences: Vec<&str> = match c.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            other => panic!("accepted with aud {other:?}"),
        };
        assert!(audiences.contains(&CLIENT_ID), "aud {audiences:?}");
        let azp = c.get("azp").and_then(Value::as_str);
        if audiences.len() > 1 || azp.is_some() {
            assert_eq!(azp, Some(CLIENT_ID), "azp");
        }
        let exp = c.get("exp").and_then(Value::as_i64);
        assert!(
            exp.is_some_and(|e| i128::from(e) + i128::from(SKEW) >= i128::from(NOW)),
            "accepted with exp {exp:?}"
        );
        let iat = c.get("iat").and_then(Value::as_i64);
        assert!(
            iat.is_some_and(|i| i128::from(i) - i128::from(SKEW) <= i128::from(NOW)),
            "accepted with iat {iat:?}"
        );
        if let Some(n) = nonce {
            assert_eq!(c.get("nonce").and_then(Value::as_str), Some(n));
        }
    }
}

/// An accepted logout token names us, is recent, has a `jti` and the logout event, no nonce,
/// and the `sid`/`sub` returned are its own.
fn logout_token_claims(c: &Map<String, Value>) {
    let Ok((sid, sub, jti)) = backchannel::check_claims(c, ISSUER, CLIENT_ID, NOW) else {
        return;
    };
    assert_eq!(c.get("iss").and_then(Value::as_str), Some(ISSUER));
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == CLIENT_ID,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(CLIENT_ID)),
        _ => false,
    };
    assert!(aud_ok, "aud {:?}", c.get("aud"));
    let iat = c.get("iat").and_then(Value::as_i64);
    assert!(
        iat.is_some_and(|i| (NOW - backchannel::MAX_AGE_SECS..=NOW + SKEW).contains(&i)),
        "iat {iat:?}"
    );
    if let Some(exp) = c.get("exp") {
        assert!(
            exp.as_i64()
                .is_some_and(|e| i128::from(e) + i128::from(SKEW) >= i128::from(NOW)),
            "exp {exp:?}"
        );
    }
    assert!(!jti.is_empty());
    assert_eq!(c.get("jti").and_then(Value::as_str), Some(jti.as_str()));
    assert!(matches!(
        c.get("events").and_then(|e| e.get(LOGOUT_EVENT)),
        Some(Value::Object(_))
    ));
    assert!(!c.contains_key("nonce"));
    assert!(sid.is_some() || sub.is_some());
    assert_eq!(sid.as_deref(), c.get("sid").and_then(Value::as_str), "sid");
    assert_eq!(sub.as_deref(), c.get("sub").and_then(Value::as_str), "sub");
}

// ---------------------------------------------------------------------------------------------
// dotenv

/// `data` up to its first NUL byte is a `.env` file, the rest a TOML configuration file.
/// `read_dotenv` returns pairs whose names are valid variable names, or an error; the TOML is
/// extracted into `Settings` and validated, and `validate` fails exactly when it reports a
/// problem; the whole `config::load` over both files reports at least one problem when it fails
/// and returns a configuration whose checked invariants hold when it succeeds.
pub fn dotenv(data: &[u8]) {
    use figment::providers::{Format, Serialized, Toml};

    let (env_text, toml_text) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Some(dir) = ScratchDir::new() else {
        return;
    };
    let env_file = dir.0.join("fuzz.env");
    let toml_file = dir.0.join("fuzz.toml");
    if std::fs::write(&env_file, env_text).is_err() {
        return;
    }

    let pairs = sources::read_dotenv(&env_file);
    if let Ok(pairs) = &pairs {
        for (k, _) in pairs {
            let mut chars = k.chars();
            assert!(
                chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'),
                "variable name {k:?}"
            );
        }
    }

    let toml_str = toml_text.map(String::from_utf8_lossy);
    let mut reads_files = false;
    if let Some(t) = &toml_str {
        let extracted: Result<config::Settings, _> =
            figment::Figment::from(Serialized::defaults(config::Settings::default()))
                .merge(Toml::string(t))
                .extract();
        if let Ok(settings) = extracted {
            // `openrag.token_file` is read; the fuzzer could name /dev/zero.
            reads_files = settings.openrag.token_file.is_some();
            if !reads_files {
                let mut problems = Vec::new();
                let validated = settings.validate(&mut problems).is_some();
                assert_eq!(
                    validated,
                    problems.is_empty(),
                    "validate() = {validated} with problems {problems:?}"
                );
            }
        }
    }

    // `*_FILE` variables name files that `load` reads: not for the fuzzer to choose.
    let Ok(pairs) = pairs else {
        return;
    };
    if reads_files
        || pairs
            .iter()
            .any(|(k, _)| k.to_ascii_lowercase().ends_with("_file"))
    {
        return;
    }
    if let Some(t) = &toml_str {
        if std::fs::write(&toml_file, t.as_bytes()).is_err() {
            return;
        }
    }
    let inputs = config::Inputs {
        config_file: toml_str.is_some().then(|| toml_file.clone()),
        env: vec![(
            "SSO_SIDECAR_ENV_FILE".to_owned(),
            env_file.to_string_lossy().into_owned(),
        )],
        unreadable: Vec::new(),
        cwd: dir.0.clone(),
    };
    match config::load(inputs) {
        Err(e) => assert!(!e.0.is_empty(), "load failed without naming a problem"),
        Ok(c) => {
            let vars: BTreeMap<&str, &str> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert!(c.workers >= 1);
            assert!(matches!(c.proxy.upstream.scheme(), "http" | "https"));
            assert!(c.proxy.max_request_header_bytes >= 8192);
            let name = &c.auth.session_cookie_name;
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "session cookie name {name:?}"
            );
            let mode = vars.get("AUTH_MODE").map(|m| m.trim().to_ascii_lowercase());
            assert_eq!(
                c.auth_mode() == config::AuthMode::Oidc,
                mode.as_deref() == Some("oidc")
            );
            if let Some(o) = &c.openrag_env.oidc {
                assert_eq!(o.redirect_uri.path(), "/auth/callback");
                assert!(o.scopes.split_whitespace().any(|s| s == "openid"));
                assert!(!o.issuer.is_empty() && !o.client_id.is_empty());
            } else {
                assert_eq!(c.auth_mode(), config::AuthMode::Token);
            }
        }
    }
}

/// A directory of this thread's own, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Option<Self> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sso-sidecar-fuzz-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        Some(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// header_fold

/// The forwarding headers only a trusted proxy may set, folded.
const FORWARDING: [&str; 6] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "forwarded",
];
/// Hop-by-hop headers: RFC 9110 §7.6.1, the legacy ones, and h2c's `HTTP2-Settings`.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// The first `\n`-separated line is a header name to remove, the others `name:value` headers.
/// `folded_name` is idempotent and `remove_folded` removes exactly the headers that fold to it;
/// `remove_hop_by_hop` removes exactly the hop-by-hop headers and those named in `Connection`;
/// `set_forwarded` from an untrusted peer leaves no forwarding header in any spelling but ours.
pub fn header_fold(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let target = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }

    let folded = proxy_headers::folded_name(&target);
    assert_eq!(proxy_headers::folded_name(&folded), folded);
    assert_eq!(folded.chars().count(), target.chars().count());
    let mut h = headers.clone();
    proxy_headers::remove_folded(&mut h, &[folded.as_str()]);
    assert_eq!(
        h,
        keep(&headers, |k| proxy_headers::folded_name(k.as_str())
            != folded),
        "remove_folded({folded:?}) on {headers:?}"
    );

    let mut h = headers.clone();
    proxy_headers::remove_hop_by_hop(&mut h);
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.eq_ignore_ascii_case(b"close"))
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect();
    assert_eq!(
        h,
        keep(&headers, |k| !HOP_BY_HOP.contains(&k.as_str())
            && !named.contains(k)),
        "remove_hop_by_hop on {headers:?}"
    );

    let peer = Peer {
        ip: std::net::IpAddr::from([198, 51, 100, 7]),
        trusted: false,
        scheme: crate::tls::Scheme::Https,
    };
    let host = headers.get(header::HOST).cloned();
    let mut h = headers.clone();
    proxy_headers::set_forwarded(&mut h, peer, host.clone());
    let mut expected = keep(&headers, |k| {
        !FORWARDING.contains(&proxy_headers::folded_name(k.as_str()).as_str())
    });
    expected.insert(
        proxy_headers::X_FORWARDED_FOR,
        HeaderValue::from_static("198.51.100.7"),
    );
    expected.insert(
        proxy_headers::X_FORWARDED_PROTO,
        HeaderValue::from_static("https"),
    );
    if let Some(host) = host {
        expected.insert(proxy_headers::X_FORWARDED_HOST, host);
    }
    assert_eq!(h, expected, "set_forwarded(untrusted) on {headers:?}");

    let id = proxy_headers::request_id(&headers);
    let b = id.as_bytes();
    assert!(!b.is_empty() && b.len() <= 128 && b.iter().all(u8::is_ascii_graphic));
}

/// The headers of `h` whose name passes `f`, values and order kept.
fn keep(h: &HeaderMap, f: impl Fn(&HeaderName) -> bool) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in h {
        if f(k) {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every file of the committed corpus, through its target, on the stable toolchain; every
    /// failing file is named.
    #[test]
    fn the_committed_fuzz_corpus_replays() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut failures = Vec::new();
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("corpus directory {}: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_file())
                .collect();
            assert!(
                !files.is_empty(),
                "corpus directory {} is empty",
                dir.display()
            );
            for f in files {
                let data = match std::fs::read(&f) {
                    Ok(data) => data,
                    // A fuzzer running beside the test replaces files as it reduces them.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => panic!("{}: {e}", f.display()),
                };
                if let Err(e) = std::panic::catch_unwind(|| target(&data)) {
                    let why = e
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| e.downcast_ref::<&str>().copied())
                        .unwrap_or("panic");
                    failures.push(format!("{}: {why}", f.display()));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        for entry in std::fs::read_dir(&root).unwrap() {
            let name = entry.unwrap().file_name();
            let name = name.to_string_lossy();
            assert!(
                TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/corpus/{name} has no target"
            );
        }
    }
}
