//! The broadcast ring's in-segment layout and lock-free algorithm: one publisher writes
//! each message once, any number of subscribers read it in place with cursors of their
//! own.
//!
//! # Layout (object area of a `broadcast` / `byte-broadcast` segment)
//!
//! ```text
//! BcastHeader           immutable params, then three 128-byte lines:
//!   ctl                 publisher role word, wake-up counter for role changes, counters
//!   publ                tail (next position to commit) and limit (see below)
//!   wait                futex words and sleeper counts
//! cursors               `subs` lines of 128 bytes: [owner: u64][pos: u64][lagged: u64]
//! slots                 capacity × stride; slot i = [seq: u64][pad][payload]
//! ```
//!
//! # Protocol
//!
//! Positions are `u64` and never wrap in practice (2^63 messages); the slot of position
//! `p` is `p & mask`. A slot's `seq` word says which position it holds:
//!
//! | seq | meaning |
//! |---|---|
//! | `0` | never written |
//! | `2(p+1)` | message `p` is committed there |
//! | `2(p+1) + 1` | message `p` is being written there (lossy only) |
//!
//! **Publisher.** One role word ([`RoleWord`]) names its holder. It writes position
//! `tail`, stores `seq = 2(tail+1)` (Release) and then `tail + 1` into `publ.tail`
//! (Release: what a successor and a late joiner start from). A successor publisher
//! resumes at `publ.tail`; after a crash the sweep first advances it over positions
//! committed after the last `tail` store (the committed frontier).
//!
//! **Subscribers.** A subscriber claims a free cursor line by CAS on its `owner` word
//! (`generation << 32 | holder slot + 1`; the generation makes a stale vacate of a
//! reused line fail) and reads position `pos`: ready when the slot's seq says `p`
//! committed. After reading it stores `pos + 1` (Release).
//!
//! **Lossless.** The publisher may write position `p` only when every claimed cursor is
//! above `p - capacity`. It caches `limit` (= slowest cursor + capacity) and rescans the
//! cursors only when `tail` reaches it. A joiner and a rescan meet as in Dekker's
//! algorithm: the publisher stores its new `limit`, fences (SeqCst) and scans again
//! (taking a lower limit if it finds a lower cursor); a joiner stores its cursor, fences
//! (SeqCst) and loads `limit`, moving its cursor up to `limit - capacity` while it is
//! below. Either the publisher's second scan sees the joiner, or the joiner sees the
//! limit the publisher acts on. A dead subscriber's cursor is vacated by the sweep, or
//! by the blocked publisher itself after a liveness probe of the holder it names.
//!
//! **Lossy.** The publisher never looks at cursors. Each slot is a seqlock: the
//! publisher stores `seq = 2(p+1) + 1` (Relaxed), fences (Release), writes the payload,
//! and stores `seq = 2(p+1)` (Release). A reader loads seq (Acquire), reads the payload,
//! fences (Acquire) and loads seq again: if it changed, the publisher began overwriting
//! the slot during the read and the read is reported as lagged, never returned as good.
//! A reader that finds its slot holding a later lap knows it was overrun, and moves to
//! the oldest message still in the ring, counting exactly the positions it skipped.
//!
//! | word | writer | reader | pairs with |
//! |---|---|---|---|
//! | seq (commit) | publisher, Release | subscriber, Acquire | payload written before |
//! | seq (writing mark) | publisher, Relaxed + Release fence | subscriber, after Acquire fence | payload read before the re-check |
//! | cursor pos | subscriber, Release | publisher scan, Acquire | reads done before overwrite |
//! | cursor pos / limit | joiner / publisher, then SeqCst fence | the other side | Dekker |
//! | tail | publisher, Release | successor, joiner, lagger (Acquire) | seq stores before it |
//!
//! Every index read from shared memory is masked or clamped before use (P6): a hostile
//! cursor can at worst hold a lossless publisher back, like a stopped subscriber.

#![cfg_attr(loom, allow(dead_code))] // the handle layer that uses it is not built under loom

#[cfg(all(test, loom))]
mod loom;

use crossbeam_utils::CachePadded;

use crate::atomics::{AtomicU32, AtomicU64, Ordering, fence};
use crate::objects::role::RoleWord;

/// `b"TALLYBCT"`.
pub(crate) const BCAST_MAGIC: u64 = u64::from_le_bytes(*b"TALLYBCT");
/// Most slots a ring may have.
pub(crate) const MAX_CAPACITY: u64 = 1 << 30;
/// Typed payloads.
pub(crate) const FLAVOR_TYPED: u32 = 1;
/// Variable-length byte messages: payload = [len: u32][pad: u32][bytes].
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const FLAVOR_BYTES: u32 = 2;
/// The publisher waits for the slowest live subscriber.
pub(crate) const POLICY_LOSSLESS: u32 = 1;
/// The publisher never waits; laggards are told how much they missed.
pub(crate) const POLICY_LOSSY: u32 = 2;
/// Bytes of the seq word at the start of each slot.
const SEQ_LEN: usize = 8;
/// Bytes of one cursor line.
const CURSOR_LEN: usize = 128;
/// Most rounds a joiner moves its cursor up before it takes what it has (only a
/// hostile `limit` word keeps it moving).
const JOIN_ROUNDS: u32 = 64;

// --- header ----------------------------------------------------------------------------

/// The publisher role and counters that change only when handles come and go.
#[repr(C)]
pub(crate) struct Control {
    pub publisher: RoleWord,
    /// Bumped after every publisher claim and release: a futex word for handles
    /// waiting for a publisher. Only a wake-up counter; the role word is the truth.
    pub roles_changed: AtomicU32,
    /// Subscriber handles ever made (saturates).
    pub subscribers_ever: AtomicU32,
    /// Cursors vacated for dead subscribers, over the ring's life.
    pub dropped_dead: AtomicU64,
}

/// The publisher's line.
#[repr(C)]
pub(crate) struct PublisherLine {
    /// Next position the publisher will commit; stored after every commit.
    pub tail: AtomicU64,
    /// Lossless: positions below it may be written without rescanning the cursors.
    pub limit: AtomicU64,
}

/// Futex words and sleeper counts.
#[repr(C)]
pub(crate) struct WaitWords {
    /// Bumped by a commit when subscribers sleep (and when the publisher leaves).
    pub data: AtomicU32,
    /// Bumped by a subscriber's release or departure when the publisher sleeps.
    pub space: AtomicU32,
    /// Subscribers that may be asleep on `data`.
    pub subs_asleep: AtomicU32,
    /// Non-zero while the publisher may be asleep on `space`.
    pub pub_asleep: AtomicU32,
}

/// The header at the start of the object area.
#[repr(C)]
pub(crate) struct BcastHeader {
    pub magic: u64,
    pub capacity: u64,
    pub stride: u32,
    pub payload_offset: u32,
    pub payload_size: u32,
    pub flavor: u32,
    pub policy: u32,
    /// Cursor lines (the holder table's capacity at creation).
    pub subs: u32,
    pub ctl: CachePadded<Control>,
    pub publ: CachePadded<PublisherLine>,
    pub wait: CachePadded<WaitWords>,
}

/// One subscriber's cursor line.
#[repr(C)]
pub(crate) struct Cursor {
    /// `generation << 32 | (holder slot + 1)`; holder 0: free.
    pub owner: AtomicU64,
    /// Next position this subscriber reads.
    pub pos: AtomicU64,
    /// Messages this subscriber missed (lossy), over its life.
    pub lagged: AtomicU64,
    /// Non-zero while this subscriber may be asleep (counted in `subs_asleep`), so a
    /// recovery can take a dead sleeper out of that count.
    pub asleep: AtomicU32,
}

/// The holder (slot + 1, 0 for free) named by a cursor's owner word.
#[inline]
pub(crate) fn owner_holder(word: u64) -> u32 {
    word as u32
}

// --- geometry --------------------------------------------------------------------------

/// Immutable geometry, computed or validated into process-private memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub capacity: u64,
    pub stride: usize,
    pub payload_offset: usize,
    pub payload_size: usize,
    pub flavor: u32,
    pub policy: u32,
    pub subs: u32,
}

impl Geometry {
    /// Geometry for `capacity` slots of `payload_size` bytes aligned to `align`, with
    /// `subs` cursor lines.
    pub(crate) fn new(
        capacity: usize,
        payload_size: usize,
        align: usize,
        flavor: u32,
        policy: u32,
        subs: u32,
    ) -> Option<Self> {
        let (capacity, payload_offset, stride) =
            super::slot_shape(capacity, MAX_CAPACITY, SEQ_LEN, payload_size, align)?;
        Some(Geometry {
            capacity,
            stride,
            payload_offset,
            payload_size,
            flavor,
            policy,
            subs,
        })
    }

    fn cursors_offset() -> usize {
        std::mem::size_of::<BcastHeader>().next_multiple_of(128)
    }

    fn slots_offset(&self) -> Option<usize> {
        Self::cursors_offset().checked_add((self.subs as usize).checked_mul(CURSOR_LEN)?)
    }

    /// Total object-area bytes.
    pub(crate) fn object_len(&self) -> Option<usize> {
        self.slots_offset()?
            .checked_add((self.capacity as usize).checked_mul(self.stride)?)
    }

    pub(crate) fn lossy(&self) -> bool {
        self.policy == POLICY_LOSSY
    }
}

/// Writes a fresh header, free cursors and never-written slots at `base`.
///
/// # Safety
/// `base` must be valid for writes of `geo.object_len()` bytes, aligned to 128, and not
/// yet shared with anyone.
pub(crate) unsafe fn init(base: *mut u8, geo: &Geometry) {
    let hdr = BcastHeader {
        magic: BCAST_MAGIC,
        capacity: geo.capacity,
        stride: geo.stride as u32,
        payload_offset: geo.payload_offset as u32,
        payload_size: geo.payload_size as u32,
        flavor: geo.flavor,
        policy: geo.policy,
        subs: geo.subs,
        ctl: CachePadded::new(Control {
            publisher: RoleWord::new(),
            roles_changed: AtomicU32::new(0),
            subscribers_ever: AtomicU32::new(0),
            dropped_dead: AtomicU64::new(0),
        }),
        publ: CachePadded::new(PublisherLine {
            tail: AtomicU64::new(0),
            limit: AtomicU64::new(0),
        }),
        wait: CachePadded::new(WaitWords {
            data: AtomicU32::new(0),
            space: AtomicU32::new(0),
            subs_asleep: AtomicU32::new(0),
            pub_asleep: AtomicU32::new(0),
        }),
    };
    // SAFETY: the caller guarantees room, alignment and exclusivity.
    unsafe { (base as *mut BcastHeader).write(hdr) };
    let cursors = Geometry::cursors_offset();
    for i in 0..geo.subs as usize {
        let c = Cursor {
            owner: AtomicU64::new(0),
            pos: AtomicU64::new(0),
            lagged: AtomicU64::new(0),
            asleep: AtomicU32::new(0),
        };
        // SAFETY: line i lies inside the cursor array (i < subs), 128-aligned.
        unsafe { (base.add(cursors + i * CURSOR_LEN) as *mut Cursor).write(c) };
    }
    let slots = geo.slots_offset().expect("validated by object_len");
    for i in 0..geo.capacity as usize {
        // SAFETY: slot i's seq word lies inside the object area and is 8-aligned.
        unsafe { (base.add(slots + i * geo.stride) as *mut AtomicU64).write(AtomicU64::new(0)) };
    }
}

/// Reads and validates the geometry of an object area of `len` bytes.
///
/// # Safety
/// `base` must be valid for reads of `len` bytes and aligned to 128.
#[cfg(not(loom))]
pub(crate) unsafe fn read_geometry(base: *const u8, len: usize) -> Result<Geometry, String> {
    if len < Geometry::cursors_offset() {
        return Err(format!(
            "object area of {len} bytes is smaller than a broadcast ring header"
        ));
    }
    let h = base as *const BcastHeader;
    // SAFETY: the header lies within `len` (checked above); volatile reads take one
    // snapshot of each field, which is validated before any use.
    let (magic, capacity, stride, payload_offset, payload_size, flavor, policy, subs) = unsafe {
        (
            std::ptr::read_volatile(&raw const (*h).magic),
            std::ptr::read_volatile(&raw const (*h).capacity),
            std::ptr::read_volatile(&raw const (*h).stride),
            std::ptr::read_volatile(&raw const (*h).payload_offset),
            std::ptr::read_volatile(&raw const (*h).payload_size),
            std::ptr::read_volatile(&raw const (*h).flavor),
            std::ptr::read_volatile(&raw const (*h).policy),
            std::ptr::read_volatile(&raw const (*h).subs),
        )
    };
    if magic != BCAST_MAGIC {
        return Err("bad broadcast ring magic".into());
    }
    if !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
        return Err(format!(
            "ring capacity {capacity} is not a power of two up to {MAX_CAPACITY}"
        ));
    }
    let geo = Geometry {
        capacity,
        stride: stride as usize,
        payload_offset: payload_offset as usize,
        payload_size: payload_size as usize,
        flavor,
        policy,
        subs,
    };
    if geo.payload_offset < SEQ_LEN
        || geo
            .payload_offset
            .checked_add(geo.payload_size)
            .is_none_or(|end| end > geo.stride)
        || !geo.stride.is_multiple_of(8)
        || !matches!(policy, POLICY_LOSSLESS | POLICY_LOSSY)
        || !matches!(flavor, FLAVOR_TYPED | FLAVOR_BYTES)
        || subs == 0
        || subs > crate::segment::layout::MAX_HOLDERS
    {
        return Err(format!("broadcast geometry {geo:?} is inconsistent"));
    }
    if geo.object_len() != Some(len) {
        return Err(format!(
            "{capacity} slots of {stride} bytes and {subs} cursors do not fill the {len}-byte object area"
        ));
    }
    Ok(geo)
}

// --- the view --------------------------------------------------------------------------

/// What a subscriber finds at its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// The message is committed: read it.
    Ready,
    /// Not written yet (or being written now).
    Empty,
    /// Lossy: the slot holds (or is being given) the later position `q`: overrun.
    Overrun(u64),
}

#[inline]
pub(crate) fn committed_seq(pos: u64) -> u64 {
    pos.wrapping_add(1) << 1
}

#[inline]
fn writing_seq(pos: u64) -> u64 {
    committed_seq(pos) | 1
}

/// The position a seq word names (committed or being written), if any.
#[inline]
fn seq_position(seq: u64) -> Option<u64> {
    (seq >> 1).checked_sub(1)
}

/// A process-private view of a broadcast ring: validated geometry plus pointers.
#[derive(Clone, Copy)]
pub(crate) struct BcastView {
    hdr: *const BcastHeader,
    cursors: *const u8,
    slots: *mut u8,
    mask: u64,
    pub geo: Geometry,
}

// SAFETY: pointers into shared memory whose fields are atomics, or payload bytes that
// the protocol above orders between the one publisher and the subscribers.
unsafe impl Send for BcastView {}
// SAFETY: as above.
unsafe impl Sync for BcastView {}

impl BcastView {
    /// # Safety
    /// `base` must point at an initialised ring with geometry `geo` that stays mapped
    /// while the view (and its copies) are used.
    pub(crate) unsafe fn new(base: *mut u8, geo: Geometry) -> Self {
        let slots = geo.slots_offset().expect("validated geometry");
        BcastView {
            hdr: base as *const BcastHeader,
            // SAFETY: the cursor array and the slots lie inside the object area.
            cursors: unsafe { base.add(Geometry::cursors_offset()) },
            // SAFETY: as above.
            slots: unsafe { base.add(slots) },
            mask: geo.capacity - 1,
            geo,
        }
    }

    #[inline]
    pub(crate) fn header(&self) -> &BcastHeader {
        // SAFETY: `new`'s contract: the header is initialised and mapped.
        unsafe { &*self.hdr }
    }

    /// Cursor line `i` (`i < subs`, else `None`).
    #[inline]
    pub(crate) fn cursor(&self, i: u32) -> Option<&Cursor> {
        // SAFETY: line i lies inside the cursor array, 128-aligned, initialised.
        (i < self.geo.subs)
            .then(|| unsafe { &*(self.cursors.add(i as usize * CURSOR_LEN) as *const Cursor) })
    }

    #[inline]
    fn slot(&self, pos: u64) -> *mut u8 {
        // SAFETY: (pos & mask) < capacity: the slot lies inside the slots area.
        unsafe { self.slots.add((pos & self.mask) as usize * self.geo.stride) }
    }

    #[inline]
    pub(crate) fn seq(&self, pos: u64) -> &AtomicU64 {
        // SAFETY: each slot starts with an initialised, 8-aligned seq word.
        unsafe { &*(self.slot(pos) as *const AtomicU64) }
    }

    /// Pointer to the payload of position `pos`, valid for `geo.payload_size` bytes.
    #[cfg_attr(loom, allow(dead_code))]
    #[inline]
    pub(crate) fn payload(&self, pos: u64) -> *mut u8 {
        // SAFETY: payload_offset + payload_size <= stride (validated).
        unsafe { self.slot(pos).add(self.geo.payload_offset) }
    }

    /// Where position `pos` stands for a subscriber.
    #[inline]
    pub(crate) fn find(&self, pos: u64) -> Found {
        // SYNC POINT: Acquire pairs with the Release store in `publish`: the payload
        // written before it is visible once we see the seq.
        let seq = self.seq(pos).load(Ordering::Acquire);
        if seq == committed_seq(pos) {
            return Found::Ready;
        }
        match seq_position(seq) {
            Some(q) if self.geo.lossy() && q > pos => Found::Overrun(q),
            _ => Found::Empty,
        }
    }

    /// Whether position `pos` is committed (Acquire).
    #[inline]
    pub(crate) fn is_committed(&self, pos: u64) -> bool {
        self.find(pos) == Found::Ready
    }

    /// Lossy: whether positions `pos..pos + n`, read after a `find` that saw them
    /// committed, still hold them: no overwrite began during the read.
    #[inline]
    pub(crate) fn still_intact(&self, pos: u64, n: u64) -> bool {
        // SYNC POINT: the Acquire fence pairs with the publisher's Release fence after
        // its writing mark: if our payload reads saw any byte of the overwrite, the
        // loads below see the mark (or later).
        fence(Ordering::Acquire);
        (0..n).all(|i| {
            let p = pos.wrapping_add(i);
            self.seq(p).load(Ordering::Relaxed) == committed_seq(p)
        })
    }

    /// Lossy: marks position `pos`'s slot as being written, before its payload is.
    #[inline]
    pub(crate) fn begin_write(&self, pos: u64) {
        self.seq(pos).store(writing_seq(pos), Ordering::Relaxed);
        // SYNC POINT: Release fence: the mark is ordered before the payload writes
        // that follow; pairs with the reader's Acquire fence in `still_intact`.
        fence(Ordering::Release);
    }

    /// Publishes position `pos` to the subscribers.
    #[inline]
    pub(crate) fn publish(&self, pos: u64) {
        // SYNC POINT: Release pairs with the Acquire in `find`.
        self.seq(pos).store(committed_seq(pos), Ordering::Release);
    }

    /// The stored tail (Acquire: pairs with the Release store after each commit).
    #[inline]
    pub(crate) fn tail(&self) -> u64 {
        self.header().publ.tail.load(Ordering::Acquire)
    }

    /// The committed frontier: the first position at or after the stored tail that is
    /// not committed. Recovers the tail of a publisher that died mid-commit.
    pub(crate) fn committed_frontier(&self) -> u64 {
        let tail = self.tail();
        let mut pos = tail;
        while pos.wrapping_sub(tail) < self.geo.capacity && self.is_committed(pos) {
            pos = pos.wrapping_add(1);
        }
        pos
    }

    /// The slowest claimed cursor's position, clamped into `[tail - cap, tail]` (a
    /// value outside it is corrupt or a joiner's stale line; the clamp keeps a hostile
    /// word from letting the publisher overwrite more than a ring), or `tail` if none.
    pub(crate) fn slowest(&self, tail: u64) -> u64 {
        let lo = tail.saturating_sub(self.geo.capacity);
        let mut min = tail;
        for i in 0..self.geo.subs {
            let c = self.cursor(i).expect("i < subs");
            if owner_holder(c.owner.load(Ordering::Acquire)) == 0 {
                continue;
            }
            // SYNC POINT: Acquire pairs with the subscriber's Release store in
            // `SubCursor::release`: its reads of the slots below are done.
            let pos = c.pos.load(Ordering::Acquire);
            min = min.min(pos.clamp(lo, tail));
        }
        min
    }

    /// Cursors whose position holds the publisher back from writing `want` positions
    /// from `tail`: `(line, owner word)`.
    pub(crate) fn laggards(&self, tail: u64, want: u64) -> impl Iterator<Item = (u32, u64)> + '_ {
        let need = tail.wrapping_add(want).saturating_sub(self.geo.capacity);
        (0..self.geo.subs).filter_map(move |i| {
            let c = self.cursor(i).expect("i < subs");
            let owner = c.owner.load(Ordering::Acquire);
            (owner_holder(owner) != 0 && c.pos.load(Ordering::Acquire) < need).then_some((i, owner))
        })
    }

    /// Vacates cursor line `i` if it still has owner word `owner` (a CAS: never a line
    /// someone claimed since). Returns whether it did.
    pub(crate) fn vacate_cursor(&self, i: u32, owner: u64) -> bool {
        let Some(c) = self.cursor(i) else {
            return false;
        };
        // A sleeper that left (or died) registered: take it out of the count first,
        // while the line is still ours to touch.
        if c.asleep.swap(0, Ordering::Relaxed) != 0 {
            let _ = self.header().wait.subs_asleep.fetch_update(
                Ordering::Relaxed,
                Ordering::Relaxed,
                |n| n.checked_sub(1),
            );
        }
        // Keep the generation; holder 0 marks the line free.
        // SYNC POINT: Release pairs with the next claimer's Acquire CAS.
        c.owner
            .compare_exchange(
                owner,
                owner & !0xffff_ffff,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Claims a free cursor line for holder slot `me`; returns the line and its owner
    /// word, or `None` if every line is taken.
    pub(crate) fn claim_cursor(&self, me: u32) -> Option<(u32, u64)> {
        for i in 0..self.geo.subs {
            let c = self.cursor(i).expect("i < subs");
            let cur = c.owner.load(Ordering::Relaxed);
            if owner_holder(cur) != 0 {
                continue;
            }
            let next = ((cur >> 32).wrapping_add(1) << 32) | (me as u64 + 1);
            // SYNC POINT: Acquire pairs with the Release of `vacate_cursor`.
            if c.owner
                .compare_exchange(cur, next, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Some((i, next));
            }
        }
        None
    }

    /// The sweep's recovery for dead holder slot `slot`: vacates the publisher role
    /// (recomputing its tail) and every cursor it owned. Returns `(publisher vacated,
    /// cursors dropped)`.
    pub(crate) fn recover(&self, slot: u32) -> (bool, u32) {
        let hdr = self.header();
        let me = slot.wrapping_add(1);
        let mut publisher = false;
        if hdr.ctl.publisher.load().holder == me {
            // It stored tail after its last finished commit: step over any position it
            // committed after that.
            let frontier = self.committed_frontier();
            hdr.publ.tail.store(frontier, Ordering::Release);
            hdr.wait.pub_asleep.store(0, Ordering::Relaxed);
            // A CAS: only from the dead holder. Its Release orders the tail above
            // before the successor's claim.
            publisher = hdr.ctl.publisher.vacate_dead(me);
        }
        let mut dropped = 0;
        for i in 0..self.geo.subs {
            let owner = self
                .cursor(i)
                .expect("i < subs")
                .owner
                .load(Ordering::Acquire);
            if owner_holder(owner) == me && self.vacate_cursor(i, owner) {
                dropped += 1;
            }
        }
        if dropped > 0 {
            hdr.ctl
                .dropped_dead
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        (publisher, dropped)
    }
}

#[cfg(not(loom))]
impl BcastView {
    /// A snapshot for `tally inspect`: policy, publisher, each subscriber's position.
    pub(crate) fn describe(&self) -> crate::segment::BroadcastInfo {
        let hdr = self.header();
        let tail = self.tail();
        let st = hdr.ctl.publisher.load();
        let subscribers = (0..self.geo.subs)
            .filter_map(|i| {
                let c = self.cursor(i).expect("i < subs");
                let holder = owner_holder(c.owner.load(Ordering::Acquire)).checked_sub(1)?;
                let position = c.pos.load(Ordering::Acquire);
                Some(crate::segment::SubscriberInfo {
                    line: i,
                    holder_slot: holder,
                    position,
                    lag: tail.saturating_sub(position),
                    lagged: c.lagged.load(Ordering::Relaxed),
                })
            })
            .collect();
        crate::segment::BroadcastInfo {
            policy: if self.geo.lossy() {
                "lossy"
            } else {
                "lossless"
            },
            capacity: self.geo.capacity,
            slot_bytes: self.geo.stride as u64,
            max_message: match self.geo.flavor {
                FLAVOR_BYTES => self.geo.payload_size.saturating_sub(8) as u64,
                _ => self.geo.payload_size as u64,
            },
            tail,
            publisher: crate::segment::RoleInfo {
                holder_slot: st.holder_slot(),
                claims: st.claims,
                last_exit: match st.exit {
                    crate::objects::role::Exit::None => "none",
                    crate::objects::role::Exit::Closed => "closed",
                    crate::objects::role::Exit::Crashed => "crashed",
                },
            },
            subscribers,
            subscribers_ever: hdr.ctl.subscribers_ever.load(Ordering::Relaxed),
            dropped_dead: hdr.ctl.dropped_dead.load(Ordering::Relaxed),
        }
    }
}

// --- the publisher's cursor ----------------------------------------------------------------

/// The publisher's private cursor: the hot path, free of system calls and locks.
pub(crate) struct PubCursor {
    pub view: BcastView,
    /// Next position to write.
    pub tail: u64,
    /// Lossless: positions below it may be written without rescanning.
    pub limit: u64,
}

impl PubCursor {
    /// A cursor continuing where the ring's last publisher stopped.
    pub(crate) fn resume(view: BcastView) -> Self {
        // The claim CAS (Acquire) ordered us after the predecessor's last tail store
        // (or the recovery's).
        let tail = view.tail();
        PubCursor {
            view,
            tail,
            limit: tail,
        }
    }

    /// How many of `want` positions from `tail` may be written now (at most a ring).
    #[inline]
    pub(crate) fn room(&mut self, want: u64) -> u64 {
        let want = want.min(self.view.geo.capacity);
        if self.view.geo.lossy() {
            return want;
        }
        let free = self.limit.saturating_sub(self.tail);
        if free >= want {
            return want;
        }
        self.rescan().saturating_sub(self.tail).min(want)
    }

    /// Lossless: recomputes `limit` from the cursors (the Dekker side of the publisher:
    /// store the limit, fence, scan again until no cursor below it appears).
    #[cold]
    pub(crate) fn rescan(&mut self) -> u64 {
        let cap = self.view.geo.capacity;
        let line = &self.view.header().publ;
        let mut slowest = self.view.slowest(self.tail);
        loop {
            let limit = slowest.wrapping_add(cap);
            line.limit.store(limit, Ordering::Relaxed);
            // SYNC POINT: SeqCst fence pairs with the joiner's in `SubCursor::join`:
            // either this scan sees its cursor, or it sees the limit stored above.
            fence(Ordering::SeqCst);
            let again = self.view.slowest(self.tail);
            if again >= slowest {
                self.limit = limit;
                return limit;
            }
            slowest = again;
        }
    }

    /// Lossy: marks `n` positions from `tail` as being written (before any payload).
    #[inline]
    pub(crate) fn begin(&self, n: u64) {
        if self.view.geo.lossy() {
            for i in 0..n {
                self.view.begin_write(self.tail.wrapping_add(i));
            }
        }
    }

    /// Publishes `n` written positions from `tail`, then the new tail. Returns whether
    /// subscribers may be asleep (the handle then wakes them).
    #[inline]
    pub(crate) fn commit(&mut self, n: u64) -> bool {
        let first = self.tail;
        for i in 0..n {
            self.view.publish(first.wrapping_add(i));
        }
        self.tail = first.wrapping_add(n);
        // SYNC POINT: Release pairs with the Acquire in `BcastView::tail` (successor,
        // joiner, lagging reader): the seq stores above come first.
        self.view
            .header()
            .publ
            .tail
            .store(self.tail, Ordering::Release);
        self.view.header().wait.subs_asleep.load(Ordering::Relaxed) != 0
    }
}

// --- a subscriber's cursor --------------------------------------------------------------

/// Where a subscriber that joins late starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JoinAt {
    /// The next message committed after it joined.
    Newest,
    /// The oldest message still in the ring (lossless: that no live subscriber has
    /// freed and the publisher may not yet overwrite).
    Oldest,
}

/// A subscriber's private cursor.
pub(crate) struct SubCursor {
    pub view: BcastView,
    /// Its cursor line.
    pub line: u32,
    /// Its owner word there.
    pub owner: u64,
    /// Next position to read.
    pub pos: u64,
}

impl SubCursor {
    /// Joins at `at`, on the claimed cursor line `line` (owner word `owner`).
    pub(crate) fn join(view: BcastView, line: u32, owner: u64, at: JoinAt) -> Self {
        let c = view.cursor(line).expect("a claimed line is in range");
        let cap = view.geo.capacity;
        let tail = view.tail();
        let lossy = view.geo.lossy();
        let mut pos = match at {
            JoinAt::Newest => tail,
            JoinAt::Oldest if lossy => tail.saturating_sub(cap),
            JoinAt::Oldest => view
                .header()
                .publ
                .limit
                .load(Ordering::Relaxed)
                .saturating_sub(cap)
                .clamp(tail.saturating_sub(cap), tail),
        };
        c.pos.store(pos, Ordering::Relaxed);
        if !lossy {
            for _ in 0..JOIN_ROUNDS {
                // SYNC POINT: SeqCst fence pairs with the publisher's in
                // `PubCursor::rescan`: it sees our cursor, or we see its limit.
                fence(Ordering::SeqCst);
                let limit = view.header().publ.limit.load(Ordering::Relaxed);
                let floor = limit.saturating_sub(cap);
                if pos >= floor {
                    break;
                }
                pos = floor;
                c.pos.store(pos, Ordering::Relaxed);
            }
        }
        SubCursor {
            view,
            line,
            owner,
            pos,
        }
    }

    #[inline]
    fn line(&self) -> &Cursor {
        self.view
            .cursor(self.line)
            .expect("a claimed line is in range")
    }

    /// How many positions from `pos` are committed, up to `max`.
    #[inline]
    pub(crate) fn available(&self, max: u64) -> u64 {
        let mut n = 0;
        while n < max && self.view.is_committed(self.pos.wrapping_add(n)) {
            n += 1;
        }
        n
    }

    /// Moves past `n` read positions. Returns whether the publisher may be asleep.
    #[inline]
    pub(crate) fn release(&mut self, n: u64) -> bool {
        self.pos = self.pos.wrapping_add(n);
        // SYNC POINT: Release pairs with the publisher's Acquire in `slowest`.
        self.line().pos.store(self.pos, Ordering::Release);
        !self.view.geo.lossy() && self.view.header().wait.pub_asleep.load(Ordering::Relaxed) != 0
    }

    /// Lossy: this subscriber was overrun at `pos` (its slot holds `seen`, a later lap,
    /// or a read of `at_least` messages from there was torn). Moves to the oldest
    /// message still in the ring, at least `at_least` on, and returns how many
    /// positions it skipped.
    #[cold]
    pub(crate) fn overrun(&mut self, seen: u64, at_least: u64) -> u64 {
        let cap = self.view.geo.capacity;
        let tail = self.view.tail();
        // An honest `seen` is below tail + cap (written after tail reached
        // seen + 1 - batch); a larger one is corrupt and ignored. If it is at or past
        // tail it is being written now, and its slot's old message is gone too.
        let front = if seen < tail.saturating_add(cap) {
            tail.max(seen.saturating_add(1))
        } else {
            tail
        };
        let next = front
            .saturating_sub(cap)
            .max(self.pos.saturating_add(at_least.max(1)));
        let skipped = next - self.pos;
        self.pos = next;
        let line = self.line();
        line.pos.store(next, Ordering::Release);
        line.lagged.fetch_add(skipped, Ordering::Relaxed);
        skipped
    }
}
