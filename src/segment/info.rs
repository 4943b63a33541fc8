//! What `tally ls`/`inspect` and a sweep report about a segment.

use super::*;

/// Outcome of a sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
pub struct SegmentInfo {
    /// Object name (without the `tally.` prefix).
    pub name: String,
    /// Object kind.
    pub kind: Kind,
    /// Total bytes of the segment.
    pub size_bytes: u64,
    /// Bytes of the object area.
    pub object_bytes: u64,
    /// The refcount word as stored.
    pub refcount: u32,
    /// `ready`, `destroying`, `removed`, ...
    pub state: &'static str,
    /// Payload type name from the fingerprint.
    pub payload_type: String,
    /// Payload type size.
    pub payload_size: u32,
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
