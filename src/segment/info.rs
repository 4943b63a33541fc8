//! What `tally ls`/`inspect` and a sweep report about a segment.

use super::*;

/// Outcome of a sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepOutcome {
    /// Dead holders whose slots were reclaimed.
    pub reclaimed: u32,
    /// Live holders that remain (including the caller's own slot).
    pub live: u32,
    /// Whether this sweep unlinked the name: the segment had no live holder and the
    /// name still referred to it. `false` when the name had meanwhile gone or been
    /// replaced by a new object (which is left alone).
    pub unlinked: bool,
}

/// One holder, as `tally inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HolderInfo {
    /// Slot index in the table.
    pub slot: u32,
    /// Pid recorded at attach (diagnostic only).
    pub pid: u32,
    /// Process start time in clock ticks since boot, recorded at attach.
    pub start_ticks: u64,
    /// Whether the kernel still holds the holder's liveness lock.
    pub alive: bool,
    /// When it attached, ms since the Unix epoch.
    pub attached_unix_ms: u64,
}

/// A read-only description of a segment.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// Object name (without the `tally.` prefix).
    pub name: String,
    /// Object kind.
    pub kind: Kind,
    /// Total bytes of the segment.
    pub size_bytes: u64,
    /// Bytes of the object area.
    pub object_bytes: u64,
    /// The refcount word as stored: used holder slots, counting dead holders that no
    /// sweep has reclaimed yet (a sweep sets it to the live count).
    pub refcount: u32,
    /// `ready`, `destroying`, `removed`, ...
    pub state: &'static str,
    /// Payload type name from the fingerprint.
    pub payload_type: String,
    /// Payload type size.
    pub payload_size: u32,
    /// The payload's canonical schema (`{px@0:f64;qty@8:u64}`, `bytes`), which
    /// openers compare (see [`crate::Message`]).
    pub payload_schema: String,
    /// Holder-table capacity.
    pub table_capacity: u32,
    /// Owner uid and mode of the file.
    pub owner_uid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Pid that created it.
    pub creator_pid: u32,
    /// Creation time, ms since the Unix epoch.
    pub created_unix_ms: u64,
    /// Dead holders reclaimed over its life.
    pub reclaimed_total: u64,
    /// Every used slot of the holder table.
    pub holders: Vec<HolderInfo>,
    /// For rings: capacity, fill and who holds which role. `None` for other kinds, or
    /// when the ring's header does not validate.
    pub ring: Option<RingInfo>,
    /// For semaphores, mutexes and events: their state. `None` for other kinds, or
    /// when the object's header does not validate.
    pub sync: Option<SyncInfo>,
    /// For broadcast rings: policy, publisher, each subscriber's position and lag.
    /// `None` for other kinds, or when the ring's header does not validate.
    pub broadcast: Option<BroadcastInfo>,
}

/// What `tally inspect` shows of a broadcast ring (a snapshot).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BroadcastInfo {
    /// `"lossless"` or `"lossy"`.
    pub policy: &'static str,
    /// Slots.
    pub capacity: u64,
    /// Bytes per slot, including its sequence word and padding.
    pub slot_bytes: u64,
    /// Payload bytes per slot: the payload type's size, or the largest byte message.
    pub max_message: u64,
    /// Next position the publisher will commit (messages committed over the ring's life).
    pub tail: u64,
    /// The publisher role.
    pub publisher: RoleInfo,
    /// Every claimed subscriber cursor.
    pub subscribers: Vec<SubscriberInfo>,
    /// Subscriber handles made over the ring's life.
    pub subscribers_ever: u32,
    /// Cursors dropped because their subscriber died, over the ring's life.
    pub dropped_dead: u64,
}

/// One subscriber of a broadcast ring.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberInfo {
    /// Its cursor line.
    pub line: u32,
    /// The holder-table slot of its process (its pid is in [`SegmentInfo::holders`]).
    pub holder_slot: u32,
    /// Next position it reads.
    pub position: u64,
    /// Messages committed it has not read (`tail - position`).
    pub lag: u64,
    /// Messages it missed (lossy), over its life.
    pub lagged: u64,
}

/// What `tally inspect` shows of a synchronization object (a snapshot).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncInfo {
    /// A [`crate::Semaphore`].
    Semaphore(SemaphoreInfo),
    /// A [`crate::Mutex`].
    Mutex(MutexInfo),
    /// An [`crate::Event`].
    Event(EventInfo),
}

/// A semaphore's state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SemaphoreInfo {
    /// `"signal"` or `"resource"`.
    pub flavor: &'static str,
    /// Permits available now.
    pub count: u32,
    /// Maximum count, fixed at creation.
    pub max: u32,
    /// Resource flavour: `(holder slot, permits held)` for every slot holding any.
    pub permits: Vec<(u32, u32)>,
    /// An operation begun and not yet settled: `(holder slot, "acquire" | "release")`.
    pub pending: Option<(u32, &'static str)>,
    /// Waiters that may be asleep.
    pub sleepers: u32,
}

/// A mutex's state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MutexInfo {
    /// The holder slot of the owner, if locked (its pid is in `SegmentInfo::holders`).
    pub owner_slot: Option<u32>,
    /// Whether an owner died holding it and the mark has not been cleared.
    pub abandoned: bool,
    /// Times the lock was taken from a dead owner.
    pub abandonments: u64,
    /// Lockers that may be asleep.
    pub sleepers: u32,
}

/// An event's state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventInfo {
    /// Manual reset (`true`) or auto reset.
    pub manual_reset: bool,
    /// Whether it is set.
    pub set: bool,
    /// Waiters that may be asleep.
    pub sleepers: u32,
}

/// What `tally inspect` shows of a ring (a snapshot: it may change as it is read).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RingInfo {
    /// Slots.
    pub capacity: u64,
    /// Bytes per slot, including its sequence word and padding.
    pub slot_bytes: u64,
    /// Payload bytes per slot: the payload type's size, or a byte ring's largest message.
    pub max_message: u64,
    /// Next position the consumer will release.
    pub head: u64,
    /// Committed messages waiting from `head` on (the fill).
    pub committed: u64,
    /// The producer role (SPSC rings; for MPMC rings only `claims`, the handles ever
    /// made, is set).
    pub producer: RoleInfo,
    /// The consumer role (as `producer`).
    pub consumer: RoleInfo,
    /// Producer handles attached now (MPMC: counted per holder; SPSC: 0 or 1).
    pub producer_handles: u32,
    /// Consumer handles attached now.
    pub consumer_handles: u32,
    /// MPMC: positions claimed and not yet committed or released, with their holder.
    /// A claim whose holder is dead (see [`SegmentInfo::holders`]) is skipped or
    /// redelivered by the next sweep, or by the peer it blocks.
    pub claims: Vec<ClaimInfo>,
    /// MPMC: positions skipped because their writer died, over the ring's life.
    pub skipped: u64,
    /// MPMC: messages delivered again because their reader died or gave them back.
    pub redelivered: u64,
    /// MPMC: messages waiting to be redelivered now.
    pub orphans: u32,
}

/// A position of an MPMC ring claimed by a handle.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimInfo {
    /// The position (modulo 2^44).
    pub position: u64,
    /// `true`: claimed for writing (not yet committed); `false`: held for reading.
    pub writing: bool,
    /// The holder-table slot of the claiming handle.
    pub holder_slot: u32,
}

/// Who holds a role of an object, and how its last holder left.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoleInfo {
    /// The holder-table slot of the handle holding the role, if any.
    pub holder_slot: Option<u32>,
    /// How many times the role was claimed.
    pub claims: u32,
    /// How the last holder left: `"closed"`, `"crashed"`, or `"none"` (held, or never).
    pub last_exit: &'static str,
}

/// A segment being created, or what a creator that died mid-create left behind: a
/// temporary file `.tally-init.<pid>.<n>.<unix ms>` in /dev/shm, which no object name
/// shows. What [`crate::admin::creations`] lists and `tally ls` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Creation {
    /// The temporary file's name in the shared-memory directory.
    pub temp_name: String,
    /// The builder's pid, from the name (`None` if the name carries none).
    pub builder_pid: Option<u32>,
    /// Whether the builder is alive: a process holds the file's admin lock (which
    /// the kernel drops when the builder dies), or the file is younger than the grace
    /// a builder has to take that lock and its pid exists. For a file of another user
    /// that cannot be opened, whether its pid exists.
    pub builder_alive: bool,
    /// The file's length: the size of the segment being built.
    pub bytes: u64,
    /// Bytes allocated to it so far (less than `bytes` while its pages are reserved).
    pub allocated_bytes: u64,
    /// Milliseconds since the builder started, from the name (`None` if it carries no
    /// time).
    pub age_ms: Option<u64>,
    /// Whether the file also has another name: the builder published the object and
    /// died before removing its temporary name. The object's own sweep (or its last
    /// holder) removes that name too.
    pub published: bool,
    /// Whether [`crate::admin::sweep_all`] would remove it now (its builder is dead).
    pub would_sweep: bool,
}

pub(super) fn state_name(s: u32) -> &'static str {
    match s {
        state::INITIALIZING => "initializing",
        state::READY => "ready",
        state::DESTROYING => "destroying",
        state::REMOVED => "removed",
        _ => "invalid",
    }
}
