//! The HTTP client used to talk to the IdP: discovery, JWKS, token, userinfo.
//!
//! It follows no redirects (hyper never does), caps response sizes, and has a deadline per
//! call, so a hostile or broken IdP cannot make the sidecar fetch elsewhere, buffer without
//! bound, or hang a login.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Largest IdP response accepted (discovery documents and JWKS are a few KiB).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IdpHttpError {
    #[error("cannot reach the IdP: {0}")]
    Transport(String),
    #[error("IdP did not answer within {0:?}")]
    Timeout(Duration),
    #[error("IdP answered HTTP {status}")]
    Status { status: StatusCode, body: Bytes },
    #[error("IdP response is not valid JSON: {0}")]
    Json(String),
}

#[derive(Clone)]
pub struct IdpHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl IdpHttp {
    pub fn new(tls: rustls::ClientConfig, timeout: Duration) -> Self {
        let connector = crate::tls::connector(tls, timeout);
        IdpHttp {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
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
            .map_err(|e| IdpHttpError::Transport(e.to_string()))?;
        self.send_json(req).await
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
                HeaderValue::from_str(&format!("Basic {b}"))
                    .map_err(|e| IdpHttpError::Transport(e.to_string()))?,
            );
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| IdpHttpError::Transport(e.to_string()))?;
        self.send_json(req).await
    }

    async fn send_json(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<serde_json::Value, IdpHttpError> {
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| IdpHttpError::Transport(error_chain(&e)))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| IdpHttpError::Transport(e.to_string()))?
                .to_bytes();
            Ok::<_, IdpHttpError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| IdpHttpError::Timeout(self.timeout))??;
        if !status.is_success() {
            return Err(IdpHttpError::Status { status, body });
        }
        serde_json::from_slice(&body).map_err(|e| IdpHttpError::Json(e.to_string()))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
