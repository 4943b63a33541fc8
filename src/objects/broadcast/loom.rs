//! loom models of the broadcast ring's protocols on the heap backend.
//!
//! Lossless payloads are stood in for by `loom::cell::UnsafeCell`s indexed like the
//! slots, so loom reports a data race if the publisher could overwrite a slot that a
//! subscriber (or a joiner) is still reading. Lossy payloads are two relaxed atomic
//! words per slot (what the seqlock reads, racing by design): a read that the seq
//! re-check accepts must see both words of one message.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_bcast`

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use super::{
    BcastView, FLAVOR_TYPED, Found, Geometry, JoinAt, POLICY_LOSSLESS, POLICY_LOSSY, PubCursor,
    SubCursor, init,
};
use crate::atomics::{AtomicU64, Ordering};
use crate::segment::heap::HeapMem;

struct Model {
    _mem: HeapMem,
    view: BcastView,
    cells: Vec<UnsafeCell<u64>>,
    words: Vec<[AtomicU64; 2]>,
}

// SAFETY: the model's memory is only touched through the protocol under test.
unsafe impl Send for Model {}
// SAFETY: as above.
unsafe impl Sync for Model {}

fn model(capacity: usize, policy: u32) -> Arc<Model> {
    let geo = Geometry::new(capacity, 8, 8, FLAVOR_TYPED, policy, 2).expect("valid geometry");
    let mem = HeapMem::new(geo.object_len().expect("small ring"));
    // SAFETY: fresh, zeroed, 128-aligned, private allocation of object_len bytes.
    unsafe { init(mem.ptr(), &geo) };
    // SAFETY: initialised just above; `mem` lives in the same Model as the view.
    let view = unsafe { BcastView::new(mem.ptr(), geo) };
    let cap = geo.capacity as usize;
    Arc::new(Model {
        _mem: mem,
        view,
        cells: (0..cap).map(|_| UnsafeCell::new(0)).collect(),
        words: (0..cap)
            .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
            .collect(),
    })
}

fn idx(m: &Model, pos: u64) -> usize {
    (pos % m.cells.len() as u64) as usize
}

fn subscribe(m: &Model, holder: u32, at: JoinAt) -> SubCursor {
    let (line, owner) = m.view.claim_cursor(holder).expect("a free line");
    SubCursor::join(m.view, line, owner, at)
}

/// Lossless: writes message `pos + 1` at the publisher's tail, waiting for room.
fn publish(m: &Model, p: &mut PubCursor) {
    while p.room(1) == 0 {
        thread::yield_now();
    }
    let v = p.tail + 1;
    // SAFETY: room says no claimed cursor is at or below this slot's previous lap.
    m.cells[idx(m, p.tail)].with_mut(|c| unsafe { *c = v });
    p.commit(1);
}

/// Lossless: reads the message at the subscriber's position, waiting for it.
fn read(m: &Model, s: &mut SubCursor) -> u64 {
    while !m.view.is_committed(s.pos) {
        thread::yield_now();
    }
    // SAFETY: committed, and our cursor keeps the publisher off it until released.
    let v = m.cells[idx(m, s.pos)].with(|c| unsafe { *c });
    s.release(1);
    v
}

fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.max_branches = 20_000;
    b
}

/// Two subscribers, a one-slot ring, two messages: each subscriber reads each message
/// exactly once and in order, and the publisher never overwrites a slot still read.
#[test]
fn loom_bcast_lossless_every_subscriber_sees_every_message() {
    builder().check(|| {
        let m = model(1, POLICY_LOSSLESS);
        let mut a = subscribe(&m, 0, JoinAt::Newest);
        let mut b = subscribe(&m, 1, JoinAt::Newest);
        let mp = m.clone();
        let publisher = thread::spawn(move || {
            let mut p = PubCursor::resume(mp.view);
            publish(&mp, &mut p);
            publish(&mp, &mut p);
        });
        assert_eq!((read(&m, &mut a), read(&m, &mut b)), (1, 1));
        assert_eq!((read(&m, &mut b), read(&m, &mut a)), (2, 2));
        publisher.join().unwrap();
    });
}

/// A subscriber joining (at the oldest message) while the publisher, with no other
/// subscriber, rescans at every message: the Dekker pair of SeqCst fences means the
/// publisher never overwrites what the joiner reads (loom would report the race on the
/// cell), and the joiner reads in order to the end.
#[test]
fn loom_bcast_lossless_join_meets_rescan() {
    builder().check(|| {
        let m = model(1, POLICY_LOSSLESS);
        let mp = m.clone();
        let publisher = thread::spawn(move || {
            let mut p = PubCursor::resume(mp.view);
            publish(&mp, &mut p);
            publish(&mp, &mut p);
        });
        let mut j = subscribe(&m, 1, JoinAt::Oldest);
        let first = j.pos;
        let mut got = Vec::new();
        while j.pos < 2 {
            got.push(read(&m, &mut j));
        }
        let want: Vec<u64> = (first + 1..=2).collect();
        assert_eq!(got, want, "joined at {first}");
        publisher.join().unwrap();
    });
}

/// A subscriber stopped for ever holds a lossless publisher back after one ring (no
/// overwrite); once the sweep recovers its dead holder, the publisher goes on.
#[test]
fn loom_bcast_lossless_stopped_subscriber_holds_back_dead_one_does_not() {
    builder().check(|| {
        let m = model(2, POLICY_LOSSLESS);
        let _stopped = subscribe(&m, 2, JoinAt::Newest);
        let mut live = subscribe(&m, 0, JoinAt::Newest);
        let mr = m.clone();
        let reader = thread::spawn(move || (read(&mr, &mut live), read(&mr, &mut live)));
        let mut p = PubCursor::resume(m.view);
        publish(&m, &mut p);
        publish(&m, &mut p);
        assert_eq!(p.room(1), 0, "the stopped subscriber is a ring behind");
        assert_eq!(reader.join().unwrap(), (1, 2));
        assert_eq!(p.room(1), 0, "still: it is alive, only stopped");
        // Its process dies: the sweep vacates its cursor.
        assert_eq!(m.view.recover(2), (false, 1));
        assert_eq!(p.room(1), 1);
    });
}

/// Lossy, writes message `pos + 1` into both words of the slot (a seqlock write).
fn publish_lossy(m: &Model, p: &mut PubCursor) {
    assert_eq!(p.room(1), 1, "a lossy publisher never waits");
    let v = p.tail + 1;
    p.begin(1);
    let w = &m.words[idx(m, p.tail)];
    w[0].store(v, Ordering::Relaxed);
    w[1].store(v, Ordering::Relaxed);
    p.commit(1);
}

/// Lossy: reads until the subscriber's position reaches `end`. Returns the messages
/// accepted and the count reported lagged.
fn drain_lossy(m: &Model, s: &mut SubCursor, end: u64) -> (Vec<u64>, u64) {
    let (mut got, mut lagged) = (Vec::new(), 0);
    while s.pos < end {
        match m.view.find(s.pos) {
            Found::Ready => {
                let w = &m.words[idx(m, s.pos)];
                let (a, b) = (w[0].load(Ordering::Relaxed), w[1].load(Ordering::Relaxed));
                if m.view.still_intact(s.pos, 1) {
                    assert_eq!(
                        (a, b),
                        (s.pos + 1, s.pos + 1),
                        "a torn or stale read passed"
                    );
                    got.push(a);
                    s.release(1);
                } else {
                    let seen = s.pos + m.view.geo.capacity;
                    lagged += s.overrun(seen, 1);
                }
            }
            Found::Overrun(q) => lagged += s.overrun(q, 1),
            Found::Empty => thread::yield_now(),
        }
    }
    (got, lagged)
}

/// A one-slot lossy ring, three messages, a reader racing the overwrites: whatever it
/// accepts is whole and in order, and accepted + lagged accounts for every message.
#[test]
fn loom_bcast_lossy_overwrite_during_read_is_detected() {
    builder().check(|| {
        let m = model(1, POLICY_LOSSY);
        let mut s = subscribe(&m, 0, JoinAt::Newest);
        let mp = m.clone();
        let publisher = thread::spawn(move || {
            let mut p = PubCursor::resume(mp.view);
            for _ in 0..3 {
                publish_lossy(&mp, &mut p);
            }
        });
        let (got, lagged) = drain_lossy(&m, &mut s, 3);
        publisher.join().unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
        assert_eq!(got.len() as u64 + lagged, 3, "got {got:?}, lagged {lagged}");
    });
}

/// A lossy publisher that dies mid-write (mark stored, payload half written) and its
/// successor: the recovered tail is the dead one's position, the reader never accepts
/// the half-written message, and the successor's message at that position is read.
#[test]
fn loom_bcast_lossy_successor_after_death_mid_write() {
    builder().check(|| {
        let m = model(2, POLICY_LOSSY);
        m.view.header().ctl.publisher.set_holder_for_test(0);
        let mut s = subscribe(&m, 1, JoinAt::Newest);
        let mp = m.clone();
        let dead = thread::spawn(move || {
            let mut p = PubCursor::resume(mp.view);
            publish_lossy(&mp, &mut p);
            // Dies writing position 1: mark and one word only.
            p.begin(1);
            mp.words[idx(&mp, 1)][0].store(99, Ordering::Relaxed);
        });
        let mr = m.clone();
        let reader = thread::spawn(move || drain_lossy(&mr, &mut s, 2));
        dead.join().unwrap();
        assert_eq!(m.view.recover(0), (true, 0));
        let mut successor = PubCursor::resume(m.view);
        assert_eq!(
            successor.tail, 1,
            "continues at the message that never committed"
        );
        publish_lossy(&m, &mut successor);
        let (got, lagged) = reader.join().unwrap();
        assert_eq!((got, lagged), (vec![1, 2], 0));
    });
}
