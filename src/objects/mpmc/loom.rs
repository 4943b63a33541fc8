//! loom models of the MPMC ring's claim / commit / skip / redeliver protocol on the
//! heap backend.
//!
//! Payloads are stood in for by `loom::cell::UnsafeCell`s indexed like the slots, so
//! loom reports a data race if the slot-state orderings fail to order a producer's
//! write before a consumer's read, or a consumer's read (or a dead claimer's write)
//! before the next lap's write. A handle that "dies" is a thread that stops for ever
//! after its claim, its slot left `Writing` or `Reading`; its death is published the
//! way the liveness probe sees it (the kernel drops the dead process's lock: a
//! happens-before edge), here a Release store of a flag, or the sweeper's `join`.
//!
//! The models run with a holder table of no role counts (`holders = 0`): role counts
//! are handle bookkeeping outside the claim protocol, and loom's atomics are wider
//! than the 4-byte counts the layout reserves for them. Holder slots are still named
//! in the claims (`me`), which is all the protocol uses.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --lib loom` (each model prints
//! how many executions it explored; `LOOM_MAX_PREEMPTIONS` widens the search).

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::AtomicBool;
use loom::thread;

use super::{FLAVOR_TYPED, Geometry, MpmcView, Phase, ReadClaim, SlotState, WriteClaim, init};
use crate::atomics::Ordering;
use crate::segment::heap::HeapMem;

/// The value a dead producer leaves half-written in its claimed slot: never delivered.
const UNCOMMITTED: u64 = u64::MAX;
/// Claim attempts a model thread makes before it gives up, yielding after each
/// failed one. Threads never wait unboundedly: a wait loop lets loom feed it stale
/// values for ever ("exceeded maximum number of branches"). What a thread leaves
/// unsent or unread, the main thread sends and drains after the joins, so every
/// model still checks the whole run of messages.
///
/// The yields matter: loom 0.7's DPOR remembers only the last access to an atomic,
/// so when one thread loads a slot state and another then loads and CASes it, the
/// race is forgotten and the other order never explored (tokio-rs/loom#392, #166;
/// without the yields model (a) never delivered a message while a producer ran). A
/// yield hands over without a preemption, so the other orders are run regardless.
const TRIES: usize = 2;

struct Model {
    _mem: HeapMem,
    view: MpmcView,
    cells: Vec<UnsafeCell<u64>>,
}

// SAFETY: the model's memory is only touched through the ring protocol under test.
unsafe impl Send for Model {}
// SAFETY: as above.
unsafe impl Sync for Model {}

fn model(capacity: usize) -> Arc<Model> {
    let geo = Geometry::new(capacity, 8, 8, FLAVOR_TYPED, 0).expect("valid geometry");
    let mem = HeapMem::new(geo.object_len().expect("small ring"));
    // SAFETY: fresh, zeroed, 128-aligned, private allocation of object_len bytes.
    unsafe { init(mem.ptr(), &geo) };
    // SAFETY: initialised just above; `mem` lives in the same Model as the view.
    let view = unsafe { MpmcView::new(mem.ptr(), geo) };
    let cells = (0..geo.capacity).map(|_| UnsafeCell::new(0)).collect();
    Arc::new(Model {
        _mem: mem,
        view,
        cells,
    })
}

/// Runs `f` under loom with a preemption bound (unless `LOOM_MAX_PREEMPTIONS` sets one).
fn check(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(bound);
    }
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    b.check(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    println!(
        "{} executions explored",
        runs.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// Message `seq` of producer `id`.
fn msg(id: u32, seq: u64) -> u64 {
    (u64::from(id) << 32) | seq
}

fn producer_of(v: u64) -> u32 {
    (v >> 32) as u32
}

fn seq_of(v: u64) -> u64 {
    v & 0xffff_ffff
}

impl Model {
    fn cell(&self, pos: u64) -> &UnsafeCell<u64> {
        &self.cells[(pos % self.cells.len() as u64) as usize]
    }

    /// Up to `TRIES` claims for holder `me`; writes `value` into the claimed position,
    /// uncommitted. `blocked` sees the slot in the way whenever the ring is full.
    fn try_claim(&self, me: u32, value: u64, blocked: &dyn Fn(SlotState)) -> Option<u64> {
        for _ in 0..TRIES {
            match self.view.try_write(me) {
                WriteClaim::Got(pos) => {
                    // SAFETY: the claim gives this producer the slot until it commits.
                    self.cell(pos).with_mut(|c| unsafe { *c = value });
                    return Some(pos);
                }
                WriteClaim::Full { blocker } => {
                    blocked(blocker);
                    thread::yield_now();
                }
            }
        }
        None
    }

    /// Up to `TRIES` claims, then the commit: whether `value` was sent.
    fn try_send(&self, me: u32, value: u64, blocked: &dyn Fn(SlotState)) -> bool {
        let Some(pos) = self.try_claim(me, value, blocked) else {
            return false;
        };
        self.view.commit(pos);
        true
    }

    /// Sends `values` in order, stopping at the first that finds no room within
    /// `TRIES`: how many it sent.
    fn send_some(&self, me: u32, values: &[u64], blocked: &dyn Fn(SlotState)) -> usize {
        values
            .iter()
            .take_while(|&&v| self.try_send(me, v, blocked))
            .count()
    }

    /// One claim attempt for holder `me`: the position and its payload, or the slot
    /// in the way if a claim is in flight there.
    fn try_take(&self, me: u32) -> Result<(u64, u64), Option<SlotState>> {
        match self.view.try_read(me) {
            ReadClaim::Got(pos) => {
                // SAFETY: committed and claimed by us: no producer writes it until we
                // release it.
                let v = self.cell(pos).with(|c| unsafe { *c });
                Ok((pos, v))
            }
            ReadClaim::Empty => Err(None),
            ReadClaim::InFlight(st) => Err(Some(st)),
        }
    }

    /// Up to `TRIES` claims for holder `me`; a message taken is released.
    fn try_recv(&self, me: u32, blocked: &dyn Fn(SlotState)) -> Option<u64> {
        for _ in 0..TRIES {
            match self.try_take(me) {
                Ok((pos, v)) => {
                    self.view.release(pos);
                    return Some(v);
                }
                Err(Some(st)) => blocked(st),
                Err(None) => {}
            }
            thread::yield_now();
        }
        None
    }

    /// Up to `n` messages for holder `me`, in the order received.
    fn recv_some(&self, me: u32, n: usize, blocked: &dyn Fn(SlotState)) -> Vec<u64> {
        (0..n).filter_map(|_| self.try_recv(me, blocked)).collect()
    }

    /// After every model thread has ended (and the sweep ran): what is left, in order.
    /// Single-threaded, so every load sees the last store; a claim still in flight is a
    /// wedged ring.
    fn drain(&self, me: u32) -> Vec<u64> {
        let mut got = Vec::new();
        loop {
            match self.try_take(me) {
                Ok((pos, v)) => {
                    self.view.release(pos);
                    got.push(v);
                }
                Err(None) => return got,
                Err(Some(st)) => panic!("wedged behind {st:?} after {got:x?}"),
            }
        }
    }

    /// After the model threads: sends `rest` of producer `me`'s messages (draining as
    /// it goes, the ring being small) and returns what it drained, the ring ending empty.
    fn finish(&self, me: u32, rest: &[u64], reader: u32) -> Vec<u64> {
        let mut got = self.drain(reader);
        for &v in rest {
            assert!(self.try_send(me, v, &never), "no room in a drained ring");
            got.extend(self.drain(reader));
        }
        got
    }
}

fn never(_: SlotState) {}

/// What a live peer does when a claim of `dead` (holder slot) is in its way and the
/// liveness probe says `dead` is gone: skip a dead writer's position, redeliver a dead
/// reader's message (the handle layer's `repair_if_dead`).
fn repair_if_dead(m: &Model, dead: u32, died: &AtomicBool, st: SlotState) {
    // SYNC POINT: Acquire pairs with the dying thread's Release store of `died`,
    // standing in for the liveness probe (the kernel's release of the dead's lock).
    if st.holder_slot() != Some(dead) || !died.load(Ordering::Acquire) {
        return;
    }
    match st.phase {
        Phase::Writing => {
            m.view.skip(st.pos, st.holder);
        }
        Phase::Reading => {
            m.view.orphan(st.pos, st.holder);
        }
        _ => {}
    }
}

/// Producer `id`'s messages `0..n`.
fn msgs(id: u32, n: u64) -> Vec<u64> {
    (0..n).map(|seq| msg(id, seq)).collect()
}

/// Asserts that `got` holds each producer's messages `0..n` exactly once, in order.
fn assert_each_in_order(got: &[u64], sends: &[(u32, u64)]) {
    for &(id, n) in sends {
        let mine: Vec<u64> = got
            .iter()
            .filter(|&&v| producer_of(v) == id)
            .map(|&v| seq_of(v))
            .collect();
        assert_eq!(
            mine,
            (0..n).collect::<Vec<_>>(),
            "producer {id}: lost, duplicated or reordered in {got:x?}"
        );
    }
    let total: u64 = sends.iter().map(|&(_, n)| n).sum();
    assert_eq!(got.len() as u64, total, "foreign messages in {got:x?}");
}

/// (a) Two producers, one consumer, two slots, three messages (so a slot is reused):
/// every message is delivered exactly once, each producer's in the order it sent them,
/// and the payload written before `commit` is what the consumer reads (a missing
/// Release/Acquire pair is a race on the cell).
#[test]
fn loom_two_producers_one_consumer_exactly_once_in_order() {
    const SENDS: [(u32, u64); 2] = [(0, 2), (1, 1)];
    const READER: u32 = 2;
    check(2, || {
        let m = model(2);
        let producers: Vec<_> = SENDS
            .iter()
            .map(|&(id, n)| {
                let m = m.clone();
                thread::spawn(move || m.send_some(id, &msgs(id, n), &never))
            })
            .collect();
        let mut got = m.recv_some(READER, 3, &never);
        let sent: Vec<usize> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        for (&(id, n), sent) in SENDS.iter().zip(sent) {
            got.extend(m.finish(id, &msgs(id, n)[sent..], READER));
        }
        assert_each_in_order(&got, &SENDS);
    });
}

/// (b) One producer, two consumers, two slots, three messages: each message reaches
/// exactly one consumer, and each consumer sees the producer's messages in order.
#[test]
fn loom_one_producer_two_consumers_exactly_once() {
    const N: u64 = 3;
    check(2, || {
        let m = model(2);
        let consumers: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|me| {
                let m = m.clone();
                thread::spawn(move || m.recv_some(me, 1, &never))
            })
            .collect();
        let all = msgs(0, N);
        let sent = m.send_some(0, &all, &never);
        let mut seen = Vec::new();
        for c in consumers {
            let got = c.join().unwrap();
            assert!(
                got.windows(2).all(|w| w[0] < w[1]),
                "one consumer saw the producer out of order: {got:?}"
            );
            seen.extend(got);
        }
        let late = m.finish(0, &all[sent..], 3);
        assert!(late.windows(2).all(|w| w[0] < w[1]), "{late:?}");
        seen.extend(late);
        seen.sort_unstable();
        assert_eq!(seen, all, "lost or duplicated");
    });
}

/// (c) A producer claims a position and stops for ever (its slot stays `Writing`).
/// A live producer sends two messages behind it on a two-slot ring, so either the
/// consumer is blocked at the dead claim or the live producer is (it needs the dead
/// claim's slot for its second message). The sweep (`recover`, after the death), the
/// consumer and the live producer (`skip`, when the probe says the claimer died) race
/// to repair it: it is skipped exactly once, the consumer goes on past it and gets
/// both later messages in order, and the dead claim's half-written payload is never
/// delivered.
#[test]
fn loom_dead_producer_claim_is_skipped_and_later_messages_delivered() {
    const DEAD: u32 = 0;
    const LIVE: u32 = 1;
    const READER: u32 = 2;
    check(2, || {
        let m = model(2);
        let died = Arc::new(AtomicBool::new(false));
        let dying = {
            let (m, died) = (m.clone(), died.clone());
            thread::spawn(move || {
                let claimed = m.try_claim(DEAD, UNCOMMITTED, &never);
                // SYNC POINT: Release pairs with the Acquire in `repair_if_dead`.
                died.store(true, Ordering::Release);
                claimed
            })
        };
        let live = {
            let (m, died) = (m.clone(), died.clone());
            thread::spawn(move || {
                let blocked = |st| repair_if_dead(&m, DEAD, &died, st);
                m.send_some(LIVE, &msgs(LIVE, 2), &blocked)
            })
        };
        let blocked = |st| repair_if_dead(&m, DEAD, &died, st);
        let mut got = m.recv_some(READER, 2, &blocked);
        // The sweep: once the holder is dead (join: its death happens before), its
        // claims are repaired.
        let claimed = dying.join().unwrap();
        m.view.recover(DEAD);
        let sent = live.join().unwrap();
        got.extend(m.finish(LIVE, &msgs(LIVE, 2)[sent..], READER));
        assert_eq!(got, msgs(LIVE, 2), "in order, nothing uncommitted");
        let skipped = m.view.header().ctl.skipped.load(Ordering::Relaxed);
        assert_eq!(
            skipped,
            u64::from(claimed.is_some()),
            "the dead claim {claimed:?} skipped exactly once"
        );
        // Nothing wedged: the ring keeps going, lap after lap.
        assert_eq!(m.finish(LIVE, &msgs(LIVE, 3), READER), msgs(LIVE, 3));
    });
}

/// (d) A consumer claims a message and stops for ever holding it (`Reading`). The
/// sweep (`recover`), the live consumer and the producer (`orphan`, when the probe
/// says the reader died) race to repair it: the message is redelivered exactly once,
/// every message ends delivered exactly once to a live consumer, the orphan count is
/// back at zero, and the producer's later messages reuse the slot.
#[test]
fn loom_dead_consumer_message_is_redelivered_exactly_once() {
    const WRITER: u32 = 0;
    const DEAD: u32 = 1;
    const READER: u32 = 2;
    const N: u64 = 3;
    check(1, || {
        let m = model(2);
        let died = Arc::new(AtomicBool::new(false));
        let producer = {
            let (m, died) = (m.clone(), died.clone());
            thread::spawn(move || {
                let blocked = |st| repair_if_dead(&m, DEAD, &died, st);
                m.send_some(WRITER, &msgs(WRITER, N), &blocked)
            })
        };
        let dying = {
            let (m, died) = (m.clone(), died.clone());
            thread::spawn(move || {
                // Takes one message if it can, reads it, and dies holding it.
                let held = (0..TRIES).find_map(|_| m.try_take(DEAD).ok());
                // SYNC POINT: as in (c).
                died.store(true, Ordering::Release);
                held.map(|(_, v)| v)
            })
        };
        let blocked = |st| repair_if_dead(&m, DEAD, &died, st);
        let mut got = m.recv_some(READER, N as usize, &blocked);
        let held = dying.join().unwrap();
        m.view.recover(DEAD);
        let sent = producer.join().unwrap();
        got.extend(m.finish(WRITER, &msgs(WRITER, N)[sent..], READER));
        got.sort_unstable();
        assert_eq!(
            got,
            msgs(WRITER, N),
            "every message exactly once to a live consumer"
        );
        if let Some(v) = held {
            assert!(
                got.contains(&v),
                "the dead reader held {v:x}, a real message"
            );
        }
        let ctl = &m.view.header().ctl;
        assert_eq!(
            ctl.redelivered.load(Ordering::Relaxed),
            u64::from(held.is_some()),
            "the dead reader's message {held:?} redelivered exactly once"
        );
        assert_eq!(ctl.orphans.load(Ordering::Relaxed), 0, "no orphan left");
    });
}
