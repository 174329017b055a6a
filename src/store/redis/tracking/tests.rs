//! The slot's state machine without a Redis: what each pushed message does to the entries,
//! the generation that guards racing reads, and connections that are not the current one.
use super::*;

fn slot_with(keys: &[&str]) -> Slot {
    let slot = Slot::default();
    {
        let mut st = slot.lock();
        for k in keys {
            st.entries
                .insert(k.to_string(), (Bytes::from_static(b"v"), None));
        }
    }
    slot
}

fn invalidate(keys: Option<&[&str]>) -> PushInfo {
    let data = match keys {
        Some(keys) => vec![Value::Array(
            keys.iter()
                .map(|k| Value::BulkString(k.as_bytes().to_vec()))
                .collect(),
        )],
        None => vec![Value::Nil],
    };
    PushInfo {
        kind: PushKind::Invalidate,
        data,
    }
}

#[test]
fn an_invalidation_removes_its_keys_and_bumps_the_generation() {
    let slot = slot_with(&["a", "b", "c"]);
    slot.on_push(1, &invalidate(Some(&["a", "c", "unknown"])));
    let st = slot.lock();
    assert_eq!(st.entries.keys().collect::<Vec<_>>(), vec!["b"]);
    assert_eq!(
        st.generation, 1,
        "a read that raced it must not store its value"
    );
}

#[test]
fn a_flush_forgets_everything() {
    let slot = slot_with(&["a", "b"]);
    slot.on_push(1, &invalidate(None));
    assert!(slot.lock().entries.is_empty());
}

#[test]
fn a_disconnection_ends_the_cache_even_before_its_connection_is_installed() {
    let slot = slot_with(&["a"]);
    slot.on_push(
        7,
        &PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        },
    );
    let mut st = slot.lock();
    assert!(st.entries.is_empty());
    assert_eq!(
        st.dead,
        Some(7),
        "remembered for when it would be installed"
    );
    assert!(st.generation > 0);
    // An answer on a connection that is not the current one proves nothing.
    st.verified(7, Instant::now());
    assert!(st.verified_at.is_none());
    assert!(!st.is_current(7));
}
