//! The seam between "who is this" and "what the upstream is told": one [`Identity`] with one
//! mode per file, behind one set of hooks —
//! - at login, [`Identity::on_login`]: resolve (and provision) the backend user, sync its
//!   groups; after a refresh with a new ID token, [`Identity::on_refresh`]: sync them again;
//! - on the request and its response, [`Identity::forward`]: strip every client copy of an
//!   identity header and the sidecar's cookies, inject the user's identity, forward, and, for
//!   a mode that needs it, recover from the backend refusing that identity;
//! - for the mode's own routes, [`Identity::own_route`].
//!
//! Modes: [`headers`] (`X-Forwarded-User` and friends) and [`openrag`] (each user's own backend
//! token). A new mode is a new file here, one variant of [`Mode`] and one config value. Knows
//! sessions and the proxy; never the OIDC flows (`auth` calls in, not the other way).

mod forward;
pub mod headers;
pub mod openrag;

use crate::config::Reloadable;
use crate::per_worker::PerWorker;
use crate::proxy::headers::Peer;
use crate::proxy::{Body, RequestBody};
use crate::proxy::{Place, ProxyError, Upstream};
use crate::session::{LiveStreams, Sessions};
use crate::store::StoreError;
use headers::HeaderIdentity;
use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode};
use openrag::{BridgeError, OpenRagBridge};
use serde_json::{Map, Value};
use std::sync::{Arc, RwLock};

pub use forward::{Caller, Outcome};

/// What the upstream is told, and how.
pub struct Identity {
    /// Identity header names: stripped in every mode, written in `headers` mode. One copy per
    /// worker (their names are cloned on every request), replaced on a reload.
    names: PerWorker<RwLock<Arc<HeaderIdentity>>>,
    mode: Mode,
}

/// The identity modes.
pub enum Mode {
    /// `X-Forwarded-*` identity headers.
    Headers,
    /// Each user's own OpenRag token.
    OpenRag(Arc<OpenRagBridge>),
}

/// What a login resolved at the backend (nothing in `headers` mode).
#[derive(Default)]
pub struct BackendUser {
    pub user_id: Option<u64>,
    pub token: Option<String>,
}

/// Why a request could not be forwarded as its user; `error.rs` turns it into a response.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("OpenRag identity bridge: {0}")]
    Bridge(#[source] BridgeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session ended while the request was handled, or the backend refused a bearer.
    #[error("unauthenticated")]
    Unauthenticated,
    /// A request the identity mode refuses for this user.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
}

/// What [`Identity::forward`] needs from the router besides the request.
pub struct Outbound<'a> {
    pub upstream: &'a Upstream,
    pub peer: Peer,
    /// Removes the sidecar's own cookies (auth's business) before the request leaves.
    pub strip_own: &'a (dyn Fn(&mut HeaderMap) + Sync),
    pub sessions: &'a Sessions,
    pub streams: &'a Arc<LiveStreams>,
    /// The request's place under the upstream cap if the router took it before this
    /// request's identity was built (when the upstream was busy); the first request sent takes
    /// it (a replay waits for its own).
    pub place: std::sync::Mutex<Option<Place>>,
    /// For a session's request under a path rule: asks the rules again for each long-lived
    /// stream it opens ([`crate::session::streams::Judge`]).
    pub judge: Option<crate::session::streams::Judge>,
    /// For a request on a public path: asks whether the path is still public for each
    /// long-lived stream it opens ([`crate::session::streams::PublicJudge`]).
    pub public_judge: Option<crate::session::streams::PublicJudge>,
}

impl Outbound<'_> {
    /// The place taken for this request, once.
    pub(crate) fn take_place(&self) -> Option<Place> {
        // A poisoned lock still holds a valid `Option`.
        self.place.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Identity {
    pub fn new(
        workers: usize,
        names: Vec<(crate::config::IdentityField, http::HeaderName)>,
        mode: Mode,
    ) -> Self {
        Identity {
            names: PerWorker::new(workers, || {
                RwLock::new(Arc::new(HeaderIdentity::new(names.clone())))
            }),
            mode,
        }
    }

    /// The identity the configuration asks for (`SSO_SIDECAR_IDENTITY`): the one place a mode
    /// is built from its settings.
    pub fn from_config(
        config: &crate::config::Config,
        store: Arc<crate::store::Store>,
        keys: Arc<crate::crypto::KeyRing>,
    ) -> Result<Self, String> {
        use crate::config::IdentityMode;
        let a = &config.auth;
        let mode = match config.identity {
            IdentityMode::Headers => Mode::Headers,
            IdentityMode::OpenRag => {
                let token = config.openrag_env.auth_token.clone().ok_or(
                    "SSO_SIDECAR_IDENTITY=openrag needs AUTH_TOKEN (the backend's admin token)",
                )?;
                let oidc = config
                    .openrag_env
                    .oidc
                    .as_ref()
                    .ok_or("SSO_SIDECAR_IDENTITY=openrag needs the OIDC settings")?;
                let tls = crate::tls::client_config(config.proxy.upstream_ca_file.as_deref())?;
                let admin = openrag::admin::AdminClient::new(
                    &config.proxy.upstream,
                    token,
                    tls,
                    a.bridge.admin_timeout,
                );
                Mode::OpenRag(Arc::new(
                    OpenRagBridge::new(
                        admin,
                        store,
                        keys,
                        a.bridge.clone(),
                        oidc.issuer.clone(),
                        config.openrag_env.auto_provision,
                        config.openrag_env.claim_mapping.clone(),
                    )
                    .with_group_sync(config.openrag_env.group_sync.clone()),
                ))
            }
        };
        Ok(Identity::new(config.workers, a.headers.clone(), mode))
    }

    /// The hook at login: the backend user for `sub` (OpenRag: found, or provisioned, with the
    /// token to inject, its partition memberships synced from the verified ID-token claims
    /// `id_claims`); nothing in `headers` mode.
    pub async fn on_login(
        &self,
        sub: &str,
        profile: &Map<String, Value>,
        id_claims: &Map<String, Value>,
    ) -> Result<BackendUser, BridgeError> {
        match &self.mode {
            Mode::Headers => Ok(BackendUser::default()),
            Mode::OpenRag(bridge) => {
                let r = bridge.resolve(sub, profile).await?;
                bridge.sync_groups(r.user_id, id_claims).await;
                Ok(BackendUser {
                    user_id: Some(r.user_id),
                    token: Some(r.token.expose().clone()),
                })
            }
        }
    }

    /// The hook after each refresh; false when the session must end. OpenRag: the backend
    /// must still link the session's account to its `sub` (an administrator who moves the
    /// link, or deletes the user, ends the sessions acting as that account at their next
    /// refresh, not after `session_lifetime`); then, when the refresh brought a new ID token,
    /// partition memberships are re-synced.
    pub async fn on_refresh(
        &self,
        sub: &str,
        backend_user_id: Option<u64>,
        id_claims: Option<&Map<String, Value>>,
    ) -> bool {
        let (Mode::OpenRag(bridge), Some(id)) = (&self.mode, backend_user_id) else {
            return true;
        };
        match bridge.still_linked(id, sub).await {
            Some(false) => false,
            // Groups are written only to an account known to be this user's: with the link
            // unconfirmed (the account may have been moved to someone else), this user's IdP
            // groups could land on another person's account, and pruning take theirs away.
            None => true,
            Some(true) => {
                if let Some(claims) = id_claims {
                    bridge.sync_groups(id, claims).await;
                }
                true
            }
        }
    }

    /// The mode's own routes, answered without the upstream.
    pub fn own_route(&self, parts: &Parts) -> Option<Response<Body>> {
        match (&self.mode, &parts.method, parts.uri.path()) {
            // The backend would put the user's token into a browser cookie: answer it here
            // (the sidecar adds the Chainlit cookie to `/chainlit` requests itself), ending
            // Chainlit's own session in the browser as the backend does.
            (Mode::OpenRag(_), &Method::POST | &Method::DELETE, "/auth/chainlit-session") => {
                let mut r = Response::new(crate::proxy::full(""));
                *r.status_mut() = StatusCode::NO_CONTENT;
                openrag::inject::end_chainlit_session(&parts.headers, r.headers_mut());
                Some(r)
            }
            _ => None,
        }
    }

    /// For a response that starts or ends a session in the browser: appends the `Set-Cookie`
    /// values that end the mode's own cookies of the browser's previous user (OpenRag:
    /// Chainlit's session).
    pub fn end_previous_cookies(&self, request: &HeaderMap, response: &mut HeaderMap) {
        if let Mode::OpenRag(_) = &self.mode {
            openrag::inject::end_chainlit_session(request, response);
        }
    }

    /// The hook on the request and its response: forwards `parts`/`body` as `caller`.
    pub async fn forward(
        &self,
        out: Outbound<'_>,
        parts: Parts,
        body: RequestBody,
        caller: Caller,
    ) -> Result<Outcome, ForwardError> {
        let names = self.names.current();
        match (&self.mode, caller) {
            (Mode::Headers, caller) => forward::as_headers(&out, &names, parts, body, caller).await,
            (Mode::OpenRag(bridge), Caller::Session { session, id }) => {
                Box::pin(openrag::request::as_user(
                    &out, &names, bridge, parts, body, session, &id,
                ))
                .await
            }
            // No session here: no cookie of the browser speaks for a user either.
            (Mode::OpenRag(bridge), Caller::Bearer) => {
                let mut parts = parts;
                openrag::inject::strip_user_cookies(&mut parts.headers);
                openrag::request::as_bearer(&out, &names, bridge, parts, body).await
            }
            (Mode::OpenRag(_), Caller::Public) => {
                let mut parts = parts;
                openrag::inject::strip_user_cookies(&mut parts.headers);
                forward::as_headers(&out, &names, parts, body, Caller::Public).await
            }
        }
    }

    /// Applies the reloadable settings (identity header names) to every worker's copy.
    pub fn reload(&self, r: &Reloadable) {
        let before = self.names.current();
        self.names.replace(|| before.renamed(r.headers.clone()));
    }
}
