//! What the upstream is told about the user.
//!
//! [`headers`]: `X-Forwarded-User` and friends, for backends that trust a proxy. The OpenRag
//! bridge (each user's own backend token) lives beside it. Both strip every client-supplied
//! copy of an identity header before injecting their own.

pub mod headers;
pub mod openrag;
