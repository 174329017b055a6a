//! Unit tests of `Sessions` over the memory store.

use super::*;
use crate::store::memory::MemoryStore;

fn session(now: i64) -> Session {
    Session {
        sid: Some("sid-1".into()),
        email: Some("alice@example.test".into()),
        ..Session::for_tests("alice", now, 60)
    }
}

/// A back-channel logout token naming no user.
const SIGNED: SidLogout = SidLogout::Signed { sub: None };

fn sessions() -> Sessions {
    let keys = Arc::new(KeyRing::parse(&crate::crypto::generate_key()).unwrap());
    Sessions::new(Arc::new(Store::Memory(MemoryStore::new())), keys, 1)
}

#[tokio::test]
async fn create_load_delete_round_trip() {
    let s = sessions();
    let id = s.create(&session(100), 100, 100).await.unwrap().unwrap();
    assert_eq!(id.len(), 43);
    assert_eq!(s.load(&id, 100).await.unwrap().unwrap().sub, "alice");
    assert!(
        s.load("x", 100).await.unwrap().is_none(),
        "implausible ids are not looked up"
    );
    assert!(s.load(&new_session_id(), 100).await.unwrap().is_none());
    assert!(s.delete(&id).await.unwrap());
    assert!(s.load(&id, 100).await.unwrap().is_none());
}

#[tokio::test]
async fn every_login_gets_a_new_id() {
    let s = sessions();
    let a = s.create(&session(100), 100, 100).await.unwrap().unwrap();
    let b = s.create(&session(100), 100, 100).await.unwrap().unwrap();
    assert_ne!(a, b);
}

#[tokio::test]
async fn expiry_is_absolute_and_access_bound_without_refresh_token() {
    let s = sessions();
    let id = s.create(&session(100), 100, 100).await.unwrap().unwrap();
    assert!(
        s.load(&id, 3701).await.unwrap().is_none(),
        "absolute expiry"
    );
    let mut no_rt = session(100);
    no_rt.refresh_token = None;
    let id = s.create(&no_rt, 100, 100).await.unwrap().unwrap();
    assert!(s.load(&id, 150).await.unwrap().is_some());
    assert!(
        s.load(&id, 161).await.unwrap().is_none(),
        "ends with its access token"
    );
}

#[tokio::test]
async fn revocation_by_sid_and_by_sub() {
    let s = sessions();
    let a = s.create(&session(100), 100, 100).await.unwrap().unwrap();
    let mut other = session(100);
    other.sid = Some("sid-2".into());
    let b = s.create(&other, 100, 100).await.unwrap().unwrap();
    assert_eq!(
        s.revoke_sid("https://idp", "sid-1", SIGNED).await.unwrap(),
        1
    );
    assert!(s.load(&a, 100).await.unwrap().is_none());
    assert!(s.load(&b, 100).await.unwrap().is_some());
    assert_eq!(s.revoke_sub("https://idp", "alice", None).await.unwrap(), 1);
    assert!(s.load(&b, 100).await.unwrap().is_none());
    assert_eq!(
        s.revoke_sub("https://other-idp", "alice", None)
            .await
            .unwrap(),
        0
    );
}

/// A session ended by its user leaves the user's logout indexes (a user signing in and out all
/// day must not grow what a back-channel logout by `sub` walks), but stays in its `sid`'s, the
/// record that the IdP session was known.
#[tokio::test]
async fn an_ended_session_leaves_its_users_indexes() {
    let s = sessions();
    let mut sidless = session(100);
    sidless.sid = None;
    for made in [session(100), sidless] {
        for _ in 0..5 {
            let id = s.create(&made, 100, 100).await.unwrap().unwrap();
            assert!(s.end(&id, &made).await.unwrap());
        }
    }
    let members = |index: String| {
        let store = s.store.clone();
        async move { store.index_members(&index).await.unwrap().len() }
    };
    assert_eq!(
        members(Sessions::sub_index("https://idp", "alice")).await,
        0
    );
    assert_eq!(
        members(Sessions::sidless_index("https://idp", "alice")).await,
        0
    );
    assert_eq!(
        members(Sessions::sid_index("https://idp", "sid-1")).await,
        5
    );
    let kept = s.create(&session(100), 100, 100).await.unwrap().unwrap();
    assert_eq!(s.revoke_sub("https://idp", "alice", None).await.unwrap(), 1);
    assert!(s.load(&kept, 100).await.unwrap().is_none());
}

/// A back-channel logout handled while a login of the same IdP session completes, before the
/// new session reached the `sid` index: the login finds the logout's record and keeps nothing.
/// Other IdP sessions of the user are not touched, and the record lasts one login window.
#[tokio::test(start_paused = true)]
async fn a_login_racing_the_logout_of_its_idp_session_keeps_nothing() {
    let s = sessions().with_login_timeout(Duration::from_secs(600)); // + 600 s of margin
    assert_eq!(
        s.revoke_sid("https://idp", "sid-1", SIGNED).await.unwrap(),
        0
    );
    assert!(s.create(&session(100), 100, 100).await.unwrap().is_none());
    assert_eq!(
        s.revoke_sub("https://idp", "alice", None).await.unwrap(),
        0,
        "nothing of the refused login is stored"
    );
    let mut other = session(100);
    other.sid = Some("sid-2".into());
    assert!(s.create(&other, 100, 100).await.unwrap().is_some());
    tokio::time::advance(Duration::from_secs(1190)).await;
    assert!(s.create(&session(100), 100, 100).await.unwrap().is_none());
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(
        s.create(&session(100), 100, 100).await.unwrap().is_some(),
        "the record is gone after the login window"
    );

    // A front-channel logout (anyone can send one) ends sessions but writes no record.
    let Store::Memory(m) = s.store() else {
        unreachable!()
    };
    let before = m.len();
    let unsigned = SidLogout::Unsigned;
    assert_eq!(
        s.revoke_sid("https://idp", "sid-9", unsigned)
            .await
            .unwrap(),
        0
    );
    assert_eq!(m.len(), before, "an unsigned logout wrote to the store");
    let mut ninth = session(100);
    ninth.sid = Some("sid-9".into());
    assert!(s.create(&ninth, 100, 100).await.unwrap().is_some());
}

/// A back-channel logout naming only the user, handled while one of the user's logins
/// completes: the login, begun by the time of the logout, keeps nothing; a login begun after it
/// (the user signing in again) does; a front-channel logout by user writes no record.
#[tokio::test(start_paused = true)]
async fn a_login_racing_a_logout_of_every_session_of_its_user_keeps_nothing() {
    let s = sessions().with_login_timeout(Duration::from_secs(600));
    assert_eq!(
        s.revoke_sub("https://idp", "alice", Some(500))
            .await
            .unwrap(),
        0
    );
    for begun in [400, 499] {
        assert!(
            s.create(&session(510), 510, begun).await.unwrap().is_none(),
            "a login begun at {begun} outlived a logout at 500"
        );
    }
    // Begun at the logout's very time: taken for the user signing in again at once.
    assert!(s.create(&session(510), 510, 500).await.unwrap().is_some());
    // An older logout handled after it does not move the time back.
    assert_eq!(
        s.revoke_sub("https://idp", "alice", Some(450))
            .await
            .unwrap(),
        1
    );
    assert!(
        s.create(&session(510), 510, 480).await.unwrap().is_none(),
        "the record went back to 450"
    );
    let mut bob = session(510);
    bob.sub = "bob".into();
    assert!(
        s.create(&bob, 510, 400).await.unwrap().is_some(),
        "another user"
    );

    let Store::Memory(m) = s.store() else {
        unreachable!()
    };
    let before = m.len();
    assert_eq!(s.revoke_sub("https://idp", "carol", None).await.unwrap(), 0);
    assert_eq!(m.len(), before, "an unsigned logout wrote to the store");
}

/// A logout by user judged to the millisecond: a login begun earlier in the logout's own
/// second keeps nothing (whole seconds let it through), one begun after it in that second does;
/// a record written in whole seconds by an earlier version still ends the logins begun before
/// its second.
#[tokio::test(start_paused = true)]
async fn a_login_begun_earlier_in_the_logouts_second_keeps_nothing() {
    let s = sessions().with_login_timeout(Duration::from_secs(600));
    let logout = 1_700_000_000_500;
    s.revoke_sub("https://idp", "alice", Some(logout))
        .await
        .unwrap();
    assert!(
        s.create(&session(510), 510, logout - 300)
            .await
            .unwrap()
            .is_none(),
        "a login begun 300 ms before the logout, in its second, kept a session"
    );
    assert!(s
        .create(&session(510), 510, logout + 1)
        .await
        .unwrap()
        .is_some());
    let key = Sessions::ended_sub("https://idp", "alice");
    let stored = s.store().get_fresh(&key).await.unwrap().unwrap();
    assert_eq!(&stored[..], b"ms1700000000500");

    // An earlier version's record: whole seconds, read as the start of its second.
    s.store()
        .put(&key, b"1700000001", Duration::from_secs(600))
        .await
        .unwrap();
    assert!(s
        .create(&session(510), 510, 1_700_000_000_999)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .create(&session(510), 510, 1_700_000_001_000)
        .await
        .unwrap()
        .is_some());
    // A later logout's time replaces it, and is not moved back by an earlier one.
    s.revoke_sub("https://idp", "alice", Some(1_700_000_002_000))
        .await
        .unwrap();
    s.revoke_sub("https://idp", "alice", Some(1_700_000_001_500))
        .await
        .unwrap();
    let stored = s.store().get_fresh(&key).await.unwrap().unwrap();
    assert_eq!(&stored[..], b"ms1700000002000");
}

/// One user signing in again and again keeps at most `max_sessions_per_user` live sessions:
/// each login beyond it ends the oldest (never itself, even one with a shorter life); another
/// user's are not touched.
#[tokio::test]
async fn a_login_beyond_the_users_cap_ends_the_oldest_sessions() {
    let s = sessions().with_max_per_user(Some(3));
    let mut bob = session(100);
    bob.sub = "bob".into();
    let bobs = s.create(&bob, 100, 100).await.unwrap().unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        // Made one after another: each expires a little later than the one before.
        ids.push(
            s.create(&session(100 + i), 100 + i, 100)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let alive = s.load(id, 104).await.unwrap().is_some();
        assert_eq!(alive, i >= 2, "session {i}");
    }
    assert!(
        s.load(&bobs, 104).await.unwrap().is_some(),
        "another user's"
    );
    // A session with a shorter life than the others (no refresh token) is kept, and, sorting
    // before them, ends none of them: a login ends only sessions that sort before its own (two
    // logins at once must not end each other). The next one that sorts last trims the excess.
    let mut short = session(105);
    short.refresh_token = None;
    let kept = s.create(&short, 105, 100).await.unwrap().unwrap();
    assert!(s.load(&kept, 105).await.unwrap().is_some());
    assert!(s.load(&ids[2], 105).await.unwrap().is_some());
    let last = s.create(&session(106), 106, 100).await.unwrap().unwrap();
    assert!(s.load(&last, 106).await.unwrap().is_some());
    for (gone, id) in [
        (true, &kept),
        (true, &ids[2]),
        (false, &ids[3]),
        (false, &ids[4]),
    ] {
        assert_eq!(s.load(id, 106).await.unwrap().is_none(), gone);
    }
    // Two logins at once under a cap of one, both indexed before either trims: the earlier's
    // trim ends nothing newer than itself, the later's ends the earlier; never both.
    let s2 = sessions();
    let first = s2.create(&session(100), 100, 100).await.unwrap().unwrap();
    let second = s2.create(&session(100), 100, 100).await.unwrap().unwrap();
    let (a, b) = (Sessions::key_of(&first), Sessions::key_of(&second));
    s2.end_oldest(&session(100), &a, 1).await;
    assert!(
        s2.load(&second, 100).await.unwrap().is_some(),
        "the later stays"
    );
    s2.end_oldest(&session(100), &b, 1).await;
    assert!(
        s2.load(&first, 100).await.unwrap().is_none(),
        "the earlier goes"
    );
    assert!(s2.load(&second, 100).await.unwrap().is_some());
    // Only live sessions count: the oldest, in daily use, outlives newer ones that timed out
    // (gone from the store, still in the index).
    let s = sessions().with_max_per_user(Some(3));
    let desktop = s.create(&session(100), 100, 100).await.unwrap().unwrap();
    for _ in 0..5 {
        let short = s.create(&session(100), 100, 100).await.unwrap().unwrap();
        s.store().delete(&Sessions::key_of(&short)).await.unwrap();
    }
    let another = s.create(&session(100), 100, 100).await.unwrap().unwrap();
    assert!(
        s.load(&desktop, 100).await.unwrap().is_some(),
        "the live one"
    );
    assert!(s.load(&another, 100).await.unwrap().is_some());
    let index = Sessions::sub_index("https://idp", "alice");
    assert_eq!(
        s.store().index_oldest_first(&index).await.unwrap().len(),
        3,
        "dead entries leave the index whenever it outgrows the cap"
    );
    // Without a cap (0), nothing is ended.
    let s = sessions();
    let ids: Vec<String> = logins_of_alice(&s, 5).await;
    for id in &ids {
        assert!(s.load(id, 100).await.unwrap().is_some());
    }
}

async fn logins_of_alice(s: &Sessions, n: i64) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(s.create(&session(100), 100, 100).await.unwrap().unwrap());
    }
    ids
}

#[tokio::test]
async fn sessions_sealed_with_a_foreign_key_do_not_open() {
    let store = Arc::new(Store::Memory(MemoryStore::new()));
    let a = Sessions::new(
        store.clone(),
        Arc::new(KeyRing::parse(&crate::crypto::generate_key()).unwrap()),
        1,
    );
    let b = Sessions::new(
        store,
        Arc::new(KeyRing::parse(&crate::crypto::generate_key()).unwrap()),
        1,
    );
    let id = a.create(&session(100), 100, 100).await.unwrap().unwrap();
    assert!(b.load(&id, 100).await.unwrap().is_none());
}

/// A session is kept opened from its second opening on; a changed session (a refresh) is
/// opened again and kept, and what is served is always what the store holds.
#[tokio::test]
async fn a_session_is_kept_opened_from_its_second_read() {
    let s = sessions();
    let id = s.create(&session(100), 100, 100).await.unwrap().unwrap();
    let kept = |s: &Sessions| s.opened().map.len();
    s.load(&id, 100).await.unwrap().unwrap();
    assert_eq!(kept(&s), 0, "opened once: not kept");
    s.load(&id, 100).await.unwrap().unwrap();
    assert_eq!(kept(&s), 1, "opened twice: kept");
    let first = s.load(&id, 100).await.unwrap().unwrap();
    let again = s.load(&id, 100).await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&first, &again), "served from the cache");

    let mut refreshed = session(100);
    refreshed.email = Some("alice@new.example.test".into());
    s.save(&id, &refreshed, 100).await.unwrap();
    let after = s.load(&id, 100).await.unwrap().unwrap();
    assert_eq!(after.email.as_deref(), Some("alice@new.example.test"));
    let cached = s.load(&id, 100).await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&after, &cached), "the changed session is kept");
    assert_eq!(kept(&s), 1);
}

/// With an idle timeout: requests keep a session alive far past it, and without them it ends
/// between the timeout and an eighth more after the last one that pushed its deadline back;
/// a worker pushes it back at most once per eighth of the timeout.
#[tokio::test(start_paused = true)]
async fn an_idle_session_ends_and_a_used_one_lives_on() {
    let s = sessions().with_idle_timeout(Some(Duration::from_secs(80)));
    let stored = |s: &Sessions, id: &str| {
        let key = Sessions::key_of(id);
        let store = s.store.clone();
        async move { store.get(&key).await.unwrap().is_some() }
    };
    let mut now = 100;
    let id = s.create(&session(now), now, now).await.unwrap().unwrap();
    // Used every 20 s for 400 s, five timeouts: alive throughout.
    let mut second = session(now);
    second.sid = Some("sid-2".into());
    let other = s.create(&second, now, now).await.unwrap().unwrap();
    for _ in 0..20 {
        tokio::time::advance(Duration::from_secs(20)).await;
        now += 20;
        assert!(s.load(&id, now).await.unwrap().is_some(), "used at {now}");
        assert!(
            s.load(&other, now).await.unwrap().is_some(),
            "used at {now}"
        );
    }
    // The logout indexes outlive the idle timeout: a back-channel logout still finds a session
    // in steady use.
    assert_eq!(
        s.revoke_sid("https://idp", "sid-2", SIGNED).await.unwrap(),
        1
    );
    assert!(s.load(&other, now).await.unwrap().is_none());
    // Used again 5 s later: within an eighth (10 s) of the last push, so no new one.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(s.load(&id, now + 5).await.unwrap().is_some());
    tokio::time::advance(Duration::from_secs(84)).await;
    assert!(
        stored(&s, &id).await,
        "89 s after the last push: within 80 s + 10 s"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(!stored(&s, &id).await, "91 s after the last push: gone");
    assert!(s.load(&id, now + 91).await.unwrap().is_none());

    // Never used after its login: gone after the timeout plus an eighth as well.
    let id = s.create(&session(now), now, now).await.unwrap().unwrap();
    tokio::time::advance(Duration::from_secs(91)).await;
    assert!(s.load(&id, now + 91).await.unwrap().is_none());
}

/// What one request learnt (a backend token) goes onto the session as it stands: a refresh
/// written since that request read its copy stays, spent refresh token and all.
#[tokio::test]
async fn an_amendment_keeps_what_others_wrote_since_the_read() {
    let s = sessions();
    let id = s.create(&session(100), 100, 100).await.unwrap().unwrap();
    let read_by_a_request = s.load(&id, 100).await.unwrap().unwrap();
    // Meanwhile a refresh (another request, another replica) rotates the tokens.
    let refreshed = s
        .amend(&id, 101, |cur| cur.refresh_token = Some("rt-2".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refreshed.refresh_token.as_deref(), Some("rt-2"));
    // The first request now adopts a new backend token.
    assert_ne!(read_by_a_request.refresh_token.as_deref(), Some("rt-2"));
    s.amend(&id, 102, |cur| cur.backend_token = Some("b-2".into()))
        .await
        .unwrap()
        .unwrap();
    let now = s.load_fresh(&id, 102).await.unwrap().unwrap();
    assert_eq!(
        now.refresh_token.as_deref(),
        Some("rt-2"),
        "the refresh stays"
    );
    assert_eq!(now.backend_token.as_deref(), Some("b-2"));
    // A change that changes nothing writes nothing (every replica would read it again).
    let key = Sessions::key_of(&id);
    let stored = s.store().get_fresh(&key).await.unwrap();
    s.amend(&id, 102, |cur| cur.backend_token = Some("b-2".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.store().get_fresh(&key).await.unwrap(), stored);
    // A session gone is not brought back.
    s.delete(&id).await.unwrap();
    let gone = s.amend(&id, 103, |cur| cur.backend_token = Some("b-3".into()));
    assert!(gone.await.unwrap().is_none());
    assert!(s.load_fresh(&id, 103).await.unwrap().is_none());
}

/// Someone who can write the store but cannot seal (a shared Redis) copies alice's session
/// value under bob's key: bob's cookie does not become alice, there or through `amend`. A
/// value sealed before the binding was recorded still opens (an upgrade logs nobody out).
#[tokio::test]
async fn a_session_value_copied_under_another_key_opens_as_no_session() {
    let s = sessions();
    let alice = s.create(&session(100), 100, 100).await.unwrap().unwrap();
    let bob = Session {
        sid: Some("sid-2".into()),
        ..Session::for_tests("bob", 100, 60)
    };
    let bob = s.create(&bob, 100, 100).await.unwrap().unwrap();
    let ttl = std::time::Duration::from_secs(600);
    let copied = s
        .store()
        .get_fresh(&Sessions::key_of(&alice))
        .await
        .unwrap()
        .unwrap();
    s.store()
        .put(&Sessions::key_of(&bob), &copied, ttl)
        .await
        .unwrap();
    assert!(s.load(&bob, 100).await.unwrap().is_none(), "not alice");
    assert!(s.load_fresh(&bob, 100).await.unwrap().is_none());
    assert!(s.amend(&bob, 100, |_| {}).await.unwrap().is_none());
    assert_eq!(s.load(&alice, 100).await.unwrap().unwrap().sub, "alice");
    // Sealed before `sealed_for` was written: opens under its key, and is bound once amended.
    let legacy = serde_json::to_vec(&session(100)).unwrap();
    let legacy = s.keys().seal(&legacy);
    s.store()
        .put(&Sessions::key_of(&bob), legacy.as_bytes(), ttl)
        .await
        .unwrap();
    assert_eq!(s.load_fresh(&bob, 100).await.unwrap().unwrap().sub, "alice");
    let amended = s.amend(&bob, 100, |_| {}).await.unwrap().unwrap();
    assert_eq!(
        amended.sealed_for.as_deref(),
        Some(Sessions::key_of(&bob).as_str())
    );
}

/// An IdP whose ID tokens carry no `sid` but whose logout tokens name one (and the user): the
/// logout ends the user's sessions made without a `sid`, and a login of that kind completing
/// meanwhile keeps nothing either; a login begun after the logout does, and one with a `sid`
/// is left to its own record.
#[tokio::test(start_paused = true)]
async fn a_login_without_sid_racing_a_logout_naming_a_sid_and_its_user_keeps_nothing() {
    let s = sessions().with_login_timeout(Duration::from_secs(600));
    let sidless = || Session {
        sid: None,
        ..session(100)
    };
    let by = SidLogout::Signed { sub: Some("alice") };
    let now = crate::clock::now_unix_ms();
    assert_eq!(s.revoke_sid("https://idp", "sid-x", by).await.unwrap(), 0);
    let after = crate::clock::now_unix_ms();
    assert!(
        s.create(&sidless(), 100, now - 1).await.unwrap().is_none(),
        "begun before the logout"
    );
    // Begun after, or at the logout's very time (the user signing in again at once).
    assert!(s
        .create(&sidless(), 100, after + 5)
        .await
        .unwrap()
        .is_some());
    assert!(s.create(&sidless(), 100, after).await.unwrap().is_some());
    let mut bob = sidless();
    bob.sub = "bob".into();
    assert!(
        s.create(&bob, 100, now - 1).await.unwrap().is_some(),
        "another user"
    );
    assert!(
        s.create(&session(100), 100, now - 1)
            .await
            .unwrap()
            .is_some(),
        "a login with a sid of its own"
    );
}

/// A refresh whose ID token names another IdP session: the session joins that `sid`'s index (a
/// logout naming it ends the session), one made without a `sid` leaves its user's sid-less
/// index, and a logout of the new `sid` handled before the index had it is reported.
#[tokio::test]
async fn a_session_follows_the_sid_its_refresh_names() {
    let s = sessions();
    let mut made = session(100);
    made.sid = None;
    let id = s.create(&made, 100, 100).await.unwrap().unwrap();
    made.sid = Some("sid-2".into());
    assert!(!s.join_sid(&id, &made, 100).await.unwrap());
    s.save(&id, &made, 100).await.unwrap();
    s.leave_sidless(&id, &made).await;
    let sidless = Sessions::sidless_index("https://idp", "alice");
    assert!(s.store.index_members(&sidless).await.unwrap().is_empty());
    assert_eq!(
        s.revoke_sid("https://idp", "sid-2", SIGNED).await.unwrap(),
        1
    );
    assert!(s.load(&id, 100).await.unwrap().is_none());

    let id = s.create(&session(100), 100, 100).await.unwrap().unwrap();
    assert_eq!(
        s.revoke_sid("https://idp", "sid-3", SIGNED).await.unwrap(),
        0
    );
    let mut next = session(100);
    next.sid = Some("sid-3".into());
    assert!(s.join_sid(&id, &next, 100).await.unwrap());
}
