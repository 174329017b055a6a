//! OpenID Connect Front-Channel Logout 1.0: `GET /auth/frontchannel-logout?iss=…&sid=…`, which
//! an IdP's logout page loads in an iframe (LemonLDAP::NG 2.16 has no back-channel logout).
//! `iss` must be our issuer; the sessions with that `sid` end on every replica. The request
//! carries no proof (the spec has none): an IdP session id is the only secret. So the fallback
//! for IdPs whose ID tokens have no `sid` and that send the user id there instead — the sessions
//! of the `sub` equal to it — is opt-in (`frontchannel_logout_by_sub`): with it, anyone who
//! knows a user id can end that user's sessions. The browser's own session ends only as one of
//! those (its cookie is then cleared when the browser says the request is a frame): a request
//! naming no session of this browser ends nothing of it, so a sibling site that frames or links
//! the bare URL (same-site: the cookie goes along) cannot log the visitor out, which
//! `/auth/logout` refuses as well. The answer is an empty page only the IdP's origin may frame.

use super::flow::Auth;
use crate::error::Error;
use crate::proxy::Body;
use crate::session::sessions::SidLogout;
use http::{header, request::Parts, HeaderValue, Response, StatusCode};

impl Auth {
    pub async fn frontchannel_logout(
        &self,
        parts: &Parts,
        public_scheme: crate::tls::Scheme,
    ) -> Result<Response<Body>, Error> {
        let q: std::collections::HashMap<String, String> =
            form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let issuer = &self.provider.settings.issuer;
        match q.get("iss") {
            Some(iss) if iss == issuer => {}
            Some(_) => return Err(Error::BadRequest("iss is not this relying party's issuer")),
            None if q.contains_key("sid") => {
                return Err(Error::BadRequest("iss is required with sid"))
            }
            None => {}
        }
        // The browser's own session, if the logout names it: its IdP session, or (opted in)
        // its user. Read before the revocation ends it.
        let sid = q.get("sid").filter(|s| !s.is_empty());
        let by_sub = self.settings().frontchannel_logout_by_sub;
        let own = match (self.cookies.get(&parts.headers, &self.cookies.session), sid) {
            (Some(id), Some(sid)) => self
                .sessions
                .load(&id, super::oidc::now_unix())
                .await?
                .is_some_and(|s| {
                    s.sid.as_deref() == Some(sid.as_str()) || (by_sub && s.sub == *sid)
                }),
            _ => false,
        };
        let mut revoked = 0;
        if let Some(sid) = sid {
            revoked += self
                .sessions
                .revoke_sid(issuer, sid, SidLogout::Unsigned)
                .await?;
            if revoked == 0 && by_sub {
                // No session carries that sid: the IdP put its user id there.
                revoked += self.sessions.revoke_sub(issuer, sid, None).await?;
            }
        }
        // The browser's cookie is cleared only when its session was among those ended, and the
        // browser loads the page as a frame. A request that names no session of this browser
        // ends nothing of it: a sibling site (same-site, so the cookie goes along) could frame
        // or link the bare URL and log the visitor out.
        let framed = parts
            .headers
            .get("sec-fetch-dest")
            .is_none_or(|d| d.as_bytes().eq_ignore_ascii_case(b"iframe"));
        self.metrics.logout("frontchannel");
        self.metrics.sessions_revoked(revoked as u64);
        tracing::info!(sessions = revoked, "front-channel logout");
        let mut r = Response::new(crate::proxy::full(""));
        *r.status_mut() = StatusCode::OK;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // As on every page of the sidecar's own: its URL carries the IdP session id.
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        let idp_origin = url::Url::parse(issuer)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        if let Ok(csp) =
            HeaderValue::from_str(&format!("default-src 'none'; frame-ancestors {idp_origin}"))
        {
            h.insert(header::CONTENT_SECURITY_POLICY, csp);
        }
        if framed && own {
            let secure = self.secure(public_scheme);
            h.append(
                header::SET_COOKIE,
                self.cookies.clear(&self.cookies.session, secure),
            );
        }
        Ok(r)
    }
}
