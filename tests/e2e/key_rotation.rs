//! Rotating `OIDC_TOKEN_ENCRYPTION_KEY` across replicas that share Redis, as a rolling update
//! does: for a while, replicas with the old keys and replicas with the new ones serve the same
//! sessions. The README's three-step rotation keeps everyone logged in; putting the new key
//! first at once logs out the users whose sessions an updated replica wrote, and says so.

use crate::lifecycle::alive;
use crate::mock_idp::*;
use crate::oidc_support::*;
use crate::support::*;
use serde_json::json;
use std::time::Duration;

struct World {
    idp: MockIdp,
    key: Key,
    redis: Redis,
    up: Upstream,
}

impl World {
    async fn replica(&self, keys: &str) -> OidcSidecar {
        let env = [("SSO_SIDECAR_REDIS_URL", self.redis.url())];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        start_oidc_sidecar_with_key(keys, free_port(), &self.idp.issuer(), &self.up.url(), &env)
            .await
    }

    /// Logs in on `on` and says whether `other` serves that session.
    async fn shared(&self, on: &OidcSidecar, other: &OidcSidecar, sid: &str) -> bool {
        let cookie = self.login(on, sid).await;
        alive(&other.sidecar, &cookie).await
    }

    /// Logs in on `on`: the session cookie.
    async fn login(&self, on: &OidcSidecar, sid: &str) -> String {
        let cookie = self.idp.login(&self.key, &on.sidecar, "alice", sid).await;
        assert!(alive(&on.sidecar, &cookie).await, "where it logged in");
        cookie
    }
}

const UNDECRYPTABLE: &str = "sso_sidecar_store_values_undecryptable_total";

#[tokio::test]
async fn a_key_rotation_in_three_roll_outs_logs_nobody_out_a_hasty_one_says_why() {
    let idp = MockIdp::start().await;
    let key = Key::new("k1");
    idp.set(|m| m.jwks = json!({"keys": [key.jwk()]}));
    let w = World {
        idp,
        key,
        redis: Redis::start().await,
        up: Upstream::start(),
    };
    let (old, new) = (
        sso_sidecar::crypto::generate_key(),
        sso_sidecar::crypto::generate_key(),
    );
    let both = |first: &str, second: &str| format!("{first},{second}");

    // Before: everyone on the old key.
    let before = w.login(&w.replica(&old).await, "s0").await;
    // 1. The new key appended, on some replicas so far: everyone still seals with the old
    // key, so updated and not yet updated replicas read each other's sessions.
    let (a, b) = (w.replica(&both(&old, &new)).await, w.replica(&old).await);
    assert!(
        w.shared(&a, &b, "s1").await,
        "appended: the old replica reads the updated one's"
    );
    assert!(w.shared(&b, &a, "s2").await, "appended: and the other way");
    assert!(alive(&a.sidecar, &before).await, "a session from before");
    // 2. Moved first, once every replica has both: what the updated ones seal with the new
    // key, the others open.
    let b = w.replica(&both(&old, &new)).await;
    let a = w.replica(&both(&new, &old)).await;
    let sealed_new = w.login(&a, "s3").await;
    assert!(
        alive(&b.sidecar, &sealed_new).await,
        "moved first: the other replica reads it"
    );
    assert!(
        w.shared(&b, &a, "s4").await,
        "moved first: and the other way"
    );
    assert!(alive(&a.sidecar, &before).await, "a session from before");
    assert_eq!(metric(&metrics(&b.sidecar).await, UNDECRYPTABLE), 0.0);
    assert_eq!(metric(&metrics(&a.sidecar).await, UNDECRYPTABLE), 0.0);
    // 3. The old key dropped: sessions sealed since step 2 stay; those only the old key
    // opens are gone, and counted (hence: only after the longest session).
    let c = w.replica(&new).await;
    assert!(
        alive(&c.sidecar, &sealed_new).await,
        "sealed with the new key"
    );
    assert!(
        !alive(&c.sidecar, &before).await,
        "sealed with the dropped key"
    );
    assert!(metric(&metrics(&c.sidecar).await, UNDECRYPTABLE) >= 1.0);

    // Prepended in one step: a replica still on the old key cannot open what the updated one
    // wrote. The user logs in again; the operator is told why.
    let (a, b) = (w.replica(&both(&new, &old)).await, w.replica(&old).await);
    let cookie = w.idp.login(&w.key, &a.sidecar, "alice", "s5").await;
    for _ in 0..3 {
        assert!(
            !alive(&b.sidecar, &cookie).await,
            "the old replica cannot open it"
        );
    }
    assert!(metric(&metrics(&b.sidecar).await, UNDECRYPTABLE) >= 3.0);
    assert!(
        alive(&a.sidecar, &cookie).await,
        "left in the store for the replicas that can open it"
    );
    wait_until("the warning", Duration::from_secs(10), || {
        b.sidecar
            .output()
            .contains("opens with no key of OIDC_TOKEN_ENCRYPTION_KEY")
    })
    .await;
    assert_eq!(
        b.sidecar.output().matches("opens with no key").count(),
        1,
        "one warning a minute, not one a request"
    );
}
