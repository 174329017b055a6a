//! The error type of the request path, and the ONE place errors become HTTP responses.
//!
//! Each variant says who is at fault, which decides the status: the client (4xx), the upstream
//! (502/504) or the sidecar itself (500). The conversion has no side effects and never logs;
//! the router logs once with the request id. Bodies are short: JSON `{"detail": …}` (OpenRag's
//! shape) for API clients, a small HTML page for browsers. Internal causes never reach a body.

use crate::identity::openrag::BridgeError;
use crate::proxy::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The upstream refused, reset or closed the connection.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(#[source] crate::proxy::SendError),
    /// The upstream did not send its response head in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// Every upstream place is taken and this worker's queue is full.
    #[error("upstream busy")]
    UpstreamBusy,
    /// A request the sidecar will not forward (malformed target, bad header…).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A method the sidecar never forwards (`CONNECT`).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No valid session on a path that needs one.
    #[error("unauthenticated")]
    Unauthenticated,
    /// Authenticated, but not allowed (cross-site logout, unregistered user…).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// A request from another site's page carried the session cookie (`auth::cross_site`).
    /// Not a failed authentication: the visitor's browser sent it for that page.
    #[error("cross-site request refused")]
    CrossSite,
    /// Discovery has not loaded (IdP down or misconfigured): logins cannot start.
    #[error("OIDC discovery has not completed")]
    IdpUnavailable,
    /// The OpenRag identity bridge could not map the user or obtain their token.
    #[error("OpenRag identity bridge: {0}")]
    Identity(crate::identity::openrag::BridgeError),
    /// The session store cannot be reached: fail closed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A WebSocket handshake from a client that holds its cap of tunnels already.
    #[error("too many WebSocket tunnels")]
    TooManyTunnels,
    /// A request with a body from a client that has its cap of bodies on their way upstream.
    #[error("too many request bodies in flight")]
    TooManyUploads,
    /// An event stream's answer to a client that holds its cap of event streams.
    #[error("too many event streams")]
    TooManyStreams,
    /// Over a rate limit; the client may retry after this many seconds.
    #[error("rate limited")]
    RateLimited(u64),
    /// A bug or an impossible state; details are logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::identity::ForwardError> for Error {
    fn from(e: crate::identity::ForwardError) -> Self {
        use crate::identity::ForwardError;
        match e {
            ForwardError::Proxy(p) => p.into(),
            ForwardError::Bridge(b) => Error::Identity(b),
            ForwardError::Store(s) => Error::Store(s),
            ForwardError::Unauthenticated => Error::Unauthenticated,
            ForwardError::Forbidden(m) => Error::Forbidden(m),
        }
    }
}

impl From<crate::proxy::ProxyError> for Error {
    fn from(e: crate::proxy::ProxyError) -> Self {
        use crate::proxy::ProxyError;
        match e {
            ProxyError::Unavailable(e) => Error::UpstreamUnavailable(e),
            ProxyError::Timeout => Error::UpstreamTimeout,
            ProxyError::BadRequest(m) => Error::BadRequest(m),
            ProxyError::TooManyTunnels => Error::TooManyTunnels,
            ProxyError::TooManyUploads => Error::TooManyUploads,
            ProxyError::TooManyStreams => Error::TooManyStreams,
            ProxyError::Busy => Error::UpstreamBusy,
        }
    }
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Error::UpstreamBusy => StatusCode::SERVICE_UNAVAILABLE,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) | Error::CrossSite => StatusCode::FORBIDDEN,
            Error::IdpUnavailable => StatusCode::BAD_GATEWAY,
            Error::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Identity(b) => match b {
                BridgeError::NotRegistered | BridgeError::NoToken => StatusCode::FORBIDDEN,
                BridgeError::EmailConflict => StatusCode::CONFLICT,
                BridgeError::Backend(_) => StatusCode::BAD_GATEWAY,
                BridgeError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            Error::RateLimited(_)
            | Error::TooManyTunnels
            | Error::TooManyUploads
            | Error::TooManyStreams => StatusCode::TOO_MANY_REQUESTS,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message shown to the client: short, actionable, never a cause chain.
    fn public_message(&self) -> &'static str {
        match self {
            Error::UpstreamUnavailable(_) => "Upstream unavailable",
            Error::UpstreamTimeout => "Upstream timed out",
            Error::UpstreamBusy => "The service is busy, please retry shortly",
            Error::BadRequest(m) => m,
            Error::MethodNotAllowed => "Method Not Allowed",
            Error::Unauthenticated => "Unauthenticated",
            Error::Forbidden(m) => m,
            Error::CrossSite => "Cross-site request refused",
            Error::IdpUnavailable => "OIDC discovery failed — see server logs.",
            Error::Store(_) => "Session store unavailable, please retry shortly",
            Error::Identity(b) => match b {
                BridgeError::NotRegistered => "User not registered",
                BridgeError::NoToken => "No OpenRag token is available for this user",
                BridgeError::EmailConflict => {
                    "An account with this email already exists. Ask your administrator to link it to your identity provider login."
                }
                BridgeError::Backend(_) => "OpenRag backend unavailable",
                BridgeError::Store(_) => "Session store unavailable, please retry shortly",
            },
            Error::RateLimited(_) => "Rate limit exceeded. Please retry later.",
            Error::TooManyTunnels => {
                "Too many WebSocket connections open; close some before opening another."
            }
            Error::TooManyUploads => {
                "Too many uploads in progress; wait for one to finish before sending another."
            }
            Error::TooManyStreams => {
                "Too many event streams open; close some before opening another."
            }
            Error::Internal(_) => "Internal error",
        }
    }

    /// A label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::UpstreamUnavailable(crate::proxy::SendError::Connect(_)) => "connect",
            Error::UpstreamUnavailable(_) => "reset",
            Error::UpstreamTimeout => "timeout",
            Error::UpstreamBusy => "busy",
            Error::BadRequest(_) => "bad_request",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::Unauthenticated => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::CrossSite => "cross_site",
            Error::IdpUnavailable => "idp_unavailable",
            Error::Store(_) => "store_unavailable",
            Error::Identity(_) => "identity",
            Error::RateLimited(_) => "rate_limited",
            Error::TooManyTunnels => "too_many_tunnels",
            Error::TooManyUploads => "too_many_uploads",
            Error::TooManyStreams => "too_many_streams",
            Error::Internal(_) => "internal",
        }
    }

    /// What a person reading the HTML page can do about it (JSON clients get the short detail).
    fn html_message(&self) -> &'static str {
        match self {
            Error::Identity(BridgeError::NotRegistered) => {
                "User not registered. You signed in successfully, but your account does not exist in \
                 OpenRag yet. Ask an OpenRag administrator to create it (with your identity-provider \
                 user id as external_user_id), then try again."
            }
            Error::Identity(BridgeError::NoToken) => {
                "Your OpenRag account exists, but the single sign-on proxy holds no access token for it. \
                 Ask an administrator to add your token to the proxy's token file, or to set the proxy's \
                 openrag.token_policy to \"regenerate\" (this replaces your current OpenRag token)."
            }
            other => other.public_message(),
        }
    }

    /// The response for this error, HTML when the client is a browser.
    pub fn into_response(self, wants_html: bool) -> Response<Body> {
        self.into_page(wants_html, &[])
    }

    /// The same; a browser's page also shows `details` (the request id, the user's `sub`) to
    /// give to an administrator.
    pub fn into_page(self, wants_html: bool, details: &[(&str, &str)]) -> Response<Body> {
        if let Error::RateLimited(secs) = self {
            return rate_limited(secs);
        }
        let msg = if wants_html {
            self.html_message()
        } else {
            self.public_message()
        };
        // A refusal a client can retry: say when (a tunnel's place frees when another tunnel
        // of its holder closes; the store comes back by itself), so well-behaved clients do
        // not retry in a tight loop.
        let retry = match &self {
            Error::TooManyTunnels | Error::TooManyUploads | Error::TooManyStreams => Some(5u32),
            Error::Store(_) | Error::Identity(BridgeError::Store(_)) | Error::UpstreamBusy => {
                Some(1)
            }
            _ => None,
        };
        let mut resp = page_response(self.status(), msg, wants_html, details, None);
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// OpenRag's answer over a rate limit: 429 with its JSON body and `Retry-After`.
fn rate_limited(secs: u64) -> Response<Body> {
    let body = r#"{"detail":"Rate limit exceeded. Please retry later.","extra":{}}"#;
    let mut resp = Response::new(crate::proxy::full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    page_headers(h);
    resp
}

/// A synthetic response with a `{"detail": message}` body, or an HTML page for browsers.
pub fn message_response(status: StatusCode, message: &str, wants_html: bool) -> Response<Body> {
    page_response(status, message, wants_html, &[], None)
}

/// [`message_response`] whose page lists `details`, offers `action` (a link and its words) and
/// links back to the application.
pub fn page_response(
    status: StatusCode,
    message: &str,
    wants_html: bool,
    details: &[(&str, &str)],
    action: Option<(&str, &str)>,
) -> Response<Body> {
    let (content_type, body) = if wants_html {
        let title = status.canonical_reason().unwrap_or("Error");
        let mut facts = String::new();
        for (k, v) in details.iter().filter(|(_, v)| !v.is_empty()) {
            facts.push_str(&format!(
                "<dt>{}</dt><dd><code>{}</code></dd>",
                html_escape(k),
                html_escape(v)
            ));
        }
        if !facts.is_empty() {
            facts = format!("<p>Give these to an administrator:</p><dl>{facts}</dl>");
        }
        if let Some((href, words)) = action {
            facts = format!(
                "<p><a href=\"{}\">{}</a></p>{facts}",
                html_escape(href),
                html_escape(words)
            );
        }
        let page = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} {title}</title></head>\
             <body><h1>{code} {title}</h1><p>{msg}</p>{facts}\
             <p><a href=\"/\">Back to the application</a></p></body></html>\n",
            code = status.as_u16(),
            msg = html_escape(message),
        );
        ("text/html; charset=utf-8", page)
    } else {
        let json = serde_json::json!({ "detail": message }).to_string();
        ("application/json", json)
    };
    let mut resp = Response::new(crate::proxy::full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    page_headers(resp.headers_mut());
    resp
}

/// The `Content-Security-Policy` of the sidecar's own pages: no script, no framing, inline
/// styles only.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";

/// Headers every response of the sidecar's own carries: its pages are not sniffed into
/// something else, run nothing, cannot be framed (clickjacking), and leak no URL onwards.
pub fn page_headers(h: &mut http::HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// True when the `Accept` header asks for HTML (a browser navigation).
pub fn wants_html(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_string(r: Response<Body>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn timeout_is_504_json_for_apis_and_html_for_browsers() {
        let r = Error::UpstreamTimeout.into_response(false);
        assert_eq!(r.status(), 504);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(body_string(r).await, r#"{"detail":"Upstream timed out"}"#);
        let r = Error::UpstreamTimeout.into_response(true);
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(r.headers()[header::REFERRER_POLICY], "no-referrer");
        assert!(r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        assert!(body_string(r)
            .await
            .contains("<h1>504 Gateway Timeout</h1>"));
    }

    #[tokio::test]
    async fn internal_details_never_reach_the_body() {
        let r = Error::Internal("secret state".into()).into_response(false);
        assert_eq!(r.status(), 500);
        assert!(!body_string(r).await.contains("secret"));
    }

    /// Refusals a client may retry say when; the others do not.
    #[test]
    fn retryable_refusals_carry_retry_after() {
        let store = || crate::store::StoreError::Unavailable("down".into());
        for html in [false, true] {
            for (e, secs) in [
                (Error::TooManyTunnels, "5"),
                (Error::TooManyUploads, "5"),
                (Error::TooManyStreams, "5"),
                (Error::Store(store()), "1"),
                (Error::Identity(BridgeError::Store(store())), "1"),
            ] {
                let r = e.into_page(html, &[]);
                assert_eq!(r.headers()[header::RETRY_AFTER], secs);
            }
        }
        let r = Error::UpstreamTimeout.into_response(false);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn html_is_escaped_and_accept_is_detected() {
        assert_eq!(
            html_escape("<a href='x'>&"),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
        let mut h = http::HeaderMap::new();
        assert!(!wants_html(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml"),
        );
        assert!(wants_html(&h));
    }
}
