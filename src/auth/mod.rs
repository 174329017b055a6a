//! Authentication: who the user is, decided per request, and the login/logout flows.
//!
//! - [`canonical`]: one spelling per request path before any decision is made on it.
//! - [`gate`]: the per-request decision (public, authenticated, bearer pass-through, redirect,
//!   401); it never touches the upstream.
//! - [`flow`]: `/auth/login`, `/auth/callback`, `/auth/logout`, `/auth/me`.
//! - [`oidc`], [`id_token`], [`jwt`], [`idp_http`]: the OpenID Provider on the `openidconnect`
//!   crate, ID-token verification, logout-token signatures, the IdP's HTTP client.
//! - [`cookies`], [`redirect`]: the sidecar's cookies, `next` validation (sessions themselves
//!   live in `crate::session`).

pub mod authz;
pub mod backchannel;
pub mod backchannel_limits;
mod callback;
pub mod canonical;
pub mod cookies;
pub mod cross_site;
pub mod discovery;
pub mod flow;
pub mod frontchannel;
pub mod gate;
pub mod id_token;
pub mod idp_http;
pub mod jwt;
pub mod login_state;
pub mod logout;
mod lost_login;
pub mod oidc;
pub mod profile;
pub mod redirect;
pub mod refresh;
pub mod routes;
pub mod tokens;

pub use routes::{RefusedCredential, BACKCHANNEL_PATH};
