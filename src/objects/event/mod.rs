//! The event's in-segment layout and state word (Windows event semantics).
//!
//! # Layout (object area of an `event` segment)
//!
//! ```text
//! EventHeader   magic, manual-reset flag (immutable)
//!   line        the state word (below) and a sleeper count, on a line of their own
//! ```
//!
//! # The state word (also the futex word)
//!
//! ```text
//! bit   0      SET
//! bits  1..32  generation: bumped by every set that changes the word
//! ```
//!
//! # Protocol
//!
//! * **manual reset**: `set` makes the word `(gen+1) | SET` and wakes every sleeper;
//!   `reset` clears SET; a waiter returns once SET is seen *or the generation moved
//!   since it began waiting*, so a set followed at once by a reset still releases every
//!   waiter that was waiting at the set (no wake is lost to the reset).
//! * **auto reset**: `set` on a clear word makes it `(gen+1) | SET` and wakes one
//!   sleeper (on a set word it does nothing, as in Windows); a waiter returns only by
//!   consuming SET with a CAS, so each set releases exactly one waiter.
//!
//! A setter that dies between its change of the word and its wake leaves sleepers that
//! wake within one sleep slice (the handle's bound) and see the change.
//!
//! | word | writer | reader | pairs with |
//! |------|--------|--------|------------|
//! | state | set (SeqCst RMW), reset, auto consumer (CAS) | waiters | set's Release → waiter's Acquire |
//! | sleepers | waiters (SeqCst) | setters (SeqCst) | Dekker pair with the state RMW |

#[cfg(all(test, loom))]
mod loom;

use crossbeam_utils::CachePadded;

use crate::atomics::{AtomicU32, Ordering};

/// `b"TALLYEVT"`.
pub(crate) const EVENT_MAGIC: u64 = u64::from_le_bytes(*b"TALLYEVT");
/// The SET bit of the state word.
pub(crate) const SET: u32 = 1;

#[repr(C)]
pub(crate) struct EventLine {
    pub state: AtomicU32,
    pub sleepers: AtomicU32,
}

#[repr(C)]
pub(crate) struct EventHeader {
    pub magic: u64,
    /// 1: manual reset; 0: auto reset.
    pub manual: u32,
    pub _pad: u32,
    pub line: CachePadded<EventLine>,
}

/// Object-area bytes of an event.
pub(crate) fn object_len() -> usize {
    std::mem::size_of::<EventHeader>()
}

/// Writes a fresh header at `base`.
///
/// # Safety
/// `base` must be valid for writes of `object_len()` bytes, aligned to 128, and not yet
/// shared with anyone.
pub(crate) unsafe fn init(base: *mut u8, manual: bool, set: bool) {
    let hdr = EventHeader {
        magic: EVENT_MAGIC,
        manual: manual as u32,
        _pad: 0,
        line: CachePadded::new(EventLine {
            state: AtomicU32::new(if set { SET } else { 0 }),
            sleepers: AtomicU32::new(0),
        }),
    };
    // SAFETY: the caller guarantees room, alignment and exclusivity.
    unsafe { (base as *mut EventHeader).write(hdr) };
}

/// Validates an event header; returns whether it is manual-reset.
///
/// # Safety
/// `base` must be valid for reads of `len` bytes and aligned to 128.
#[cfg(not(loom))]
pub(crate) unsafe fn check(base: *const u8, len: usize) -> Result<bool, String> {
    if len < object_len() {
        return Err(format!("object area of {len} bytes holds no event header"));
    }
    // SAFETY: the header fits (checked above); immutable fields are plain data.
    let h = unsafe { &*(base as *const EventHeader) };
    if h.magic != EVENT_MAGIC {
        return Err(format!("bad event magic {:#x}", h.magic));
    }
    match h.manual {
        0 | 1 => Ok(h.manual == 1),
        m => Err(format!("bad event reset mode {m}")),
    }
}

/// An event in mapped memory.
#[derive(Clone, Copy)]
pub(crate) struct EventView {
    base: *const u8,
    pub manual: bool,
}

// SAFETY: a pointer into shared memory (atomics only) kept alive by the owning handle.
unsafe impl Send for EventView {}
// SAFETY: as above.
unsafe impl Sync for EventView {}

impl EventView {
    /// # Safety
    /// `base` must point to an initialised event that stays mapped while the view is
    /// used, whose reset mode is `manual`.
    pub(crate) unsafe fn new(base: *const u8, manual: bool) -> Self {
        EventView { base, manual }
    }

    pub(crate) fn line(&self) -> &EventLine {
        // SAFETY: validated at construction; atomics only.
        unsafe { &(*(self.base as *const EventHeader)).line }
    }

    /// The state word (the futex word too).
    pub(crate) fn word(&self) -> &AtomicU32 {
        &self.line().state
    }

    /// The current state word.
    #[inline]
    pub(crate) fn load(&self) -> u32 {
        // SYNC POINT: Acquire pairs with the setter's SeqCst (Release) RMW: what it
        // wrote before `set` is visible to a waiter that sees the set.
        self.word().load(Ordering::Acquire)
    }

    /// Sets the event. Returns whether the word changed (then sleepers may need a wake).
    pub(crate) fn set(&self) -> bool {
        let manual = self.manual;
        // SYNC POINT: SeqCst: Release pairs with waiters' Acquire; the total order puts
        // this before the load of `sleepers` in `must_wake`.
        self.word()
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |w| {
                if !manual && w & SET != 0 {
                    None // auto reset and already set: a no-op, as in Windows
                } else {
                    Some((w & !SET).wrapping_add(2) | SET)
                }
            })
            .is_ok()
    }

    /// Clears SET (the generation stays).
    pub(crate) fn reset(&self) {
        // Release: a waiter that sees the reset sees what came before it.
        self.word().fetch_and(!SET, Ordering::Release);
    }

    /// Whether a waiter that began at word `start` may return now, consuming the set
    /// for an auto-reset event.
    pub(crate) fn try_pass(&self, start: u32) -> bool {
        let w = self.word();
        if self.manual {
            let cur = w.load(Ordering::Acquire);
            return cur & SET != 0 || (cur | SET) != (start | SET);
        }
        let mut cur = w.load(Ordering::Relaxed);
        while cur & SET != 0 {
            // SYNC POINT: Acquire pairs with the setter's Release (SeqCst) RMW.
            match w.compare_exchange_weak(cur, cur & !SET, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    /// Whether the waiter's condition may hold now, without consuming anything.
    pub(crate) fn may_pass(&self, start: u32) -> bool {
        let cur = self.word().load(Ordering::Acquire);
        cur & SET != 0 || (self.manual && (cur | SET) != (start | SET))
    }

    /// Whether a set just made must wake sleepers.
    pub(crate) fn must_wake(&self) -> bool {
        // SYNC POINT: SeqCst pairs with the sleeper's SeqCst increment and fence.
        self.line().sleepers.load(Ordering::SeqCst) != 0
    }
}
