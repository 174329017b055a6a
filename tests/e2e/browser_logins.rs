//! Logins as real browsers make them: two tabs that start a login each (both must complete),
//! and a browser that comes back to a spent callback URL (Back, reload).

use crate::oidc::world_with;
use crate::oidc_support::*;
use crate::support::*;

/// The state cookie a response sets (the logins in flight).
fn state_of(r: &http::Response<bytes::Bytes>) -> String {
    set_cookie(r, "sso_sidecar_session_state").expect("a state cookie")
}

#[tokio::test]
async fn two_logins_in_flight_in_one_browser_both_complete() {
    let w = world_with(&[], &[]).await;
    let sc = &w.sc.sidecar;
    let start1 = get(&sc.url("/auth/login?next=/one"), &[]).await.unwrap();
    let c1 = state_of(&start1);
    let start2 = get(
        &sc.url("/auth/login?next=/two"),
        &[("cookie", &format!("sso_sidecar_session_state={c1}"))],
    )
    .await
    .unwrap();
    let c2 = state_of(&start2);
    let cb1 = idp_login(&location(&start1), "alice").await;
    let cb2 = idp_login(&location(&start2), "alice").await;

    // A failed callback meanwhile (a link from any site, or Back to a spent URL) ends neither
    // tab's login: the cookie it leaves still holds both.
    let failed = get(
        &sc.url("/auth/callback?code=forged&state=forged"),
        &[("cookie", &format!("sso_sidecar_session_state={c2}"))],
    )
    .await
    .unwrap();
    assert_eq!(failed.status(), 400);
    let c2 = state_of(&failed);
    assert!(!c2.is_empty(), "both logins are still in flight");

    // The first tab finishes first, with the cookie the second tab left.
    let r1 = get(
        &cb1,
        &[("cookie", &format!("sso_sidecar_session_state={c2}"))],
    )
    .await
    .unwrap();
    assert_eq!(r1.status(), 302, "{}", String::from_utf8_lossy(r1.body()));
    assert_eq!(location(&r1), "/one");
    let c3 = state_of(&r1);
    assert!(!c3.is_empty(), "the second tab's login is still in flight");
    let r2 = get(
        &cb2,
        &[("cookie", &format!("sso_sidecar_session_state={c3}"))],
    )
    .await
    .unwrap();
    assert_eq!(r2.status(), 302, "{}", String::from_utf8_lossy(r2.body()));
    assert_eq!(location(&r2), "/two");
    assert!(set_cookie(&r2, "sso_sidecar_session").is_some());
    assert!(
        r2.headers().get_all("set-cookie").iter().any(|v| v
            .to_str()
            .unwrap()
            .starts_with("sso_sidecar_session_state=;")),
        "nothing left in flight: the state cookie goes"
    );

    // Back to the first callback URL: spent. With the session it made, straight on.
    let session = set_cookie(&r1, "sso_sidecar_session").unwrap();
    let back = get(
        &cb1,
        &[
            ("cookie", &session_header(&session)),
            ("accept", "text/html"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        back.status(),
        302,
        "{}",
        String::from_utf8_lossy(back.body())
    );
    assert_eq!(location(&back), "/one");
    // Without one (another browser, the session gone): OpenRag's status and words, a way on.
    let page = get(&cb1, &[("accept", "text/html")]).await.unwrap();
    assert_eq!(page.status(), 400);
    let text = String::from_utf8_lossy(page.body());
    assert!(text.contains("OIDC state cookie missing."), "{text}");
    assert!(
        text.contains("<a href=\"/auth/login?next=%2Fone\">Log in again</a>"),
        "{text}"
    );
    let api = get(&cb1, &[]).await.unwrap();
    assert_eq!(api.status(), 400);
    assert_eq!(json(&api)["detail"], "OIDC state cookie missing.");
}

/// The same two cases in headless Chromium (tests/idp/tabs.mjs): two tabs each sent to the IdP
/// before either logs in, both landing on their pages; the spent callback URL opened again
/// (Back, reload) with the session, and from a browser without one, whose "Log in again" link
/// leads to the IdP.
#[tokio::test]
async fn in_a_real_browser_two_tabs_and_back_both_work() {
    let w = world_with(&[], &[]).await;
    let sc = &w.sc.sidecar;
    let r = browser("tabs.mjs", &[&sc.url(""), "tabby"]).await;
    assert_eq!(r["one"]["url"], sc.url("/one"), "{r}");
    assert_eq!(r["one"]["status"], 200, "{r}");
    assert_eq!(r["two"]["url"], sc.url("/two"), "{r}");
    assert_eq!(r["two"]["status"], 200, "{r}");
    assert_eq!(r["back"]["url"], sc.url("/one"), "Back with a session: {r}");
    assert_eq!(r["back"]["status"], 200, "{r}");
    assert_eq!(r["fresh"]["status"], 400, "{r}");
    assert!(
        r["fresh"]["body"]
            .as_str()
            .unwrap()
            .contains("OIDC state cookie missing."),
        "{r}"
    );
    assert_eq!(r["fresh"]["link"], "/auth/login?next=%2Fone", "{r}");
    assert!(
        r["after_link"]
            .as_str()
            .unwrap()
            .starts_with(&w.idp.issuer()),
        "the link starts a login at the IdP: {r}"
    );
}

/// A logout link followed from another origin lands on the confirmation page, and its button
/// logs out in a real browser. The page sends `Referrer-Policy: no-referrer`, under which
/// Chromium sends the button's POST with `Origin: null`: that POST was refused (403) as
/// cross-site, so no one reaching the page could log out.
#[tokio::test]
async fn in_a_real_browser_the_logout_confirmation_button_logs_out() {
    let w = world_with(&[], &[]).await;
    let sc = &w.sc.sidecar;
    let r = browser(
        "logout.mjs",
        &[&sc.url("/start"), "lou", &format!("{}/", w.idp.issuer())],
    )
    .await;
    assert!(
        r["page"]
            .as_str()
            .unwrap()
            .contains("Do you want to end your session?"),
        "{r}"
    );
    let status = r["after"]["status"].as_u64().unwrap();
    assert!(status == 302 || status == 303, "the button's POST: {r}");
    assert_eq!(r["me"], 401, "the session ended: {r}");
}
