//! The bodies the sidecar handles: what it sends to clients ([`Body`]) and what it sends
//! upstream ([`RequestBody`]). Enums rather than boxed trait objects: the proxied path allocates
//! nothing for them.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

/// The body of every response the sidecar sends: a streamed upstream body or a small one of
/// its own.
pub type Body = Either<super::UpstreamBody, Full<Bytes>>;

/// The body of a request sent upstream: the client's, streamed, or one the sidecar made.
pub type RequestBody = Either<Incoming, Full<Bytes>>;

/// A response body of the sidecar's own.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Full::new(bytes.into()))
}
