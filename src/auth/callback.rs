//! `/auth/callback`: the IdP's answer turned into a session, or into OpenRag's exact error.
//!
//! Every outcome deletes the state cookie (unless another tab's login is still in flight); the
//! details go to the log, never to the user. A state is accepted once, the ID token is verified
//! against the state's nonce, and every login mints a fresh session id. Owns no state of its
//! own: the flow's settings and cookies are `Auth`'s (`flow`).

use super::flow::{query, redirect, Auth};
use super::id_token::StaleAuth;
use super::login_state::{self, LoginState};
use super::oidc::{now_unix, TokenError};
use super::redirect::sanitize_next;
use super::refresh::access_lifetime;
use crate::error::{page_response, wants_html, Error};
use crate::proxy::Body;
use crate::session::Session;
use http::{header, request::Parts, Response, StatusCode};
use serde_json::Value;

impl Auth {
    /// `GET /auth/callback?code=…&state=…`: every outcome spends the login state it names;
    /// the state cookie keeps the other logins in flight in this browser, or goes.
    pub async fn callback(
        &self,
        parts: &Parts,
        public_scheme: crate::tls::Scheme,
    ) -> Response<Body> {
        let secure = self.secure(public_scheme);
        let html = wants_html(&parts.headers);
        let request_id = parts
            .headers
            .get(crate::proxy::headers::X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let id = [("Request id", request_id)];
        let outcome = self.callback_inner(parts, secure).await;
        // Other tabs' logins still in flight, whatever became of this one: a failed callback
        // (Back, Reload, a spent URL, or a link from any site, which `SameSite=Lax` lets carry
        // the cookie) must not end them. Only the state this callback named is spent.
        let mut remaining = match outcome {
            Ok(_) => Vec::new(),
            Err(_) => self.others_in_flight(parts),
        };
        let mut resp = match outcome {
            Ok((r, rest)) => {
                remaining = rest;
                r
            }
            // Back, reload, a spent or expired callback URL: no way forward from the error
            // alone, so a browser gets one (or its session, when it has one).
            Err(CallbackError::User(status, msg)) if html && lost_login(msg) => {
                self.lost_login(parts, status, msg, request_id).await
            }
            Err(CallbackError::User(status, msg)) => page_response(status, msg, html, &id, None),
            Err(CallbackError::Idp(msg)) => {
                page_response(StatusCode::BAD_REQUEST, &msg, html, &id, None)
            }
            Err(CallbackError::Other(e)) => {
                tracing::warn!(error = %e, "login failed at the callback");
                e.into_page(html, &id)
            }
            Err(CallbackError::Refused(e, sub)) => e.into_page(
                html,
                &[
                    ("Request id", request_id),
                    ("Your identity-provider user id (sub)", &sub),
                ],
            ),
        };
        // Another tab's login still in flight keeps its state; otherwise the cookie goes.
        let state_cookie = if remaining.is_empty() {
            self.cookies.clear(&self.cookies.state, secure)
        } else {
            let sealed = login_state::seal(self.sessions.keys(), remaining);
            self.cookies
                .set(&self.cookies.state, &sealed, self.login_ttl(), secure)
        };
        resp.headers_mut().append(header::SET_COOKIE, state_cookie);
        resp
    }

    /// RFC 9207 (mix-up defence): when the IdP names itself in the callback, it must be our
    /// issuer; an IdP that says it always does (its metadata) must have done so.
    fn iss_ok(&self, q: &std::collections::HashMap<String, String>) -> bool {
        match q.get("iss") {
            Some(iss) => *iss == self.provider.settings.issuer,
            None => !self
                .provider
                .metadata()
                .is_some_and(|m| m.authorization_response_iss_parameter_supported),
        }
    }

    /// The logins in flight in this browser other than the one this callback names.
    fn others_in_flight(&self, parts: &Parts) -> Vec<LoginState> {
        let Some(sealed) = self.cookies.get(&parts.headers, &self.cookies.state) else {
            return Vec::new();
        };
        let mut in_flight =
            login_state::open(self.sessions.keys(), &sealed, now_unix(), self.login_ttl());
        if let Some(state) = query(parts).get("state") {
            login_state::take(&mut in_flight, state);
        }
        in_flight
    }

    async fn callback_inner(
        &self,
        parts: &Parts,
        secure: bool,
    ) -> Result<(Response<Body>, Vec<LoginState>), CallbackError> {
        use CallbackError::User;
        let bad = |m: &'static str| User(StatusCode::BAD_REQUEST, m);
        let q = query(parts);
        if let Some(err) = q.get("error") {
            // The IdP's words are shown only for a login in flight in this browser: anyone can
            // link here with words of their choosing, on the sidecar's own origin.
            let ours = q
                .get("state")
                .zip(self.cookies.get(&parts.headers, &self.cookies.state))
                .is_some_and(|(state, sealed)| {
                    let keys = self.sessions.keys();
                    let mut in_flight =
                        login_state::open(keys, &sealed, now_unix(), self.login_ttl());
                    login_state::take(&mut in_flight, state).is_some()
                });
            if !ours {
                return Err(bad("OIDC state mismatch."));
            }
            // RFC 9207 §2.4 holds for error responses too: another IdP's refusal is not shown
            // as this one's.
            if !self.iss_ok(&q) {
                tracing::warn!("callback iss parameter is missing or not the configured issuer");
                return Err(bad("OIDC code exchange failed"));
            }
            let desc = q.get("error_description").map(String::as_str).unwrap_or("");
            tracing::warn!(error = %printable(err), description = %printable(desc), "the IdP refused the login");
            return Err(CallbackError::Idp(format!(
                "The identity provider did not complete the login: {} {}",
                printable(err),
                printable(desc)
            )));
        }
        let (Some(code), Some(state)) = (q.get("code"), q.get("state")) else {
            return Err(bad("Missing 'code' or 'state' query parameter."));
        };
        let sealed = self
            .cookies
            .get(&parts.headers, &self.cookies.state)
            .ok_or(bad("OIDC state cookie missing."))?;
        let now = now_unix();
        let mut in_flight = login_state::open(self.sessions.keys(), &sealed, now, self.login_ttl());
        if in_flight.is_empty() {
            return Err(bad("Invalid or expired OIDC state cookie."));
        }
        let st: LoginState =
            login_state::take(&mut in_flight, state).ok_or(bad("OIDC state mismatch."))?;
        if !self.iss_ok(&q) {
            tracing::warn!("callback iss parameter is missing or not the configured issuer");
            return Err(bad("OIDC code exchange failed"));
        }
        let marker = crate::store::keys::hashed("state", &["state", &st.state]);
        let first_use = self
            .sessions
            .store()
            // The marker keeps `next`, for a browser that comes back to this callback; sealed,
            // as everything at rest (a path and query may say what the user was reading).
            .put_if_absent(
                &marker,
                self.sessions.keys().seal(st.next.as_bytes()).as_bytes(),
                self.settings().login_timeout,
            )
            .await
            .map_err(|e| CallbackError::Other(e.into()))?;
        if !first_use {
            tracing::warn!("a login state was replayed");
            return Err(bad("Invalid or expired OIDC state cookie."));
        }

        let tokens = self
            .provider
            .exchange_code(code, &st.verifier)
            .await
            .map_err(|e| match e {
                TokenError::MissingSub => bad("ID token missing 'sub' claim."),
                e => {
                    tracing::warn!(error = %e, "OIDC code exchange failed");
                    bad("OIDC code exchange failed")
                }
            })?;
        let id_token = tokens.id_token.clone().ok_or_else(|| {
            tracing::warn!("token response has no id_token");
            bad("OIDC code exchange failed")
        })?;
        let claims = self
            .provider
            .validate_id_token(&id_token, Some(&st.nonce), Some(&tokens.access_token))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "ID token rejected");
                bad("OIDC code exchange failed")
            })?;
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(bad("ID token missing 'sub' claim."))?
            .to_owned();
        // `auth_max_age_secs`: the login asked the IdP for an authentication that recent; an
        // IdP that ignores `max_age` (or keeps no `auth_time`) must not pass an older one off.
        if let Some(max_age) = self.provider.max_age() {
            let within = super::id_token::authenticated_within(&claims, max_age, now_unix());
            if let Err(why) = within {
                // OIDC Core §3.1.3.7 (13): ask for a new authentication, once, with
                // `prompt=login`, which an IdP that ignores `max_age` may still honour. An
                // `auth_time` ahead of our clock would come back the same: refused at once;
                // so is a login that asked for `prompt=login` (or `none`) already.
                let retry = !st.reauth
                    && !matches!(why, StaleAuth::Future(_))
                    && self.provider.can_force_login();
                if retry {
                    self.metrics.login_reauthenticated();
                    tracing::info!(
                        sub = %sub,
                        reason = %why,
                        auth_max_age_secs = max_age.as_secs(),
                        "the IdP's authentication is older than auth_max_age_secs: asking it \
                         to authenticate the user again (prompt=login)"
                    );
                    let (again, location) = self
                        .begin_login(st.next.clone(), true)
                        .map_err(CallbackError::Other)?;
                    in_flight.push(again);
                    return Ok((redirect(&location), in_flight));
                }
                self.metrics.login_refused("stale_authentication");
                tracing::warn!(
                    sub = %sub,
                    reason = %why,
                    auth_max_age_secs = max_age.as_secs(),
                    "OIDC login refused: the IdP did not show an authentication within \
                     auth_max_age_secs (does it honour max_age and send auth_time?)"
                );
                return Err(CallbackError::Idp(
                    "The identity provider did not confirm a recent sign-in: sign in again."
                        .to_owned(),
                ));
            }
        }
        let profile =
            super::profile::read(&self.provider, &sub, &claims, &tokens.access_token, false)
                .await
                .map_err(|e| match e {
                    super::profile::ProfileError::OtherSubject => {
                        bad("Userinfo sub does not match ID token sub.")
                    }
                    super::profile::ProfileError::Userinfo(e) => {
                        tracing::warn!(error = %e, "userinfo failed");
                        bad("Failed to fetch userinfo from IdP.")
                    }
                })?;
        // `[authz]` before anything is written anywhere: a refused user leaves no trace at the
        // backend and gets no session.
        let settings = self.settings();
        if let Err(why) = super::authz::admits(&settings.authz, &profile) {
            self.metrics.login_refused(why.label());
            tracing::warn!(sub = %sub, reason = why.label(), "OIDC login refused by [authz]");
            return Err(CallbackError::Refused(
                Error::Forbidden("You are not allowed to use this service."),
                sub,
            ));
        }

        let backend = self
            .identity
            .on_login(&sub, &profile, &claims)
            .await
            .map_err(|e| {
                use crate::identity::openrag::BridgeError as B;
                let reason = match e {
                    B::NotRegistered => "not_registered",
                    B::NoToken => "no_token",
                    B::EmailConflict => "email_conflict",
                    e => return CallbackError::Other(Error::Identity(e)),
                };
                self.metrics.login_refused(reason);
                CallbackError::Refused(Error::Identity(e), sub.clone())
            })?;
        let access_lifetime = access_lifetime(tokens.expires_in);
        let access_expires_at = now.saturating_add(access_lifetime);
        let lifetime = settings.session_lifetime.as_secs() as i64;
        let mut session = Session {
            iss: self.provider.settings.issuer.clone(),
            sub: sub.clone(),
            sid: claims.get("sid").and_then(Value::as_str).map(str::to_owned),
            email: None,
            name: None,
            preferred_username: None,
            groups: Vec::new(),
            email_verified: None,
            access_token: tokens.access_token,
            expires_at: if tokens.refresh_token.is_some() {
                now + lifetime
            } else {
                // Nothing can renew it: the session ends with its token (OpenRag counts at
                // least 60 s; the sidecar never forwards a token past its real expiry), and
                // never outlives `session_lifetime`, however long the token is.
                access_expires_at.min(now + lifetime)
            },
            refresh_token: tokens.refresh_token,
            id_token,
            access_expires_at,
            access_lifetime,
            created_at: now,
            backend_user_id: backend.user_id,
            backend_token: backend.token,
            sealed_for: None,
            identity_headers: Default::default(),
            holder: Default::default(),
        };
        super::profile::apply(&mut session, &profile, &settings.authz.groups_claim);
        let created = self
            .sessions
            .create(&session, now, st.begun_ms())
            .await
            .map_err(|e| CallbackError::Other(e.into()))?;
        let Some(id) = created else {
            self.metrics.login_refused("idp_session_ended");
            tracing::info!(sub = %sub, "login refused: its IdP session was logged out meanwhile");
            return Err(CallbackError::User(
                StatusCode::UNAUTHORIZED,
                ENDED_MEANWHILE,
            ));
        };
        // Session fixation: whatever session this browser presented before dies with the login.
        if let Some(old) = self.cookies.get(&parts.headers, &self.cookies.session) {
            self.sessions
                .delete(&old)
                .await
                .map_err(|e| CallbackError::Other(e.into()))?;
        }
        let next = sanitize_next(&st.next, &self.settings().allowed_redirect_origins);
        // Without its query (search terms, ids: the access log leaves queries out too), and
        // escaped like a logged path (the user chose it: bidi overrides, terminal escapes).
        let shown = next.split(['?', '#']).next().unwrap_or_default();
        tracing::info!(
            sub = %printable(&sub),
            next = %crate::telemetry::loggable(shown),
            "OIDC login success"
        );
        let mut r = redirect(&next);
        r.headers_mut().append(
            header::SET_COOKIE,
            self.cookies
                .set_session(&id, session.expires_at - now, secure),
        );
        self.identity
            .end_previous_cookies(&parts.headers, r.headers_mut());
        Ok((r, in_flight))
    }
}

/// The callback errors of a login that is no longer in flight (spent, expired, unknown).
fn lost_login(msg: &str) -> bool {
    matches!(
        msg,
        "OIDC state cookie missing."
            | "Invalid or expired OIDC state cookie."
            | "OIDC state mismatch."
            | ENDED_MEANWHILE
    )
}

/// A back-channel logout ended the IdP session this login was completing (`Sessions::create`).
const ENDED_MEANWHILE: &str =
    "Your session at the identity provider ended while you were signing in.";

enum CallbackError {
    User(StatusCode, &'static str),
    Idp(String),
    Other(Error),
    /// The user authenticated but is refused (not registered, no token): the page shows their
    /// `sub` for an administrator.
    Refused(Error, String),
}

/// An IdP-supplied string made safe to show and log: printable, bounded.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}
