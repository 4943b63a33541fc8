//! The SPSC ring's in-segment layout and lock-free algorithm.
//!
//! # Layout (object area of a `spsc-ring` segment)
//!
//! ```text
//! RingHeader                      immutable params, then four 128-byte lines:
//!   ctl   producer/consumer role words and claim generations (rarely written)
//!   prod  tail: next position the producer will commit        (producer writes)
//!   cons  head: next position the consumer will release, and     (consumer writes)
//!         `released`, head's low 32 bits: the futex word a full producer sleeps on
//!   wait  sleeper flags                                         (written only to sleep)
//! slots   capacity × stride bytes; slot i = [seq: u32][pad][payload]
//! ```
//!
//! # Protocol
//!
//! Positions are `u64` and never wrap; slot of position `p` is `p & mask`. A slot is
//! *committed for `p`* when its `seq` equals `(p as u32).wrapping_add(1)`; any other value
//! (a previous lap, zero, a hostile write) means "not yet". The consumer polls the seq
//! word of the slot it wants, which sits in the same cache line as the payload: one
//! cache-line transfer per message, the physical floor. The producer records `tail`
//! only when it releases its role (the sweep recomputes it after a crash), and reads
//! `head` only when its cached copy says the ring is full.
//!
//! | word  | writer   | reader                         | pairs with                       |
//! |-------|----------|--------------------------------|----------------------------------|
//! | seq   | producer | consumer (Acquire)             | producer's Release in `commit`   |
//! | head  | consumer | producer when full (Acquire)   | consumer's Release in `release`  |
//! | tail  | producer at role release, sweep | successor producer | role word Release/Acquire, admin lock |
//!
//! Every index read from shared memory is masked before use (P6).

pub(crate) mod endpoint;
#[cfg(all(test, loom))]
mod loom;

use crossbeam_utils::CachePadded;

use crate::atomics::{AtomicU32, AtomicU64, Ordering};
use crate::objects::role::RoleWord;

/// `b"TALLYRNG"`.
pub(crate) const RING_MAGIC: u64 = u64::from_le_bytes(*b"TALLYRNG");
/// Most slots a ring may have.
pub(crate) const MAX_CAPACITY: u64 = 1 << 30;
/// Flavors of slot payload.
pub(crate) const FLAVOR_TYPED: u32 = 1;
/// Variable-length byte messages: payload = [len: u32][pad: u32][bytes].
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const FLAVOR_BYTES: u32 = 2;

/// The two roles, and a futex word for those waiting for a role to be claimed.
#[repr(C)]
pub(crate) struct Control {
    pub producer: RoleWord,
    pub consumer: RoleWord,
    /// Bumped after every claim and release: a handle waiting for its peer to appear
    /// sleeps on it. Only a wake-up counter; the role words are the truth.
    pub roles_changed: AtomicU32,
}

#[repr(C)]
pub(crate) struct WaitWords {
    /// Non-zero while the consumer may be asleep on a slot's seq word.
    pub consumer_waiting: AtomicU32,
    /// Non-zero while the producer may be asleep on `ConsumerLine::released`.
    pub producer_waiting: AtomicU32,
}

/// The consumer's line: its position, and a 32-bit copy for futexes to sleep on.
#[repr(C)]
pub(crate) struct ConsumerLine {
    /// Next position the consumer will release.
    pub head: AtomicU64,
    /// `head as u32`, stored right after `head`; or, when a consumer leaves, changed by
    /// `1 << 31` so a producer about to sleep on the old value does not. Only ever a
    /// futex word: nothing reads a position from it.
    pub released: AtomicU32,
}

/// The ring header at the start of the object area.
#[repr(C)]
pub(crate) struct RingHeader {
    pub magic: u64,
    pub capacity: u64,
    pub stride: u32,
    pub payload_offset: u32,
    /// `size_of::<T>()`, or the largest message for the byte flavor.
    pub payload_size: u32,
    pub flavor: u32,
    pub ctl: CachePadded<Control>,
    pub tail: CachePadded<AtomicU64>,
    pub head: CachePadded<ConsumerLine>,
    pub wait: CachePadded<WaitWords>,
}

/// Size of the seq word at the start of each slot.
const SEQ_LEN: usize = std::mem::size_of::<AtomicU32>();

/// Immutable geometry of a ring, computed or validated into process-private memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub capacity: u64,
    pub stride: usize,
    pub payload_offset: usize,
    pub payload_size: usize,
    pub flavor: u32,
}

impl Geometry {
    /// Geometry for `capacity` slots of `payload_size` bytes aligned to `align`.
    pub(crate) fn new(
        capacity: usize,
        payload_size: usize,
        align: usize,
        flavor: u32,
    ) -> Option<Self> {
        let (capacity, payload_offset, stride) =
            super::slot_shape(capacity, MAX_CAPACITY, SEQ_LEN, payload_size, align)?;
        Some(Geometry {
            capacity,
            stride,
            payload_offset,
            payload_size,
            flavor,
        })
    }

    /// Bytes of slots area start (after the header), aligned for any payload up to 128.
    pub(crate) fn slots_offset() -> usize {
        std::mem::size_of::<RingHeader>().next_multiple_of(128)
    }

    /// Total object-area bytes.
    pub(crate) fn object_len(&self) -> Option<usize> {
        Self::slots_offset().checked_add((self.capacity as usize).checked_mul(self.stride)?)
    }
}

/// Writes a fresh header and zeroed slot seq words at `base`.
///
/// # Safety
/// `base` must be valid for writes of `geo.object_len()` bytes, aligned to 128, and not
/// yet shared with anyone.
pub(crate) unsafe fn init(base: *mut u8, geo: &Geometry) {
    let hdr = RingHeader {
        magic: RING_MAGIC,
        capacity: geo.capacity,
        stride: geo.stride as u32,
        payload_offset: geo.payload_offset as u32,
        payload_size: geo.payload_size as u32,
        flavor: geo.flavor,
        ctl: CachePadded::new(Control {
            producer: RoleWord::new(),
            consumer: RoleWord::new(),
            roles_changed: AtomicU32::new(0),
        }),
        tail: CachePadded::new(AtomicU64::new(0)),
        head: CachePadded::new(ConsumerLine {
            head: AtomicU64::new(0),
            released: AtomicU32::new(0),
        }),
        wait: CachePadded::new(WaitWords {
            consumer_waiting: AtomicU32::new(0),
            producer_waiting: AtomicU32::new(0),
        }),
    };
    // SAFETY: the caller guarantees room and alignment for the header and exclusivity.
    unsafe { (base as *mut RingHeader).write(hdr) };
    let slots = Geometry::slots_offset();
    for i in 0..geo.capacity as usize {
        // SAFETY: slot i's seq word lies inside the object area (i < capacity) and is
        // 4-aligned (stride and slots_offset are multiples of 4). Zero is "never committed".
        unsafe { (base.add(slots + i * geo.stride) as *mut AtomicU32).write(AtomicU32::new(0)) };
    }
}

/// Reads and validates the ring geometry of an object area of `len` bytes.
///
/// # Safety
/// `base` must be valid for reads of `len` bytes and aligned to 128.
#[cfg(not(loom))]
pub(crate) unsafe fn read_geometry(base: *const u8, len: usize) -> Result<Geometry, String> {
    if len < Geometry::slots_offset() {
        return Err(format!(
            "object area of {len} bytes is smaller than a ring header"
        ));
    }
    let h = base as *const RingHeader;
    // SAFETY: the header lies within `len` (checked above); volatile reads take one
    // snapshot of each field, which is validated before any use.
    let (magic, capacity, stride, payload_offset, payload_size, flavor) = unsafe {
        (
            std::ptr::read_volatile(&raw const (*h).magic),
            std::ptr::read_volatile(&raw const (*h).capacity),
            std::ptr::read_volatile(&raw const (*h).stride),
            std::ptr::read_volatile(&raw const (*h).payload_offset),
            std::ptr::read_volatile(&raw const (*h).payload_size),
            std::ptr::read_volatile(&raw const (*h).flavor),
        )
    };
    if magic != RING_MAGIC {
        return Err("bad ring magic".into());
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
    };
    if geo.payload_offset < SEQ_LEN
        || geo
            .payload_offset
            .checked_add(geo.payload_size)
            .is_none_or(|end| end > geo.stride)
        || !geo.stride.is_multiple_of(4)
    {
        return Err(format!("slot geometry {geo:?} is inconsistent"));
    }
    if geo.object_len() != Some(len) {
        return Err(format!(
            "{capacity} slots of {stride} bytes do not fill the {len}-byte object area"
        ));
    }
    Ok(geo)
}

/// A process-private view of a ring in memory: validated geometry plus pointers.
///
/// Copyable and cheap; the handle layer guarantees the memory outlives it and that at
/// most one producer and one consumer use it at a time.
#[derive(Clone, Copy)]
pub(crate) struct RingView {
    hdr: *const RingHeader,
    slots: *mut u8,
    mask: u64,
    pub geo: Geometry,
}

// SAFETY: a RingView is pointers into shared memory whose fields are atomics or bytes
// that the single-producer / single-consumer discipline (enforced by role claims)
// keeps race-free.
unsafe impl Send for RingView {}
// SAFETY: shared references only reach atomics (header words, seq words) or hand out
// payload pointers whose use the role claims confine to one producer and one consumer.
unsafe impl Sync for RingView {}

impl RingView {
    /// # Safety
    /// `base` must point at an initialised ring with geometry `geo` that stays mapped
    /// while the view (and its copies) are used.
    pub(crate) unsafe fn new(base: *mut u8, geo: Geometry) -> Self {
        RingView {
            hdr: base as *const RingHeader,
            // SAFETY: slots_offset is within the object area (validated geometry).
            slots: unsafe { base.add(Geometry::slots_offset()) },
            mask: geo.capacity - 1,
            geo,
        }
    }

    #[inline]
    pub(crate) fn header(&self) -> &RingHeader {
        // SAFETY: `new`'s contract: the header is initialised and mapped.
        unsafe { &*self.hdr }
    }

    /// The slot of position `pos` (masked: any `pos` is in bounds).
    #[inline]
    fn slot(&self, pos: u64) -> *mut u8 {
        // SAFETY: (pos & mask) < capacity, so the slot lies inside the slots area.
        unsafe { self.slots.add((pos & self.mask) as usize * self.geo.stride) }
    }

    #[inline]
    pub(crate) fn seq(&self, pos: u64) -> &AtomicU32 {
        // SAFETY: the slot starts with an initialised, 4-aligned seq word.
        unsafe { &*(self.slot(pos) as *const AtomicU32) }
    }

    #[cfg_attr(loom, allow(dead_code))]
    /// Pointer to the payload of position `pos`, valid for `geo.payload_size` bytes.
    #[inline]
    pub(crate) fn payload(&self, pos: u64) -> *mut u8 {
        // SAFETY: payload_offset + payload_size <= stride (validated).
        unsafe { self.slot(pos).add(self.geo.payload_offset) }
    }

    #[inline]
    pub(crate) fn committed_seq(pos: u64) -> u32 {
        (pos as u32).wrapping_add(1)
    }

    /// Whether position `pos` is committed (Acquire: pairs with `publish`).
    #[inline]
    pub(crate) fn is_committed(&self, pos: u64) -> bool {
        // SYNC POINT: Acquire pairs with the Release store in `publish`, so the payload
        // written before it is visible once we see the seq.
        self.seq(pos).load(Ordering::Acquire) == Self::committed_seq(pos)
    }

    /// Publishes position `pos` to the consumer.
    #[inline]
    pub(crate) fn publish(&self, pos: u64) {
        // SYNC POINT: Release pairs with the Acquire in `is_committed`.
        self.seq(pos)
            .store(Self::committed_seq(pos), Ordering::Release);
    }

    /// Loads head (Acquire: pairs with the consumer's Release in `store_head`).
    #[inline]
    pub(crate) fn load_head(&self) -> u64 {
        // SYNC POINT: Acquire pairs with `store_head`'s Release: the consumer has
        // finished reading every slot before head before we overwrite it.
        self.header().head.head.load(Ordering::Acquire)
    }

    #[inline]
    pub(crate) fn store_head(&self, head: u64) {
        // SYNC POINT: Release pairs with `load_head`'s Acquire.
        let line = &self.header().head;
        line.head.store(head, Ordering::Release);
        // A plain store to a line the consumer owns: a producer asleep on `released`
        // finds it changed, so even a wake lost to the flag race below cannot strand
        // it (the kernel compares the word when it goes to sleep).
        line.released.store(head as u32, Ordering::Release);
    }

    /// Records the producer's frontier for a successor: on release of the role, or by
    /// the sweep after a crash. Not on the hot path. Ordered before the successor's
    /// read by the role word's Release/Acquire (or the admin lock).
    #[inline]
    pub(crate) fn store_tail(&self, tail: u64) {
        self.header().tail.store(tail, Ordering::Relaxed);
    }

    /// The committed frontier: the first position at or after `head` that is not
    /// committed. Used to recover `tail` after a producer died mid-commit.
    pub(crate) fn committed_frontier(&self) -> u64 {
        let head = self.header().head.head.load(Ordering::Acquire);
        let mut pos = head;
        while pos.wrapping_sub(head) < self.geo.capacity && self.is_committed(pos) {
            pos = pos.wrapping_add(1);
        }
        pos
    }
}

/// The sweep's recovery for a dead holder of `slot`: vacate the roles it held. A
/// producer's uncommitted reservation was never published; a consumer's peeked but
/// unreleased message stays for the next consumer (at-least-once for that message).
/// Also run by a claimant that finds a role naming a slot that is not a live holder.
pub(crate) fn recover(view: &RingView, holder_slot: u32) {
    let hdr = view.header();
    let me = holder_slot.wrapping_add(1);
    if hdr.ctl.producer.load().holder == me {
        // It never stored tail (that happens on a clean release): recompute it.
        let frontier = view.committed_frontier();
        view.store_tail(frontier);
        // A sleeper flag it left set would make every release wake nobody.
        hdr.wait.producer_waiting.store(0, Ordering::Relaxed);
        // A CAS inside: only ever vacates the role from the dead holder. Its Release
        // orders the tail store above before the next producer's claim.
        hdr.ctl.producer.vacate_dead(me);
    }
    if hdr.ctl.consumer.load().holder == me {
        hdr.wait.consumer_waiting.store(0, Ordering::Relaxed);
        hdr.ctl.consumer.vacate_dead(me);
    }
}

/// A snapshot of the ring for `tally inspect`: geometry, fill and roles.
#[cfg(not(loom))]
pub(crate) fn describe(view: &RingView) -> crate::segment::RingInfo {
    let hdr = view.header();
    let head = hdr.head.head.load(Ordering::Acquire);
    let role = |w: &RoleWord| {
        let st = w.load();
        crate::segment::RoleInfo {
            holder_slot: st.holder_slot(),
            claims: st.claims,
            last_exit: match st.exit {
                crate::objects::role::Exit::None => "none",
                crate::objects::role::Exit::Closed => "closed",
                crate::objects::role::Exit::Crashed => "crashed",
            },
        }
    };
    crate::segment::RingInfo {
        capacity: view.geo.capacity,
        slot_bytes: view.geo.stride as u64,
        max_message: match view.geo.flavor {
            FLAVOR_BYTES => view.geo.payload_size.saturating_sub(8) as u64,
            _ => view.geo.payload_size as u64,
        },
        head,
        committed: view.committed_frontier().wrapping_sub(head),
        producer_handles: hdr.ctl.producer.load().holder_slot().is_some() as u32,
        consumer_handles: hdr.ctl.consumer.load().holder_slot().is_some() as u32,
        producer: role(&hdr.ctl.producer),
        consumer: role(&hdr.ctl.consumer),
        claims: Vec::new(),
        skipped: 0,
        redelivered: 0,
        orphans: 0,
    }
}
