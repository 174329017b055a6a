//! The logins in flight of one browser, kept in its state cookie between `/auth/login` and
//! `/auth/callback`: each with its state, nonce, PKCE verifier and `next`, sealed together.
//! Several at once, so two tabs that start a login each both complete (the peers' most
//! reported login bug): a new login adds its state, a callback takes out its own, and the
//! oldest are dropped when there are more than [`MAX_IN_FLIGHT`] or the cookie would outgrow
//! what a browser keeps. Pure: no HTTP, no store.

use crate::crypto::KeyRing;
use serde::{Deserialize, Serialize};

/// Logins kept in flight at most.
pub const MAX_IN_FLIGHT: usize = 4;

/// Largest sealed cookie value kept (browsers keep 4 KB per cookie, name and attributes
/// included).
const MAX_SEALED_BYTES: usize = 3600;

/// What one login in flight needs at its callback.
#[derive(Serialize, Deserialize, Clone)]
pub struct LoginState {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub next: String,
    pub created: i64,
    /// When it began in milliseconds, to be judged against a logout of the same second
    /// (`begun_ms`); absent in the states of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_ms: Option<i64>,
    /// Begun again with `prompt=login` after the IdP's authentication was older than
    /// `auth_max_age_secs`: if this one is too, the login is refused rather than tried again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reauth: bool,
}

impl LoginState {
    /// When the login began, in milliseconds: a state written by an earlier version knows only
    /// its second, and is taken to have begun at its start, so a logout by user later in that
    /// second ends it (the earlier version let such a login through: while both run, a user
    /// signing in again within the logout's second may be asked to sign in once more).
    pub fn begun_ms(&self) -> i64 {
        self.created_ms
            .unwrap_or_else(|| self.created.saturating_mul(1000))
    }
}

/// The live logins (begun at most `ttl` seconds before `now`) in a state cookie's value (none
/// if it cannot be opened). A value holding one login, as older versions wrote it, is read too.
pub fn open(keys: &KeyRing, sealed: &str, now: i64, ttl: i64) -> Vec<LoginState> {
    let Some(plain) = keys.open(sealed) else {
        return Vec::new();
    };
    let all: Vec<LoginState> = serde_json::from_slice::<Vec<LoginState>>(&plain)
        .or_else(|_| serde_json::from_slice::<LoginState>(&plain).map(|s| vec![s]))
        .unwrap_or_default();
    all.into_iter()
        // A login begun "later" than now: another replica's clock ahead of this one's (by as
        // much as ID tokens' `iat` may be), not a forgery, which the seal already excludes.
        .filter(|s| now - s.created <= ttl && s.created <= now + crate::auth::oidc::CLOCK_SKEW_SECS)
        .collect()
}

/// Seals `states`, dropping the oldest until they are few and small enough. A login that is
/// too big alone (a `next` that JSON escaping swells: `"` takes two bytes) returns to `/`
/// after it: a cookie the browser would refuse could never complete.
///
/// Oldest by place, not by `created`: each new login is appended to the ones the browser's
/// cookie holds, so the order is the order they were begun here. `created` comes from the
/// clock of whichever replica began each one; sorted by it, a login begun on a replica whose
/// clock is behind the others' would count as the oldest and be dropped at once.
pub fn seal(keys: &KeyRing, mut states: Vec<LoginState>) -> String {
    while states.len() > MAX_IN_FLIGHT {
        states.remove(0);
    }
    loop {
        let plain = serde_json::to_vec(&states).unwrap_or_default();
        let sealed = keys.seal(&plain);
        if sealed.len() <= MAX_SEALED_BYTES {
            return sealed;
        }
        match states.as_mut_slice() {
            [only] if only.next != "/" => only.next = "/".to_owned(),
            [_] | [] => return sealed,
            _ => {
                states.remove(0);
            }
        }
    }
}

/// Takes the login whose state is `state` out of `states`.
pub fn take(states: &mut Vec<LoginState>, state: &str) -> Option<LoginState> {
    let i = states
        .iter()
        .position(|s| crate::crypto::constant_time_eq(s.state.as_bytes(), state.as_bytes()))?;
    Some(states.remove(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: &str, created: i64, next_len: usize) -> LoginState {
        LoginState {
            state: state.into(),
            nonce: "n".into(),
            verifier: "v".into(),
            next: format!("/{}", "a".repeat(next_len)),
            created,
            created_ms: None,
            reauth: false,
        }
    }

    #[test]
    fn several_logins_in_flight_each_complete() {
        let keys = KeyRing::parse(&crate::crypto::generate_key()).unwrap();
        let sealed = seal(&keys, vec![st("tab1", 100, 5), st("tab2", 101, 5)]);
        let mut states = open(&keys, &sealed, 200, 600);
        assert_eq!(take(&mut states, "tab1").unwrap().state, "tab1");
        assert!(
            take(&mut states, "tab1").is_none(),
            "each state is taken once"
        );
        assert_eq!(take(&mut states, "tab2").unwrap().state, "tab2");
    }

    #[test]
    fn the_oldest_go_when_too_many_or_too_big_and_the_expired_are_ignored() {
        let keys = KeyRing::parse(&crate::crypto::generate_key()).unwrap();
        let many: Vec<_> = (0..6).map(|i| st(&format!("s{i}"), 100 + i, 5)).collect();
        let kept = open(&keys, &seal(&keys, many), 200, 600);
        assert_eq!(kept.len(), MAX_IN_FLIGHT);
        assert_eq!(kept[0].state, "s2", "the oldest were dropped");
        let big: Vec<_> = (0..4)
            .map(|i| st(&format!("b{i}"), 100 + i, 1500))
            .collect();
        let sealed = seal(&keys, big);
        assert!(sealed.len() <= MAX_SEALED_BYTES);
        assert_eq!(
            open(&keys, &sealed, 200, 600).last().unwrap().state,
            "b3",
            "the newest stays"
        );
        // One login too big alone (every `"` escaped): it keeps its state, not its `next`.
        let mut quoted = st("q", 100, 0);
        quoted.next = format!(
            "/{}",
            "\"".repeat(crate::auth::redirect::MAX_NEXT_BYTES - 1)
        );
        let sealed = seal(&keys, vec![quoted]);
        assert!(sealed.len() <= MAX_SEALED_BYTES, "{}", sealed.len());
        let kept = open(&keys, &sealed, 200, 600);
        assert_eq!((kept[0].state.as_str(), kept[0].next.as_str()), ("q", "/"));
        let sealed = seal(&keys, vec![st("old", 0, 1), st("new", 650, 1)]);
        let live = open(&keys, &sealed, 700, 600);
        assert_eq!(live.len(), 1, "older than 600 s: gone");
        assert_eq!(
            open(&keys, &sealed, 700, 701).len(),
            2,
            "a longer timeout keeps it"
        );
        let single = keys.seal(serde_json::to_vec(&st("one", 690, 1)).unwrap().as_slice());
        assert_eq!(
            open(&keys, &single, 700, 600).len(),
            1,
            "the one-login format of before"
        );
    }

    #[test]
    fn the_login_just_begun_stays_whatever_the_other_replicas_clocks_say() {
        let keys = KeyRing::parse(&crate::crypto::generate_key()).unwrap();
        // Four begun on a replica whose clock is 50 s ahead of this one's.
        let mut states: Vec<_> = (0..4).map(|i| st(&format!("a{i}"), 150 + i, 5)).collect();
        states.push(st("new", 100, 5));
        let kept = open(&keys, &seal(&keys, states), 100, 600);
        let names: Vec<_> = kept.iter().map(|s| s.state.as_str()).collect();
        assert_eq!(names, ["a1", "a2", "a3", "new"], "the first begun went");
    }

    #[test]
    fn a_login_knows_its_millisecond_and_an_earlier_versions_its_second() {
        let keys = KeyRing::parse(&crate::crypto::generate_key()).unwrap();
        let mut new = st("a", 1_700_000_000, 1);
        new.created_ms = Some(1_700_000_000_250);
        let opened = open(&keys, &seal(&keys, vec![new]), 1_700_000_001, 600);
        assert_eq!(opened[0].begun_ms(), 1_700_000_000_250);
        // An earlier version's state has no `created_ms`: the start of its second.
        let old = r#"[{"state":"b","nonce":"n","verifier":"v","next":"/","created":1700000000}]"#;
        let opened = open(&keys, &keys.seal(old.as_bytes()), 1_700_000_001, 600);
        assert_eq!(opened[0].begun_ms(), 1_700_000_000_000);
    }

    /// A login begun on a replica whose clock is ahead (up to the ID tokens' skew) completes
    /// here; one from beyond it does not. (It was 5 s: a silent re-login landing on a replica
    /// a few seconds behind failed with an invalid state.)
    #[test]
    fn a_login_from_a_replica_whose_clock_is_ahead_completes() {
        let keys = KeyRing::parse(&crate::crypto::generate_key()).unwrap();
        let ahead = |by: i64| open(&keys, &seal(&keys, vec![st("a", 1000 + by, 1)]), 1000, 600);
        assert_eq!(ahead(30).len(), 1);
        assert_eq!(ahead(crate::auth::oidc::CLOCK_SKEW_SECS).len(), 1);
        assert!(ahead(crate::auth::oidc::CLOCK_SKEW_SECS + 1).is_empty());
    }
}
