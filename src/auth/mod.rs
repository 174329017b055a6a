//! Authentication: who the user is, decided per request, and the login/logout flows.
//!
//! - [`gate`]: the per-request decision (public, authenticated, bearer pass-through, redirect,
//!   401); it never touches the upstream.
//! - [`flow`]: `/auth/login`, `/auth/callback`, `/auth/logout`, `/auth/me`.
//! - [`oidc`], [`jwt`], [`idp_http`]: the OpenID Provider, token validation, its HTTP client.
//! - [`session`], [`cookies`], [`redirect`]: sessions in the store, cookies, `next` validation.
//! - [`streams`]: live tunnels and event streams closed when their session ends.

pub mod backchannel;
pub mod claims;
pub mod cookies;
pub mod flow;
pub mod gate;
pub mod idp_http;
pub mod jwt;
pub mod logout;
pub mod oidc;
pub mod redirect;
pub mod refresh;
pub mod session;
pub mod streams;
