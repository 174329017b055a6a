//! A browser back on a callback URL whose login is gone — the Back button, a reload, a
//! bookmarked or expired callback: OpenRag's status and message stay, but the page offers a way
//! on ("Log in again" to where the user was going), and a browser that already has a valid
//! session is simply sent there.

use super::flow::{redirect, Auth};
use super::redirect::{login_location, sanitize_next};
use crate::error::page_response;
use crate::proxy::Body;
use http::{request::Parts, Response, StatusCode};

impl Auth {
    pub(super) async fn lost_login(
        &self,
        parts: &Parts,
        status: StatusCode,
        msg: &str,
        request_id: &str,
    ) -> Response<Body> {
        let next = self.next_of_spent_state(parts).await;
        if let Some(id) = self.cookies.get(&parts.headers, &self.cookies.session) {
            if let Ok(Some(_)) = self.sessions.load(&id, crate::clock::now_unix()).await {
                return redirect(&next);
            }
        }
        let again = login_location(&next);
        page_response(
            status,
            msg,
            true,
            &[("Request id", request_id)],
            Some((&again, "Log in again")),
        )
    }

    /// Where the login of this callback URL was going, when its (spent) state is still
    /// remembered; else `/`.
    async fn next_of_spent_state(&self, parts: &Parts) -> String {
        let state = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned());
        let Some(state) = state else {
            return "/".to_owned();
        };
        let marker = crate::store::keys::hashed("state", &["state", &state]);
        let sealed = self.sessions.store().get(&marker).await.ok().flatten();
        let next = sealed
            .and_then(|v| self.sessions.keys().open_stored(&v))
            .and_then(|plain| String::from_utf8(plain).ok());
        match next {
            Some(next) => sanitize_next(&next, &self.settings().allowed_redirect_origins),
            None => "/".to_owned(),
        }
    }
}
