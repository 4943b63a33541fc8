//! Named segments: naming, create/open/detach, the holder table, the sweep.
//!
//! This layer knows nothing about the object inside a segment beyond its kind tag,
//! its fingerprint and the `recover` routine it is handed for dead holders.
//!
//! # Protocol
//!
//! * **Create** builds the whole segment under a private temporary name while holding
//!   its admin lock, registers the creator as holder 0, marks it `READY`, and only then
//!   publishes it with `link(2)` — which fails if the name exists. An opener therefore
//!   never sees a half-made object (P5); a creator that dies leaves only a temporary
//!   file, which the next create or `tally sweep` removes.
//! * **Open** takes the admin lock, validates the header, asks whether any holder is
//!   alive (one `F_OFD_GETLK` over all the holders' lock bytes), and registers itself in
//!   a free slot, taking that slot's lock byte as its liveness token. A segment found
//!   `DESTROYING`/`REMOVED`, or with no live holder, is not attached (P3). Dead holders'
//!   slots are reclaimed when needed: a full table is swept before the open gives up.
//! * **Detach** (drop) frees its slot and drops its lock without the admin lock, then
//!   asks whether any holder is alive; only if none is does it take the admin lock,
//!   ask again, sweep, and mark the segment `DESTROYING` and unlink the name (P1).
//!
//! Liveness is decided by the kernel (P4): each holder holds an OFD lock on its own
//! byte of the file through its own open file description; the kernel drops it when
//! the holder's descriptor closes, which death does. Pids in the table are diagnostics.

pub(crate) mod admin;
mod attach;
mod debris;
#[allow(dead_code)] // used by the loom models and the object tests
pub(crate) mod heap;
mod info;
pub(crate) mod layout;
mod mapped;

use std::fmt;
use std::fs::File;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memmap2::MmapRaw;

use crate::error::{Error, Result};
use crate::sys;
use layout::{
    ADMIN_LOCK_BYTE, Header, HolderRecord, Layout, LayoutError, RECORD_LEN, holder_lock_byte,
    slot_state, state,
};
pub use layout::{DEFAULT_HOLDERS, Fingerprint, MAX_HOLDERS};

/// Prefix of every tally name in the shared-memory namespace: object `x` is `tally.x`.
pub const NAME_PREFIX: &str = "tally.";
/// Prefix of the temporary files a creator builds a segment in before publishing it.
pub const INIT_PREFIX: &str = ".tally-init.";
/// Longest object name accepted.
pub const MAX_NAME_LEN: usize = 200;

/// What kind of object a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A raw byte region ([`crate::Region`]).
    Bytes,
    /// A single-producer single-consumer ring of typed messages ([`crate::Ring`]).
    SpscRing,
    /// A single-producer single-consumer ring of byte messages ([`crate::ByteRing`]).
    ByteRing,
    /// A multi-producer multi-consumer ring of typed messages ([`crate::MpmcRing`]).
    MpmcRing,
    /// A multi-producer multi-consumer ring of byte messages ([`crate::MpmcByteRing`]).
    MpmcByteRing,
    /// A counting semaphore ([`crate::Semaphore`]).
    Semaphore,
    /// A mutex protecting a value in the segment ([`crate::Mutex`]).
    Mutex,
    /// A manual- or auto-reset event ([`crate::Event`]).
    Event,
    /// A one-publisher, many-subscriber ring of typed messages ([`crate::Broadcast`]).
    Broadcast,
    /// A one-publisher, many-subscriber ring of byte messages ([`crate::ByteBroadcast`]).
    ByteBroadcast,
    /// A tag this build does not know.
    Unknown(u32),
}

impl Kind {
    pub(crate) const fn tag(self) -> u32 {
        match self {
            Kind::Bytes => 1,
            Kind::SpscRing => 2,
            Kind::ByteRing => 3,
            Kind::MpmcRing => 4,
            Kind::MpmcByteRing => 5,
            Kind::Semaphore => 6,
            Kind::Mutex => 7,
            Kind::Event => 8,
            Kind::Broadcast => 9,
            Kind::ByteBroadcast => 10,
            Kind::Unknown(t) => t,
        }
    }

    pub(crate) const fn from_tag(tag: u32) -> Kind {
        match tag {
            1 => Kind::Bytes,
            2 => Kind::SpscRing,
            3 => Kind::ByteRing,
            4 => Kind::MpmcRing,
            5 => Kind::MpmcByteRing,
            6 => Kind::Semaphore,
            7 => Kind::Mutex,
            8 => Kind::Event,
            9 => Kind::Broadcast,
            10 => Kind::ByteBroadcast,
            t => Kind::Unknown(t),
        }
    }

    /// A short stable name, as `tally ls` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bytes => "bytes",
            Kind::SpscRing => "spsc-ring",
            Kind::ByteRing => "byte-ring",
            Kind::MpmcRing => "mpmc-ring",
            Kind::MpmcByteRing => "mpmc-byte-ring",
            Kind::Semaphore => "semaphore",
            Kind::Mutex => "mutex",
            Kind::Event => "event",
            Kind::Broadcast => "broadcast",
            Kind::ByteBroadcast => "byte-broadcast",
            Kind::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Unknown(t) => write!(f, "unknown object kind {t}"),
            k => f.write_str(k.as_str()),
        }
    }
}

/// Options for creating and opening segments. Start from the defaults and change what
/// you need (the struct may grow, so it is built this way rather than literally):
///
/// ```
/// use std::time::Duration;
/// let opts = tally::Options::default()
///     .mode(0o660)
///     .timeout(Duration::from_secs(1));
/// assert_eq!(opts.mode, 0o660);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// Permission bits of a created segment (default `0o600`: owner only).
    pub mode: u32,
    /// Accept a segment owned by another uid (default `false`: refuse it).
    pub allow_foreign_owner: bool,
    /// Holder-table capacity of a created segment (default 64, at most 4096).
    pub holders: u32,
    /// How long to wait for another process's admin section or creation (default 5 s).
    pub timeout: Duration,
    /// `open_or_create` of a ring that exists: accept any capacity (and, for a byte
    /// ring, any message size) instead of failing with a layout mismatch (default
    /// `false`: the existing ring must be what the caller would have created).
    pub any_capacity: bool,
}

impl Options {
    /// Permission bits of a created segment (default `0o600`: owner only).
    #[must_use]
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Accept a segment owned by another uid (default `false`).
    #[must_use]
    pub fn allow_foreign_owner(mut self, allow: bool) -> Self {
        self.allow_foreign_owner = allow;
        self
    }

    /// Holder-table capacity of a created segment (default 64, at most 4096).
    #[must_use]
    pub fn holders(mut self, holders: u32) -> Self {
        self.holders = holders;
        self
    }

    /// How long to wait for another process's admin section or creation (default 5 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `open_or_create` of an existing ring accepts any capacity (default `false`).
    #[must_use]
    pub fn any_capacity(mut self, any: bool) -> Self {
        self.any_capacity = any;
        self
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: 0o600,
            allow_foreign_owner: false,
            holders: DEFAULT_HOLDERS,
            timeout: Duration::from_secs(5),
            any_capacity: false,
        }
    }
}

/// Called by the sweep, under the admin lock, for each dead holder slot:
/// `(kind tag, object area, dead slot)`.
pub(crate) type Recover = fn(u32, ObjectMem, u32);

/// What an object contributes to its segment.
pub(crate) struct ObjectSpec<'a> {
    pub kind: Kind,
    /// The payload's size, alignment and schema, written at create, compared at open.
    pub fingerprint: Fingerprint,
    /// Bytes of the object area (creation only).
    pub object_len: usize,
    /// Initialises a zeroed object area in place (creation only).
    pub init: Box<dyn Fn(ObjectMem) + 'a>,
    pub recover: Recover,
}

/// The object area of a mapped segment.
#[derive(Clone, Copy, Debug)]
pub struct ObjectMem {
    /// Start, aligned to 128 bytes.
    pub ptr: *mut u8,
    /// Length in bytes.
    pub len: usize,
}

/// Checks an object name and returns its name in the shm namespace.
///
/// # Errors
/// [`Error::InvalidName`] naming what is wrong with it.
pub fn os_name(name: &str) -> Result<String> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 200 bytes");
    }
    if name.starts_with('.') {
        return bad("starts with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(format!("{NAME_PREFIX}{name}"))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) use attach::Segment;
#[doc(hidden)]
pub use attach::set_create_hook;
use debris::clear_abandoned;
pub(crate) use debris::sweep_init_debris;
use info::state_name;
pub use info::{
    BroadcastInfo, ClaimInfo, Creation, EventInfo, HolderInfo, MutexInfo, RingInfo, RoleInfo,
    SegmentInfo, SemaphoreInfo, SubscriberInfo, SweepOutcome, SyncInfo,
};
use mapped::{Mapped, clear_record};
