//! loom models of the SPSC ring protocol on the heap backend.
//!
//! Payload bytes are stood in for by `loom::cell::UnsafeCell`s indexed like the slots,
//! so loom reports a data race if the seq/head orderings fail to order a producer's
//! write before the consumer's read, or a consumer's read before the next lap's write.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use super::endpoint::{ConsumerCursor, ProducerCursor};
use super::{FLAVOR_TYPED, Geometry, RingView, init, recover};
use crate::segment::heap::HeapMem;

struct Model {
    _mem: HeapMem,
    view: RingView,
    cells: Vec<UnsafeCell<u64>>,
}

// SAFETY: the model's memory is only touched through the ring protocol under test.
unsafe impl Send for Model {}
// SAFETY: as above.
unsafe impl Sync for Model {}

fn model(capacity: usize) -> Arc<Model> {
    let geo = Geometry::new(capacity, 8, 8, FLAVOR_TYPED).expect("valid geometry");
    let mem = HeapMem::new(geo.object_len().expect("small ring"));
    // SAFETY: fresh, zeroed, 128-aligned, private allocation of object_len bytes.
    unsafe { init(mem.ptr(), &geo) };
    // SAFETY: initialised just above; `mem` lives in the same Model as the view.
    let view = unsafe { RingView::new(mem.ptr(), geo) };
    let cells = (0..geo.capacity).map(|_| UnsafeCell::new(0)).collect();
    Arc::new(Model {
        _mem: mem,
        view,
        cells,
    })
}

fn cell(m: &Model, pos: u64) -> &UnsafeCell<u64> {
    &m.cells[(pos % m.cells.len() as u64) as usize]
}

fn produce(m: &Model, p: &mut ProducerCursor, value: u64) {
    while p.free(1) == 0 {
        thread::yield_now();
    }
    // SAFETY: the protocol gives the producer this slot exclusively until commit.
    cell(m, p.tail).with_mut(|c| unsafe { *c = value });
    p.commit(1);
}

fn consume(m: &Model, c: &mut ConsumerCursor) -> u64 {
    while c.available(1) == 0 {
        thread::yield_now();
    }
    // SAFETY: committed and not yet released: the producer does not write it.
    let v = cell(m, c.head).with(|c| unsafe { *c });
    c.release(1);
    v
}

/// Three messages through a two-slot ring: every lap reuses a slot, so both the
/// seq (producer → consumer) and head (consumer → producer) orderings are exercised.
#[test]
fn loom_spsc_in_order_across_laps() {
    loom::model(|| {
        let m = model(2);
        let mp = m.clone();
        let producer = thread::spawn(move || {
            let mut p = ProducerCursor::resume(mp.view);
            for v in 1..=3 {
                produce(&mp, &mut p, v);
            }
        });
        let mut c = ConsumerCursor::resume(m.view);
        for expected in 1..=3 {
            assert_eq!(consume(&m, &mut c), expected);
        }
        producer.join().unwrap();
    });
}

/// A producer that dies after publishing a seq but before recording its tail: the
/// recovery recomputes the committed frontier while the consumer keeps consuming,
/// and a successor producer continues exactly after the last committed message.
#[test]
fn loom_recovery_finds_the_committed_frontier() {
    loom::model(|| {
        let m = model(4);
        let ctl = &m.view.header().ctl;
        // Holder slot 0 holds the producer role.
        ctl.producer.set_holder_for_test(0);
        let mp = m.clone();
        let producer = thread::spawn(move || {
            let mut p = ProducerCursor::resume(mp.view);
            produce(&mp, &mut p, 1);
            // "Dies" mid-commit: seq published, tail never stored.
            // SAFETY: as in `produce`.
            cell(&mp, p.tail).with_mut(|c| unsafe { *c = 2 });
            mp.view.publish(p.tail);
        });
        let mc = m.clone();
        let consumer = thread::spawn(move || {
            let mut c = ConsumerCursor::resume(mc.view);
            (consume(&mc, &mut c), consume(&mc, &mut c))
        });
        producer.join().unwrap();
        recover(&m.view, 0);
        assert!(ctl.producer.load().vacated());
        let successor = ProducerCursor::resume(m.view);
        assert_eq!(
            successor.tail, 2,
            "successor must continue after the last committed message"
        );
        assert_eq!(consumer.join().unwrap(), (1, 2));
    });
}
