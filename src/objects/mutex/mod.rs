//! The mutex's in-segment layout and lock word.
//!
//! # Layout (object area of a `mutex` segment)
//!
//! ```text
//! MutexHeader   magic, payload size/align, data offset (immutable)
//!   lock        the lock word (below) and a sleeper count, on a line of their own
//! data          the protected T, at data_offset (a multiple of 128)
//! ```
//!
//! # The lock word (also the futex word)
//!
//! ```text
//! bits  0..13  owner: holder slot + 1, or 0 (unlocked)
//! bits 13..30  zero
//! bit  30      WAITERS: someone may sleep on the word; unlock must wake one
//! bit  31      ABANDONED: an owner died holding the lock; stays until cleared
//! ```
//!
//! # Protocol
//!
//! * **lock** (uncontended): CAS `0 → me+1`, Acquire. One atomic, no system call.
//! * **unlock**: swap to `keep` (0, or ABANDONED if the mark stays), Release; wake one
//!   sleeper if the old word had WAITERS. One atomic, no system call when nobody sleeps.
//! * **contended**: a waiter sets WAITERS before sleeping on the word, and takes the
//!   lock with WAITERS kept (it cannot know it was the last sleeper).
//! * **owner death**: a waiter that finds the owner's slot dead takes the lock from it
//!   by CAS `owner=dead → owner=me | ABANDONED` (Acquire); the sweep does the same for
//!   a dead owner without a taker, leaving `ABANDONED` and no owner. Either way the
//!   next locker is told; the mark stays until a guard clears it.
//!
//! | word | writer | reader | pairs with |
//! |------|--------|--------|------------|
//! | lock | lock (CAS Acquire), unlock (swap Release), take-over, sweep | lockers | unlock's Release → next lock's Acquire: T's bytes |

#[cfg(all(test, loom))]
mod loom;

use crossbeam_utils::CachePadded;

use crate::atomics::{AtomicU32, AtomicU64, Ordering};

/// `b"TALLYMTX"`.
pub(crate) const MUTEX_MAGIC: u64 = u64::from_le_bytes(*b"TALLYMTX");
/// Owner bits of the lock word.
pub(crate) const OWNER_MASK: u32 = (1 << 13) - 1;
/// Someone may sleep on the lock word.
pub(crate) const WAITERS: u32 = 1 << 30;
/// An owner died holding the lock.
pub(crate) const ABANDONED: u32 = 1 << 31;
/// Where T lives: payloads aligned up to this are supported.
pub(crate) const DATA_ALIGN: usize = 128;

#[repr(C)]
pub(crate) struct LockLine {
    pub word: AtomicU32,
    /// Lockers asleep (diagnostics for `tally inspect`; WAITERS is what unlock reads).
    pub sleepers: AtomicU32,
    /// Times the lock was taken from a dead owner.
    pub abandonments: AtomicU64,
}

#[repr(C)]
pub(crate) struct MutexHeader {
    pub magic: u64,
    pub size: u32,
    pub align: u32,
    pub data_offset: u32,
    pub _pad: u32,
    pub lock: CachePadded<LockLine>,
}

/// Offset of the data: after the header, on a 128-byte boundary.
pub(crate) fn data_offset() -> usize {
    std::mem::size_of::<MutexHeader>().next_multiple_of(DATA_ALIGN)
}

/// Object-area bytes for a payload of `size` bytes.
pub(crate) fn object_len(size: usize) -> Option<usize> {
    data_offset().checked_add(size.max(1))
}

/// Writes a fresh header at `base`, unlocked; the caller writes the data.
///
/// # Safety
/// `base` must be valid for writes of `object_len(size)` bytes, aligned to 128, and not
/// yet shared with anyone.
pub(crate) unsafe fn init(base: *mut u8, size: u32, align: u32) {
    let hdr = MutexHeader {
        magic: MUTEX_MAGIC,
        size,
        align,
        data_offset: data_offset() as u32,
        _pad: 0,
        lock: CachePadded::new(LockLine {
            word: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            abandonments: AtomicU64::new(0),
        }),
    };
    // SAFETY: the caller guarantees room, alignment and exclusivity.
    unsafe { (base as *mut MutexHeader).write(hdr) };
}

/// Reads and validates a mutex header for a payload of `size` bytes aligned to `align`.
///
/// # Safety
/// `base` must be valid for reads of `len` bytes and aligned to 128.
#[cfg(not(loom))]
pub(crate) unsafe fn check(base: *const u8, len: usize) -> Result<(u32, u32), String> {
    if len < data_offset() {
        return Err(format!("object area of {len} bytes holds no mutex header"));
    }
    // SAFETY: the header fits (checked above); immutable fields are plain data.
    let h = unsafe { &*(base as *const MutexHeader) };
    if h.magic != MUTEX_MAGIC {
        return Err(format!("bad mutex magic {:#x}", h.magic));
    }
    if h.data_offset as usize != data_offset()
        || data_offset()
            .checked_add(h.size as usize)
            .is_none_or(|end| end > len)
    {
        return Err(format!(
            "data of {} bytes at {} does not fit an object area of {len} bytes",
            h.size, h.data_offset
        ));
    }
    Ok((h.size, h.align))
}

/// A decoded lock word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LockState {
    /// Owner's holder slot + 1, or 0.
    pub owner: u32,
    pub waiters: bool,
    pub abandoned: bool,
}

impl LockState {
    pub(crate) fn decode(w: u32) -> Self {
        LockState {
            owner: w & OWNER_MASK,
            waiters: w & WAITERS != 0,
            abandoned: w & ABANDONED != 0,
        }
    }
}

/// A mutex in mapped memory.
#[derive(Clone, Copy)]
pub(crate) struct MutexView {
    base: *mut u8,
}

// SAFETY: a pointer into shared memory kept alive by the owning handle; the lock word
// orders every access to the data.
unsafe impl Send for MutexView {}
// SAFETY: as above.
unsafe impl Sync for MutexView {}

/// How a lock attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// Locked; `abandoned` says whether the mark is set.
    Locked { abandoned: bool },
    /// Held by the owner in this word.
    Held(u32),
}

impl MutexView {
    /// # Safety
    /// `base` must point to an initialised mutex that stays mapped while the view is used.
    pub(crate) unsafe fn new(base: *mut u8) -> Self {
        MutexView { base }
    }

    pub(crate) fn header(&self) -> &MutexHeader {
        // SAFETY: validated at construction; atomics and plain data.
        unsafe { &*(self.base as *const MutexHeader) }
    }

    /// The lock word (the futex word too).
    #[inline]
    pub(crate) fn word(&self) -> &AtomicU32 {
        &self.header().lock.word
    }

    /// The data, valid for the payload's size.
    pub(crate) fn data(&self) -> *mut u8 {
        // SAFETY: data_offset validated to lie inside the area.
        unsafe { self.base.add(data_offset()) }
    }

    /// The uncontended lock: one CAS.
    #[inline]
    pub(crate) fn try_lock_fast(&self, slot: u32) -> bool {
        // SYNC POINT: Acquire pairs with the Release swap in `unlock`: the previous
        // owner's writes to T are visible to us.
        self.word()
            .compare_exchange(0, slot + 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock if it has no owner, keeping the flags; `sleeper` adds WAITERS
    /// (a locker that slept cannot know whether others still sleep).
    pub(crate) fn try_lock(&self, slot: u32, sleeper: bool) -> Take {
        let w = self.word();
        let mut cur = w.load(Ordering::Relaxed);
        loop {
            if cur & OWNER_MASK != 0 {
                return Take::Held(cur);
            }
            let next =
                (cur & (WAITERS | ABANDONED)) | if sleeper { WAITERS } else { 0 } | (slot + 1);
            // SYNC POINT: Acquire pairs with the Release swap in `unlock` (or the
            // sweep's Release CAS in `recover`).
            match w.compare_exchange_weak(cur, next, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => {
                    return Take::Locked {
                        abandoned: cur & ABANDONED != 0,
                    };
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Takes the lock from the owner in `seen` (`seen`'s owner must be dead) and marks it
    /// abandoned. False if the word changed.
    pub(crate) fn take_over(&self, seen: u32, slot: u32, sleeper: bool) -> bool {
        let next = (seen & WAITERS) | if sleeper { WAITERS } else { 0 } | ABANDONED | (slot + 1);
        // SYNC POINT: Acquire pairs with whatever Release the dead owner's last unlock
        // or lock left; the kernel's process teardown orders its last plain writes.
        let ok = self
            .word()
            .compare_exchange(seen, next, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if ok {
            self.header()
                .lock
                .abandonments
                .fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Unlocks, leaving `keep` (0 or ABANDONED). Returns whether a sleeper must be woken.
    #[inline]
    pub(crate) fn unlock(&self, keep: u32) -> bool {
        // SYNC POINT: Release pairs with the next locker's Acquire CAS: our writes to T
        // happen before its reads.
        self.word().swap(keep, Ordering::Release) & WAITERS != 0
    }

    /// Marks that a locker may sleep on the word (only while it has an owner).
    pub(crate) fn announce_sleeper(&self) {
        // Relaxed: the futex compares the word's value, and the SeqCst fence in
        // `wait::sleep` orders this before the sleeper's re-check.
        let w = self.word();
        let mut cur = w.load(Ordering::Relaxed);
        while cur & OWNER_MASK != 0 && cur & WAITERS == 0 {
            match w.compare_exchange_weak(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// The lock word, decoded.
    pub(crate) fn state(&self) -> LockState {
        LockState::decode(self.word().load(Ordering::Acquire))
    }

    /// Clears ABANDONED while held by `slot` (a guard clearing the mark).
    pub(crate) fn clear_mark(&self, slot: u32) {
        let _ = self
            .word()
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                (w & OWNER_MASK == slot + 1).then_some(w & !ABANDONED)
            });
    }
}

/// The sweep's routine for dead holder `slot`: if it owns the lock, unlock it marked
/// ABANDONED. Returns whether sleepers must be woken.
pub(crate) fn recover(view: &MutexView, slot: u32) -> bool {
    let w = view.word();
    let mut cur = w.load(Ordering::Acquire);
    loop {
        if cur & OWNER_MASK != slot + 1 {
            return false;
        }
        let next = (cur & WAITERS) | ABANDONED;
        // SYNC POINT: AcqRel: Release pairs with the next locker's Acquire.
        match w.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                view.header()
                    .lock
                    .abandonments
                    .fetch_add(1, Ordering::Relaxed);
                return cur & WAITERS != 0;
            }
            Err(now) => cur = now,
        }
    }
}
