//! The logout indexes in Redis (sessions by IdP session `sid`, by user `sub`): an index holds
//! the sessions that may still live, not one entry per login for as long as logins keep it
//! alive; and the plain sets earlier builds wrote are still found and cleaned by logouts, so
//! an upgrade loses no session's logout.

use crate::lifecycle::{alive, logout_claims, mock_login, mock_pair, post_logout, MockPair};
use serde_json::json;

/// The Redis keys (without the test's prefix games: every key) whose name matches `pattern`.
async fn keys(m: &MockPair, pattern: &str) -> Vec<String> {
    let out = m.redis.cli_async(&["--raw", "KEYS", pattern]).await;
    out.lines().map(str::to_owned).collect()
}

async fn card(m: &MockPair, cmd: &str, key: &str) -> usize {
    let out = m.redis.cli_async(&["--raw", cmd, key]).await;
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{cmd} {key}: {out}"))
}

/// Each login of a user adds to the user's index; before, nothing but a logout of every session
/// removed an entry, and each login raised the index's TTL: a user (or a script) signing in
/// day after day grew it without bound, and a logout walked all of it. Now each login drops the
/// entries whose time is over (here made over by moving their scores into the past: the
/// shortest session lifetime is a minute).
#[tokio::test]
async fn a_users_index_holds_the_sessions_that_may_live_not_every_login() {
    let m = mock_pair(&[]).await;
    for sid in ["sid-1", "sid-2", "sid-3"] {
        mock_login(&m, &m.a.sidecar, "alice", sid).await;
    }
    let subs = keys(&m, "*by-expiry:sub:*").await;
    assert_eq!(subs.len(), 1, "one user, one index: {subs:?}");
    let sub = &subs[0];
    assert_eq!(card(&m, "ZCARD", sub).await, 3);
    let members = m
        .redis
        .cli_async(&["--raw", "ZRANGE", sub, "0", "-1"])
        .await;
    let ended: Vec<&str> = members.lines().take(2).collect();
    for member in &ended {
        let r = m.redis.cli_async(&["ZADD", sub, "XX", "1", member]).await;
        assert!(r.contains('0'), "ZADD XX: {r}");
    }
    mock_login(&m, &m.b.sidecar, "alice", "sid-4").await;
    let left = m
        .redis
        .cli_async(&["--raw", "ZRANGE", sub, "0", "-1"])
        .await;
    assert_eq!(left.lines().count(), 2, "{left}");
    for member in ended {
        assert!(!left.contains(member), "an entry whose time is over stayed");
    }
    let ttl: i64 = m
        .redis
        .cli_async(&["--raw", "PTTL", sub])
        .await
        .parse()
        .unwrap();
    assert!(ttl > 0, "the index still expires on its own: {ttl}");
    // The plain set an earlier build reads holds the same members, pruned alike.
    let older = sub.replacen("by-expiry:", "", 1);
    let plain = m.redis.cli_async(&["--raw", "SMEMBERS", &older]).await;
    let sorted = |t: &str| {
        let mut v: Vec<String> = t.lines().map(str::to_owned).collect();
        v.sort();
        v
    };
    assert_eq!(
        sorted(&plain),
        sorted(&left),
        "the earlier build's set follows the index"
    );
}

/// A replica of the earlier build (reading only the plain sets) still finds, and logs out,
/// the sessions this build made: an upgrade's mixed replicas, or a rollback.
#[tokio::test]
async fn an_earlier_build_finds_the_sessions_this_build_indexed() {
    let m = mock_pair(&[]).await;
    mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let indexes = keys(&m, "*by-expiry:*").await;
    assert_eq!(indexes.len(), 2, "{indexes:?}");
    for zset in indexes {
        let older = zset.replacen("by-expiry:", "", 1);
        let z = m
            .redis
            .cli_async(&["--raw", "ZRANGE", &zset, "0", "-1"])
            .await;
        let s = m.redis.cli_async(&["--raw", "SMEMBERS", &older]).await;
        assert_eq!(z, s, "{older} lacks what {zset} holds");
        let ttl = m.redis.cli_async(&["--raw", "PTTL", &older]).await;
        assert!(ttl.parse::<i64>().unwrap() > 0, "{older} expires: {ttl}");
    }
}

/// Sessions indexed by an earlier build (plain sets at the index's own name, as a replica not
/// yet upgraded still writes them) are ended by a back-channel logout by `sid` and by `sub`,
/// and the logout by `sub` removes them from the old set.
#[tokio::test]
async fn sessions_indexed_by_an_earlier_build_are_still_logged_out() {
    let m = mock_pair(&[]).await;
    let first = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    let second = mock_login(&m, &m.b.sidecar, "alice", "sid-2").await;
    let bobs = mock_login(&m, &m.a.sidecar, "bob", "sid-3").await;
    // Rewrite every index as the earlier build wrote it.
    let indexes = keys(&m, "*by-expiry:*").await;
    assert_eq!(indexes.len(), 5, "three sids, two subs: {indexes:?}");
    for zset in &indexes {
        let old = zset.replacen("by-expiry:", "", 1);
        let old = old.as_str();
        let members = m
            .redis
            .cli_async(&["--raw", "ZRANGE", zset, "0", "-1"])
            .await;
        let mut sadd = vec!["SADD", old];
        sadd.extend(members.lines());
        m.redis.cli_async(&sadd).await;
        m.redis.cli_async(&["EXPIRE", old, "3600"]).await;
        m.redis.cli_async(&["DEL", zset]).await;
    }
    assert!(keys(&m, "*by-expiry:*").await.is_empty());

    let mut by_sid = logout_claims(&m);
    by_sid["sid"] = json!("sid-1");
    let r = post_logout(&m.b.sidecar, &m.key.sign(&by_sid)).await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    assert!(
        !alive(&m.a.sidecar, &first).await,
        "found through the old sid set"
    );
    assert!(alive(&m.a.sidecar, &second).await);

    let mut by_sub = logout_claims(&m);
    by_sub.as_object_mut().unwrap().remove("sid");
    let r = post_logout(&m.a.sidecar, &m.key.sign(&by_sub)).await;
    assert_eq!(r.status(), 200, "{}", String::from_utf8_lossy(r.body()));
    assert!(
        !alive(&m.b.sidecar, &second).await,
        "found through the old sub set"
    );
    assert!(alive(&m.a.sidecar, &bobs).await, "another user's session");
    let subs: Vec<String> = keys(&m, "*sub:*").await;
    let subs: Vec<&String> = subs.iter().filter(|k| !k.contains("by-expiry:")).collect();
    assert_eq!(
        subs.len(),
        1,
        "alice's old set is emptied (gone), bob's stays: {subs:?}"
    );
    assert_eq!(card(&m, "SCARD", subs[0]).await, 1);
}

/// A login writes its session's logout indexes before the session itself: Redis replicates
/// writes in order, so a failover losing the last write loses the session, never only its
/// index entries (a session no index names would outlive every logout). Read off `MONITOR`.
#[tokio::test]
async fn a_login_writes_its_indexes_before_its_session() {
    use tokio::io::AsyncBufReadExt;
    let m = mock_pair(&[]).await;
    let mut monitor = tokio::process::Command::new("redis-cli")
        .args(["-p", &m.redis.port.to_string(), "monitor"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(monitor.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("OK"));
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    assert!(alive(&m.a.sidecar, &cookie).await);
    let mut seen = Vec::new();
    let mut session_set = None;
    while session_set.is_none() {
        let line = tokio::time::timeout(std::time::Duration::from_secs(5), lines.next_line())
            .await
            .expect("the session's SET in MONITOR")
            .unwrap()
            .unwrap();
        if line.contains("\"SET\"") && line.contains(":session:") {
            session_set = Some(seen.len());
        }
        seen.push(line);
    }
    let indexed = |what: &str| {
        seen.iter()
            .position(|l| l.contains(what) && !l.contains("\"SET\""))
            .unwrap_or_else(|| panic!("no write to {what} before the session: {seen:#?}"))
    };
    assert!(indexed(":sid:") < session_set.unwrap());
    assert!(indexed(":sub:") < session_set.unwrap());
}

/// An IdP that names another session of its own (`sid`) in the ID token of a refresh: its
/// back-channel logout names that `sid`, and must end the session on every replica. Before,
/// the session was indexed under its login's `sid` only, and outlived the logout.
#[tokio::test]
async fn a_logout_naming_the_sid_a_refresh_brought_ends_the_session() {
    use crate::oidc_support::CLIENT_ID;
    let m = mock_pair(&[]).await;
    // 8 s access tokens: a refresh is due in their last quarter.
    m.idp.set(|s| s.login_expires_in = 8);
    let cookie = mock_login(&m, &m.a.sidecar, "alice", "sid-1").await;
    // Bob's tokens last 600 s: no refresh (which would name Alice) touches his session.
    m.idp.set(|s| s.login_expires_in = 0);
    let kept = mock_login(&m, &m.b.sidecar, "bob", "sid-9").await;
    let now = sso_sidecar::auth::oidc::now_unix();
    let id_token = m.key.sign(
        &json!({"iss": m.idp.issuer(), "sub": "alice", "aud": CLIENT_ID,
                                      "exp": now + 600, "iat": now, "sid": "sid-2"}),
    );
    m.idp.set(|s| {
        s.token_response = json!({"access_token": "at2", "token_type": "Bearer",
                                  "expires_in": 600, "id_token": id_token, "refresh_token": "rt2"})
    });
    crate::lifecycle::served_until_refreshed(&m, &cookie).await;
    let mut c = logout_claims(&m);
    c["sid"] = json!("sid-2");
    assert_eq!(
        post_logout(&m.b.sidecar, &m.key.sign(&c)).await.status(),
        200
    );
    assert!(!alive(&m.a.sidecar, &cookie).await, "ended on replica A");
    assert!(!alive(&m.b.sidecar, &cookie).await, "ended on replica B");
    assert!(
        alive(&m.a.sidecar, &kept).await,
        "another IdP session ended"
    );
}
