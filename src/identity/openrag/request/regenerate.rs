//! `POST /users/{id}/regenerate_token` through the sidecar: who may ask (the account itself or
//! an administrator, never for the account `AUTH_TOKEN` belongs to), and the new token of a
//! 2xx answer kept in the vault of the `sub` its account is linked to and in the asking
//! session when it is its own account.

use super::super::admin::AdminError;
use super::super::OpenRagBridge;
use crate::identity::forward::Outcome;
use crate::identity::{ForwardError, Outbound};
use crate::secret::Secret;
use crate::session::Session;
use http::request::Parts;
use http::{Method, Response};

/// Lets a regeneration of `target`'s token go on only for the `acting` account itself or an
/// administrator (OpenRag 1.1.8's route checks nothing). `sub` names a session's user in the
/// warning. Called after [`refuse_admin_token`], which has given up the upstream place.
pub(super) async fn self_or_admin(
    bridge: &OpenRagBridge,
    target: Option<u64>,
    acting: Option<u64>,
    sub: Option<&str>,
) -> Result<(), ForwardError> {
    // A bearer is the account it names, as the backend says. A session's account is the one
    // its login resolved, which an administrator may have linked to another user since: it
    // must still be this user's, or a session from before the move would mint a token for an
    // account that is someone else's now (and that token would land in their vault).
    if sub.is_none() && target.is_some() && target == acting {
        return Ok(());
    }
    let me = match acting {
        Some(me) => match bridge.admin.get_user(me).await {
            Ok(u) => Some(u),
            Err(AdminError::Status { status, .. }) if status == http::StatusCode::NOT_FOUND => None,
            Err(e) => return Err(ForwardError::Bridge(e.into())),
        },
        None => None,
    };
    if let Some(sub) = sub {
        if me.as_ref().and_then(|u| u.external_user_id.as_deref()) != Some(sub) {
            tracing::warn!(sub, acting = ?acting, target = ?target, "refused: this session's backend account is no longer linked to its user");
            return Err(ForwardError::Forbidden(
                "Your account has been changed: sign in again",
            ));
        }
        if target.is_some() && target == acting {
            return Ok(());
        }
    }
    let admin = me.is_some_and(|u| u.is_admin);
    if !admin {
        tracing::warn!(sub, acting = ?acting, target = ?target, "refused: regenerating another user's token takes an administrator");
        return Err(ForwardError::Forbidden(
            "Admin privileges or self-access required",
        ));
    }
    Ok(())
}

/// Refuses to regenerate the token of the account `AUTH_TOKEN` belongs to, whoever asks: the
/// sidecar would lose its own admin access ([`OpenRagBridge::admin_account`]). An `{id}` that
/// is not a plain number is refused too (400), whoever asks: the backend reads `+1`, `1_0` and
/// ` 1` as numbers (pydantic), so such a spelling could name that account past the comparison.
pub(super) async fn refuse_admin_token(
    bridge: &OpenRagBridge,
    target: Option<u64>,
    out: &Outbound<'_>,
) -> Result<(), ForwardError> {
    if target.is_none() {
        return Err(
            crate::proxy::ProxyError::BadRequest("The user id must be a plain number").into(),
        );
    }
    // The admin API may take seconds: not while holding a place under the upstream cap.
    drop(out.take_place());
    let admin = bridge.admin_account().await.map_err(ForwardError::Bridge)?;
    if target.is_some() && target == admin {
        tracing::warn!(target = ?target, "refused: regenerating the token of the account AUTH_TOKEN belongs to; rotate AUTH_TOKEN in the backend's and the sidecar's configuration instead");
        return Err(ForwardError::Forbidden(
            "This token is the sidecar's AUTH_TOKEN: rotate it in the configuration instead",
        ));
    }
    Ok(())
}

/// For `POST /users/{id}/regenerate_token`: `Some(Some(id))`, or `Some(None)` when `{id}` is
/// not a plain number (refused: [`refuse_admin_token`]). `None` for any other request. The
/// path is canonical by now (`%31` is `1`).
pub(super) fn regenerate_target(parts: &Parts) -> Option<Option<u64>> {
    if parts.method != Method::POST {
        return None;
    }
    let rest = parts.uri.path().strip_prefix("/users/")?;
    let id = rest.strip_suffix("/regenerate_token")?;
    let plain = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
    Some(id.parse().ok().filter(|_| plain))
}

/// A token a regeneration handed out: the account (`id`), the `sub` the backend links it to
/// (`external_user_id`, when it has one), and the new token.
pub(super) struct Regenerated {
    user: u64,
    sub: Option<String>,
    token: Secret<String>,
}

/// Reads a 2xx answer to a regeneration (small: one user) for the new token; the answer
/// reaches the client unchanged. Any other answer passes untouched (still streaming).
pub(super) async fn regenerated(outcome: Outcome) -> (Outcome, Option<Regenerated>) {
    use http_body_util::{BodyExt, Limited};
    let (resp, upstream_status) = outcome;
    if !resp.status().is_success() {
        return ((resp, upstream_status), None);
    }
    let (parts, body) = resp.into_parts();
    let bytes = match Limited::new(body, 64 * 1024).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => bytes::Bytes::new(),
    };
    let new = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            let text = |k: &str| v.get(k).and_then(|t| t.as_str()).map(str::to_owned);
            Some(Regenerated {
                user: v.get("id")?.as_u64()?,
                sub: text("external_user_id").filter(|s| !s.trim().is_empty()),
                token: Secret::new(text("token")?),
            })
        });
    let answer = Response::from_parts(parts, crate::proxy::full(bytes));
    ((answer, upstream_status), new)
}

/// A token regenerated through the sidecar becomes the one the vault holds for the `sub` its
/// account is linked to ([`OpenRagBridge::adopt_token`] checks that link), and the one
/// `session` holds when it acts as that account. `session`: the session that asked and its id;
/// `None` for a bearer.
pub(super) async fn adopt_regenerated(
    out: &Outbound<'_>,
    bridge: &OpenRagBridge,
    session: Option<(&Session, &str)>,
    new: Regenerated,
) {
    let own = session.filter(|(s, _)| s.backend_user_id == Some(new.user));
    // An older answer without `external_user_id`: the session's own account is its `sub`'s.
    let sub = new.sub.as_deref().or(own.map(|(s, _)| s.sub.as_str()));
    if let Some(sub) = sub {
        match bridge.adopt_token(sub, new.user, &new.token).await {
            Ok(true) => {
                tracing::info!(sub, user_id = new.user, "a backend token regenerated through the sidecar is the one the vault holds now")
            }
            Ok(false) => {
                tracing::info!(sub, user_id = new.user, "a regenerated backend token was not vaulted: its account is not the one linked to its sub")
            }
            Err(e) => {
                tracing::warn!(sub, user_id = new.user, error = %e, "a regenerated backend token is not in the vault; the account's sessions will recover by the token policy")
            }
        }
    }
    let Some((session, id)) = own else {
        return;
    };
    // The session takes the new token whatever the vault did: the old one is dead. Only while
    // the session still acts as that account (a recovery may have moved it).
    let user = new.user;
    let token = new.token.expose().clone();
    let adopt = |s: &mut Session| {
        if s.backend_user_id == Some(user) {
            s.backend_token = Some(token.clone());
        }
    };
    let kept = out.sessions.amend(id, crate::clock::now_unix(), adopt);
    match kept.await.map_err(|e| e.to_string()) {
        Ok(_) => {
            tracing::info!(sub = %session.sub, "the user regenerated their backend token; the sidecar uses the new one")
        }
        Err(e) => {
            tracing::warn!(sub = %session.sub, error = %e, "the user's new backend token could not be kept")
        }
    }
}
