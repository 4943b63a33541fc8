//! loom models of the resource semaphore's protocol on the heap backend.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use super::{FLAVOR_RESOURCE, Params, SemView, init, object_len, recover};
use crate::segment::heap::HeapMem;

struct Model {
    _mem: HeapMem,
    view: SemView,
    /// Stands in for the resource a permit guards.
    cell: UnsafeCell<u64>,
}

// SAFETY: the model's memory is only touched through the protocol under test.
unsafe impl Send for Model {}
// SAFETY: as above.
unsafe impl Sync for Model {}

fn model(max: u32) -> Arc<Model> {
    let mem = HeapMem::new(object_len(4));
    // SAFETY: fresh, zeroed, 128-aligned, private allocation of object_len(4) bytes.
    unsafe { init(mem.ptr(), FLAVOR_RESOURCE, max, max, 4) };
    let params = Params {
        max,
        flavor: FLAVOR_RESOURCE,
        records: 4,
    };
    // SAFETY: initialised just above; `mem` lives in the same Model as the view.
    let view = unsafe { SemView::new(mem.ptr(), params) };
    Arc::new(Model {
        _mem: mem,
        view,
        cell: UnsafeCell::new(0),
    })
}

fn acquire(m: &Model, slot: u32) {
    while !m.view.try_acquire(slot) {
        thread::yield_now();
    }
}

/// `available + Σ held = max` once nothing is pending.
fn conserved(m: &Model) -> bool {
    m.view.settle_pending();
    let held: u32 = (0..4).map(|s| m.view.held(s)).sum();
    m.view.state().avail + held == m.view.params.max
}

/// One permit, two holders: each one's use of the resource happens before the other's
/// (loom reports a data race on the cell otherwise), and every permit comes back.
#[test]
fn loom_one_permit_excludes_and_is_conserved() {
    loom::model(|| {
        let m = model(1);
        let m2 = m.clone();
        let t = thread::spawn(move || {
            acquire(&m2, 1);
            // SAFETY: the permit gives this thread the cell.
            m2.cell.with_mut(|c| unsafe { *c += 1 });
            assert!(m2.view.release(1));
        });
        acquire(&m, 0);
        // SAFETY: as above.
        m.cell.with_mut(|c| unsafe { *c += 1 });
        assert!(m.view.release(0));
        t.join().unwrap();
        assert!(conserved(&m));
        // SAFETY: both threads are done.
        assert_eq!(m.cell.with(|c| unsafe { *c }), 2);
    });
}

/// A holder that stops for ever right after step 1 (the count is taken, its record not
/// yet written): another holder's operations settle the intent for it and go on, and
/// the sweep's recovery then returns the stopped holder's permit.
#[test]
fn loom_a_holder_stopped_after_its_intent_loses_no_permit() {
    loom::model(|| {
        let m = model(2);
        let m2 = m.clone();
        let stopped = thread::spawn(move || m2.view.acquire_step1_for_test(2));
        let m3 = m.clone();
        let other = thread::spawn(move || {
            acquire(&m3, 1);
            assert!(m3.view.release(1));
        });
        let took = stopped.join().unwrap();
        other.join().unwrap();
        assert!(conserved(&m), "a permit was lost or made");
        assert_eq!(m.view.held(2), took as u32);
        assert_eq!(recover(&m.view, 2), took as u32);
        assert_eq!(m.view.state().avail, 2);
    });
}

/// The sweep returns a dead holder's two permits in one intent while a live holder
/// tries to take one and gives it back: nothing is lost or made, and all three permits
/// can be taken afterwards.
#[test]
fn loom_bulk_return_races_live_holders() {
    // Bounded: each side's path is ~8 atomic steps; three preemptions cover every
    // interleaving of the intent, settle and clear steps that matter here.
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        let m = model(3);
        acquire(&m, 2);
        acquire(&m, 2);
        let m2 = m.clone();
        let live = thread::spawn(move || {
            if m2.view.try_acquire(1) {
                assert!(m2.view.release(1));
            }
        });
        let m3 = m.clone();
        let sweep = thread::spawn(move || recover(&m3.view, 2));
        assert_eq!(sweep.join().unwrap(), 2);
        live.join().unwrap();
        assert!(conserved(&m), "a permit was lost or made");
        assert_eq!(m.view.held(2), 0);
        for s in 0..3 {
            assert!(m.view.try_acquire(s % 2));
        }
    });
}
