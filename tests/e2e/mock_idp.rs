//! An in-process OpenID Provider for what a real one will not produce: forged, expired and
//! mis-addressed tokens, key rotation, a lying userinfo. It signs with ES256 keys made by ring.
//! The test sets the token response before driving the callback.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

/// An ES256 signing key with its `kid`.
pub struct Key {
    pair: EcdsaKeyPair,
    pub kid: String,
}

impl Key {
    pub fn new(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Key {
            pair,
            kid: kid.into(),
        }
    }

    pub fn jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({"kty":"EC","crv":"P-256","use":"sig","alg":"ES256","kid":self.kid,"x":b64(&p[1..33]),"y":b64(&p[33..65])})
    }

    /// A compact JWS over `claims` with this key, `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&json!({"alg":"ES256","typ":"JWT","kid":self.kid}), claims)
    }

    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

#[derive(Default)]
pub struct MockState {
    /// The `issuer` the discovery document advertises (defaults to the mock's own URL).
    pub advertised_issuer: Option<String>,
    pub jwks: Value,
    pub token_response: Value,
    pub userinfo: Value,
    pub jwks_fetches: u32,
    pub token_requests: Vec<String>,
    /// Status of the token endpoint's answers (0 = 200).
    pub token_status: u16,
    /// `expires_in` of the access token a `login` gets (0 = 600 s).
    pub login_expires_in: i64,
    /// Leave `end_session_endpoint` out of the discovery document.
    pub no_end_session: bool,
    /// Status of userinfo's answers (0 = 200).
    pub userinfo_status: u16,
    /// Status of the JWKS's answers (0 = 200).
    pub jwks_status: u16,
    /// Advertise `authorization_response_iss_parameter_supported` (RFC 9207).
    pub iss_parameter: bool,
    /// The PKCE challenge (S256) of each code issued: the token endpoint refuses a code whose
    /// `code_verifier` does not match it, as a real IdP does.
    pub codes: std::collections::HashMap<String, String>,
    /// Milliseconds the token endpoint waits before it answers.
    pub token_delay_ms: u64,
}

pub struct MockIdp {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<MockState>>,
}

impl MockIdp {
    pub async fn start() -> MockIdp {
        Self::start_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    pub async fn start_on(listener: tokio::net::TcpListener) -> MockIdp {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(MockState::default()));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(req, addr, &st).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        MockIdp { addr, state }
    }

    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set<F: FnOnce(&mut MockState)>(&self, f: F) {
        f(&mut self.state.lock().unwrap());
    }
}

async fn handle(
    req: Request<Incoming>,
    addr: SocketAddr,
    st: &Mutex<MockState>,
) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let base = format!("http://{addr}");
    let path = req.uri().path().to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    if path == "/token" {
        // Recorded on arrival, before any delay: a test can see a request waiting here.
        let delay = {
            let mut s = st.lock().unwrap();
            s.token_requests
                .push(String::from_utf8_lossy(&body).into_owned());
            s.token_delay_ms
        };
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let mut s = st.lock().unwrap();
    let mut status = 200u16;
    let v = match path.as_str() {
        "/.well-known/openid-configuration" => {
            let mut d = json!({
            "issuer": s.advertised_issuer.clone().unwrap_or(base.clone()),
            "authorization_endpoint": format!("{base}/auth"),
            "token_endpoint": format!("{base}/token"),
            "userinfo_endpoint": format!("{base}/userinfo"),
            "jwks_uri": format!("{base}/jwks"),
            "end_session_endpoint": format!("{base}/session/end"),
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            });
            if s.no_end_session {
                d.as_object_mut().unwrap().remove("end_session_endpoint");
            }
            if s.iss_parameter {
                d["authorization_response_iss_parameter_supported"] = json!(true);
            }
            d
        }
        "/jwks" => {
            s.jwks_fetches += 1;
            if s.jwks_status != 0 {
                status = s.jwks_status;
            }
            s.jwks.clone()
        }
        "/token" => {
            let form: std::collections::HashMap<String, String> =
                url::form_urlencoded::parse(&body).into_owned().collect();
            let verifier = form.get("code_verifier").map_or("", String::as_str);
            let derived =
                b64(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
            match form.get("code").and_then(|c| s.codes.get(c)) {
                Some(challenge) if *challenge != derived => {
                    status = 400;
                    json!({"error": "invalid_grant", "error_description": "PKCE verification failed"})
                }
                _ => {
                    status = if s.token_status == 0 {
                        200
                    } else {
                        s.token_status
                    };
                    s.token_response.clone()
                }
            }
        }
        "/userinfo" => {
            if s.userinfo_status != 0 {
                status = s.userinfo_status;
            }
            s.userinfo.clone()
        }
        _ => {
            return Response::builder()
                .status(404)
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap();
        }
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

impl MockIdp {
    /// Logs `sub` in on `sc` with an ID token signed by `key` (IdP session `sid`, a refresh
    /// token); returns the sidecar's session cookie value.
    pub async fn login(
        &self,
        key: &Key,
        sc: &crate::support::Sidecar,
        sub: &str,
        sid: &str,
    ) -> String {
        self.login_named(key, sc, sub, sid, "").await
    }

    /// The same on a sidecar whose cookie names carry `prefix` (`__Host-` over https).
    pub async fn login_named(
        &self,
        key: &Key,
        sc: &crate::support::Sidecar,
        sub: &str,
        sid: &str,
        prefix: &str,
    ) -> String {
        use crate::oidc_support::set_cookie;
        let cb = self
            .login_until_callback(key, sc, sub, sid, prefix)
            .await
            .await;
        assert_eq!(cb.status(), 302, "{}", String::from_utf8_lossy(cb.body()));
        set_cookie(&cb, &format!("{prefix}sso_sidecar_session")).unwrap()
    }

    /// A login up to the IdP's redirect back: the callback, not yet sent (the returned future
    /// sends it), so a test can act between the two.
    pub async fn login_until_callback(
        &self,
        key: &Key,
        sc: &crate::support::Sidecar,
        sub: &str,
        sid: &str,
        prefix: &str,
    ) -> impl std::future::Future<Output = http::Response<bytes::Bytes>> {
        let (path, cookie) = self.callback_for(key, sc, sub, sid, prefix).await;
        let callback = sc.url(&path);
        async move {
            crate::support::get(&callback, &[("cookie", &cookie)])
                .await
                .unwrap()
        }
    }

    /// The same, as the callback's path and query and the `Cookie` it goes with (to be sent
    /// to any replica).
    pub async fn callback_for(
        &self,
        key: &Key,
        sc: &crate::support::Sidecar,
        sub: &str,
        sid: &str,
        prefix: &str,
    ) -> (String, String) {
        use crate::oidc_support::{location, set_cookie, urlencode, CLIENT_ID};
        use crate::support::get;
        let r = get(&sc.url("/auth/login?next=/"), &[]).await.unwrap();
        let loc = url::Url::parse(&location(&r)).unwrap();
        let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
        let state_name = format!("{prefix}sso_sidecar_session_state");
        let state_cookie = set_cookie(&r, &state_name).unwrap();
        let now = sso_sidecar::auth::oidc::now_unix();
        let mut claims = json!({"iss": self.issuer(), "sub": sub, "aud": CLIENT_ID, "exp": now + 600, "iat": now, "nonce": q["nonce"], "sid": sid});
        if sid.is_empty() {
            // An IdP that sends no `sid` in its ID tokens.
            claims.as_object_mut().unwrap().remove("sid");
        }
        let id_token = key.sign(&claims);
        self.set(|s| {
            let expires_in = if s.login_expires_in > 0 { s.login_expires_in } else { 600 };
            s.token_response = json!({"access_token": "at", "token_type": "Bearer", "expires_in": expires_in, "id_token": id_token, "refresh_token": "rt"})
        });
        // A code of its own, bound to the login's PKCE challenge.
        let code = format!("c-{}", sso_sidecar::crypto::random_token(8));
        self.set(|s| {
            s.codes.insert(code.clone(), q["code_challenge"].clone());
        });
        let callback = format!(
            "/auth/callback?code={code}&state={}",
            urlencode(&q["state"])
        );
        (callback, format!("{state_name}={state_cookie}"))
    }
}
