//! Calls to the IdP (discovery, JWKS, token, userinfo) over the shared JSON client
//! (`crate::http_json`: no redirects, bounded responses, a deadline per call).

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
}
