//! The semaphore's in-segment layout and lock-free algorithm.
//!
//! # Layout (object area of a `semaphore` segment)
//!
//! ```text
//! SemHeader   magic, max, flavour, record count (immutable)
//!   state     the count word (below), on a line of its own
//!   wake      `seq` (the futex word waiters sleep on) and `sleepers`
//! records     one AtomicU64 per holder-table slot: [held: u32][seq: u32]
//! ```
//!
//! # The count word
//!
//! ```text
//! bits  0..32  available permits
//! bits 32..45  pending holder: holder slot + 1 whose record an operation must still
//!              settle, or 0 (none)
//! bit  45      pending op: 0 acquire (record +1), 1 release (record -1)
//! bits 46..63  pending seq: the low 17 bits of that record's seq when the op began
//! bit  63      the pending release returns *all* the record held (the sweep's bulk
//!              return for a dead holder: record set to 0, in one intent)
//! ```
//!
//! # Protocol (resource flavour)
//!
//! Where one atomic cannot cover both the count and the holder's record, the count word
//! carries the intent: one CAS takes (or returns) a permit *and* names the record that
//! must follow. Whoever sees a pending intent settles it before doing anything else —
//! the operator itself, the next operator, or the sweep — with one CAS on the record
//! (applied only while its seq still matches, so exactly once), then one CAS clearing
//! the intent. A holder killed after any step therefore leaves a state that the next
//! operator completes; the sweep then returns what the dead holder's record shows.
//!
//! | step | what                                   | kill here leaves                  |
//! |------|----------------------------------------|-----------------------------------|
//! | 1    | CAS count: avail ∓ 1, intent (slot, op) | intent; next operator applies it |
//! | 2    | CAS record: held ± 1, seq + 1          | intent whose record moved on      |
//! | 3    | CAS count: clear intent                | nothing                           |
//!
//! Invariant, whenever no intent is pending: `available + Σ held = max`.
//!
//! The signal flavour uses the count word alone (no intent, no records): one CAS per
//! wait or post.
//!
//! | word   | writer            | reader          | pairs with                          |
//! |--------|-------------------|-----------------|-------------------------------------|
//! | state  | every op (CAS)    | every op        | Release of a post/release → Acquire of a wait/acquire |
//! | record | intent settlers   | settlers, sweep | AcqRel CAS chain on the record      |
//! | sleepers / seq | waiters / posters | posters / waiters | SeqCst Dekker pair (see `must_wake`) |

#[cfg(all(test, loom))]
mod loom;

use crossbeam_utils::CachePadded;

use crate::atomics::{AtomicU32, AtomicU64, Ordering};

/// `b"TALLYSEM"`.
pub(crate) const SEM_MAGIC: u64 = u64::from_le_bytes(*b"TALLYSEM");
/// Permits have no owner: post and wait.
pub(crate) const FLAVOR_SIGNAL: u32 = 1;
/// Permits are recorded against their holder and returned when it dies.
pub(crate) const FLAVOR_RESOURCE: u32 = 2;

const AVAIL_MASK: u64 = 0xffff_ffff;
const SLOT_SHIFT: u32 = 32;
const SLOT_MASK: u64 = (1 << 13) - 1;
const OP_BIT: u64 = 1 << 45;
const SEQ_SHIFT: u32 = 46;
/// The pending seq keeps the low 17 bits of a record's seq. (No ABA: while an intent is
/// pending, only its settlement can change the record it names.)
const SEQ_MASK: u32 = (1 << 17) - 1;
const ALL_BIT: u64 = 1 << 63;

/// Steps of the resource protocol, for the test hook (see `set_step_hook`).
pub(crate) mod step {
    /// After the CAS that took a permit and recorded the intent.
    pub const ACQUIRE_INTENT: u32 = 1;
    /// After the holder's record was settled.
    pub const ACQUIRE_RECORDED: u32 = 2;
    /// After the intent was cleared.
    pub const ACQUIRE_DONE: u32 = 3;
    /// After the CAS that returned a permit and recorded the intent.
    pub const RELEASE_INTENT: u32 = 11;
    /// After the holder's record was settled.
    pub const RELEASE_RECORDED: u32 = 12;
    /// After the intent was cleared.
    pub const RELEASE_DONE: u32 = 13;
    /// An event's set changed its word and has not woken anyone yet.
    #[cfg_attr(loom, allow(dead_code))]
    pub const EVENT_SET: u32 = 21;
}

#[cfg(not(loom))]
static STEP_HOOK: std::sync::OnceLock<fn(u32)> = std::sync::OnceLock::new();

/// Test hook: called with each step of the resource protocol (see [`step`]) by the
/// operator whose operation it is.
#[cfg(not(loom))]
pub(crate) fn set_step_hook(hook: fn(u32)) {
    let _ = STEP_HOOK.set(hook);
}

/// Calls the test hook, if one is set, with `step`.
#[inline]
pub(crate) fn step_hook(_step: u32) {
    #[cfg(not(loom))]
    if let Some(h) = STEP_HOOK.get() {
        h(_step);
    }
}

/// Futex word and sleeper count, on their own line.
#[repr(C)]
pub(crate) struct WakeLine {
    /// Bumped by a poster that found sleepers: the word waiters sleep on.
    pub seq: AtomicU32,
    /// Waiters that may be asleep.
    pub sleepers: AtomicU32,
}

/// The semaphore header at the start of the object area.
#[repr(C)]
pub(crate) struct SemHeader {
    pub magic: u64,
    pub max: u32,
    pub flavor: u32,
    /// Holder records after the header (the holder table's capacity).
    pub records: u32,
    pub _pad: u32,
    pub state: CachePadded<AtomicU64>,
    pub wake: CachePadded<WakeLine>,
}

/// Largest holder record count (the holder table's bound, 4096, fits in 13 bits).
pub(crate) const MAX_RECORDS: u32 = 4096;

/// Object-area bytes of a semaphore with `records` holder records.
pub(crate) fn object_len(records: u32) -> usize {
    records_offset() + records as usize * 8
}

fn records_offset() -> usize {
    std::mem::size_of::<SemHeader>().next_multiple_of(8)
}

/// A decoded count word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct State {
    pub avail: u32,
    /// Holder slot + 1 of a pending intent, or 0.
    pub pending: u32,
    /// The pending op is a release.
    pub release: bool,
    /// The pending release returns everything the record holds (a dead holder's).
    pub all: bool,
    pub seq: u32,
}

impl State {
    pub(crate) fn decode(w: u64) -> Self {
        State {
            avail: (w & AVAIL_MASK) as u32,
            pending: ((w >> SLOT_SHIFT) & SLOT_MASK) as u32,
            release: w & OP_BIT != 0,
            all: w & ALL_BIT != 0,
            seq: (w >> SEQ_SHIFT) as u32 & SEQ_MASK,
        }
    }

    fn encode(self) -> u64 {
        self.avail as u64
            | ((self.pending as u64 & SLOT_MASK) << SLOT_SHIFT)
            | if self.release { OP_BIT } else { 0 }
            | if self.all { ALL_BIT } else { 0 }
            | (((self.seq & SEQ_MASK) as u64) << SEQ_SHIFT)
    }

    fn settled(avail: u32) -> u64 {
        avail as u64
    }
}

fn rec_held(r: u64) -> u32 {
    r as u32
}

fn rec_seq(r: u64) -> u32 {
    (r >> 32) as u32
}

fn rec(held: u32, seq: u32) -> u64 {
    held as u64 | ((seq as u64) << 32)
}

/// Writes a fresh header and zeroed records at `base`.
///
/// # Safety
/// `base` must be valid for writes of `object_len(records)` bytes, aligned to 128, and
/// not yet shared with anyone.
pub(crate) unsafe fn init(base: *mut u8, flavor: u32, initial: u32, max: u32, records: u32) {
    let hdr = SemHeader {
        magic: SEM_MAGIC,
        max,
        flavor,
        records,
        _pad: 0,
        state: CachePadded::new(AtomicU64::new(State::settled(initial))),
        wake: CachePadded::new(WakeLine {
            seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
        }),
    };
    // SAFETY: the caller guarantees room, alignment and exclusivity.
    unsafe { (base as *mut SemHeader).write(hdr) };
    for i in 0..records as usize {
        // SAFETY: record i lies inside the area (i < records) and is 8-aligned.
        unsafe { (base.add(records_offset() + i * 8) as *mut AtomicU64).write(AtomicU64::new(0)) };
    }
}

/// The validated immutable parameters of a semaphore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Params {
    pub max: u32,
    pub flavor: u32,
    pub records: u32,
}

/// Reads and validates a semaphore header in an object area of `len` bytes.
///
/// # Safety
/// `base` must be valid for reads of `len` bytes and aligned to 128.
#[cfg(not(loom))]
pub(crate) unsafe fn read_params(base: *const u8, len: usize) -> Result<Params, String> {
    if len < records_offset() {
        return Err(format!(
            "object area of {len} bytes holds no semaphore header"
        ));
    }
    // SAFETY: the header fits (checked above); its immutable fields are plain data,
    // written before the segment was published.
    let h = unsafe { &*(base as *const SemHeader) };
    if h.magic != SEM_MAGIC {
        return Err(format!("bad semaphore magic {:#x}", h.magic));
    }
    if h.flavor != FLAVOR_SIGNAL && h.flavor != FLAVOR_RESOURCE {
        return Err(format!("unknown semaphore flavour {}", h.flavor));
    }
    if h.max == 0 {
        return Err("maximum count 0".into());
    }
    if h.records > MAX_RECORDS || object_len(h.records) > len {
        return Err(format!(
            "{} holder records do not fit an object area of {len} bytes",
            h.records
        ));
    }
    Ok(Params {
        max: h.max,
        flavor: h.flavor,
        records: h.records,
    })
}

/// A semaphore in mapped memory, with validated parameters.
#[derive(Clone, Copy)]
pub(crate) struct SemView {
    base: *const u8,
    pub params: Params,
}

// SAFETY: a view is a pointer into shared memory whose contents are atomics; the
// handle that owns it keeps the mapping alive.
unsafe impl Send for SemView {}
// SAFETY: as above.
unsafe impl Sync for SemView {}

impl SemView {
    /// # Safety
    /// `base` must point to an initialised semaphore whose parameters are `params` and
    /// stay mapped while the view is used.
    pub(crate) unsafe fn new(base: *const u8, params: Params) -> Self {
        SemView { base, params }
    }

    pub(crate) fn header(&self) -> &SemHeader {
        // SAFETY: validated at construction; the header is atomics and plain data.
        unsafe { &*(self.base as *const SemHeader) }
    }

    /// Holder slot `slot`'s record, if the semaphore has one for it.
    fn record(&self, slot: u32) -> Option<&AtomicU64> {
        (slot < self.params.records).then(|| {
            // SAFETY: slot < records, validated to fit the area; 8-aligned.
            unsafe { &*(self.base.add(records_offset() + slot as usize * 8) as *const AtomicU64) }
        })
    }

    /// The count word, decoded.
    pub(crate) fn state(&self) -> State {
        // SYNC POINT: Acquire pairs with the Release (SeqCst) CAS of a post or release.
        State::decode(self.header().state.load(Ordering::Acquire))
    }

    /// Permits holder slot `slot` holds, as its record says.
    pub(crate) fn held(&self, slot: u32) -> u32 {
        self.record(slot)
            .map_or(0, |r| rec_held(r.load(Ordering::Acquire)))
    }

    /// Settles the pending intent of count word `w` (any settler may call this, any
    /// number of times): applies it to its record once, then clears it.
    fn settle(&self, w: u64) {
        let st = State::decode(w);
        if st.pending == 0 {
            return;
        }
        if let Some(r) = self.record(st.pending - 1) {
            // SYNC POINT: Acquire pairs with the AcqRel CAS of the previous settler.
            let cur = r.load(Ordering::Acquire);
            if rec_seq(cur) & SEQ_MASK == st.seq {
                let held = if st.release && st.all {
                    0
                } else if st.release {
                    rec_held(cur).saturating_sub(1)
                } else {
                    rec_held(cur).saturating_add(1)
                };
                // Fails only if another settler applied it first: applied exactly once.
                let _ = r.compare_exchange(
                    cur,
                    rec(held, rec_seq(cur).wrapping_add(1)),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
        }
        // Out-of-range slot (a corrupt word): nothing to apply; the intent is cleared.
        step_hook(if st.release {
            step::RELEASE_RECORDED
        } else {
            step::ACQUIRE_RECORDED
        });
        // SYNC POINT: AcqRel pairs with every other CAS of the count word. Fails only if
        // another settler cleared it first.
        let _ = self.header().state.compare_exchange(
            w,
            State::settled(st.avail),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        step_hook(if st.release {
            step::RELEASE_DONE
        } else {
            step::ACQUIRE_DONE
        });
    }

    /// Takes one permit if one is available (signal flavour: no record).
    pub(crate) fn try_take(&self) -> bool {
        let word = &self.header().state;
        let mut w = word.load(Ordering::Relaxed);
        loop {
            let st = State::decode(w);
            if st.pending != 0 {
                self.settle(w);
                w = word.load(Ordering::Relaxed);
                continue;
            }
            if st.avail == 0 {
                return false;
            }
            // SYNC POINT: Acquire pairs with the Release CAS of the post whose permit
            // we take: what the poster wrote before posting is visible to us.
            match word.compare_exchange_weak(
                w,
                State::settled(st.avail - 1),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
    }

    /// Adds `n` permits (signal flavour). `Err(available)` if that would exceed the
    /// maximum; nothing changes then.
    pub(crate) fn post(&self, n: u32) -> Result<u32, u32> {
        let word = &self.header().state;
        let mut w = word.load(Ordering::Relaxed);
        loop {
            let st = State::decode(w);
            if st.pending != 0 {
                self.settle(w);
                w = word.load(Ordering::Relaxed);
                continue;
            }
            let next = match st.avail.checked_add(n) {
                Some(v) if v <= self.params.max => v,
                _ => return Err(st.avail),
            };
            // SYNC POINT: SeqCst: Release pairs with a waiter's Acquire CAS; the total
            // order orders this before our load of `sleepers` (see `must_wake`).
            match word.compare_exchange_weak(
                w,
                State::settled(next),
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(st.avail),
                Err(now) => w = now,
            }
        }
    }

    /// Takes one permit for holder `slot`, recording it (resource flavour).
    pub(crate) fn try_acquire(&self, slot: u32) -> bool {
        let Some(r) = self.record(slot) else {
            return false;
        };
        let word = &self.header().state;
        let mut w = word.load(Ordering::Acquire);
        loop {
            let st = State::decode(w);
            if st.pending != 0 {
                self.settle(w);
                w = word.load(Ordering::Acquire);
                continue;
            }
            if st.avail == 0 {
                return false;
            }
            let intent = State {
                avail: st.avail - 1,
                pending: slot + 1,
                release: false,
                all: false,
                seq: rec_seq(r.load(Ordering::Acquire)) & SEQ_MASK,
            }
            .encode();
            // SYNC POINT: Acquire pairs with the Release of the op that returned this
            // permit; Release publishes the intent to any settler.
            match word.compare_exchange_weak(w, intent, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    step_hook(step::ACQUIRE_INTENT);
                    self.settle(intent);
                    return true;
                }
                Err(now) => w = now,
            }
        }
    }

    /// Returns one permit held by `slot` (resource flavour). False if its record shows
    /// none (nothing changes then).
    pub(crate) fn release(&self, slot: u32) -> bool {
        self.give_back(slot, false) > 0
    }

    /// Returns every permit dead holder `slot`'s record holds, in one intent (so a
    /// forged record claiming billions costs the sweep three CASes, not billions), and
    /// says how many.
    pub(crate) fn release_all(&self, slot: u32) -> u32 {
        self.give_back(slot, true)
    }

    /// Steps 1–3 of a release of one permit, or of all the record holds (`all`), by
    /// `slot`; returns how many went back. The count is clamped at `max`: only a
    /// corrupt image needs it.
    fn give_back(&self, slot: u32, all: bool) -> u32 {
        let Some(r) = self.record(slot) else {
            return 0;
        };
        let word = &self.header().state;
        let mut w = word.load(Ordering::Acquire);
        loop {
            let st = State::decode(w);
            if st.pending != 0 {
                self.settle(w);
                w = word.load(Ordering::Acquire);
                continue;
            }
            let cur = r.load(Ordering::Acquire);
            let n = if all { rec_held(cur) } else { 1 };
            if rec_held(cur) == 0 {
                return 0;
            }
            let intent = State {
                avail: st.avail.saturating_add(n).min(self.params.max),
                pending: slot + 1,
                release: true,
                all,
                seq: rec_seq(cur) & SEQ_MASK,
            }
            .encode();
            // SYNC POINT: SeqCst: Release pairs with the next acquirer's Acquire CAS; the
            // total order orders it before our load of `sleepers` (see `must_wake`).
            match word.compare_exchange_weak(w, intent, Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => {
                    step_hook(step::RELEASE_INTENT);
                    self.settle(intent);
                    return n;
                }
                Err(now) => w = now,
            }
        }
    }

    /// Step 1 of an acquire by `slot` and nothing more: a holder that stops for ever
    /// right after it (models only).
    #[cfg(loom)]
    pub(crate) fn acquire_step1_for_test(&self, slot: u32) -> bool {
        let r = self.record(slot).expect("slot in range");
        let w = self.header().state.load(Ordering::Acquire);
        let st = State::decode(w);
        if st.pending != 0 || st.avail == 0 {
            return false;
        }
        let intent = State {
            avail: st.avail - 1,
            pending: slot + 1,
            release: false,
            all: false,
            seq: rec_seq(r.load(Ordering::Acquire)) & SEQ_MASK,
        }
        .encode();
        self.header()
            .state
            .compare_exchange(w, intent, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Settles any pending intent now (an observer that must see records final).
    pub(crate) fn settle_pending(&self) {
        for _ in 0..4 {
            let w = self.header().state.load(Ordering::Acquire);
            if State::decode(w).pending == 0 {
                return;
            }
            self.settle(w);
        }
    }

    /// Whether a post or release just made must wake sleepers.
    pub(crate) fn must_wake(&self) -> bool {
        // SYNC POINT: SeqCst pairs with the waiter's SeqCst increment and fence in
        // `wait::sleep`: either it sees our count, or we see it asleep.
        self.header().wake.sleepers.load(Ordering::SeqCst) != 0
    }
}

/// The sweep's routine for dead holder `slot`: settles any pending intent (its own or
/// another's), then returns every permit its record holds. Returns how many.
pub(crate) fn recover(view: &SemView, slot: u32) -> u32 {
    view.settle_pending();
    if view.params.flavor != FLAVOR_RESOURCE {
        return 0;
    }
    view.release_all(slot)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::segment::heap::HeapMem;

    fn sem(flavor: u32, initial: u32, max: u32) -> (HeapMem, SemView) {
        let mem = HeapMem::new(object_len(8));
        // SAFETY: fresh, zeroed, aligned, private.
        unsafe { init(mem.ptr(), flavor, initial, max, 8) };
        // SAFETY: initialised above; `mem` outlives the view in each test.
        let params = unsafe { read_params(mem.ptr(), object_len(8)) }.unwrap();
        // SAFETY: as above.
        let view = unsafe { SemView::new(mem.ptr(), params) };
        (mem, view)
    }

    #[test]
    fn every_count_word_round_trips() {
        for raw in [0, u64::MAX, OP_BIT, 0x1fff << 32, 7 | (5 << 32) | (9 << 46)] {
            let st = State::decode(raw);
            assert_eq!(State::decode(st.encode()), st);
        }
    }

    #[test]
    fn post_beyond_max_is_refused() {
        let (_m, v) = sem(FLAVOR_SIGNAL, 1, 3);
        assert_eq!(v.post(2), Ok(1));
        assert_eq!(v.post(1), Err(3));
        assert!(v.try_take());
        assert_eq!(v.state().avail, 2);
    }

    #[test]
    fn a_pending_intent_is_settled_once_by_anyone() {
        let (_m, v) = sem(FLAVOR_RESOURCE, 2, 2);
        // Holder 3 "dies" right after step 1 of an acquire.
        let intent = State {
            avail: 1,
            pending: 4,
            release: false,
            all: false,
            seq: 0,
        }
        .encode();
        v.header().state.store(intent, Ordering::Relaxed);
        // The next operator settles it, then takes its own permit.
        assert!(v.try_acquire(1));
        v.settle(intent); // a late settler changes nothing
        assert_eq!((v.held(3), v.held(1), v.state().avail), (1, 1, 0));
        assert_eq!(recover(&v, 3), 1);
        assert_eq!((v.held(3), v.state().avail), (0, 1));
        assert!(v.release(1));
        assert!(!v.release(1), "no permit left to release");
        assert_eq!(v.state(), State::decode(2));
    }

    #[test]
    fn a_dead_record_is_returned_in_one_intent_however_much_it_claims() {
        let (_m, v) = sem(FLAVOR_RESOURCE, 0, u32::MAX);
        // A forged record: slot 5 claims every permit there could be.
        v.record(5)
            .unwrap()
            .store(rec(u32::MAX, 7), Ordering::Relaxed);
        assert_eq!(recover(&v, 5), u32::MAX);
        assert_eq!((v.held(5), v.state().avail), (0, u32::MAX));
        assert_eq!(
            State::decode(v.header().state.load(Ordering::Relaxed)).pending,
            0
        );
        // A record that claims more than the free room is clamped at `max`.
        let (_m, v) = sem(FLAVOR_RESOURCE, 3, 4);
        v.record(1).unwrap().store(rec(9, 0), Ordering::Relaxed);
        assert_eq!(recover(&v, 1), 9);
        assert_eq!((v.held(1), v.state().avail), (0, 4));
    }
}
