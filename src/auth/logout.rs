//! `GET /auth/me` and RP-initiated logout (`GET`/`POST /auth/logout`): what a logged-in user
//! can ask of their own session. Only the user may log themselves out: a `GET` logs out at once
//! only when it is a same-origin navigation (or one the user typed: `Sec-Fetch-Site: none`);
//! any other `GET` (a cross-site link, a same-site `<img>`, a client without `Sec-Fetch-*`)
//! gets a page whose button POSTs the logout, and that POST must come from our own origin.
//! Cross-site non-navigation requests keep OpenRag's 403. The session is revoked in the shared
//! store, so it is refused at once on every replica.

use super::flow::{redirect, Auth};
use super::oidc::now_unix;
use crate::error::{message_response, Error};
use crate::proxy::Body;
use http::{header, request::Parts, HeaderValue, Response, StatusCode};

impl Auth {
    /// `GET /auth/me`
    pub async fn me(&self, parts: &Parts) -> Result<Response<Body>, Error> {
        let Some(id) = self.cookies.get(&parts.headers, &self.cookies.session) else {
            return Err(Error::Unauthenticated);
        };
        let s = self
            .sessions
            .load(&id, now_unix())
            .await?
            .ok_or(Error::Unauthenticated)?;
        let body = serde_json::json!({
            "sub": s.sub, "user_id": s.backend_user_id, "email": s.email, "name": s.name,
            "auth_method": "oidc", "session_expires_at": s.expires_at,
        });
        let mut r = Response::new(crate::proxy::full(body.to_string()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    }

    /// `GET /auth/logout` (RP-initiated logout): at once for the user's own navigation, else
    /// the confirmation page.
    pub async fn logout(
        &self,
        parts: &Parts,
        public_scheme: crate::tls::Scheme,
    ) -> Result<Response<Body>, Error> {
        let site = fetch_meta(parts, "sec-fetch-site");
        let mode = fetch_meta(parts, "sec-fetch-mode");
        if site == Some("cross-site") && mode != Some("navigate") {
            return Err(Error::Forbidden(
                "Cross-site logout requests are not allowed",
            ));
        }
        if mode == Some("navigate") && matches!(site, Some("same-origin" | "none")) {
            return self.end_session(parts, public_scheme).await;
        }
        Ok(confirmation_page())
    }

    /// `POST /auth/logout`: the confirmation page's button. Only from our own origin.
    pub async fn logout_confirmed(
        &self,
        parts: &Parts,
        public_scheme: crate::tls::Scheme,
    ) -> Result<Response<Body>, Error> {
        let site = fetch_meta(parts, "sec-fetch-site");
        let origin = fetch_meta(parts, "origin");
        let ours = self
            .provider
            .settings
            .redirect_uri
            .origin()
            .ascii_serialization();
        // `Origin: null` says nothing: a browser sends it for a POST from a page whose referrer
        // policy is `no-referrer` (privacy settings may impose one on the page below).
        let origin = origin.filter(|o| *o != "null");
        let same_origin = match (site, origin) {
            (Some(s), _) => s == "same-origin",
            (None, Some(o)) => o == ours,
            (None, None) => false,
        };
        if !same_origin || origin.is_some_and(|o| o != ours) {
            return Err(Error::Forbidden(
                "Cross-site logout requests are not allowed",
            ));
        }
        self.end_session(parts, public_scheme).await
    }

    /// Revokes the browser's session and sends it to the IdP's end-session endpoint.
    async fn end_session(
        &self,
        parts: &Parts,
        public_scheme: crate::tls::Scheme,
    ) -> Result<Response<Body>, Error> {
        let h = &parts.headers;
        let mut hint = None;
        if let Some(id) = self.cookies.get(h, &self.cookies.session) {
            let ended = match self.sessions.load(&id, now_unix()).await? {
                Some(s) => {
                    hint = Some(s.id_token.clone());
                    self.sessions.end(&id, &s).await?
                }
                None => self.sessions.delete(&id).await?,
            };
            if ended {
                self.metrics.sessions_revoked(1);
            }
        }
        self.metrics.logout("rp");
        let settings = &self.provider.settings;
        let post_logout = settings.post_logout_redirect_uri_as_written.clone();
        let end_session = self
            .provider
            .metadata()
            .and_then(|m| m.end_session_endpoint);
        let mut r = match (end_session, &post_logout) {
            (Some(ep), _) => match url::Url::parse(&ep) {
                Ok(mut u) => {
                    {
                        let mut qp = u.query_pairs_mut();
                        qp.append_pair("client_id", &settings.client_id);
                        if let Some(t) = &hint {
                            qp.append_pair("id_token_hint", t);
                        }
                        if let Some(p) = &post_logout {
                            qp.append_pair("post_logout_redirect_uri", p);
                        }
                    }
                    redirect(u.as_str())
                }
                Err(_) => return Err(Error::Internal("end_session_endpoint is not a URL".into())),
            },
            (None, Some(p)) => redirect(p),
            (None, None) => {
                message_response(StatusCode::OK, "Logged out", crate::error::wants_html(h))
            }
        };
        let secure = self.secure(public_scheme);
        r.headers_mut().append(
            header::SET_COOKIE,
            self.cookies.clear(&self.cookies.session, secure),
        );
        r.headers_mut().append(
            header::SET_COOKIE,
            self.cookies.clear(&self.cookies.state, secure),
        );
        self.identity
            .end_previous_cookies(&parts.headers, r.headers_mut());
        tracing::info!(had_session = hint.is_some(), "RP-initiated logout");
        Ok(r)
    }
}

/// A request header as text (the `Sec-Fetch-*` metadata, `Origin`).
fn fetch_meta<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The page a logout link from elsewhere lands on: the user confirms with a button (a form POST
/// to our own origin), so no other site can end the session by a link or an image.
fn confirmation_page() -> Response<Body> {
    const PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Log out</title>\
        </head><body><h1>Log out?</h1><p>Do you want to end your session?</p>\
        <form method=\"post\" action=\"/auth/logout\"><button type=\"submit\">Log out</button></form>\
        <p><a href=\"/\">Back to the application</a></p></body></html>\n";
    let mut r = Response::new(crate::proxy::full(PAGE));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    crate::error::page_headers(h);
    // The one exception to the pages' `no-referrer`: under it the button's POST carries
    // `Origin: null`, and without `Sec-Fetch-Site` (plain http, older browsers) nothing would
    // tell it from a cross-site one. `same-origin` sends the page's origin to itself only.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}
