//! End-to-end tests: the real `sso-sidecar` binary against real upstream processes, on free
//! ports. One test binary with modules (each file in `tests/` would be another binary to link).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access_control;
mod backchannel;
mod browser_logins;
mod cli;
mod client_cache;
mod cross_site;
mod demo;
mod hardening;
mod in_process;
mod key_rotation;
mod lemonldap;
mod lifecycle;
mod mock_idp;
mod oidc;
mod oidc_negative;
mod oidc_support;
mod openrag;
mod openrag_generations;
mod openrag_hardening;
mod openrag_tokens;
mod pool;
mod proxy;
mod redis_cluster;
mod redis_failover;
mod redis_ha;
mod reload;
mod session_attacks;
mod session_indexes;
mod shutdown;
mod slow_read;
mod smuggling;
mod streaming;
mod support;
mod tls;
