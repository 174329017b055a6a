//! Single sign-on into Chainlit, for each OpenRag generation (docs/openrag-backend.md#chainlit).
//!
//! Later OpenRag versions hand a user over to Chainlit with the `openrag_chainlit_token` cookie
//! (`POST /auth/chainlit-session` exists): the sidecar adds that cookie, holding the user's
//! token, to `/chainlit` requests. OpenRag 1.1.8 has no hand-off: its Chainlit logs users in
//! itself (`POST /chainlit/login`, the password being the user's OpenRag token) and keeps its
//! own session in the `access_token` cookie. There the sidecar logs the user in on their
//! behalf, keeps that Chainlit session (encrypted, in the store, keyed by a hash of the user's
//! token so a new token means a new Chainlit session) and adds it to `/chainlit` requests. The
//! browser never holds either. A Chainlit refusal (401) only makes the sidecar forget that
//! session: it never touches the user's OpenRag token.

use super::{BridgeError, OpenRagBridge};
use std::time::Duration;

/// How the backend hands a user over to Chainlit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// The `openrag_chainlit_token` cookie (later OpenRag).
    Cookie,
    /// Chainlit's own password login (OpenRag 1.1.8).
    Login,
}

/// How long after a failed hand-off probe the next one is made: Chainlit requests are refused
/// meanwhile, so short (a backend starting after the sidecar answers within seconds), yet not
/// one admin call per Chainlit request while the backend cannot answer.
const PROBE_RETRY: Duration = Duration::from_secs(5);

/// How long a Chainlit session is kept (Chainlit's own lasts 15 days; a refused one is
/// forgotten at once).
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

impl OpenRagBridge {
    /// The backend's hand-off, probed once (`POST /auth/chainlit-session` with the admin
    /// token). Until a probe succeeds a Chainlit request is refused (502), and the backend asked
    /// again at most once per [`PROBE_RETRY`]: every Chainlit request (assets, polls) would
    /// otherwise add an admin call, each up to the backend timeout, while the backend cannot
    /// answer. Not guessed: on OpenRag 1.1.8 a cookie hand-off assumed would leave the client's
    /// own Chainlit cookies and Chainlit's answers (its session cookie, `/chainlit/user`'s
    /// key) as they are, which the login hand-off takes out.
    pub async fn chainlit_handoff(&self) -> Result<Handoff, BridgeError> {
        if let Some(h) = self.handoff.get() {
            return Ok(*h);
        }
        // One probe at a time; those that waited take its answer (below, or its failure).
        let _probing = self.handoff_probe.lock().await;
        if let Some(h) = self.handoff.get() {
            return Ok(*h);
        }
        let now = crate::clock::now_unix();
        let last = self
            .handoff_failed
            .load(std::sync::atomic::Ordering::Relaxed);
        if last != 0 && now - last < PROBE_RETRY.as_secs() as i64 {
            return Err(BridgeError::Backend(super::admin::AdminError::NotAskedYet(
                "which Chainlit hand-off the backend has",
            )));
        }
        match self.admin.has_chainlit_handoff().await {
            Ok(cookie) => {
                let h = if cookie {
                    Handoff::Cookie
                } else {
                    Handoff::Login
                };
                tracing::info!(handoff = ?h, "Chainlit single sign-on: the backend's hand-off");
                Ok(*self.handoff.get_or_init(|| h))
            }
            Err(e) => {
                self.handoff_failed
                    .store(now, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %crate::http_json::error_chain(&e), "cannot tell which Chainlit hand-off the backend has");
                Err(BridgeError::Backend(e))
            }
        }
    }

    fn chainlit_key(&self, token: &str) -> String {
        crate::store::keys::hashed("chainlit", &["chainlit", &self.issuer, token])
    }

    /// The Chainlit session cookies (`name=value` pairs) for the user holding `token`: kept
    /// ones, or from a new login at Chainlit. `None` when Chainlit refuses the token.
    pub async fn chainlit_session(
        &self,
        sub: &str,
        token: &str,
    ) -> Result<Option<String>, BridgeError> {
        let key = self.chainlit_key(token);
        if let Some(sealed) = self.store.get(&key).await? {
            // Sealed with the key it was written under: a value copied under another token's
            // key (by someone who can write the store but not seal) would hand that token's
            // holder this user's Chainlit session. Values without it (earlier versions) are a
            // new login away.
            let opened = self.open_sealed(&sealed);
            match opened.as_ref().and_then(|p| p.expose().split_once('\n')) {
                Some((k, pairs)) if k == key => return Ok(Some(pairs.to_owned())),
                Some(_) => tracing::warn!(
                    "a Chainlit session sealed for another store key was found: refused \
                     (someone writes the session store who cannot seal; check who can reach Redis)"
                ),
                None => {}
            }
        }
        let Some(pairs) = self.admin.chainlit_login(sub, token).await? else {
            tracing::warn!(
                sub,
                "Chainlit refused the login (401): the user's OpenRag token, or Chainlit's own call to the backend (1.1.8 calls http://localhost:$APP_iPORT/users/info: APP_iPORT must be the backend's port)"
            );
            return Ok(None);
        };
        tracing::info!(sub, "logged the user in to Chainlit");
        let sealed = self.keys.seal(format!("{key}\n{pairs}").as_bytes());
        self.store.put(&key, sealed.as_bytes(), SESSION_TTL).await?;
        Ok(Some(pairs))
    }

    /// Forgets the Chainlit session of `token` (Chainlit refused it): the next request logs in
    /// again.
    pub async fn forget_chainlit_session(&self, token: &str) {
        if let Err(e) = self.store.delete(&self.chainlit_key(token)).await {
            tracing::warn!(error = %e, "cannot forget a refused Chainlit session");
        }
    }
}

/// Largest `/chainlit/user` answer rewritten (it is a few hundred bytes).
const USER_MAX_BYTES: usize = 64 * 1024;

/// OpenRag 1.1.8's Chainlit answers `GET /chainlit/user` with the user's OpenRag token in
/// `metadata.api_key` (its login callback keeps the password there). The browser needs no
/// token behind the sidecar — every request of the session gets it injected — so the value is
/// blanked before the answer leaves.
pub async fn without_api_key(
    out: crate::identity::forward::Outcome,
) -> crate::identity::forward::Outcome {
    use http_body_util::{BodyExt, Limited};
    let (resp, upstream_status) = out;
    if !resp.status().is_success() {
        return (resp, upstream_status);
    }
    let (mut parts, body) = resp.into_parts();
    // Too large, broken, or not JSON the sidecar can read (compressed although it asked for
    // no encoding): nothing of it is passed on rather than, perhaps, the token.
    let unreadable = || {
        let mut r = http::Response::new(crate::proxy::full(""));
        *r.status_mut() = http::StatusCode::BAD_GATEWAY;
        (r, upstream_status)
    };
    let bytes = match Limited::new(body, USER_MAX_BYTES).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return unreadable(),
    };
    let encoded = parts
        .headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
    let bytes = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Err(_) => return unreadable(),
        _ if encoded => return unreadable(),
        Ok(mut v) => match v.pointer_mut("/metadata/api_key") {
            Some(key) if key.is_string() => {
                *key = serde_json::Value::String(String::new());
                parts.headers.remove(http::header::CONTENT_LENGTH);
                bytes::Bytes::from(v.to_string())
            }
            _ => bytes,
        },
    };
    (
        http::Response::from_parts(parts, crate::proxy::full(bytes)),
        upstream_status,
    )
}
