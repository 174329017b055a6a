//! A client for the OpenRag backend's users admin API (docs/openrag-backend.md#admin-api), authenticated with the
//! backend's `AUTH_TOKEN`. Bodies are JSON; the API has no lookup by `external_user_id`, so the
//! bridge lists users and filters. Never logs a token.

use crate::http_json::{HttpError, JsonClient};
use crate::secret::Secret;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// A user as the users API returns it (the fields the bridge needs).
#[derive(Debug, Clone, Deserialize)]
pub struct BackendUser {
    pub id: u64,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub external_user_id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub is_admin: bool,
    /// Partition memberships (`GET /users/{id}` has them; the list does not).
    #[serde(default)]
    pub memberships: Vec<Membership>,
}

/// One partition membership as the users API reports it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Membership {
    pub partition: String,
    pub role: String,
}

/// A request body: none, JSON (the users API) or a form (the partition API).
enum Payload {
    Empty,
    Json(Value),
    Form(String),
}

/// Characters escaped in a partition name used as a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn segment(s: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(s, SEGMENT)
}

fn form(pairs: &[(&str, &str)]) -> Payload {
    Payload::Form(
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish(),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("backend users API")]
    Http(#[source] HttpError),
    #[error("backend users API answered {status}: {detail}")]
    Status { status: StatusCode, detail: String },
    #[error("backend users API answered unexpected JSON: {0}")]
    Json(String),
    /// The listing another login waited for failed moments ago (its error, as text).
    #[error("backend users API, listing every user: {0}")]
    Earlier(String),
    /// A question not asked again yet, since the last time it failed moments ago.
    #[error("backend users API: {0} (it failed moments ago; asked again shortly)")]
    NotAskedYet(&'static str),
}

/// A JSON error without the value it quotes (another user's email, say), for logs.
fn unexpected(e: serde_json::Error) -> AdminError {
    AdminError::Json(format!(
        "{:?} at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    ))
}

/// Largest answer accepted from the users API, but for the list of every user.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Largest list of every user accepted (`GET /users/`): at about 250 bytes a user, some
/// 250,000 users. It is held once as bytes and parsed into only the fields the bridge reads.
const MAX_LIST_BYTES: usize = 64 * 1024 * 1024;

/// `GET /users/`'s answer.
#[derive(Deserialize)]
struct UserList {
    users: Vec<BackendUser>,
}

pub struct AdminClient {
    http: JsonClient,
    base: String,
    token: Secret<String>,
}

impl AdminClient {
    pub fn new(
        base: &url::Url,
        token: Secret<String>,
        tls: rustls::ClientConfig,
        timeout: Duration,
    ) -> Self {
        AdminClient {
            http: JsonClient::new("the backend's users API", tls, timeout, MAX_RESPONSE_BYTES),
            base: base.as_str().trim_end_matches('/').to_owned(),
            token,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Payload) -> Result<Value, AdminError> {
        self.call_as(self.token.expose(), method, path, body).await
    }

    /// A call with another bearer than the admin token, its answer parsed as JSON.
    async fn call_as(
        &self,
        bearer: &str,
        method: Method,
        path: &str,
        body: Payload,
    ) -> Result<Value, AdminError> {
        let bytes = self
            .raw(bearer, method, path, body, MAX_RESPONSE_BYTES, None)
            .await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(unexpected)
    }

    /// The account `AUTH_TOKEN` itself belongs to (the administrator the sidecar acts as).
    pub async fn own_account(&self) -> Result<Option<u64>, AdminError> {
        self.token_owner(self.token.expose()).await
    }

    /// The admin token, for the account it belongs to (never regenerated: see `mod.rs`).
    pub fn own_token(&self) -> Secret<String> {
        self.token.clone()
    }

    /// A call's 2xx body, of at most `max_bytes`; any other status is [`AdminError::Status`].
    /// `for_client`: the address of the client the call is made for, sent as
    /// `X-Forwarded-For`: the backend charges a failed authentication to the address it sees,
    /// and without it that is the sidecar's own, whose admin calls then get 429 with everyone's
    /// failures (`None` for the sidecar's own calls).
    async fn raw(
        &self,
        bearer: &str,
        method: Method,
        path: &str,
        body: Payload,
        max_bytes: usize,
        for_client: Option<std::net::IpAddr>,
    ) -> Result<Bytes, AdminError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"));
        if let Some(ip) = for_client {
            req = req.header("x-forwarded-for", ip.to_string());
        }
        let payload = match body {
            Payload::Json(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            Payload::Form(f) => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Bytes::from(f)
            }
            Payload::Empty => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| AdminError::Http(self.http.transport(e)))?;
        let (status, bytes) = self
            .http
            .exchange_within(req, max_bytes)
            .await
            .map_err(AdminError::Http)?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("detail").map(|d| d.to_string()))
                // Logged: bounded, whatever the backend put there.
                .map(|d| d.chars().take(300).collect())
                .unwrap_or_default();
            return Err(AdminError::Status { status, detail });
        }
        Ok(bytes)
    }

    /// Whether the backend accepts `token`: `GET /users/info` with it, which any user may call.
    /// `Ok(false)` only for the backend's own refusal (403 `Invalid token`); anything else it
    /// cannot tell is an error.
    pub async fn token_works(&self, token: &str) -> Result<bool, AdminError> {
        Ok(self.token_owner(token).await?.is_some())
    }

    /// The id of the account `token` belongs to, as `GET /users/info` with it says; `None` for
    /// the backend's own refusal (403 `Invalid token`). Anything else it cannot tell is an error.
    pub async fn token_owner(&self, token: &str) -> Result<Option<u64>, AdminError> {
        self.token_owner_for(token, None).await
    }

    /// [`Self::token_owner`] for a token a client sent (`client`: its address), so that the
    /// backend charges a refusal to that client, not to the sidecar (`raw`).
    pub async fn token_owner_for(
        &self,
        token: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<Option<u64>, AdminError> {
        let answer = self
            .raw(
                token,
                Method::GET,
                "/users/info",
                Payload::Empty,
                MAX_RESPONSE_BYTES,
                client,
            )
            .await
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(unexpected));
        match answer {
            Ok(v) => match v.get("id").and_then(Value::as_u64) {
                Some(id) => Ok(Some(id)),
                None => Err(AdminError::Json("/users/info without an id".into())),
            },
            Err(AdminError::Status { status, detail })
                if status == StatusCode::FORBIDDEN && detail == "\"Invalid token\"" =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /users/{id}`.
    pub async fn get_user(&self, id: u64) -> Result<BackendUser, AdminError> {
        let v = self
            .call(Method::GET, &format!("/users/{id}"), Payload::Empty)
            .await?;
        serde_json::from_value(v).map_err(unexpected)
    }

    /// `GET /users/`: every user, parsed without a JSON tree of the whole list.
    pub async fn list_users(&self) -> Result<Vec<BackendUser>, AdminError> {
        let token = self.token.expose();
        let bytes = self
            .raw(
                token,
                Method::GET,
                "/users/",
                Payload::Empty,
                MAX_LIST_BYTES,
                None,
            )
            .await?;
        serde_json::from_slice::<UserList>(&bytes)
            .map(|l| l.users)
            .map_err(unexpected)
    }

    /// Creates a non-admin user; returns it and the token the backend shows only once.
    pub async fn create_user(
        &self,
        body: Value,
    ) -> Result<(BackendUser, Secret<String>), AdminError> {
        let v = self
            .call(Method::POST, "/users/", Payload::Json(body))
            .await?;
        let token = v
            .get("token")
            .and_then(Value::as_str)
            .map(|t| Secret::new(t.to_owned()));
        let user: BackendUser = serde_json::from_value(v).map_err(unexpected)?;
        Ok((
            user,
            token.ok_or_else(|| AdminError::Json("POST /users/ returned no token".into()))?,
        ))
    }

    pub async fn patch_user(&self, id: u64, body: Value) -> Result<(), AdminError> {
        self.call(Method::PATCH, &format!("/users/{id}"), Payload::Json(body))
            .await
            .map(|_| ())
    }

    /// A new token for user `id`; the previous one stops working at once.
    pub async fn regenerate_token(&self, id: u64) -> Result<Secret<String>, AdminError> {
        let v = self
            .call(
                Method::POST,
                &format!("/users/{id}/regenerate_token"),
                Payload::Empty,
            )
            .await?;
        v.get("token")
            .and_then(Value::as_str)
            .map(|t| Secret::new(t.to_owned()))
            .ok_or_else(|| AdminError::Json("regenerate_token returned no token".into()))
    }

    /// `POST /partition/{p}/users` (form `user_id`, `role`).
    pub async fn add_member(
        &self,
        partition: &str,
        user: u64,
        role: &str,
    ) -> Result<(), AdminError> {
        let path = format!("/partition/{}/users", segment(partition));
        let body = form(&[("user_id", &user.to_string()), ("role", role)]);
        self.call(Method::POST, &path, body).await.map(|_| ())
    }

    /// `PATCH /partition/{p}/users/{id}` (form `role`).
    pub async fn set_role(&self, partition: &str, user: u64, role: &str) -> Result<(), AdminError> {
        let path = format!("/partition/{}/users/{user}", segment(partition));
        self.call(Method::PATCH, &path, form(&[("role", role)]))
            .await
            .map(|_| ())
    }

    /// `DELETE /partition/{p}/users/{id}`.
    pub async fn remove_member(&self, partition: &str, user: u64) -> Result<(), AdminError> {
        let path = format!("/partition/{}/users/{user}", segment(partition));
        self.call(Method::DELETE, &path, Payload::Empty)
            .await
            .map(|_| ())
    }

    /// Whether the backend has the `openrag_chainlit_token` hand-off (later OpenRag):
    /// `POST /auth/chainlit-session` exists there (2xx), not in 1.1.8 (404).
    pub async fn has_chainlit_handoff(&self) -> Result<bool, AdminError> {
        match self
            .call(Method::POST, "/auth/chainlit-session", Payload::Empty)
            .await
        {
            Ok(_) => Ok(true),
            Err(AdminError::Status { status, .. }) if status == StatusCode::NOT_FOUND => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Chainlit's own login (OpenRag 1.1.8: the password is the user's OpenRag token): the
    /// session cookies it sets, as `name=value` pairs; `None` when it refuses the token.
    pub async fn chainlit_login(
        &self,
        username: &str,
        token: &str,
    ) -> Result<Option<String>, AdminError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("username", username)
            .append_pair("password", token)
            .finish();
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/chainlit/login", self.base))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| AdminError::Http(self.http.transport(e)))?;
        let resp = self.http.send(req).await.map_err(AdminError::Http)?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(AdminError::Status {
                status: resp.status(),
                detail: String::from_utf8_lossy(resp.body())
                    .chars()
                    .take(200)
                    .collect(),
            });
        }
        let pairs: Vec<&str> = resp
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(str::trim)
            .filter(|p| {
                super::inject::is_chainlit_session_cookie(p.split('=').next().unwrap_or(""))
            })
            .collect();
        if pairs.is_empty() {
            return Err(AdminError::Json(
                "Chainlit's login set no access_token cookie".into(),
            ));
        }
        Ok(Some(pairs.join("; ")))
    }
}
