//! The live streams' registrations and judges, without a store.

use super::*;

#[tokio::test]
async fn registrations_come_and_go_with_their_streams() {
    let s = Arc::new(LiveStreams::default());
    let a = s.watch("one", None);
    let b = s.watch("one", None);
    let c = s.watch("two", None);
    assert_eq!(s.count(), 3);
    drop(a);
    assert_eq!(s.count(), 2);
    drop(c);
    assert_eq!(s.lock().len(), 1);
    let token = s.lock()["one"].end.clone();
    token.cancel();
    b.end.await;
    assert_eq!(s.count(), 0, "a finished signal unregisters");
}

/// A check removed a session's entry (its streams told to close) and the session opened a
/// new stream before the old ones unregistered: their unregistering leaves the new stream
/// watched, so a later revocation still closes it.
#[tokio::test]
async fn a_closed_streams_late_unregistering_leaves_the_next_stream_watched() {
    let s = Arc::new(LiveStreams::default());
    let old = s.watch("one", None);
    let closed = s.lock().remove("one").unwrap();
    closed.end.cancel();
    let new = s.watch("one", None);
    drop(old);
    assert_eq!(s.count(), 1, "the new stream is still counted");
    let token = s.lock()["one"].end.clone();
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), new.end)
        .await
        .expect("the new stream is told to close");
}

/// A judge that no longer admits the session closes its own stream only; one that does
/// keeps it; a judged stream that ends leaves the judges.
#[tokio::test]
async fn a_judge_that_no_longer_admits_closes_its_own_stream_only() {
    let s = Arc::new(LiveStreams::default());
    let session = Session::for_tests("alice", now_unix(), 3600);
    let judge = |admits: bool| -> Judge { Arc::new(move |_: &Session| admits) };
    let refused = s.watch("one", Some(judge(false)));
    let admitted = s.watch("one", Some(judge(true)));
    let plain = s.watch("one", None);
    let gone = s.watch("one", Some(judge(false)));
    drop(gone);
    assert_eq!(s.confirmed("one", &session), 1, "the refused one only");
    tokio::time::timeout(Duration::from_secs(5), refused.end)
        .await
        .expect("told to close");
    assert_eq!(s.lock()["one"].judged.len(), 1, "the admitted one is left");
    let (mut admitted, mut plain) = (admitted.end, plain.end);
    assert!(futures_poll_pending(&mut admitted).await);
    assert!(futures_poll_pending(&mut plain).await);
    assert_eq!(s.count(), 2);
}

/// A stream on a public path closes once its judge says the path is no longer public (after
/// a reload), and only then; one whose judge still admits it stays; one that ended is gone.
#[tokio::test]
async fn a_stream_on_a_path_no_longer_public_closes() {
    let s = Arc::new(LiveStreams::default());
    let public = Arc::new(AtomicBool::new(true));
    let judge = |p: &Arc<AtomicBool>| -> PublicJudge {
        let p = p.clone();
        Arc::new(move || p.load(Ordering::Relaxed))
    };
    let watched = s.watch_public(judge(&public));
    let kept = s.watch_public(Arc::new(|| true));
    let gone = s.watch_public(judge(&public));
    drop(gone);
    assert_eq!(s.count(), 2, "the ended one unregistered");
    assert_eq!(s.judge_public(), 0, "still public");
    public.store(false, Ordering::Relaxed);
    assert_eq!(s.judge_public(), 1, "the one on the path no longer public");
    tokio::time::timeout(Duration::from_secs(5), watched.end)
        .await
        .expect("told to close");
    let mut kept = kept.end;
    assert!(futures_poll_pending(&mut kept).await);
    assert_eq!(s.count(), 1);
}

/// Whether a signal is still waiting (polled once).
async fn futures_poll_pending(end: &mut crate::proxy::Abort) -> bool {
    tokio::time::timeout(Duration::from_millis(50), end.as_mut())
        .await
        .is_err()
}

/// Unconfirmed sessions: one past its expiry closes at once, one still within it only
/// once the outage has lasted `outage` (paused clock).
#[tokio::test(start_paused = true)]
async fn unconfirmed_streams_close_at_expiry_or_after_the_outage() {
    let s = Arc::new(LiveStreams::default());
    let _a = s.watch("expired", None);
    let _b = s.watch("alive", None);
    let outage = Some(Duration::from_secs(30));
    s.lock().get_mut("expired").unwrap().expires_at = Some(now_unix() - 1);
    s.lock().get_mut("alive").unwrap().expires_at = Some(now_unix() + 3600);
    assert!(s.unconfirmed_too_long("expired", outage));
    assert!(!s.unconfirmed_too_long("alive", outage));
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(s.unconfirmed_too_long("alive", outage));
    assert!(!s.unconfirmed_too_long("alive", None), "0: never");
    assert!(!s.unconfirmed_too_long("gone", outage));
}
