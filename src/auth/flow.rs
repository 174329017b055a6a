//! The authentication service (`Auth`), its per-request gate and `/auth/login` (the callback is
//! `callback.rs`'s, logout `logout.rs`'s).
//!
//! Each handler returns a complete response. Security properties: state and nonce are 256-bit
//! randoms, PKCE S256, the state cookie is Fernet-encrypted and expires after
//! `login_timeout_secs` (600 s); a login that starts on a host the redirect URI does not name
//! is warned about, as its callback cannot find the state cookie.

use super::cookies::CookieJar;
use super::gate::{self, Decision};
use super::login_state::{self, LoginState};
use super::oidc::{now_unix, Provider};
use super::redirect::sanitize_next;
use crate::config::AuthSettings;
use crate::error::Error;
use crate::per_worker::PerWorker;
use crate::proxy::Body;
use crate::session::Sessions;
use http::{header, request::Parts, HeaderValue, Response, StatusCode};
use std::collections::HashMap;
use std::sync::Arc;

/// The authentication service: the provider, the sessions and the settings.
pub struct Auth {
    pub provider: Arc<Provider>,
    pub sessions: Arc<Sessions>,
    pub cookies: CookieJar,
    /// Swapped whole on a configuration reload (only the reloadable fields change).
    /// Reloadable settings, one copy per worker (see `PerWorker`).
    pub settings: PerWorker<std::sync::RwLock<Arc<AuthSettings>>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub inflight: super::refresh::InFlight,
    /// The identity mode: its login hook resolves the backend user.
    pub identity: Arc<crate::identity::Identity>,
    /// What back-channel logouts may hold at once, and who may send them.
    pub backchannel: super::backchannel_limits::BackchannelLimits,
}

pub(super) fn redirect(location: &str) -> Response<Body> {
    let mut r = Response::new(crate::proxy::full(""));
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(super) fn query(parts: &Parts) -> HashMap<String, String> {
    form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

impl Auth {
    /// The current settings (a reload may replace them between two requests).
    pub fn settings(&self) -> Arc<AuthSettings> {
        self.settings.current()
    }

    /// Seconds a login may take (`login_timeout_secs`, validated to at most a day).
    pub(super) fn login_ttl(&self) -> i64 {
        self.settings().login_timeout.as_secs() as i64
    }

    /// Secure cookies when the public origin is https (the redirect URI's scheme, or the
    /// scheme a trusted proxy reports).
    pub(super) fn secure(&self, public_scheme: crate::tls::Scheme) -> bool {
        self.provider.settings.redirect_uri.scheme() == "https"
            || public_scheme == crate::tls::Scheme::Https
    }

    /// The gate's decision, with the session refreshed when its access token is about to expire.
    pub async fn gate(self: &Arc<Self>, parts: &Parts) -> Result<Decision, Error> {
        let settings = self.settings();
        let paths = &settings.paths;
        if super::cross_site::trusted_preflight(parts, &settings.trusted_origins) {
            if settings.forward_preflights {
                return Ok(Decision::Preflight);
            }
            let answer = super::cross_site::preflight_answer(parts, &settings.trusted_origins);
            return Ok(Decision::PreflightAnswered(answer));
        }
        let decision = match gate::decide(parts, paths, &self.cookies, &self.sessions, now_unix())
            .await?
        {
            // A page of another site (or a sibling host) may not act as the user.
            Decision::Authenticated { .. }
                if !super::cross_site::allowed(
                    parts,
                    &settings.trusted_origins,
                    &self.provider.settings.redirect_uri,
                ) =>
            {
                self.metrics.cross_site_refused();
                super::cross_site::refused(parts, paths).ok_or(Error::CrossSite)
            }
            Decision::Authenticated { session, id } => {
                match self.ensure_fresh(&id, session).await {
                    // `[[authz.rules]]`: the first matching rule decides; never forwarded.
                    Ok(Some(s)) if !super::authz::reaches(&settings.authz, parts, &s.groups) => {
                        Err(Error::Forbidden("Forbidden"))
                    }
                    Ok(Some(s)) => Ok(Decision::Authenticated { session: s, id }),
                    Ok(None) => gate::without_session(parts, paths),
                    Err(_) if gate::passes_bearer(parts, paths) => Ok(Decision::Bearer),
                    Err(e) => Err(e.into()),
                }
            }
            other => Ok(other),
        };
        // A bearer without a session, however it came to be one (sent alone, or beside a
        // session the request may not use: cross-site, ended meanwhile, store down), is held
        // to the rules' paths here, once.
        if matches!(decision, Ok(Decision::Bearer))
            && !super::authz::bearer_may_reach(&settings.authz, parts)
        {
            return Err(Error::Forbidden("Forbidden"));
        }
        decision
    }

    /// With `[[authz.rules]]`, the judge of the streams this session request may open, asked
    /// again at each stream check with the rules as they are then (a reload) and the session as
    /// the store holds it (a refresh that changed its groups). `None` without rules: nothing to
    /// ask again, and no copy of the request's head.
    pub fn stream_judge(self: &Arc<Self>, parts: &Parts) -> Option<crate::session::streams::Judge> {
        if self.settings().authz.rules.is_empty() {
            return None;
        }
        let head = super::authz::judged_head(parts);
        let auth = Arc::downgrade(self);
        Some(Arc::new(move |s: &crate::session::Session| {
            // Gone (a shutdown): nothing left to judge by, the stream is closing anyway.
            auth.upgrade()
                .is_none_or(|a| super::authz::reaches(&a.settings().authz, &head, &s.groups))
        }))
    }

    /// For a stream opened on a public path: whether its path is still public under the
    /// settings as they are now ([`gate::is_public`]); a reload may have put it behind a login.
    /// `None` for a request let through on other grounds than its path being public, which
    /// the judge would not know to admit: one with a bearer credential (the backend's to
    /// judge, as on any path), a cross-site request sent on without its cookies on a path that
    /// is not public for it (an `html_login` page asked for as HTML).
    pub fn public_judge(
        self: &Arc<Self>,
        parts: &Parts,
    ) -> Option<crate::session::streams::PublicJudge> {
        let html = crate::error::wants_html(&parts.headers);
        {
            let settings = self.settings();
            if gate::passes_bearer(parts, &settings.paths)
                || !gate::is_public(parts.uri.path(), html, false, &settings.paths)
            {
                return None;
            }
        }
        let uri = parts.uri.clone();
        let auth = Arc::downgrade(self);
        Some(Arc::new(move || {
            // Gone (a shutdown): the stream is closing anyway.
            auth.upgrade()
                .is_none_or(|a| gate::is_public(uri.path(), html, false, &a.settings().paths))
        }))
    }

    /// A new login in flight, to `next`, and the IdP's authorization URL to send the browser to
    /// (`reauth`: with `prompt=login`, a second try after an authentication older than
    /// `max_age`; a login begun that way is not tried again).
    pub(super) fn begin_login(
        &self,
        next: String,
        reauth: bool,
    ) -> Result<(LoginState, String), Error> {
        let begun_ms = crate::clock::now_unix_ms();
        let st = LoginState {
            state: crate::crypto::random_token(32),
            nonce: crate::crypto::random_token(32),
            verifier: crate::crypto::random_token(64),
            next,
            created: begun_ms.div_euclid(1000),
            created_ms: Some(begun_ms),
            reauth,
        };
        let location = self
            .provider
            .authorize_url(&st.state, &st.nonce, &st.verifier, reauth)
            .ok_or(Error::IdpUnavailable)?;
        Ok((st, location))
    }

    /// `GET /auth/login?next=…`
    pub async fn login(
        &self,
        parts: &Parts,
        public_scheme: crate::tls::Scheme,
    ) -> Result<Response<Body>, Error> {
        warn_if_callback_elsewhere(parts, &self.provider.settings.redirect_uri);
        let q = query(parts);
        let next = sanitize_next(
            q.get("next").map(String::as_str).unwrap_or("/"),
            &self.settings().allowed_redirect_origins,
        );
        let (st, location) = self.begin_login(next, false)?;
        // The logins this browser already has in flight stay (another tab's).
        let mut states = self
            .cookies
            .get(&parts.headers, &self.cookies.state)
            .map(|c| login_state::open(self.sessions.keys(), &c, st.created, self.login_ttl()))
            .unwrap_or_default();
        states.push(st.clone());
        let sealed = login_state::seal(self.sessions.keys(), states);
        let mut r = redirect(&location);
        r.headers_mut().append(
            header::SET_COOKIE,
            self.cookies.set(
                &self.cookies.state,
                &sealed,
                self.login_ttl(),
                self.secure(public_scheme),
            ),
        );
        Ok(r)
    }
}

/// Warns, at most once a minute, when a login starts on a host that is not the redirect URI's:
/// the state cookie set here is not sent there, so every such login would end at the callback
/// with "OIDC state cookie missing." and nothing saying why. Either the Host or a forwarded host
/// (proxies differ in which one carries the browser's) may match.
fn warn_if_callback_elsewhere(parts: &Parts, redirect_uri: &url::Url) {
    static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(i64::MIN);
    let Some(callback) = redirect_uri.host_str() else {
        return;
    };
    let names = [header::HOST, crate::proxy::headers::X_FORWARDED_HOST];
    let mut seen = names
        .iter()
        .filter_map(|n| parts.headers.get(n)?.to_str().ok())
        .chain(parts.uri.authority().map(|a| a.as_str()))
        .map(|h| hostname(h.split(',').next().unwrap_or(h).trim()));
    let first = seen.clone().next();
    if seen.any(|h| h.eq_ignore_ascii_case(callback)) {
        return;
    }
    if !crate::clock::turn_every(&LAST, 60) {
        return;
    }
    tracing::warn!(
        login_host = ?first.unwrap_or_default(),
        callback_host = callback,
        "a login started on a host other than OIDC_REDIRECT_URI's: the browser will not send \
         the login's state cookie there, and the callback will answer \"OIDC state cookie \
         missing.\"; serve the sidecar on OIDC_REDIRECT_URI's host, or set it to this one"
    );
}

/// A Host value without its port (`[::1]:8000` → `[::1]`, as `url::Url::host_str` writes it).
fn hostname(h: &str) -> &str {
    match h.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    }
}
