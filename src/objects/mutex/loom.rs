//! loom models of the mutex lock word on the heap backend.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use super::{MutexView, Take, init, object_len, recover};
use crate::segment::heap::HeapMem;

struct Model {
    _mem: HeapMem,
    view: MutexView,
    /// Stands in for the protected T.
    cell: UnsafeCell<u64>,
}

// SAFETY: the model's memory is only touched through the protocol under test.
unsafe impl Send for Model {}
// SAFETY: as above.
unsafe impl Sync for Model {}

fn model() -> Arc<Model> {
    let mem = HeapMem::new(object_len(8).unwrap());
    // SAFETY: fresh, zeroed, 128-aligned, private allocation.
    unsafe { init(mem.ptr(), 8, 8) };
    // SAFETY: initialised just above; `mem` lives as long as the view.
    let view = unsafe { MutexView::new(mem.ptr()) };
    Arc::new(Model {
        _mem: mem,
        view,
        cell: UnsafeCell::new(0),
    })
}

fn lock(m: &Model, slot: u32) -> bool {
    if m.view.try_lock_fast(slot) {
        return false;
    }
    loop {
        if let Take::Locked { abandoned } = m.view.try_lock(slot, false) {
            return abandoned;
        }
        thread::yield_now();
    }
}

/// Two lockers: each critical section happens before the other (loom reports a data
/// race on the cell if unlock's Release or lock's Acquire were weaker).
#[test]
fn loom_mutex_excludes() {
    loom::model(|| {
        let m = model();
        let m2 = m.clone();
        let t = thread::spawn(move || {
            assert!(!lock(&m2, 1));
            // SAFETY: we hold the lock.
            m2.cell.with_mut(|c| unsafe { *c += 1 });
            m2.view.unlock(0);
        });
        assert!(!lock(&m, 0));
        // SAFETY: we hold the lock.
        m.cell.with_mut(|c| unsafe { *c += 1 });
        m.view.unlock(0);
        t.join().unwrap();
        // SAFETY: both threads are done.
        assert_eq!(m.cell.with(|c| unsafe { *c }), 2);
    });
}

/// An owner that stops for ever holding the lock is declared dead: a waiter's take-over
/// and the sweep's recovery race, and either way the waiter gets the lock exactly once,
/// told it was abandoned.
#[test]
fn loom_a_dead_owner_passes_the_lock_on_abandoned() {
    loom::model(|| {
        let m = model();
        assert!(!lock(&m, 0)); // holder 0 locks, then stops for ever
        let m2 = m.clone();
        let waiter = thread::spawn(move || {
            let abandoned = loop {
                match m2.view.try_lock(1, false) {
                    Take::Locked { abandoned } => break abandoned,
                    // The liveness probe says holder 0 is dead.
                    Take::Held(w) if w & super::OWNER_MASK == 1 => {
                        if m2.view.take_over(w, 1, false) {
                            break true;
                        }
                    }
                    Take::Held(_) => thread::yield_now(),
                }
            };
            // SAFETY: we hold the lock.
            m2.cell.with_mut(|c| unsafe { *c += 1 });
            m2.view.unlock(super::ABANDONED);
            abandoned
        });
        recover(&m.view, 0);
        assert!(waiter.join().unwrap(), "the taker was not told");
        let st = m.view.state();
        assert!(st.owner == 0 && st.abandoned);
    });
}
