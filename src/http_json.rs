//! The one HTTP client the sidecar calls other services with: the IdP (discovery, JWKS, token,
//! userinfo) and the OpenRag backend's admin API. Requests in, status and JSON out.
//!
//! It follows no redirects (hyper never does), caps response sizes and has a deadline per call,
//! so a hostile or broken service cannot make the sidecar fetch elsewhere, buffer without bound
//! or hang a login. Errors keep their cause (`#[source]`); [`error_chain`] prints it for logs.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot reach {service}")]
    Transport {
        service: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("{service} did not answer within {timeout:?}")]
    Timeout {
        service: &'static str,
        timeout: Duration,
    },
    #[error("{service} answered HTTP {status}")]
    Status {
        service: &'static str,
        status: StatusCode,
        body: Bytes,
    },
    #[error("{service}'s response is not valid JSON")]
    Json {
        service: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// A JSON client for one service (named in its errors).
#[derive(Clone)]
pub struct JsonClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    service: &'static str,
    timeout: Duration,
    max_bytes: usize,
}

impl JsonClient {
    pub fn new(
        service: &'static str,
        tls: rustls::ClientConfig,
        timeout: Duration,
        max_bytes: usize,
    ) -> Self {
        JsonClient {
            client: Client::builder(TokioExecutor::new())
                .build(crate::tls::connector(tls, timeout)),
            service,
            timeout,
            max_bytes,
        }
    }

    /// A transport error of this service (a request that could not even be built, say).
    pub fn transport(&self, source: impl Into<BoxError>) -> HttpError {
        HttpError::Transport {
            service: self.service,
            source: source.into(),
        }
    }

    /// Sends `req` and returns the response with its whole body, within the deadline.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Bytes>, HttpError> {
        self.send_within(req, self.max_bytes).await
    }

    /// [`JsonClient::send`], with a body of at most `max_bytes` for this call.
    async fn send_within(
        &self,
        req: Request<Full<Bytes>>,
        max_bytes: usize,
    ) -> Result<Response<Bytes>, HttpError> {
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| self.transport(e))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, max_bytes)
                .collect()
                .await
                .map_err(|e| self.transport(e))?
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout {
                service: self.service,
                timeout: self.timeout,
            })?
    }

    /// [`JsonClient::send`], keeping the status and the body.
    pub async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        self.exchange_within(req, self.max_bytes).await
    }

    /// [`JsonClient::exchange`], with a body of at most `max_bytes` for this call (an answer
    /// known to grow larger than the client's usual bound).
    pub async fn exchange_within(
        &self,
        req: Request<Full<Bytes>>,
        max_bytes: usize,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        let resp = self.send_within(req, max_bytes).await?;
        Ok((resp.status(), resp.into_body()))
    }

    /// The service's answer as an error (for statuses the caller does not handle).
    pub fn status_error(&self, status: StatusCode, body: Bytes) -> HttpError {
        HttpError::Status {
            service: self.service,
            status,
            body,
        }
    }

    /// [`JsonClient::exchange`], then a 2xx body parsed as JSON (empty: `null`); any other
    /// status is [`HttpError::Status`].
    pub async fn json(&self, req: Request<Full<Bytes>>) -> Result<serde_json::Value, HttpError> {
        let (status, body) = self.exchange(req).await?;
        if !status.is_success() {
            return Err(HttpError::Status {
                service: self.service,
                status,
                body,
            });
        }
        if body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&body).map_err(|source| HttpError::Json {
            service: self.service,
            source,
        })
    }
}

/// `error: cause: cause…`, for logs only.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        // An error that quotes its source already (`failed: {source}`) is not repeated.
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
