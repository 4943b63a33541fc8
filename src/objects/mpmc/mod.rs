//! The MPMC ring's in-segment layout and lock-free algorithm.
//!
//! # Layout (object area of an `mpmc-ring` / `mpmc-byte-ring` segment)
//!
//! ```text
//! MpmcHeader            immutable params, then four 128-byte lines:
//!   tail                producers' claim hint: the next position to try
//!   head                consumers' claim hint
//!   wait                futex words and sleeper counts
//!   ctl                 handle counts ever, orphan count, skip/redelivery totals
//! roles                 one AtomicU32 per holder-table slot: its producer handles (low
//!                       16 bits) and consumer handles (high 16 bits)
//! slots                 capacity × stride; slot i = [state: u64][pad][payload]
//! ```
//!
//! # Protocol
//!
//! Every slot has a 64-bit state word: a position (44 bits, wrapping), a phase and,
//! while a handle works on it, that handle's holder-table slot:
//!
//! | phase | meaning | next |
//! |---|---|---|
//! | `Empty(p)` | free for the message of position `p` | a producer's CAS → `Writing(p, h)` |
//! | `Writing(p, h)` | holder `h` claimed `p` and is writing it | `h`'s store → `Committed(p)`; if `h` died: → `Empty(p + cap)` (skipped) |
//! | `Committed(p)` | message `p` is ready | a consumer's CAS → `Reading(p, h)` |
//! | `Reading(p, h)` | holder `h` holds message `p` in place | `h`'s store → `Empty(p + cap)`; if `h` died: → `Committed(p)` + orphan mark (redelivered) |
//!
//! A claim is a CAS on the slot itself and names its holder, so a claim whose holder
//! dies can always be found and undone: the sweep scans for the dead holder's slots,
//! and a peer blocked behind one probes the holder's liveness and undoes it itself.
//! `tail` and `head` are only hints of where to start: whoever finds the slot at the
//! hint already taken advances the hint by CAS (helping), so a claimer that dies
//! between its slot CAS and its hint CAS stalls nobody.
//!
//! An orphan (a message whose reader died, or that a consumer handle dropped unread)
//! sits behind `head`: consumers look for orphans before claiming at `head` while the
//! `orphans` count is not zero, and adopt one by CAS (at-least-once for that message).
//!
//! Orderings: a producer's claim CAS is Acquire (pairs with the Release store that
//! emptied the slot, so the previous reader is done with the payload); its commit is a
//! Release store (pairs with the consumer's Acquire load and claim CAS, so the payload
//! is visible); a consumer's release is a Release store of `Empty(p + cap)` (pairs
//! with the next producer's Acquire). Hints and counters are Relaxed: nobody reads data
//! through them.
//!
//! Every value read from shared memory is decoded into some state and compared, never
//! used as an index unmasked (P6); loops over hostile states are bounded.

// Under loom without tests nothing uses the algorithm: only the models do.
#![cfg_attr(all(loom, not(test)), allow(dead_code))]

#[cfg(all(test, loom))]
mod loom;

use crossbeam_utils::CachePadded;

use crate::atomics::{AtomicU32, AtomicU64, Ordering};

/// `b"TALLYMPC"`.
pub(crate) const MPMC_MAGIC: u64 = u64::from_le_bytes(*b"TALLYMPC");
/// Most slots a ring may have.
pub(crate) const MAX_CAPACITY: u64 = 1 << 30;
/// Typed payloads.
pub(crate) const FLAVOR_TYPED: u32 = 1;
/// Variable-length byte messages: payload = [len: u32][pad: u32][bytes].
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const FLAVOR_BYTES: u32 = 2;
/// Bytes of the state word at the start of each slot.
const STATE_LEN: usize = 8;
/// How many slots a claim may step over before it gives up (hostile states, or hints
/// lagging many laps behind): the caller sees `Full`/`Empty` and retries later.
const MAX_STEPS: u32 = 1 << 12;

// --- slot state words ------------------------------------------------------------------

const POS_BITS: u32 = 44;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const PHASE_SHIFT: u32 = 44;
const ORPHAN_BIT: u64 = 1 << 46;
const HOLDER_SHIFT: u32 = 48;

/// Where a slot is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Empty,
    Writing,
    Committed,
    Reading,
}

/// A decoded slot state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotState {
    /// Position, 44 bits (wrapping).
    pub pos: u64,
    pub phase: Phase,
    /// A committed message whose reader died or gave it back: redeliver it.
    pub orphan: bool,
    /// Holder slot + 1 of the handle writing or reading it; 0 for none.
    pub holder: u32,
}

impl SlotState {
    pub(crate) fn decode(w: u64) -> Self {
        SlotState {
            pos: w & POS_MASK,
            phase: match (w >> PHASE_SHIFT) & 3 {
                0 => Phase::Empty,
                1 => Phase::Writing,
                2 => Phase::Committed,
                _ => Phase::Reading,
            },
            orphan: w & ORPHAN_BIT != 0,
            holder: (w >> HOLDER_SHIFT) as u32,
        }
    }

    pub(crate) fn encode(self) -> u64 {
        let phase = match self.phase {
            Phase::Empty => 0,
            Phase::Writing => 1,
            Phase::Committed => 2,
            Phase::Reading => 3,
        };
        (self.pos & POS_MASK)
            | (phase << PHASE_SHIFT)
            | if self.orphan { ORPHAN_BIT } else { 0 }
            | ((self.holder as u64 & 0xffff) << HOLDER_SHIFT)
    }

    fn at(pos: u64, phase: Phase, holder: u32) -> Self {
        SlotState {
            pos: pos & POS_MASK,
            phase,
            orphan: false,
            holder,
        }
    }

    /// The holder-table slot named by the word, if any.
    pub(crate) fn holder_slot(self) -> Option<u32> {
        self.holder.checked_sub(1)
    }
}

/// `a - b` in the 44-bit position space, as a signed distance.
fn lap_diff(a: u64, b: u64) -> i64 {
    let d = a.wrapping_sub(b) & POS_MASK;
    if d >= 1 << (POS_BITS - 1) {
        d as i64 - (1i64 << POS_BITS)
    } else {
        d as i64
    }
}

// --- header --------------------------------------------------------------------------

/// Futex words and sleeper counts.
#[repr(C)]
pub(crate) struct WaitWords {
    /// Bumped by a commit (or a recovery) when consumers sleep; consumers sleep on it.
    pub data: AtomicU32,
    /// Bumped by a release (or a recovery) when producers sleep; producers sleep on it.
    pub space: AtomicU32,
    /// Consumers that may be asleep on `data`.
    pub consumers_asleep: AtomicU32,
    /// Producers that may be asleep on `space`.
    pub producers_asleep: AtomicU32,
}

/// Counters that change only when handles come and go or crashes are repaired.
#[repr(C)]
pub(crate) struct Control {
    /// Producer handles ever made (0: none yet; saturates).
    pub producers_ever: AtomicU32,
    /// Consumer handles ever made.
    pub consumers_ever: AtomicU32,
    /// Bumped whenever a handle comes or goes: a futex word for waiting on peers.
    pub roles_changed: AtomicU32,
    /// Orphaned messages waiting for a consumer to adopt them.
    pub orphans: AtomicU32,
    /// Positions skipped because their writer died (over the ring's life).
    pub skipped: AtomicU64,
    /// Messages redelivered after their reader died or gave them back.
    pub redelivered: AtomicU64,
}

/// The ring header at the start of the object area.
#[repr(C)]
pub(crate) struct MpmcHeader {
    pub magic: u64,
    pub capacity: u64,
    pub stride: u32,
    pub payload_offset: u32,
    pub payload_size: u32,
    pub flavor: u32,
    /// Entries of the per-holder role-count array (the holder table's capacity).
    pub holders: u32,
    pub _pad: u32,
    pub tail: CachePadded<AtomicU64>,
    pub head: CachePadded<AtomicU64>,
    pub wait: CachePadded<WaitWords>,
    pub ctl: CachePadded<Control>,
}

/// Immutable geometry of an MPMC ring, computed or validated into private memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub capacity: u64,
    pub stride: usize,
    pub payload_offset: usize,
    pub payload_size: usize,
    pub flavor: u32,
    pub holders: u32,
}

impl Geometry {
    /// Geometry for `capacity` slots of `payload_size` bytes aligned to `align`, with
    /// role counts for `holders` holder slots.
    pub(crate) fn new(
        capacity: usize,
        payload_size: usize,
        align: usize,
        flavor: u32,
        holders: u32,
    ) -> Option<Self> {
        let (capacity, payload_offset, stride) =
            super::slot_shape(capacity, MAX_CAPACITY, STATE_LEN, payload_size, align)?;
        Some(Geometry {
            capacity,
            stride,
            payload_offset,
            payload_size,
            flavor,
            holders,
        })
    }

    /// Offset of the role-count array.
    fn roles_offset() -> usize {
        std::mem::size_of::<MpmcHeader>().next_multiple_of(128)
    }

    /// Offset of the slots.
    fn slots_offset(&self) -> Option<usize> {
        Self::roles_offset()
            .checked_add((self.holders as usize).checked_mul(4)?)?
            .checked_next_multiple_of(128)
    }

    /// Total object-area bytes.
    pub(crate) fn object_len(&self) -> Option<usize> {
        self.slots_offset()?
            .checked_add((self.capacity as usize).checked_mul(self.stride)?)
    }
}

/// How positions map to slots: consecutive positions go to different cache lines
/// (position `i` to line `i % lines`, place `i / lines` in it), so a producer writing
/// position `p + 1` and a consumer claiming `p` never share a line, which they would
/// with slots of less than a line laid out in order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stripe {
    mask: u64,
    /// log2 of the slots sharing a 64-byte line (0 for slots of a line or more).
    per_line_shift: u32,
    /// log2 of `capacity >> per_line_shift`: how many lines the slots fill.
    lines_shift: u32,
}

impl Stripe {
    pub(crate) fn of(geo: &Geometry) -> Self {
        // Slots smaller than a line are a power of two (see `Geometry::new`); a hostile
        // stride that is not gets no striping, only the plain layout.
        let per_line_shift = if geo.stride < 64 && geo.stride.is_power_of_two() {
            (64 / geo.stride as u64)
                .trailing_zeros()
                .min(geo.capacity.trailing_zeros())
        } else {
            0
        };
        Stripe {
            mask: geo.capacity - 1,
            per_line_shift,
            lines_shift: (geo.capacity >> per_line_shift).trailing_zeros(),
        }
    }

    /// The slot index of position `pos`: a bijection of `0..capacity` (the line and
    /// place fields are disjoint and both in range).
    #[inline]
    pub(crate) fn index(&self, pos: u64) -> usize {
        let i = pos & self.mask;
        let lines_mask = (1u64 << self.lines_shift) - 1;
        (((i & lines_mask) << self.per_line_shift) | (i >> self.lines_shift)) as usize
    }
}

/// Writes a fresh header, zero role counts and `Empty(i)` slot states at `base`.
///
/// # Safety
/// `base` must be valid for writes of `geo.object_len()` bytes, aligned to 128, and not
/// yet shared with anyone.
pub(crate) unsafe fn init(base: *mut u8, geo: &Geometry) {
    let hdr = MpmcHeader {
        magic: MPMC_MAGIC,
        capacity: geo.capacity,
        stride: geo.stride as u32,
        payload_offset: geo.payload_offset as u32,
        payload_size: geo.payload_size as u32,
        flavor: geo.flavor,
        holders: geo.holders,
        _pad: 0,
        tail: CachePadded::new(AtomicU64::new(0)),
        head: CachePadded::new(AtomicU64::new(0)),
        wait: CachePadded::new(WaitWords {
            data: AtomicU32::new(0),
            space: AtomicU32::new(0),
            consumers_asleep: AtomicU32::new(0),
            producers_asleep: AtomicU32::new(0),
        }),
        ctl: CachePadded::new(Control {
            producers_ever: AtomicU32::new(0),
            consumers_ever: AtomicU32::new(0),
            roles_changed: AtomicU32::new(0),
            orphans: AtomicU32::new(0),
            skipped: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
        }),
    };
    // SAFETY: the caller guarantees room, alignment and exclusivity.
    unsafe { (base as *mut MpmcHeader).write(hdr) };
    let roles = Geometry::roles_offset();
    for i in 0..geo.holders as usize {
        // SAFETY: inside the role array (i < holders), 4-aligned.
        unsafe { (base.add(roles + i * 4) as *mut AtomicU32).write(AtomicU32::new(0)) };
    }
    let slots = geo.slots_offset().expect("validated by object_len");
    let stripe = Stripe::of(geo);
    for i in 0..geo.capacity {
        let state = SlotState::at(i, Phase::Empty, 0).encode();
        // SAFETY: slot i's state word lies inside the object area and is 8-aligned
        // (slots_offset and stride are multiples of 8).
        unsafe {
            (base.add(slots + stripe.index(i) * geo.stride) as *mut AtomicU64)
                .write(AtomicU64::new(state))
        };
    }
}

/// Reads and validates the geometry of an object area of `len` bytes.
///
/// # Safety
/// `base` must be valid for reads of `len` bytes and aligned to 128.
#[cfg(not(loom))]
pub(crate) unsafe fn read_geometry(base: *const u8, len: usize) -> Result<Geometry, String> {
    if len < Geometry::roles_offset() {
        return Err(format!(
            "object area of {len} bytes is smaller than an MPMC ring header"
        ));
    }
    let h = base as *const MpmcHeader;
    // SAFETY: the header lies within `len` (checked above); volatile reads take one
    // snapshot of each field, which is validated before any use.
    let (magic, capacity, stride, payload_offset, payload_size, flavor, holders) = unsafe {
        (
            std::ptr::read_volatile(&raw const (*h).magic),
            std::ptr::read_volatile(&raw const (*h).capacity),
            std::ptr::read_volatile(&raw const (*h).stride),
            std::ptr::read_volatile(&raw const (*h).payload_offset),
            std::ptr::read_volatile(&raw const (*h).payload_size),
            std::ptr::read_volatile(&raw const (*h).flavor),
            std::ptr::read_volatile(&raw const (*h).holders),
        )
    };
    if magic != MPMC_MAGIC {
        return Err("bad MPMC ring magic".into());
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
        holders,
    };
    if geo.payload_offset < STATE_LEN
        || geo
            .payload_offset
            .checked_add(geo.payload_size)
            .is_none_or(|end| end > geo.stride)
        || !geo.stride.is_multiple_of(8)
        || holders > crate::segment::layout::MAX_HOLDERS
    {
        return Err(format!("slot geometry {geo:?} is inconsistent"));
    }
    if geo.object_len() != Some(len) {
        return Err(format!(
            "{capacity} slots of {stride} bytes and {holders} role counts do not fill the {len}-byte object area"
        ));
    }
    Ok(geo)
}

// --- the view and the algorithm ----------------------------------------------------------

/// What a producer's claim found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteClaim {
    /// Position claimed: write its payload, then commit it.
    Got(u64),
    /// No free slot. `blocker` is the state of the slot that is in the way, so a
    /// caller may check whether its holder is dead.
    Full { blocker: SlotState },
}

/// What a consumer's claim found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadClaim {
    /// Message at this position claimed: read it in place, then release it.
    Got(u64),
    /// Nothing committed at `head`.
    Empty,
    /// The slot at `head` is claimed: a producer has not committed it yet, or a
    /// consumer still holds the previous lap's message there.
    InFlight(SlotState),
}

/// A process-private view of an MPMC ring: validated geometry plus pointers.
#[derive(Clone, Copy)]
pub(crate) struct MpmcView {
    hdr: *const MpmcHeader,
    roles: *const AtomicU32,
    slots: *mut u8,
    mask: u64,
    stripe: Stripe,
    pub geo: Geometry,
}

// SAFETY: pointers into shared memory whose fields are atomics, or payload bytes that
// the slot-state protocol gives to one handle at a time.
unsafe impl Send for MpmcView {}
// SAFETY: as above.
unsafe impl Sync for MpmcView {}

impl MpmcView {
    /// # Safety
    /// `base` must point at an initialised ring with geometry `geo` that stays mapped
    /// while the view (and its copies) are used.
    pub(crate) unsafe fn new(base: *mut u8, geo: Geometry) -> Self {
        let slots = geo.slots_offset().expect("validated geometry");
        MpmcView {
            hdr: base as *const MpmcHeader,
            // SAFETY: the role array and the slots lie inside the object area.
            roles: unsafe { base.add(Geometry::roles_offset()) } as *const AtomicU32,
            // SAFETY: as above.
            slots: unsafe { base.add(slots) },
            mask: geo.capacity - 1,
            stripe: Stripe::of(&geo),
            geo,
        }
    }

    #[inline]
    pub(crate) fn header(&self) -> &MpmcHeader {
        // SAFETY: `new`'s contract: the header is initialised and mapped.
        unsafe { &*self.hdr }
    }

    /// The role counts of holder slot `slot` (producers low 16 bits, consumers high).
    pub(crate) fn roles(&self, slot: u32) -> Option<&AtomicU32> {
        // SAFETY: in bounds (checked), 4-aligned, initialised at create.
        (slot < self.geo.holders).then(|| unsafe { &*self.roles.add(slot as usize) })
    }

    /// The slot of position `pos` (striped across lines: see [`Stripe`]).
    #[inline]
    fn slot(&self, pos: u64) -> *mut u8 {
        // SAFETY: `Stripe::index` is below the capacity, so the slot lies inside the
        // slots area.
        unsafe { self.slots.add(self.stripe.index(pos) * self.geo.stride) }
    }

    #[inline]
    pub(crate) fn state(&self, pos: u64) -> &AtomicU64 {
        // SAFETY: each slot starts with an initialised, 8-aligned state word.
        unsafe { &*(self.slot(pos) as *const AtomicU64) }
    }

    /// Pointer to the payload of position `pos`, valid for `geo.payload_size` bytes.
    #[inline]
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn payload(&self, pos: u64) -> *mut u8 {
        // SAFETY: payload_offset + payload_size <= stride (validated).
        unsafe { self.slot(pos).add(self.geo.payload_offset) }
    }

    /// Claims the next free position for holder slot `me`.
    pub(crate) fn try_write(&self, me: u32) -> WriteClaim {
        let tail = &self.header().tail;
        let mut pos = tail.load(Ordering::Relaxed);
        let mut last = SlotState::at(pos, Phase::Empty, 0);
        for _ in 0..MAX_STEPS {
            let word = self.state(pos);
            let raw = word.load(Ordering::Acquire);
            let st = SlotState::decode(raw);
            last = st;
            let d = lap_diff(st.pos, pos);
            if d < 0 {
                // The slot still holds an earlier lap's message: the ring is full.
                return WriteClaim::Full { blocker: st };
            }
            if d == 0 && st.phase == Phase::Empty {
                let mine = SlotState::at(pos, Phase::Writing, me + 1).encode();
                // SYNC POINT: Acquire pairs with the Release store that emptied the
                // slot (`release`, `skip`): its last reader is done with the payload.
                if word
                    .compare_exchange(raw, mine, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    advance(tail, pos);
                    return WriteClaim::Got(pos & POS_MASK);
                }
            } else {
                // Taken for `pos` by another producer (or later): help the hint on.
                advance(tail, pos);
            }
            pos = tail.load(Ordering::Relaxed);
        }
        WriteClaim::Full { blocker: last }
    }

    /// Publishes the claimed position `pos`. Returns whether a consumer may sleep.
    #[inline]
    pub(crate) fn commit(&self, pos: u64) -> bool {
        // SYNC POINT: Release pairs with the consumer's Acquire load/CAS in
        // `try_read`: the payload written before is visible to it.
        self.state(pos).store(
            SlotState::at(pos, Phase::Committed, 0).encode(),
            Ordering::Release,
        );
        self.header().wait.consumers_asleep.load(Ordering::Relaxed) != 0
    }

    /// Claims the next committed message for holder slot `me`: an orphan first, if any.
    pub(crate) fn try_read(&self, me: u32) -> ReadClaim {
        if self.header().ctl.orphans.load(Ordering::Relaxed) != 0
            && let Some(pos) = self.adopt_orphan(me)
        {
            return ReadClaim::Got(pos);
        }
        let head = &self.header().head;
        let mut pos = head.load(Ordering::Relaxed);
        for _ in 0..MAX_STEPS {
            let word = self.state(pos);
            let raw = word.load(Ordering::Acquire);
            let st = SlotState::decode(raw);
            let d = lap_diff(st.pos, pos);
            match st.phase {
                // An earlier lap's message still held (or being written): wait, or repair
                // it if its holder died.
                Phase::Writing | Phase::Reading if d < 0 => return ReadClaim::InFlight(st),
                _ if d < 0 => return ReadClaim::Empty,
                Phase::Committed if d == 0 => {
                    let mine = SlotState::at(pos, Phase::Reading, me + 1).encode();
                    // SYNC POINT: Acquire pairs with the producer's Release `commit`.
                    if word
                        .compare_exchange(raw, mine, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        if st.orphan {
                            self.adopted();
                        }
                        advance(head, pos);
                        return ReadClaim::Got(pos & POS_MASK);
                    }
                }
                Phase::Writing if d == 0 => return ReadClaim::InFlight(st),
                Phase::Empty if d == 0 => return ReadClaim::Empty,
                // Read by another consumer, or skipped: help the hint on.
                _ => advance(head, pos),
            }
            pos = head.load(Ordering::Relaxed);
        }
        ReadClaim::Empty
    }

    /// Frees the read position `pos` for the producer of the next lap. Returns whether
    /// a producer may sleep.
    #[inline]
    pub(crate) fn release(&self, pos: u64) -> bool {
        let next = SlotState::at(pos.wrapping_add(self.geo.capacity), Phase::Empty, 0);
        // SYNC POINT: Release pairs with the next producer's Acquire claim CAS: our
        // reads of the payload happen before its writes.
        self.state(pos).store(next.encode(), Ordering::Release);
        self.header().wait.producers_asleep.load(Ordering::Relaxed) != 0
    }

    /// A claimed write that will never be committed (its writer died, or gave it up):
    /// the position becomes free for the next lap, and consumers step over it. Only
    /// from `Writing(pos, holder)`.
    pub(crate) fn skip(&self, pos: u64, holder: u32) -> bool {
        let from = SlotState::at(pos, Phase::Writing, holder).encode();
        let to = SlotState::at(pos.wrapping_add(self.geo.capacity), Phase::Empty, 0).encode();
        // SYNC POINT: Release pairs with the next producer's Acquire claim CAS (the
        // half-written payload is dead; nobody reads it).
        let done = self
            .state(pos)
            .compare_exchange(from, to, Ordering::Release, Ordering::Relaxed)
            .is_ok();
        if done {
            self.header().ctl.skipped.fetch_add(1, Ordering::Relaxed);
        }
        done
    }

    /// A message held in place that its reader will never release (it died, or gave
    /// it back): mark it for redelivery. Only from `Reading(pos, holder)`.
    pub(crate) fn orphan(&self, pos: u64, holder: u32) -> bool {
        let ctl = &self.header().ctl;
        // Counted first, so a consumer that adopts it never counts below zero.
        ctl.orphans.fetch_add(1, Ordering::Relaxed);
        let from = SlotState::at(pos, Phase::Reading, holder).encode();
        let mut to = SlotState::at(pos, Phase::Committed, 0);
        to.orphan = true;
        // SYNC POINT: Release pairs with the adopter's Acquire CAS: the payload, which
        // nobody changed, is what the producer committed.
        let done = self
            .state(pos)
            .compare_exchange(from, to.encode(), Ordering::Release, Ordering::Relaxed)
            .is_ok();
        if !done {
            ctl.orphans.fetch_sub(1, Ordering::Relaxed);
        }
        done
    }

    /// Adopts an orphaned message, if one is there.
    fn adopt_orphan(&self, me: u32) -> Option<u64> {
        for i in 0..self.geo.capacity {
            let word = self.state(i);
            let raw = word.load(Ordering::Acquire);
            let st = SlotState::decode(raw);
            if st.phase != Phase::Committed || !st.orphan || st.pos & self.mask != i {
                continue;
            }
            let mine = SlotState::at(st.pos, Phase::Reading, me + 1).encode();
            // SYNC POINT: Acquire pairs with the Release CAS in `orphan`.
            if word
                .compare_exchange(raw, mine, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                self.adopted();
                return Some(st.pos);
            }
        }
        None
    }

    fn adopted(&self) {
        let ctl = &self.header().ctl;
        // Saturating: a hostile count must not wrap to "many orphans" for ever.
        let _ = ctl
            .orphans
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        ctl.redelivered.fetch_add(1, Ordering::Relaxed);
    }

    /// The sweep's recovery for a dead holder of table slot `slot`: its claimed
    /// writes are skipped, the messages it held are redelivered, its handle counts
    /// are cleared. Returns how many slots it repaired.
    pub(crate) fn recover(&self, slot: u32) -> u64 {
        let holder = slot.wrapping_add(1);
        let mut repaired = 0;
        if let Some(r) = self.roles(slot) {
            r.store(0, Ordering::Relaxed);
        }
        for i in 0..self.geo.capacity {
            let st = SlotState::decode(self.state(i).load(Ordering::Acquire));
            if st.holder != holder || st.pos & self.mask != i {
                continue;
            }
            let done = match st.phase {
                Phase::Writing => self.skip(st.pos, holder),
                Phase::Reading => self.orphan(st.pos, holder),
                _ => false,
            };
            repaired += done as u64;
        }
        repaired
    }

    /// Committed messages between the `head` and `tail` hints, plus orphans waiting
    /// for redelivery (a snapshot; reads at most one word per claimed position).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn committed(&self) -> u64 {
        let head = self.header().head.load(Ordering::Relaxed);
        let tail = self.header().tail.load(Ordering::Relaxed);
        let span = lap_diff(tail, head).clamp(0, self.geo.capacity as i64) as u64;
        let mut n = 0;
        for k in 0..span {
            let pos = head.wrapping_add(k);
            let st = SlotState::decode(self.state(pos).load(Ordering::Acquire));
            if lap_diff(st.pos, pos) == 0 && st.phase == Phase::Committed {
                n += 1;
            }
        }
        n + self.header().ctl.orphans.load(Ordering::Relaxed) as u64
    }

    /// Whether a consumer's claim may succeed now (no claim made).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn read_ready(&self) -> bool {
        if self.header().ctl.orphans.load(Ordering::Relaxed) != 0 {
            return true;
        }
        let pos = self.header().head.load(Ordering::Relaxed);
        let st = SlotState::decode(self.state(pos).load(Ordering::Acquire));
        let d = lap_diff(st.pos, pos);
        d > 0 || (d == 0 && matches!(st.phase, Phase::Committed | Phase::Reading))
    }

    /// Whether a producer's claim may succeed now (no claim made).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn write_ready(&self) -> bool {
        let pos = self.header().tail.load(Ordering::Relaxed);
        let st = SlotState::decode(self.state(pos).load(Ordering::Acquire));
        lap_diff(st.pos, pos) >= 0
    }

    /// The state of the slot at `head`: what a waiting consumer is blocked on.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn state_at_head(&self) -> SlotState {
        let pos = self.header().head.load(Ordering::Relaxed);
        SlotState::decode(self.state(pos).load(Ordering::Acquire))
    }
}

#[cfg(not(loom))]
impl MpmcView {
    /// A snapshot of the ring for `tally inspect`.
    pub(crate) fn describe(&self) -> crate::segment::RingInfo {
        use crate::segment::{ClaimInfo, RingInfo, RoleInfo};
        let hdr = self.header();
        let (mut producers, mut consumers) = (0, 0);
        for s in 0..self.geo.holders {
            if let Some(r) = self.roles(s) {
                let r = r.load(Ordering::Relaxed);
                producers += r & 0xffff;
                consumers += r >> 16;
            }
        }
        let claims = (0..self.geo.capacity)
            .filter_map(|i| {
                let st = SlotState::decode(self.state(i).load(Ordering::Relaxed));
                let writing = match st.phase {
                    Phase::Writing => true,
                    Phase::Reading => false,
                    _ => return None,
                };
                Some(ClaimInfo {
                    position: st.pos,
                    writing,
                    holder_slot: st.holder_slot()?,
                })
            })
            .collect();
        let handles = |ever: &AtomicU32| RoleInfo {
            holder_slot: None,
            claims: ever.load(Ordering::Relaxed),
            last_exit: "none",
        };
        RingInfo {
            capacity: self.geo.capacity,
            slot_bytes: self.geo.stride as u64,
            max_message: match self.geo.flavor {
                FLAVOR_BYTES => self.geo.payload_size.saturating_sub(8) as u64,
                _ => self.geo.payload_size as u64,
            },
            head: hdr.head.load(Ordering::Relaxed),
            committed: self.committed(),
            producer: handles(&hdr.ctl.producers_ever),
            consumer: handles(&hdr.ctl.consumers_ever),
            producer_handles: producers,
            consumer_handles: consumers,
            claims,
            skipped: hdr.ctl.skipped.load(Ordering::Relaxed),
            redelivered: hdr.ctl.redelivered.load(Ordering::Relaxed),
            orphans: hdr.ctl.orphans.load(Ordering::Relaxed),
        }
    }
}

/// Moves a claim hint from `pos` to `pos + 1`, if nobody did yet.
#[inline]
fn advance(hint: &AtomicU64, pos: u64) {
    // Relaxed: a hint orders nothing; the slot states carry all data ordering.
    let _ = hint.compare_exchange(
        pos,
        pos.wrapping_add(1) & POS_MASK,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_distances_wrap() {
        for st in [
            SlotState::at(0, Phase::Empty, 0),
            SlotState::at(POS_MASK, Phase::Writing, 4096),
            SlotState::at(7, Phase::Reading, 1),
        ] {
            assert_eq!(SlotState::decode(st.encode()), st);
        }
        assert_eq!(lap_diff(3, 1), 2);
        assert_eq!(lap_diff(1, 3), -2);
        assert_eq!(lap_diff(0, POS_MASK), 1);
        assert_eq!(lap_diff(POS_MASK, 0), -1);
        for raw in [0, u64::MAX, 1 << 63] {
            let _ = SlotState::decode(raw); // every word decodes
        }
    }

    #[test]
    fn stripes_are_a_bijection_and_spread_neighbours_over_lines() {
        for (capacity, stride) in [
            (1u64, 16usize),
            (2, 32),
            (8, 16),
            (4096, 32),
            (64, 128),
            (16, 64),
        ] {
            let geo = Geometry {
                capacity,
                stride,
                payload_offset: 8,
                payload_size: 8,
                flavor: FLAVOR_TYPED,
                holders: 1,
            };
            let s = Stripe::of(&geo);
            let mut seen = vec![false; capacity as usize];
            for p in 0..capacity {
                let i = s.index(p);
                assert!(!seen[i], "{capacity}x{stride}: {p} collides");
                seen[i] = true;
                if capacity * stride as u64 >= 128 && stride < 64 {
                    let line = |q: u64| s.index(q) * stride / 64;
                    assert_ne!(
                        line(p),
                        line(p + 1),
                        "{capacity}x{stride}: {p} shares a line"
                    );
                }
            }
        }
    }
}
