//! Why a request could not be forwarded, as the proxy knows it; `crate::error` turns each
//! into a response (the one place errors become responses).

use super::SendError;

/// Why a request could not be forwarded; `error.rs` turns it into a response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream refused, reset or closed the connection, or broke the protocol.
    #[error("upstream unavailable: {0}")]
    Unavailable(#[source] SendError),
    /// No response head within the upstream timeout.
    #[error("upstream timed out")]
    Timeout,
    /// A request target the proxy will not forward.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Every upstream place is taken and the requests waiting for one on this worker hold
    /// their budget of memory already (`upstream_queue_kib`).
    #[error("too many requests waiting for the upstream")]
    Busy,
    /// A WebSocket handshake from a client that holds its cap of tunnels already.
    #[error("too many WebSocket tunnels")]
    TooManyTunnels,
    /// A request whose body streams, from a client that has its cap of such requests on their
    /// way upstream already.
    #[error("too many request bodies in flight")]
    TooManyUploads,
    /// An event stream's answer, to a client that holds its cap of event streams already.
    #[error("too many event streams")]
    TooManyStreams,
}
