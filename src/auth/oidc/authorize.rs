//! The authorization request: the URL a login sends the browser to (PKCE S256, state, nonce,
//! the configured scopes, `prompt` and `max_age`), and the settings that shape it. Builds a URL
//! only; what the browser is told is `flow.rs`'s, and the callback's checks are `callback.rs`'s.

use super::Provider;
use openidconnect::core::{CoreAuthPrompt, CoreResponseType};
use openidconnect::{
    AuthenticationFlow, CsrfToken, Nonce, PkceCodeChallenge, PkceCodeVerifier, Scope,
};
use std::time::Duration;

impl Provider {
    /// This provider, asking the IdP for `prompt` (validated by the configuration: none,
    /// login, consent, select_account) at every login.
    pub fn with_prompt(mut self, prompt: Option<String>) -> Self {
        self.prompt = prompt
            .iter()
            .flat_map(|p| p.split_whitespace())
            .map(|p| match p {
                "none" => CoreAuthPrompt::None,
                "login" => CoreAuthPrompt::Login,
                "consent" => CoreAuthPrompt::Consent,
                "select_account" => CoreAuthPrompt::SelectAccount,
                other => CoreAuthPrompt::Extension(other.to_owned()),
            })
            .collect();
        self
    }

    /// This provider, asking the IdP for `max_age` at every login (`auth_max_age_secs`).
    pub fn with_max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }

    /// Whether a login may be begun again with `prompt=login` ([`Self::authorize_url`]'s
    /// `force_login`): not when every login asks for it already (the same request would get
    /// the same answer, after a second password prompt), nor with `prompt=none`, which OIDC
    /// Core §3.1.2.1 forbids beside any other value.
    pub fn can_force_login(&self) -> bool {
        !self
            .prompt
            .iter()
            .any(|p| matches!(p, CoreAuthPrompt::Login | CoreAuthPrompt::None))
    }

    /// The `max_age` every login asks for, if any.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// The authorization request URL, with the S256 challenge of `verifier`. `force_login`
    /// adds `prompt=login` to the configured prompt: the IdP must authenticate the user again,
    /// whatever its own session (a login whose `auth_time` was older than `max_age`).
    pub fn authorize_url(
        &self,
        state: &str,
        nonce: &str,
        verifier: &str,
        force_login: bool,
    ) -> Option<String> {
        let loaded = self.current()?;
        let (state, nonce) = (state.to_owned(), nonce.to_owned());
        let mut req = loaded
            .client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(
                &PkceCodeVerifier::new(verifier.to_owned()),
            ));
        // The crate always asks for `openid`.
        for scope in self.settings.scopes.split_whitespace() {
            if scope != "openid" {
                req = req.add_scope(Scope::new(scope.to_owned()));
            }
        }
        // None unless configured, as OpenRag: `prompt=consent` makes some IdPs (LemonLDAP::NG)
        // show their consent page at every login. Those that grant `offline_access` only with
        // consent (OIDC Core §11) need `prompt = "consent"`.
        for p in &self.prompt {
            req = req.add_prompt(p.clone());
        }
        if force_login && self.can_force_login() {
            req = req.add_prompt(CoreAuthPrompt::Login);
        }
        if let Some(max_age) = self.max_age {
            req = req.set_max_age(max_age);
        }
        Some(req.url().0.into())
    }
}
