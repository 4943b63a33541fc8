//! loom models of the event state word on the heap backend.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::thread;

use super::{EventView, init, object_len};
use crate::segment::heap::HeapMem;

struct Model {
    _mem: HeapMem,
    view: EventView,
    cell: UnsafeCell<u64>,
}

// SAFETY: the model's memory is only touched through the protocol under test.
unsafe impl Send for Model {}
// SAFETY: as above.
unsafe impl Sync for Model {}

fn model(manual: bool) -> Arc<Model> {
    let mem = HeapMem::new(object_len());
    // SAFETY: fresh, zeroed, 128-aligned, private allocation.
    unsafe { init(mem.ptr(), manual, false) };
    // SAFETY: initialised just above; `mem` lives as long as the view.
    let view = unsafe { EventView::new(mem.ptr(), manual) };
    Arc::new(Model {
        _mem: mem,
        view,
        cell: UnsafeCell::new(0),
    })
}

/// A manual-reset set followed at once by a reset still releases the waiter that was
/// waiting, and what the setter wrote before `set` is visible to it.
#[test]
fn loom_manual_set_then_reset_loses_no_wake() {
    loom::model(|| {
        let m = model(true);
        let start = m.view.load();
        let m2 = m.clone();
        let setter = thread::spawn(move || {
            // SAFETY: written before the set; read only after the waiter passes.
            m2.cell.with_mut(|c| unsafe { *c = 7 });
            m2.view.set();
            m2.view.reset();
        });
        while !m.view.try_pass(start) {
            thread::yield_now();
        }
        // SAFETY: the set's Release orders the write before our pass.
        assert_eq!(m.cell.with(|c| unsafe { *c }), 7);
        setter.join().unwrap();
    });
}

/// One auto-reset set releases exactly one of two waiters, even if the setter stops
/// for ever right after changing the word (before any wake).
#[test]
fn loom_auto_set_releases_exactly_one() {
    loom::model(|| {
        let m = model(false);
        let passed = Arc::new(AtomicU32::new(0));
        let mut waiters = Vec::new();
        for _ in 0..2 {
            let (m, passed) = (m.clone(), passed.clone());
            waiters.push(thread::spawn(move || {
                let start = m.view.load();
                if m.view.try_pass(start) {
                    passed.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        m.view.set();
        for w in waiters {
            w.join().unwrap();
        }
        let late = m.view.try_pass(m.view.load()) as u32;
        assert_eq!(passed.load(Ordering::Relaxed) + late, 1);
    });
}
