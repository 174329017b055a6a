//! The sidecar's own `/auth/*` routes, dispatched by path and method: the login flows
//! (`flow.rs`), logout and `/auth/me` (`logout.rs`) and back-channel logout (`backchannel.rs`).
//! A known route with the wrong method gets 405. Each handler returns a complete response.

use super::flow::Auth;
use crate::error::{message_response, Error};
use crate::proxy::Body;
use http::{header, request::Parts, HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;

/// The IdP's back-channel logout route (it spends no rate-limit budget but failures).
pub const BACKCHANNEL_PATH: &str = "/auth/backchannel-logout";

/// The paths of the routes below.
const ROUTES: [&str; 6] = [
    "/auth/login",
    "/auth/callback",
    "/auth/logout",
    "/auth/me",
    BACKCHANNEL_PATH,
    "/auth/frontchannel-logout",
];

impl Auth {
    /// Whether `path` is one of the sidecar's own `/auth/*` routes.
    pub fn is_route(path: &str) -> bool {
        ROUTES.contains(&path)
    }

    /// Answers a route of [`Auth::is_route`]. The flows are boxed: rare, and their state would
    /// otherwise enlarge every request's future.
    pub async fn route(
        self: &std::sync::Arc<Self>,
        parts: &Parts,
        body: Incoming,
        scheme: crate::tls::Scheme,
        client: impl FnOnce() -> std::net::IpAddr,
    ) -> Result<Response<Body>, Error> {
        match (&parts.method, parts.uri.path()) {
            (&Method::GET, "/auth/login") => Box::pin(self.login(parts, scheme)).await,
            (&Method::GET, "/auth/callback") => Ok(Box::pin(self.callback(parts, scheme)).await),
            (&Method::GET, "/auth/logout") => Box::pin(self.logout(parts, scheme)).await,
            (&Method::POST, "/auth/logout") => Box::pin(self.logout_confirmed(parts, scheme)).await,
            (&Method::GET, "/auth/me") => Box::pin(self.me(parts)).await,
            (&Method::GET, "/auth/frontchannel-logout") => {
                Box::pin(self.frontchannel_logout(parts, scheme)).await
            }
            (&Method::POST, "/auth/backchannel-logout") => {
                Ok(Box::pin(self.backchannel_route(body, client())).await)
            }
            _ => Ok(message_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                false,
            )),
        }
    }

    /// `POST /auth/backchannel-logout`: 200 `no-store` when valid, else 400 with an OAuth-style
    /// error body and nothing revoked.
    ///
    /// The form is read within `idp_timeout_secs` and 64 KiB: the caller is the IdP, whose
    /// answers get as long; a client that announces more, or sends slower, holds nothing.
    async fn backchannel_route(
        self: &std::sync::Arc<Self>,
        body: Incoming,
        client: std::net::IpAddr,
    ) -> Response<Body> {
        use http_body::Body as _;
        use http_body_util::{BodyExt, Limited};
        const MAX_FORM: u64 = 64 * 1024;
        // The route spends no rate-limit budget (an IdP ending many sessions at once must not
        // be turned away), so what it may hold at once is bounded (`backchannel_limits`).
        if !self.backchannel.accepts_from(client) {
            tracing::warn!(%client, "back-channel logout from outside backchannel_logout_from refused");
            return oauth_error(
                StatusCode::FORBIDDEN,
                "logout requests are not accepted from this address",
            );
        }
        let Some(mut admitted) = self.backchannel.admit(client) else {
            return backchannel_busy();
        };
        if body.size_hint().lower() > MAX_FORM {
            return oauth_error(StatusCode::PAYLOAD_TOO_LARGE, "logout request too large");
        }
        let read = Limited::new(body, MAX_FORM as usize).collect();
        let form = match tokio::time::timeout(self.settings().idp_timeout, read).await {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return oauth_error(StatusCode::PAYLOAD_TOO_LARGE, "logout request too large")
            }
            // Broken off: refused below as a form without a logout token.
            Ok(Err(_)) => bytes::Bytes::new(),
            Err(_) => {
                return oauth_error(StatusCode::REQUEST_TIMEOUT, "logout request body too slow")
            }
        };
        admitted.read();
        match self.backchannel_logout(&form).await {
            Ok(_) => backchannel_answer(StatusCode::OK, String::new()),
            Err(super::backchannel::LogoutError::Busy) => backchannel_busy(),
            Err(super::backchannel::LogoutError::Store(e)) => {
                tracing::warn!(error = %e, "back-channel logout could not reach the store");
                temporarily_unavailable()
            }
            Err(e @ super::backchannel::LogoutError::Unavailable(_)) => {
                tracing::warn!(error = %e, "back-channel logout could not be verified");
                temporarily_unavailable()
            }
            Err(e) => {
                tracing::warn!(error = %e, "back-channel logout refused");
                oauth_error(StatusCode::BAD_REQUEST, &e.to_string())
            }
        }
    }
}

/// Marks a response of the sidecar's own that refused a credential other than with 401 or 403
/// (a back-channel logout's 400): it spends the caller's failure budget as those do.
#[derive(Clone, Copy)]
pub struct RefusedCredential;

/// A back-channel logout refused for want of a slot: 503, to be sent again in a second.
fn backchannel_busy() -> Response<Body> {
    tracing::debug!("back-channel logout refused: its slots are taken");
    let mut r = temporarily_unavailable();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// A back-channel logout that cannot be judged now (the store, the IdP's keys, a slot): 503,
/// which an IdP that retries may send again.
fn temporarily_unavailable() -> Response<Body> {
    let b = serde_json::json!({"error": "temporarily_unavailable"});
    backchannel_answer(StatusCode::SERVICE_UNAVAILABLE, b.to_string())
}

/// A refused back-channel logout: an OAuth-style error body.
fn oauth_error(status: StatusCode, description: &str) -> Response<Body> {
    let b = serde_json::json!({"error": "invalid_request", "error_description": description});
    let mut r = backchannel_answer(status, b.to_string());
    r.extensions_mut().insert(RefusedCredential);
    r
}

/// The back-channel logout's answer: never cached; a JSON body unless it succeeded.
fn backchannel_answer(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(crate::proxy::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status != StatusCode::OK {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    r
}
