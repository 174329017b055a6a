//! The places' rules, without a runtime's timing: who may take a place, who gets one given
//! back, and that requests no longer waiting neither keep a place nor pile up.

use super::*;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

const A: Holder = Holder::Session(1);
const B: Holder = Holder::Session(2);
const C: Holder = Holder::Session(3);

/// Polls `f` once: its output if it is ready.
fn now<T>(f: impl Future<Output = T>) -> Option<T> {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(t) => Some(t),
        Poll::Pending => None,
    }
}

fn held(p: &Places, h: Holder) -> usize {
    p.lock()
        .held
        .iter()
        .find(|(x, _)| *x == h)
        .map_or(0, |(_, n)| *n)
}

#[test]
fn a_client_holds_at_most_its_share_and_the_rest_stays_for_others() {
    let p = Places::new(4, 75);
    let a: Vec<_> = (0..3).map(|_| p.try_take(A).unwrap()).collect();
    assert!(p.is_tight(), "A holds its share");
    assert!(
        p.try_take(A).is_none(),
        "A's fourth waits, a place free or not"
    );
    let b = p.try_take(B).expect("the place left is B's to take");
    assert!(p.try_take(B).is_none() && p.lock().free == 0);
    drop(b);
    drop(a);
    assert_eq!((held(&p, A), p.lock().free), (0, 4));
    assert!(!p.is_tight());
    // Everything to one client still leaves it its share.
    let one = Places::new(64, 75);
    let taken: Vec<_> = std::iter::from_fn(|| one.try_take(A)).collect();
    assert_eq!(taken.len(), 48);
    // The share is never below one place, nor above every place.
    assert_eq!(Places::new(1, 10).share, 1);
    assert_eq!(Places::new(8, 100).share, 8);
}

#[tokio::test]
async fn a_place_given_back_goes_to_the_next_client_in_turn() {
    let p = Places::new(2, 100);
    let first = p.try_take(A).unwrap();
    let second = p.try_take(A).unwrap();
    // A queues three more, then B one, then C one: B's and C's are not behind A's three.
    let mut a: Vec<_> = (0..3).map(|_| Box::pin(p.take(A))).collect();
    let mut b = Box::pin(p.take(B));
    let mut c = Box::pin(p.take(C));
    for f in &mut a {
        assert!(now(f.as_mut()).is_none());
    }
    assert!(now(b.as_mut()).is_none() && now(c.as_mut()).is_none());
    drop(first);
    let a1 = now(a[0].as_mut())
        .expect("A's turn first: it waited first")
        .unwrap();
    drop(second);
    assert!(now(a[1].as_mut()).is_none(), "not A again");
    let b1 = now(b.as_mut()).expect("then B's").unwrap();
    drop(a1);
    let c1 = now(c.as_mut()).expect("then C's").unwrap();
    drop(b1);
    assert!(now(a[1].as_mut()).unwrap().is_ok(), "then A's again");
    drop(c1);
    assert!(now(a[2].as_mut()).unwrap().is_ok());
}

#[tokio::test]
async fn a_client_at_its_share_waits_until_one_of_its_own_places_ends() {
    let p = Places::new(4, 50);
    let a: Vec<_> = (0..2).map(|_| p.try_take(A).unwrap()).collect();
    let b = p.try_take(B).unwrap();
    let mut more = Box::pin(p.take(A));
    assert!(
        now(more.as_mut()).is_none(),
        "at its share, with a place free"
    );
    drop(b);
    assert!(now(more.as_mut()).is_none(), "B's place is not A's");
    assert_eq!(p.lock().free, 2);
    let mut a = a;
    drop(a.pop());
    let _more = now(more.as_mut()).expect("its own place is").unwrap();
    assert_eq!((held(&p, A), p.lock().free), (2, 2));
}

#[tokio::test]
async fn a_request_no_longer_waiting_neither_keeps_a_place_nor_piles_up() {
    let p = Places::new(1, 100);
    let holding = p.try_take(A).unwrap();
    let mut gone = Box::pin(p.take(B));
    let mut waits = Box::pin(p.take(C));
    assert!(now(gone.as_mut()).is_none() && now(waits.as_mut()).is_none());
    drop(gone);
    drop(holding);
    let _c = now(waits.as_mut())
        .expect("the place passed over B's abandoned wait")
        .unwrap();
    assert_eq!(held(&p, B), 0);
    // Waits abandoned by the thousand are cleared out as they come.
    for _ in 0..10_000 {
        let mut f = Box::pin(p.take(B));
        assert!(now(f.as_mut()).is_none());
    }
    let s = p.lock();
    assert!(s.queued <= 2 * FIRST_SWEEP, "{} entries kept", s.queued);
}

#[tokio::test]
async fn the_waiting_tables_shrink_once_nobody_waits() {
    let p = Places::new(1, 100);
    let holding = p.try_take(Holder::Session(0)).unwrap();
    let mut waits: Vec<_> = (1..=1000)
        .map(|i| Box::pin(p.take(Holder::Session(i))))
        .collect();
    for w in &mut waits {
        assert!(now(w.as_mut()).is_none());
    }
    assert!(p.lock().waiting.capacity() >= 1000);
    drop(waits);
    drop(holding);
    let s = p.lock();
    assert_eq!((s.free, s.waiting.len()), (1, 0));
    assert!(
        s.waiting.capacity() <= 2 * FIRST_SWEEP,
        "{}",
        s.waiting.capacity()
    );
    assert!(
        s.turns.capacity() <= 2 * FIRST_SWEEP,
        "{}",
        s.turns.capacity()
    );
}

/// A body held up by its client is cut to free its place only for a request that would take
/// that place: none while nobody waits, nor for a client at its share (unless the place is its
/// own, free places or not), nor for a request no longer waiting.
#[tokio::test]
async fn a_place_is_wanted_only_by_a_request_that_could_take_it() {
    let p = Places::new(4, 50);
    let _a: Vec<_> = (0..2).map(|_| p.try_take(A).unwrap()).collect();
    let b: Vec<_> = (0..2).map(|_| p.try_take(B).unwrap()).collect();
    assert!(
        !p.wanted().from(A) && !p.wanted().from(B),
        "every place taken, nobody waiting"
    );
    let mut more_a = Box::pin(p.take(A));
    assert!(now(more_a.as_mut()).is_none());
    assert!(p.wanted().from(A), "a place of A's own would go to A");
    assert!(
        !p.wanted().from(B),
        "B's would stay free: A is at its share"
    );
    let mut c = Box::pin(p.take(C));
    assert!(now(c.as_mut()).is_none());
    assert!(p.wanted().from(B), "C, under its share, would take B's");
    drop(c);
    assert!(!p.wanted().from(B), "C no longer waits");
    let mut b = b;
    drop(b.pop());
    assert!(
        p.wanted().from(A),
        "a place free, A at its share still waits for one of its own"
    );
    assert!(!p.wanted().from(B), "a place is free for anyone else");
}
