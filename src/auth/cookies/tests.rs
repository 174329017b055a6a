//! Tests of the cookie jar: reading, stripping and dropping the sidecar's own cookies.

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

/// The upstream cannot set the sidecar's cookies, under any name the sidecar reads as its own;
/// its other cookies pass untouched and in order.
#[test]
fn the_upstreams_set_cookie_for_our_names_is_dropped() {
    let jar = CookieJar::new("sso_sidecar_session", true);
    let mut h = HeaderMap::new();
    for v in [
        "a=1; Path=/",
        "__Host-sso_sidecar_session=planted; Path=/; Secure",
        " __Host-sso_sidecar_session_state =x",
        "__Host-sso%5Fsidecar%5Fsession=planted",
        "=__Host-sso_sidecar_session=nameless; Path=/",
        " = __Host-sso_sidecar_session_state=nameless",
        "__Host-sso_sidecar_session",
        "b=2",
        "=c=3",
    ] {
        h.append(header::SET_COOKIE, HeaderValue::from_static(v));
    }
    jar.drop_own_set_cookies(&mut h);
    let left: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
    assert_eq!(left, ["a=1; Path=/", "b=2", "=c=3"]);
    let mut none = HeaderMap::new();
    none.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
    jar.drop_own_set_cookies(&mut none);
    assert_eq!(none.get_all(header::SET_COOKIE).iter().count(), 1);
}

/// The session cookie carries `Max-Age` unless the jar is told otherwise; its other attributes
/// stay the same either way, and other cookies (the login state) keep theirs.
#[test]
fn a_session_cookie_is_persistent_unless_configured() {
    let persistent = CookieJar::new("sso_sidecar_session", true);
    let v = persistent.set_session("ID", 3600, true);
    assert_eq!(
        v,
        "__Host-sso_sidecar_session=ID; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=3600"
    );
    let browser = CookieJar::new("sso_sidecar_session", true).with_persistent_session(false);
    let v = browser.set_session("ID", 3600, true);
    assert_eq!(
        v,
        "__Host-sso_sidecar_session=ID; HttpOnly; SameSite=Lax; Secure; Path=/"
    );
    let state = browser.set(&browser.state, "S", 600, true);
    assert!(
        state.to_str().unwrap().ends_with("Max-Age=600"),
        "{state:?}"
    );
}
