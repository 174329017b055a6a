//! The sidecar's own `/auth/*` routes, dispatched by path and method: the login flows
//! (`flow.rs`), logout and `/auth/me` (`logout.rs`) and back-channel logout (`backchannel.rs`).
//! A known route with the wrong method gets 405. Each handler returns a complete response.

use super::flow::Auth;
use crate::error::{message_response, Error};
use crate::proxy::Body;
use http::{header, request::Parts, HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;

/// The paths of the routes below.
const ROUTES: [&str; 6] = [
    "/auth/login",
    "/auth/callback",
    "/auth/logout",
    "/auth/me",
    "/auth/backchannel-logout",
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
        &self,
        parts: &Parts,
        body: Incoming,
        scheme: crate::tls::Scheme,
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
                Ok(Box::pin(self.backchannel_route(body)).await)
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
    async fn backchannel_route(&self, body: Incoming) -> Response<Body> {
        use http_body_util::{BodyExt, Limited};
        let form = match Limited::new(body, 64 * 1024).collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => bytes::Bytes::new(),
        };
        let (status, body) = match self.backchannel_logout(&form).await {
            Ok(_) => (StatusCode::OK, String::new()),
            Err(super::backchannel::LogoutError::Store(e)) => {
                tracing::warn!(error = %e, "back-channel logout could not reach the store");
                let b = serde_json::json!({"error": "temporarily_unavailable"});
                (StatusCode::SERVICE_UNAVAILABLE, b.to_string())
            }
            Err(e) => {
                tracing::warn!(error = %e, "back-channel logout refused");
                let b = serde_json::json!({"error": "invalid_request", "error_description": e.to_string()});
                (StatusCode::BAD_REQUEST, b.to_string())
            }
        };
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
}
