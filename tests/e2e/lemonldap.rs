//! LemonLDAP::NG (Debian's 2.16, the first IdP of OpenRag's SSO guide) as the real IdP: logins
//! through its portal's form with the claims in the ID token or from userinfo, refresh with its
//! 30 s access tokens, RP-initiated logout with the post-logout redirect, and the portal's
//! logout ending the sidecar's sessions through front-channel logout, across two replicas.
//!
//! LL::NG is installed and configured by `tests/lemonldap/setup.sh` (root; `.ci/run` runs it),
//! and started once per run by `tests/lemonldap/start.sh` (FastCGI server and nginx on
//! 127.0.0.1:9480, `auth.example.com` in /etc/hosts; it keeps running afterwards:
//! `tests/lemonldap/stop.sh` stops it). Each test registers its own relying party
//! (`tests/lemonldap/register-rp`, ~0.1 s) with the free ports it picked, so the tests run side
//! by side; LL::NG's workers load it within 2 s.

use crate::oidc_support::*;
use crate::support::*;
use base64::Engine;
use bytes::Bytes;
use http::Response;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The running LL::NG: its portal URL (the issuer, slash included) and work directory.
struct Llng {
    portal: String,
    work: PathBuf,
}

/// Starts LL::NG once per test binary (nothing if it already runs); fails every test with what
/// to install or run when it cannot.
fn llng() -> &'static Llng {
    static LLNG: OnceLock<Result<Llng, String>> = OnceLock::new();
    let started = LLNG.get_or_init(|| {
        let script = repo_root().join("tests/lemonldap/start.sh");
        let t0 = Instant::now();
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!(
                "LemonLDAP::NG, the IdP of these tests, did not start \
                 (tests/lemonldap/start.sh):\n{stderr}"
            ));
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let (portal, work) = line
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("start.sh printed {line:?}"))?;
        eprintln!("{} (start.sh took {:?})", stderr.trim(), t0.elapsed());
        Ok(Llng {
            portal: portal.to_owned(),
            work: PathBuf::from(work),
        })
    });
    started.as_ref().unwrap_or_else(|e| panic!("{e}"))
}

/// A relying party registered for one test.
struct Rp {
    id: String,
    secret: String,
    saved: Instant,
}

#[derive(Default)]
struct RpOptions<'a> {
    redirect_ports: &'a [u16],
    post_logout_uri: Option<&'a str>,
    /// The sidecar port whose `/auth/frontchannel-logout` LL::NG's logout page loads.
    frontchannel_port: Option<u16>,
    /// `oidcRPMetaDataOptionsIDTokenForceClaims`: the profile claims in the ID token.
    force_claims: bool,
    access_token_ttl: Option<u32>,
}

async fn register(tag: &str, o: RpOptions<'_>) -> Rp {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let llng = llng();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let id = format!(
        "test-{now}-{}-{}-{tag}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let secret = sso_sidecar::crypto::random_token(24);
    let mut cmd = tokio::process::Command::new(repo_root().join("tests/lemonldap/register-rp"));
    cmd.env("LLNG_DEFAULTCONFFILE", llng.work.join("lemonldap-ng.ini"))
        .args(["--id", &id, "--secret", &secret]);
    for p in o.redirect_ports {
        cmd.args([
            "--redirect-uri",
            &format!("http://127.0.0.1:{p}/auth/callback"),
        ]);
    }
    if let Some(u) = o.post_logout_uri {
        cmd.args(["--post-logout-uri", u]);
    }
    if let Some(p) = o.frontchannel_port {
        cmd.args([
            "--frontchannel-uri",
            &format!("http://127.0.0.1:{p}/auth/frontchannel-logout"),
        ]);
    }
    cmd.args(["--force-claims", if o.force_claims { "1" } else { "0" }]);
    if let Some(ttl) = o.access_token_ttl {
        cmd.args(["--access-token-ttl", &ttl.to_string()]);
    }
    let t0 = Instant::now();
    let out = cmd.output().await.expect("run tests/lemonldap/register-rp");
    assert!(
        out.status.success(),
        "register-rp failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("relying party {id} registered in {:?}", t0.elapsed());
    Rp {
        id,
        secret,
        saved: Instant::now(),
    }
}

impl Rp {
    /// LL::NG's workers check their configuration at a request once a second has passed
    /// (checkTime = 1, in whole seconds): 2 s after the save, every worker knows the RP.
    async fn live(&self) {
        let ready = self.saved + Duration::from_millis(2100);
        tokio::time::sleep_until(ready.into()).await;
    }
}

/// A sidecar (identity headers) on `port`, registered at LL::NG as `rp`.
async fn sidecar(port: u16, rp: &Rp, key: &str, upstream: &str, extra: &[(&str, &str)]) -> Sidecar {
    let listen = format!("127.0.0.1:{port}");
    let redirect = format!("http://127.0.0.1:{port}/auth/callback");
    let mut env: Vec<(&str, &str)> = vec![
        ("AUTH_MODE", "oidc"),
        ("SSO_SIDECAR_IDENTITY", "headers"),
        ("SSO_SIDECAR_LISTEN", &listen),
        ("SSO_SIDECAR_UPSTREAM", upstream),
        ("OIDC_ENDPOINT", &llng().portal),
        ("OIDC_CLIENT_ID", &rp.id),
        ("OIDC_CLIENT_SECRET", &rp.secret),
        ("OIDC_REDIRECT_URI", &redirect),
        ("OIDC_TOKEN_ENCRYPTION_KEY", key),
    ];
    env.extend_from_slice(extra);
    Sidecar::start(&env).await
}

// === a browser, reduced to what these flows need ============================================

/// The portal's cookies (`lemonldap`, the SSO session; `lemonldappdata`, a login in flight),
/// kept by name: every portal URL is on one host.
#[derive(Default, Clone)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn update(&mut self, resp: &Response<Bytes>) {
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (name, value) = pair.split_once('=').unwrap();
            // LL::NG deletes a cookie with an expiry in the past (2015)
            let expired = attrs.split(';').any(|a| {
                let a = a.trim().to_ascii_lowercase();
                a.strip_prefix("expires=").is_some_and(|date| {
                    date.split_whitespace()
                        .nth(3)
                        .and_then(|y| y.parse::<u32>().ok())
                        .is_some_and(|year| year < 2020)
                }) || a == "max-age=0"
            });
            if value.is_empty() || expired {
                self.0.remove(name.trim());
            } else {
                self.0.insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }

    /// A request to the portal with the jar's cookies; the jar takes the answer's.
    async fn send(&mut self, method: &str, url: &str, form: Option<String>) -> Response<Bytes> {
        let cookie = self.header();
        let mut headers = vec![("cookie", cookie.as_str())];
        if form.is_some() {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
        }
        let r = send(request(
            method,
            url,
            &headers,
            body(form.unwrap_or_default()),
        ))
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        self.update(&r);
        r
    }
}

fn text(r: &Response<Bytes>) -> String {
    String::from_utf8_lossy(r.body()).into_owned()
}

fn unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// The value of attribute `name` in one HTML tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[start..].find('"')?;
    Some(unescape(&tag[start..start + len]))
}

/// Every `<tag …>` of `html`, as text.
fn tags<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag} ");
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&open) {
        let end = rest[i..].find('>').map_or(rest.len(), |e| i + e + 1);
        found.push(&rest[i..end]);
        rest = &rest[end..];
    }
    found
}

/// The portal's login form (`<form id="lform">`): its hidden fields, with `user` and
/// `password` filled in, as the browser would post them.
fn login_form(html: &str, user: &str) -> String {
    let start = html
        .find("<form id=\"lform\"")
        .unwrap_or_else(|| panic!("no login form on the portal's page:\n{html}"));
    let form = &html[start..start + html[start..].find("</form>").unwrap()];
    let action = attr(tags(form, "form")[0], "action");
    assert_eq!(
        action.as_deref(),
        Some("#"),
        "the form posts back to the page's own URL"
    );
    let mut fields = form_urlencoded::Serializer::new(String::new());
    let mut names = HashSet::new();
    for input in tags(form, "input") {
        let (Some(name), Some(kind)) = (attr(input, "name"), attr(input, "type")) else {
            continue;
        };
        match kind.as_str() {
            "hidden" => {
                fields.append_pair(&name, &attr(input, "value").unwrap_or_default());
            }
            "text" | "password" => {} // user, password: below
            _ => continue,            // checkLogins (a checkbox), left unticked
        }
        names.insert(name);
    }
    for required in ["user", "password", "token", "url"] {
        assert!(
            names.contains(required),
            "the login form has no {required} field: {names:?}"
        );
    }
    fields.append_pair("user", user);
    fields.append_pair("password", user); // the Demo backend: password = login
    fields.finish()
}

/// A login through the sidecar `sc`: its redirect to LL::NG, LL::NG's form (or its SSO session
/// in `jar`), the callback. Returns the sidecar's session cookie.
async fn login(sc: &Sidecar, jar: &mut Jar, user: &str, next: &str) -> String {
    let start = get(
        &sc.url(&format!("/auth/login?next={}", urlencode(next))),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(start.status(), 302, "{}", text(&start));
    let state = set_cookie(&start, "sso_sidecar_session_state").expect("state cookie");
    let authorize = location(&start);
    assert!(
        authorize.starts_with(&format!("{}oauth2/authorize?", llng().portal)),
        "{authorize}"
    );
    let page = jar.send("GET", &authorize, None).await;
    let callback = if page.status() == 302 {
        location(&page) // LL::NG's SSO session: no form
    } else {
        assert_eq!(
            page.status(),
            200,
            "the portal's login page: {}",
            text(&page)
        );
        let form = login_form(&text(&page), user);
        let posted = jar.send("POST", &authorize, Some(form)).await;
        assert_eq!(
            posted.status(),
            302,
            "LL::NG refused the login (consent, PKCE, redirect URI?): {}",
            text(&posted)
        );
        location(&posted)
    };
    assert!(
        callback.starts_with(&sc.url("/auth/callback?")),
        "LL::NG sent the browser to {callback}"
    );
    assert!(jar.0.contains_key("lemonldap"), "LL::NG's SSO cookie");
    let cb = get(
        &callback,
        &[("cookie", &format!("sso_sidecar_session_state={state}"))],
    )
    .await
    .unwrap();
    assert_eq!(cb.status(), 302, "callback: {}\n{}", text(&cb), sc.output());
    assert_eq!(location(&cb), next);
    set_cookie(&cb, "sso_sidecar_session").expect("session cookie")
}

async fn status(sc: &Sidecar, cookie: &str) -> u16 {
    get(&sc.url("/echo/x"), &[("cookie", &session_header(cookie))])
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The upstream's view of a request with the session `cookie`: the headers it received.
async fn upstream_headers(sc: &Sidecar, cookie: &str) -> serde_json::Value {
    let r = get(&sc.url("/echo/who"), &[("cookie", &session_header(cookie))])
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", text(&r));
    json(&r)["headers"].clone()
}

/// A same-origin navigation to `/auth/logout` (the user's own click): the redirect to LL::NG.
async fn rp_logout(sc: &Sidecar, cookie: &str) -> Response<Bytes> {
    let r = get(
        &sc.url("/auth/logout"),
        &[
            ("cookie", &session_header(cookie)),
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "navigate"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 302, "{}", text(&r));
    r
}

/// The payload of a JWT, unverified (the sidecar verified it).
fn jwt_claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn query(url: &str) -> BTreeMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Token-endpoint calls LL::NG's nginx logged for client `id` (HTTP Basic: the client id is
/// the log line's user).
fn token_calls_at_idp(id: &str) -> usize {
    let log = std::fs::read_to_string(llng().work.join("logs/nginx-access.log")).unwrap();
    log.lines()
        .filter(|l| l.contains(&format!(" - {id} [")) && l.contains("\"POST /oauth2/token "))
        .count()
}

// === the tests =============================================================================

/// One login, then what the upstream sees; the ID token (the logout's `id_token_hint`) tells
/// where the claims came from.
async fn login_and_identity(force_claims: bool) -> serde_json::Value {
    let port = free_port();
    let rp = register(
        if force_claims { "idtoken" } else { "userinfo" },
        RpOptions {
            redirect_ports: &[port],
            force_claims,
            ..Default::default()
        },
    )
    .await;
    let up = Upstream::start();
    let key = sso_sidecar::crypto::generate_key();
    let sc = sidecar(port, &rp, &key, &up.url(), &[]).await;
    rp.live().await;

    let mut jar = Jar::default();
    let t0 = Instant::now();
    let cookie = login(&sc, &mut jar, "dwho", "/echo/after?x=1").await;
    eprintln!("login through LL::NG's form: {:?}", t0.elapsed());

    let h = upstream_headers(&sc, &cookie).await;
    assert_eq!(h["x-forwarded-user"], serde_json::json!(["dwho"]), "{h}");
    assert_eq!(
        h["x-forwarded-email"],
        serde_json::json!(["dwho@badwolf.org"]),
        "{h}"
    );
    assert_eq!(
        h["x-forwarded-preferred-username"],
        serde_json::json!(["dwho"]),
        "{h}"
    );
    let groups: HashSet<&str> = h["x-forwarded-groups"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no groups header: {h}"))
        .split(',')
        .collect();
    assert_eq!(groups, HashSet::from(["timelords", "users"]), "{h}");
    let me = json(
        &get(&sc.url("/auth/me"), &[("cookie", &session_header(&cookie))])
            .await
            .unwrap(),
    );
    assert_eq!(me["name"], "Doctor Who", "{me}");
    assert_eq!(me["email"], "dwho@badwolf.org", "{me}");

    let out = rp_logout(&sc, &cookie).await;
    let hint = query(&location(&out))["id_token_hint"].clone();
    jwt_claims(&hint)
}

#[tokio::test]
async fn lemonldap_login_with_the_claims_in_the_id_token() {
    let id_token = login_and_identity(true).await;
    assert_eq!(id_token["sub"], "dwho");
    assert_eq!(
        id_token["email"], "dwho@badwolf.org",
        "forced into the ID token: {id_token}"
    );
    assert_eq!(id_token["name"], "Doctor Who");
}

#[tokio::test]
async fn lemonldap_login_with_the_claims_from_userinfo() {
    let id_token = login_and_identity(false).await;
    assert_eq!(id_token["sub"], "dwho");
    for claim in ["email", "name", "groups"] {
        assert!(
            id_token.get(claim).is_none(),
            "LL::NG's default ID token has no {claim}, so the headers came from userinfo: {id_token}"
        );
    }
}

/// `auth_max_age_secs` against LL::NG: its ID token carries the `auth_time` of the login just
/// made, so a login asking for `max_age` goes through at once (no second try with
/// `prompt=login`, nothing refused).
#[tokio::test]
async fn lemonldap_sends_the_auth_time_a_max_age_login_needs() {
    let port = free_port();
    let rp = register(
        "maxage",
        RpOptions {
            redirect_ports: &[port],
            ..Default::default()
        },
    )
    .await;
    let up = Upstream::start();
    let key = sso_sidecar::crypto::generate_key();
    let env = [("SSO_SIDECAR_AUTH_MAX_AGE_SECS", "60")];
    let sc = sidecar(port, &rp, &key, &up.url(), &env).await;
    rp.live().await;
    let mut jar = Jar::default();
    let cookie = login(&sc, &mut jar, "dwho", "/echo/x").await;
    assert_eq!(status(&sc, &cookie).await, 200);
    let out = sc.output();
    assert!(
        !out.contains("asking it to authenticate the user again"),
        "{out}"
    );
}

/// How long the refresh test drives requests (SSO_SIDECAR_TEST_LLNG_REFRESH_SECS overrides,
/// e.g. 120 for the issue's two minutes).
fn refresh_run() -> Duration {
    let secs = std::env::var("SSO_SIDECAR_TEST_LLNG_REFRESH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(65);
    Duration::from_secs(secs)
}

#[tokio::test]
async fn lemonldap_30_s_access_tokens_are_refreshed_once_per_lifetime_never_used_expired() {
    const TTL: u64 = 30;
    let port = free_port();
    let rp = register(
        "refresh",
        RpOptions {
            redirect_ports: &[port],
            access_token_ttl: Some(TTL as u32),
            ..Default::default()
        },
    )
    .await;
    let up = Upstream::start();
    let key = sso_sidecar::crypto::generate_key();
    let sc = sidecar(
        port,
        &rp,
        &key,
        &up.url(),
        &[
            (
                "SSO_SIDECAR_HEADERS__ACCESS_TOKEN",
                "X-Forwarded-Access-Token",
            ),
            // so that LL::NG's access log names the client of each token call
            ("SSO_SIDECAR_TOKEN_ENDPOINT_AUTH", "client_secret_basic"),
        ],
    )
    .await;
    rp.live().await;
    let mut jar = Jar::default();
    let cookie = login(&sc, &mut jar, "rtyler", "/").await;
    let ok = r#"sso_sidecar_token_refreshes_total{result="ok"}"#;
    assert_eq!(metric(&metrics(&sc).await, ok), 0.0);

    // A request a second, as a busy browser tab; each access token the upstream gets is checked
    // at LL::NG's userinfo endpoint at once: it must still be valid there.
    let userinfo = format!("{}oauth2/userinfo", llng().portal);
    let run = refresh_run();
    let start = Instant::now();
    let mut tokens: Vec<String> = Vec::new();
    let mut requests = 0;
    while start.elapsed() < run {
        let h = upstream_headers(&sc, &cookie).await;
        let token = h["x-forwarded-access-token"][0]
            .as_str()
            .unwrap_or_else(|| panic!("no access token upstream: {h}"))
            .to_owned();
        let r = get(&userinfo, &[("authorization", &format!("Bearer {token}"))])
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "after {:?}, the sidecar forwarded an access token LL::NG refuses: {}",
            start.elapsed(),
            text(&r)
        );
        assert_eq!(json(&r)["sub"], "rtyler");
        if tokens.last() != Some(&token) {
            eprintln!(
                "{:>5.1} s: access token {}",
                start.elapsed().as_secs_f64(),
                tokens.len() + 1
            );
            tokens.push(token);
        }
        requests += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let refreshes = metric(&metrics(&sc).await, ok) as usize;
    let at_idp = token_calls_at_idp(&rp.id);
    eprintln!(
        "{TTL} s access tokens, {elapsed:.0} s of requests ({requests} requests): {refreshes} \
         refreshes (sidecar metric), {at_idp} token-endpoint calls at LL::NG (1 code exchange + \
         refreshes), {} distinct access tokens upstream",
        tokens.len()
    );
    // The sidecar refreshes when a quarter of the lifetime is left: one refresh per 22.5 s,
    // never one per request.
    let most = (elapsed / (TTL as f64 * 0.75)).floor() as usize + 1;
    let least = (elapsed / TTL as f64).floor() as usize;
    assert!(
        (least..=most).contains(&refreshes),
        "{refreshes} refreshes in {elapsed:.0} s of {TTL} s tokens: expected {least}..={most}"
    );
    assert_eq!(at_idp, refreshes + 1, "LL::NG counted the same token calls");
    assert_eq!(
        tokens.len(),
        refreshes + 1,
        "each refresh rotated the token upstream"
    );
    assert_eq!(
        metric(
            &metrics(&sc).await,
            r#"sso_sidecar_token_refreshes_total{result="failed"}"#
        ),
        0.0
    );
}

#[tokio::test]
async fn lemonldap_rp_logout_ends_both_sessions_and_returns_to_the_post_logout_uri() {
    let port = free_port();
    let up = Upstream::start();
    let post_logout = format!("{}/logged-out", up.url());
    let rp = register(
        "rplogout",
        RpOptions {
            redirect_ports: &[port],
            post_logout_uri: Some(&post_logout),
            ..Default::default()
        },
    )
    .await;
    let key = sso_sidecar::crypto::generate_key();
    let sc = sidecar(
        port,
        &rp,
        &key,
        &up.url(),
        &[("OIDC_POST_LOGOUT_REDIRECT_URI", &post_logout)],
    )
    .await;
    rp.live().await;
    let mut jar = Jar::default();
    let cookie = login(&sc, &mut jar, "msmith", "/").await;
    assert_eq!(status(&sc, &cookie).await, 200);
    let sso = jar.0["lemonldap"].clone();

    let r = rp_logout(&sc, &cookie).await;
    let end_session = location(&r);
    assert!(
        end_session.starts_with(&format!("{}oauth2/logout?", llng().portal)),
        "to LL::NG's end_session_endpoint: {end_session}"
    );
    let q = query(&end_session);
    assert_eq!(q["post_logout_redirect_uri"], post_logout);
    assert_eq!(q["client_id"], rp.id);
    assert_eq!(
        status(&sc, &cookie).await,
        401,
        "ended on the sidecar at once"
    );

    // LL::NG ends its SSO session (no confirmation: bypassed) and sends the browser on.
    let r = jar.send("GET", &end_session, None).await;
    assert_eq!(r.status(), 302, "LL::NG's logout: {}", text(&r));
    let back = location(&r);
    assert!(
        back == post_logout || back.starts_with(&format!("{post_logout}?")),
        "LL::NG redirects to the post-logout URI: {back}"
    );
    assert!(
        !jar.0.contains_key("lemonldap"),
        "LL::NG cleared its cookie"
    );
    let landing = get(&back, &[]).await.unwrap();
    assert_eq!(landing.status(), 200, "the post-logout page answers");

    // The old SSO cookie is worth nothing at LL::NG now: the next login shows the form again.
    let mut old = Jar::default();
    old.0.insert("lemonldap".into(), sso);
    let start = get(&sc.url("/auth/login?next=/"), &[]).await.unwrap();
    let page = old.send("GET", &location(&start), None).await;
    assert_eq!(page.status(), 200, "no SSO session left at LL::NG");
    assert!(text(&page).contains("<form id=\"lform\""));
    assert_eq!(
        metric(
            &metrics(&sc).await,
            r#"sso_sidecar_logouts_total{kind="rp"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn lemonldap_portal_logout_ends_the_sessions_on_both_replicas_through_front_channel() {
    let (pa, pb) = (free_port(), free_port());
    let rp = register(
        "frontchannel",
        RpOptions {
            redirect_ports: &[pa, pb],
            frontchannel_port: Some(pa),
            ..Default::default()
        },
    )
    .await;
    let redis = Redis::start().await;
    let up = Upstream::start();
    let key = sso_sidecar::crypto::generate_key();
    // LL::NG sends the user id as `sid`: the opt-in that lets that end the user's sessions.
    let shared = [
        ("SSO_SIDECAR_REDIS_URL", redis.url()),
        ("SSO_SIDECAR_FRONTCHANNEL_LOGOUT_BY_SUB", "true".to_owned()),
    ];
    let shared: Vec<(&str, &str)> = shared.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = sidecar(pa, &rp, &key, &up.url(), &shared).await;
    let b = sidecar(pb, &rp, &key, &up.url(), &shared).await;
    rp.live().await;

    // dwho in one browser through replica A, again in another through B; rtyler through B.
    let mut browser = Jar::default();
    let dwho_a = login(&a, &mut browser, "dwho", "/").await;
    let dwho_b = login(&b, &mut Jar::default(), "dwho", "/").await;
    let rtyler = login(&b, &mut Jar::default(), "rtyler", "/").await;
    for (sc, cookie) in [(&b, &dwho_a), (&a, &dwho_b), (&a, &rtyler)] {
        assert_eq!(
            status(sc, cookie).await,
            200,
            "a session works on both replicas"
        );
    }

    // The first browser logs out at the portal; its page frames the RP's front-channel URL.
    let page = browser
        .send("GET", &format!("{}?logout=1", llng().portal), None)
        .await;
    assert_eq!(page.status(), 200, "{}", text(&page));
    assert!(
        !browser.0.contains_key("lemonldap"),
        "LL::NG's session ended"
    );
    let html = text(&page);
    let frames: Vec<String> = tags(&html, "iframe")
        .into_iter()
        .filter_map(|t| attr(t, "src"))
        .collect();
    assert_eq!(
        frames.len(),
        1,
        "one iframe per RP the user logged in to: {html}"
    );
    let frame = &frames[0];
    assert!(
        frame.starts_with(&a.url("/auth/frontchannel-logout?")),
        "the front-channel URL registered: {frame}"
    );
    let q = query(frame);
    assert_eq!(q["iss"], llng().portal, "{frame}");
    assert_eq!(q["sid"], "dwho", "LL::NG sends the user id as sid: {frame}");

    // The browser loads the frame: cross-site, so without the sidecar's SameSite=Lax cookie.
    let r = get(
        frame,
        &[
            ("sec-fetch-dest", "iframe"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-site", "cross-site"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", text(&r));
    assert_eq!(r.headers()["cache-control"], "no-store");
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    let portal_origin = llng().portal.trim_end_matches('/');
    assert!(
        csp.contains(&format!("frame-ancestors {portal_origin}")),
        "only LL::NG may frame it: {csp}"
    );

    for (name, sc, cookie) in [
        ("A, the browser's own session", &a, &dwho_a),
        ("B, the browser's own session", &b, &dwho_a),
        ("A, dwho's other session", &a, &dwho_b),
        ("B, dwho's other session", &b, &dwho_b),
    ] {
        assert_eq!(status(sc, cookie).await, 401, "ended on replica {name}");
    }
    assert_eq!(
        status(&b, &rtyler).await,
        200,
        "another user's session stays"
    );
    assert_eq!(
        metric(
            &metrics(&a).await,
            r#"sso_sidecar_logouts_total{kind="frontchannel"}"#
        ),
        1.0
    );
}
