//! The OpenRag mode's request hook: a session's request carries its user's backend token; when
//! the backend refuses that token (regenerated elsewhere, revoked by an admin) the bridge
//! resolves it again once and a request without a body is replayed. A bearer without a session
//! that the backend refuses gets OpenRag's OIDC-mode answer, 401 `Unauthenticated`.
//!
//! `POST /users/{id}/regenerate_token` is checked here too: OpenRag 1.1.8 lets any user rotate,
//! and receive, any user's token (later versions check "admin or self"), so the sidecar lets a
//! session regenerate only its own token unless its user is an administrator. Whoever asked (a
//! session or a bearer, for their own account or as an administrator for another's), the new
//! token in a 2xx answer replaces the old one in the vault of the `sub` that account is linked
//! to, and in the session when it is the session's own account: the old token is dead, and the
//! account's sessions would otherwise be recovered by the token policy (`deny`: locked out;
//! `regenerate`: the token just handed over rotated again).

use super::inject;
use super::{BridgeError, OpenRagBridge};
use crate::identity::forward::{send, Inject, Outcome};
use crate::identity::headers::HeaderIdentity;
use crate::identity::{ForwardError, Outbound};
use crate::proxy::RequestBody;
use crate::session::Session;
use http::request::Parts;
use http::{header, Method, Response};
use http_body_util::{Either, Full};
use std::sync::Arc;

mod regenerate;
use regenerate::{
    adopt_regenerated, refuse_admin_token, regenerate_target, regenerated, self_or_admin,
};

/// Forwards as the session's OpenRag user, recovering once from a confirmed refusal.
pub(crate) async fn as_user(
    out: &Outbound<'_>,
    names: &HeaderIdentity,
    bridge: &OpenRagBridge,
    mut parts: Parts,
    body: RequestBody,
    session: Arc<Session>,
    id: &str,
) -> Result<Outcome, ForwardError> {
    let Some(token) = session.backend_token.clone() else {
        return Err(ForwardError::Bridge(BridgeError::NoToken));
    };
    let carrier = inject::carrier(parts.uri.path());
    let regenerates = regenerate_target(&parts);
    if let Some(target) = regenerates {
        refuse_admin_token(bridge, target, out).await?;
        let acting = session.backend_user_id;
        self_or_admin(bridge, target, acting, Some(&session.sub)).await?;
        // An answer the sidecar must read (the new token): not compressed.
        parts.headers.remove(header::ACCEPT_ENCODING);
    }
    if carrier == inject::Carrier::Cookie {
        // As above: the hand-off, and a Chainlit login, may ask the admin API.
        drop(out.take_place());
        let handoff = bridge.chainlit_handoff().await;
        if handoff.map_err(ForwardError::Bridge)? == super::chainlit::Handoff::Login {
            return Box::pin(as_chainlit_user(
                out, names, bridge, parts, body, &session, id,
            ))
            .await;
        }
    }
    let replay = bodiless(&parts).then(|| parts.clone());
    let as_token = |t| Inject {
        session: None,
        token: Some((carrier, t)),
        live: Some(id),
        user: Some(&session),
    };
    let mut first = send(out, names, parts, body, as_token(&token)).await?;
    if regenerates.is_some() {
        let (answer, new) = regenerated(first).await;
        if let Some(new) = new {
            adopt_regenerated(out, bridge, Some((&session, id)), new).await;
            return Ok(answer);
        }
        // Not done (refused, say): judged as any other answer below.
        first = answer;
    }
    let (first, refused) = peek_refusal(first).await;
    if !refused {
        return Ok(first);
    }
    tracing::warn!(sub = %session.sub, "the backend refused the user's token; resolving it again");
    let Some(resolved) = bridge
        .recover(&session.sub, session.backend_user_id, &token)
        .await
        .map_err(ForwardError::Bridge)?
    else {
        return Ok(first);
    };
    // The account may be another one now (the link moved): what the session acts as, and what
    // its regeneration guard checks, follow the token. Only these two fields: the rest of the
    // session may have been refreshed since this request read it.
    let adopt = |s: &mut Session| {
        s.backend_token = Some(resolved.token.expose().clone());
        s.backend_user_id = Some(resolved.user_id);
    };
    if out
        .sessions
        .amend(id, crate::clock::now_unix(), adopt)
        .await?
        .is_none()
    {
        return Err(ForwardError::Unauthenticated);
    }
    match replay {
        Some(parts) => {
            let empty = Either::Right(Full::new(bytes::Bytes::new()));
            let again = send(out, names, parts, empty, as_token(resolved.token.expose())).await?;
            Ok(peek_refusal(again).await.0)
        }
        None => Ok(first),
    }
}

/// A `/chainlit` request to an OpenRag whose Chainlit logs users in itself (1.1.8): with the
/// Chainlit session the sidecar opened for the user. Chainlit's 401 forgets that session (the
/// next request logs in again); the user's OpenRag token is never judged by Chainlit's answers.
async fn as_chainlit_user(
    out: &Outbound<'_>,
    names: &HeaderIdentity,
    bridge: &OpenRagBridge,
    parts: Parts,
    body: RequestBody,
    session: &Session,
    id: &str,
) -> Result<Outcome, ForwardError> {
    let Some(token) = session.backend_token.as_deref() else {
        return Err(ForwardError::Bridge(BridgeError::NoToken));
    };
    let cookies = bridge
        .chainlit_session(&session.sub, token)
        .await
        .map_err(ForwardError::Bridge)?;
    let inject = Inject {
        session: None,
        token: cookies
            .as_deref()
            .map(|c| (inject::Carrier::ChainlitSession, c)),
        live: Some(id),
        user: Some(session),
    };
    let user_info = parts.method == Method::GET && parts.uri.path() == "/chainlit/user";
    let mut parts = parts;
    if cookies.is_none() {
        inject::without_client_credentials(&mut parts.headers);
    }
    if user_info {
        // An answer the sidecar must read (to blank the token in it): not compressed.
        parts.headers.remove(http::header::ACCEPT_ENCODING);
    }
    let mut outcome = send(out, names, parts, body, inject).await?;
    if user_info {
        outcome = super::chainlit::without_api_key(outcome).await;
    }
    if cookies.is_some() && outcome.0.status() == http::StatusCode::UNAUTHORIZED {
        bridge.forget_chainlit_session(token).await;
    }
    // Chainlit's session stays with the sidecar: its cookies never reach the browser.
    let h = outcome.0.headers_mut();
    let kept: Vec<http::HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            let name = v
                .as_bytes()
                .split(|b| *b == b'=')
                .next()
                .unwrap_or_default();
            !inject::is_chainlit_session_cookie(&String::from_utf8_lossy(name.trim_ascii()))
        })
        .cloned()
        .collect();
    h.remove(header::SET_COOKIE);
    for v in kept {
        h.append(header::SET_COOKIE, v);
    }
    Ok(outcome)
}

/// A bearer without a session: forwarded untouched; refused by the backend, it becomes 401.
/// Regenerating a token is the exception, as for a session: OpenRag 1.1.8's route checks
/// nothing, and a user holds a bearer of their own (their regenerated token, handed back to
/// them), so whose it is is asked first, and only its owner or an administrator goes on.
pub(crate) async fn as_bearer(
    out: &Outbound<'_>,
    names: &HeaderIdentity,
    bridge: &OpenRagBridge,
    mut parts: Parts,
    body: RequestBody,
) -> Result<Outcome, ForwardError> {
    let regenerates = regenerate_target(&parts);
    if let Some(target) = regenerates {
        refuse_admin_token(bridge, target, out).await?;
        let bearer = crate::proxy::headers::bearer(&parts.headers).filter(|t| !t.is_empty());
        let Some(bearer) = bearer else {
            return Err(ForwardError::Unauthenticated);
        };
        let client = out.upstream.client_ip(&parts.headers, out.peer);
        let owner = bridge.admin.token_owner_for(bearer, Some(client)).await;
        let Some(owner) = owner.map_err(|e| ForwardError::Bridge(e.into()))? else {
            return Err(ForwardError::Unauthenticated);
        };
        self_or_admin(bridge, target, Some(owner), None).await?;
        parts.headers.remove(header::ACCEPT_ENCODING);
    }
    let mut outcome = send(out, names, parts, body, Inject::default()).await?;
    if regenerates.is_some() {
        let (answer, new) = regenerated(outcome).await;
        if let Some(new) = new {
            adopt_regenerated(out, bridge, None, new).await;
            return Ok(answer);
        }
        outcome = answer;
    }
    let (outcome, refused) = peek_refusal(outcome).await;
    if refused {
        return Err(ForwardError::Unauthenticated);
    }
    Ok(outcome)
}

/// True when the request has no body, so it can be sent twice.
fn bodiless(parts: &Parts) -> bool {
    matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
    ) && !parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v == "0")
}

/// Reads a small 403 body to tell a refused token from a permission decision; every other
/// response passes untouched (still streaming).
async fn peek_refusal(out: Outcome) -> (Outcome, bool) {
    use http_body_util::{BodyExt, Limited};
    let (resp, upstream_status) = out;
    let status = resp.status().as_u16();
    let small = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= 8192);
    if status != 403 || !small {
        return ((resp, upstream_status), false);
    }
    let (parts, body) = resp.into_parts();
    let bytes = match Limited::new(body, 8192).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => bytes::Bytes::new(),
    };
    let refused = inject::is_token_refusal(status, &bytes);
    (
        (
            Response::from_parts(parts, crate::proxy::full(bytes)),
            upstream_status,
        ),
        refused,
    )
}
