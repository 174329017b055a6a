//! Forwarding as someone, common to every mode: the sidecar's cookies and every client copy of
//! an identity header removed, the caller's identity written, the request proxied, a token the
//! sidecar injected kept out of the response's redirects, and a long-lived response (WebSocket
//! tunnel, event stream) of a session tied to that session's life.

use super::headers::HeaderIdentity;
use super::openrag::inject::{self, Carrier};
use super::{ForwardError, Outbound};
use crate::proxy::ProxyError;
use crate::proxy::{Body, RequestBody};
use crate::session::Session;
use http::request::Parts;
use http::{Request, Response};
use http_body_util::Either;
use std::sync::Arc;

/// A response and the upstream's status (absent when the sidecar answered), for the access log.
pub type Outcome = (Response<Body>, Option<u16>);

/// Who a request comes from, as the gate decided.
pub enum Caller {
    /// A session; `id` is its cookie id.
    Session { session: Arc<Session>, id: String },
    /// No session, a bearer credential for the backend to judge.
    Bearer,
    /// A public path, no identity.
    Public,
}

/// What is written into the request.
#[derive(Default, Clone, Copy)]
pub(super) struct Inject<'a> {
    /// The session whose identity headers are written (`headers` mode).
    pub session: Option<&'a Session>,
    /// The backend token, and where it goes (`openrag` mode).
    pub token: Option<(Carrier, &'a str)>,
    /// The session cookie id whose end closes a tunnel or event stream of this request.
    pub live: Option<&'a str>,
    /// The session whose user (`sub`) holds the request's places: its share of the upstream
    /// places, of tunnels, uploads and event streams. One user's sessions share it, or
    /// signing in again would double it.
    pub user: Option<&'a Session>,
}

/// Forwards with the sidecar's cookies and client identity headers removed, then `inject`.
pub(super) async fn send(
    out: &Outbound<'_>,
    names: &HeaderIdentity,
    mut parts: Parts,
    body: RequestBody,
    inject: Inject<'_>,
) -> Result<Outcome, ForwardError> {
    if let Some((Carrier::Query, t)) = inject.token {
        parts.uri = inject::with_token_query(&parts.uri, t)
            .ok_or(ProxyError::BadRequest("Invalid request target"))?;
    }
    let req = Request::from_parts(parts, body);
    let prepare = |h: &mut http::HeaderMap| {
        (out.strip_own)(h);
        names.strip(h);
        if let Some(s) = inject.session {
            names.inject(h, s);
        }
        if let Some((carrier, t)) = inject.token {
            inject::inject_headers(h, carrier, t);
        }
    };
    let watch = || match inject.live {
        Some(id) => Some(out.streams.watch(id, out.judge.clone())),
        None => out
            .public_judge
            .clone()
            .map(|j| out.streams.watch_public(j)),
    };
    let holder = || inject.user.map(|s| out.streams.holder_of(s));
    let place = out.take_place();
    let r = out
        .upstream
        .forward(req, out.peer, place, prepare, watch, holder)
        .await?;
    let status = r.status().as_u16();
    let mut outcome: Outcome = (r.map(Either::Left), Some(status));
    if let Some((_, t)) = inject.token {
        inject::scrub_token(outcome.0.headers_mut(), t);
    }
    if inject.live.is_some() && !informational(status) {
        keep_private(outcome.0.headers_mut());
    }
    Ok(outcome)
}

/// A session's response is marked `private` unless the backend said who may keep it: it was
/// let through by the session's cookie, which (unlike `Authorization`) does not stop a shared
/// cache in front of the sidecar from storing it (by heuristic freshness, or a plain `max-age`)
/// and serving it to anyone asking for the same URL, signed in or not. A backend that wants it
/// shared says so (`public`, `s-maxage`); its own `private` and `no-store` stand; other
/// directives (`max-age=600`) are kept, with `private` beside them.
fn keep_private(h: &mut http::HeaderMap) {
    use http::header::CACHE_CONTROL;
    let mut given = false;
    for v in h.get_all(CACHE_CONTROL) {
        given = true;
        if directives(v.as_bytes()).any(says_who_keeps) {
            return;
        }
    }
    let private = http::HeaderValue::from_static("private");
    if given {
        h.append(CACHE_CONTROL, private);
    } else {
        h.insert(CACHE_CONTROL, private);
    }
}

/// Whether a directive (`name` or `name=value`) says who may keep the response: `public`,
/// `s-maxage`, `no-store`, or `private` without a value (`private="Set-Cookie"` lets a shared
/// cache keep all but that field).
fn says_who_keeps(d: &[u8]) -> bool {
    let (name, value) = match d.iter().position(|b| *b == b'=') {
        Some(i) => (&d[..i], Some(&d[i + 1..])),
        None => (d, None),
    };
    let name = name.trim_ascii();
    let is = |w: &str| name.eq_ignore_ascii_case(w.as_bytes());
    is("public") || is("s-maxage") || is("no-store") || (is("private") && value.is_none())
}

/// A `Cache-Control` value's directives: split at the commas outside quoted strings
/// (`no-cache="a, s-maxage"` is one directive).
fn directives(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut quoted = false;
    let mut escaped = false;
    v.split(move |b| {
        let split = *b == b',' && !quoted;
        if escaped {
            escaped = false;
        } else if *b == b'\\' && quoted {
            escaped = true;
        } else if *b == b'"' {
            quoted = !quoted;
        }
        split
    })
}

/// 1xx (a WebSocket's 101): no content for any cache.
fn informational(status: u16) -> bool {
    status < 200
}

/// `headers` mode (and public requests in any mode): the session's identity as headers.
pub(super) async fn as_headers(
    out: &Outbound<'_>,
    names: &HeaderIdentity,
    parts: Parts,
    body: RequestBody,
    caller: Caller,
) -> Result<Outcome, ForwardError> {
    match caller {
        Caller::Session { session, id } => {
            let inject = Inject {
                session: Some(&session),
                token: None,
                live: Some(&id),
                user: Some(&session),
            };
            send(out, names, parts, body, inject).await
        }
        Caller::Bearer | Caller::Public => send(out, names, parts, body, Inject::default()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::keep_private;
    use http::header::CACHE_CONTROL;

    fn marked(given: &[&str]) -> Vec<String> {
        let mut h = http::HeaderMap::new();
        for v in given {
            h.append(CACHE_CONTROL, v.parse().unwrap());
        }
        keep_private(&mut h);
        h.get_all(CACHE_CONTROL)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_sessions_response_is_private_unless_the_backend_said_who_keeps_it() {
        assert_eq!(marked(&[]), ["private"]);
        assert_eq!(marked(&["max-age=600"]), ["max-age=600", "private"]);
        assert_eq!(marked(&["no-cache"]), ["no-cache", "private"]);
        for said in ["public, max-age=60", "S-MAXAGE=60", "private", "no-store"] {
            assert_eq!(marked(&[said]), [said], "{said}");
        }
        assert_eq!(marked(&["max-age=1", "public"]), ["max-age=1", "public"]);
        // A qualified private lets a shared cache keep all but the fields it names.
        assert_eq!(
            marked(&["private=\"Set-Cookie\", max-age=600"]),
            ["private=\"Set-Cookie\", max-age=600", "private"]
        );
        // Commas inside a quoted string do not split it.
        assert_eq!(
            marked(&["no-cache=\"a, s-maxage\""]),
            ["no-cache=\"a, s-maxage\"", "private"]
        );
        assert_eq!(
            marked(&["no-cache=\"a\", public"]),
            ["no-cache=\"a\", public"]
        );
    }
}
