//! Calls to the IdP (discovery, JWKS, token, userinfo) over the shared JSON client
//! (`crate::http_json`: no redirects, bounded responses, a deadline per call), and the same
//! client as the `openidconnect` crate's HTTP client ([`IdpHttp::call`]).

use crate::http_json::{HttpError, JsonClient};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::Full;
use std::time::Duration;

/// Largest IdP response accepted (discovery documents and JWKS are a few KiB).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// What a call to the IdP can fail with.
pub type IdpHttpError = HttpError;

#[derive(Clone)]
pub struct IdpHttp {
    http: JsonClient,
}

impl IdpHttp {
    pub fn new(tls: rustls::ClientConfig, timeout: Duration) -> Self {
        IdpHttp {
            http: JsonClient::new("the IdP", tls, timeout, MAX_RESPONSE_BYTES),
        }
    }

    pub async fn get_json(
        &self,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<serde_json::Value, IdpHttpError> {
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(header::ACCEPT, "application/json");
        if let Some(t) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::default())
            .map_err(|e| self.http.transport(e))?;
        self.http.json(req).await
    }

    /// POSTs a form; `basic` is the already-encoded `client_secret_basic` credential.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<&str>,
    ) -> Result<serde_json::Value, IdpHttpError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(b) = basic {
            req = req.header(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Basic {b}")).map_err(|e| self.http.transport(e))?,
            );
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.http.transport(e))?;
        self.http.json(req).await
    }

    /// For `openidconnect` (see the `AsyncHttpClient` impl below): the request goes out through the shared client (no
    /// redirects followed, bounded, with a deadline). Only `200` and the OAuth error statuses
    /// (`400`, `401`: RFC 6749 §5.2) reach the crate; any other status is an
    /// [`IdpHttpError::Status`], so that a refresh can tell an outage (5xx, 429) from a refusal.
    async fn for_crate(
        &self,
        req: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, IdpHttpError> {
        let (parts, body) = req.into_parts();
        let resp = self
            .http
            .send(Request::from_parts(parts, Full::new(Bytes::from(body))))
            .await?;
        let status = resp.status();
        if !(status.is_success() || status.as_u16() == 400 || status.as_u16() == 401) {
            return Err(self.http.status_error(status, resp.into_body()));
        }
        let (parts, body) = resp.into_parts();
        Ok(http::Response::from_parts(parts, body.to_vec()))
    }
}

/// `openidconnect`'s HTTP client is this one. A named future type (not a closure) keeps the
/// login and refresh futures `Send` for every lifetime, as the server's tasks need.
impl<'c> openidconnect::AsyncHttpClient<'c> for IdpHttp {
    type Error = IdpHttpError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, IdpHttpError>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(self.for_crate(request))
    }
}
