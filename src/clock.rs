//! The wall clock in Unix seconds, the unit of every expiry the sidecar stores, and the
//! once-in-a-while gate of warnings a request may trigger. A leaf.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it): only where whole seconds
/// would leave a race open (a login against a logout of the same second).
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether `secs` have passed since the last time this returned true for `last` (which holds
/// that time; start it at `i64::MIN`), and if so takes the turn: a warning a request can
/// trigger is logged at most that often, however many requests trigger it.
pub fn turn_every(last: &std::sync::atomic::AtomicI64, secs: i64) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let now = now_unix();
    let before = last.load(Relaxed);
    now.saturating_sub(before) >= secs
        && last.compare_exchange(before, now, Relaxed, Relaxed).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_turn_comes_once_per_interval() {
        let last = std::sync::atomic::AtomicI64::new(i64::MIN);
        assert!(super::turn_every(&last, 60));
        assert!(
            !super::turn_every(&last, 60),
            "taken until the minute is over"
        );
        assert!(super::turn_every(&last, 0));
    }
}
