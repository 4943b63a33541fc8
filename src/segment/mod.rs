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
//! * **Open** takes the admin lock, validates the header, sweeps dead holders, and
//!   registers itself in a free slot, taking that slot's lock byte as its liveness token.
//!   A segment found `DESTROYING`/`REMOVED`, or with no live holder, is not attached (P3).
//! * **Detach** (drop) takes the admin lock, frees its slot, sweeps, and when no live
//!   holder remains marks the segment `DESTROYING` and unlinks the name (P1).
//!
//! Liveness is decided by the kernel (P4): each holder holds an OFD lock on its own
//! byte of the file through its own open file description; the kernel drops it when
//! the holder's descriptor closes, which death does. Pids in the table are diagnostics.

#[allow(dead_code)] // used by the loom models and the object tests
pub(crate) mod heap;
pub(crate) mod layout;

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
    /// A single-producer single-consumer ring.
    SpscRing,
    /// A tag this build does not know.
    Unknown(u32),
}

impl Kind {
    pub(crate) const fn tag(self) -> u32 {
        match self {
            Kind::Bytes => 1,
            Kind::SpscRing => 2,
            Kind::Unknown(t) => t,
        }
    }

    pub(crate) const fn from_tag(tag: u32) -> Kind {
        match tag {
            1 => Kind::Bytes,
            2 => Kind::SpscRing,
            t => Kind::Unknown(t),
        }
    }

    /// A short stable name, as `tally ls` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bytes => "bytes",
            Kind::SpscRing => "spsc-ring",
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

/// Options for creating and opening segments.
#[derive(Clone, Debug)]
pub struct Options {
    /// Permission bits of a created segment (default `0o600`: owner only).
    pub mode: u32,
    /// Accept a segment owned by another uid (default `false`: refuse it).
    pub allow_foreign_owner: bool,
    /// Holder-table capacity of a created segment (default 64, at most 4096).
    pub holders: u32,
    /// How long to wait for another process's admin section or creation (default 5 s).
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: 0o600,
            allow_foreign_owner: false,
            holders: DEFAULT_HOLDERS,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Called by the sweep, under the admin lock, for each dead holder slot:
/// `(kind tag, object area, dead slot)`.
pub(crate) type Recover = fn(u32, ObjectMem, u32);

/// What an object contributes to its segment.
pub(crate) struct ObjectSpec<'a> {
    pub kind: Kind,
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

/// Test hook: called with each step number of segment creation.
static CREATE_HOOK: std::sync::OnceLock<fn(u32)> = std::sync::OnceLock::new();

#[doc(hidden)]
pub fn set_create_hook(hook: fn(u32)) {
    let _ = CREATE_HOOK.set(hook);
}

fn create_step(step: u32) {
    if let Some(hook) = CREATE_HOOK.get() {
        hook(step);
    }
}

/// A mapped, validated segment with no holder slot of its own.
pub(crate) struct Mapped {
    name: String,
    os_name: String,
    file: File,
    map: MmapRaw,
    layout: Layout,
    /// OFD locks belong to the open file description, so threads sharing this handle
    /// would all "hold" the admin lock at once; this mutex makes them take turns.
    local_admin: std::sync::Mutex<()>,
}

/// Outcome of a sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Dead holders whose slots were reclaimed.
    pub reclaimed: u32,
    /// Live holders that remain (including the caller's own slot).
    pub live: u32,
    /// Whether the segment had no live holder and was unlinked.
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

fn state_name(s: u32) -> &'static str {
    match s {
        state::INITIALIZING => "initializing",
        state::READY => "ready",
        state::DESTROYING => "destroying",
        state::REMOVED => "removed",
        _ => "invalid",
    }
}

impl Mapped {
    /// Opens and validates `name` as a tally segment of any kind.
    fn open(name: &str, os_name: &str, opts: &Options) -> Result<Self> {
        let file = sys::open_existing(os_name).map_err(|e| Error::io("open", name, e))?;
        Self::from_file(name, os_name, file, opts)
    }

    fn from_file(name: &str, os_name: &str, file: File, opts: &Options) -> Result<Self> {
        let id = sys::fstat(&file).map_err(|e| Error::io("stat", name, e))?;
        if id.uid != sys::geteuid() && !opts.allow_foreign_owner {
            return Err(Error::PermissionDenied {
                name: name.to_owned(),
                reason: format!(
                    "owned by uid {} (you are {}); pass allow_foreign_owner to accept it",
                    id.uid,
                    sys::geteuid()
                ),
            });
        }
        if id.len < layout::HEADER_LEN as u64 {
            return Err(Error::corrupted(
                name,
                format!(
                    "file is {} bytes, shorter than the {}-byte header",
                    id.len,
                    layout::HEADER_LEN
                ),
            ));
        }
        if id.len > layout::MAX_SEGMENT_LEN {
            return Err(Error::corrupted(
                name,
                format!("file is {} bytes, over the 1 TiB bound", id.len),
            ));
        }
        let populate = id.allocated >= id.len;
        let map =
            sys::map(&file, id.len as usize, populate).map_err(|e| Error::io("map", name, e))?;
        // SAFETY: the mapping is `id.len` bytes long and page-aligned.
        let layout = unsafe { Layout::read(map.as_ptr(), map.len()) }.map_err(|e| match e {
            LayoutError::Version(found) => Error::VersionMismatch {
                name: name.to_owned(),
                expected: layout::LAYOUT_VERSION,
                found,
            },
            LayoutError::Corrupt(detail) => Error::corrupted(name, detail),
        })?;
        Ok(Mapped {
            name: name.to_owned(),
            os_name: os_name.to_owned(),
            file,
            map,
            layout,
            local_admin: std::sync::Mutex::new(()),
        })
    }

    /// Whether the segment holds the expected kind and payload (`None`: any).
    fn check_expect(&self, expect: Option<(Kind, &Fingerprint)>) -> Result<()> {
        if let Some((kind, fp)) = expect {
            let found = Kind::from_tag(self.layout.kind);
            if found != kind {
                return Err(Error::KindMismatch {
                    name: self.name.clone(),
                    expected: kind,
                    found,
                });
            }
            if self.layout.fingerprint != *fp {
                return Err(Error::LayoutMismatch {
                    name: self.name.clone(),
                    detail: format!(
                        "payload is {} ({} bytes, align {}), asked for {} ({} bytes, align {})",
                        self.layout.fingerprint.type_name(),
                        self.layout.fingerprint.size,
                        self.layout.fingerprint.align,
                        fp.type_name(),
                        fp.size,
                        fp.align
                    ),
                });
            }
        }
        Ok(())
    }

    fn header(&self) -> &Header {
        // SAFETY: validated: the mapping holds at least HEADER_LEN bytes, page-aligned,
        // and Header is repr(C) plain data and atomics, valid for any bit pattern.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    fn record(&self, slot: u32) -> &HolderRecord {
        assert!(slot < self.layout.table_capacity);
        let off = self.layout.table_offset + slot as usize * RECORD_LEN;
        // SAFETY: `slot` is bounds-checked against the validated capacity, so the record
        // lies inside the mapping; the offset is 8-aligned; any bit pattern is valid.
        unsafe { &*(self.map.as_ptr().add(off) as *const HolderRecord) }
    }

    fn object(&self) -> ObjectMem {
        ObjectMem {
            // SAFETY: object_offset + object_len <= mapping length (validated).
            ptr: unsafe { self.map.as_mut_ptr().add(self.layout.object_offset) },
            len: self.layout.object_len,
        }
    }

    /// Takes the admin lock, waiting at most `timeout`.
    fn lock_admin(&self, timeout: Duration) -> Result<AdminGuard<'_>> {
        let start = Instant::now();
        let mut backoff = Duration::from_micros(20);
        loop {
            let local = match self.local_admin.try_lock() {
                Ok(g) => Some(g),
                // A thread panicked inside an admin section; the shared state it left is
                // repaired below through `admin_dirty`, like a dead process's.
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(local) = local
                && sys::try_lock_byte(&self.file, ADMIN_LOCK_BYTE)
                    .map_err(|e| Error::io("lock", &self.name, e))?
            {
                let h = self.header();
                // SYNC POINT: the lock itself orders us after the previous holder (the
                // kernel's lock handoff is a full barrier); Relaxed is enough here.
                let repair = h.admin_dirty.swap(1, Ordering::Relaxed) != 0;
                let guard = AdminGuard {
                    seg: self,
                    _local: local,
                };
                if repair {
                    // The previous admin-lock holder died mid-update: the sweep below
                    // (which every caller runs) recomputes the refcount from the table.
                    h.refcount.store(guard.count_used(), Ordering::Relaxed);
                }
                return Ok(guard);
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    name: self.name.clone(),
                    what: "the segment's admin lock",
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(2));
        }
    }

    /// Describes the segment (taking no lock: values may be mid-change). `own` is the
    /// caller's slot, alive by definition: a lock probe through our own open file
    /// description cannot see our own lock (the sweep treats it the same way).
    pub(crate) fn info(&self, own: Option<u32>) -> SegmentInfo {
        let h = self.header();
        let id = sys::fstat(&self.file).ok();
        let holders = (0..self.layout.table_capacity)
            .filter_map(|slot| {
                let r = self.record(slot);
                (r.state.load(Ordering::Acquire) != slot_state::FREE).then(|| HolderInfo {
                    slot,
                    pid: r.pid.load(Ordering::Relaxed),
                    start_ticks: r.start_ticks.load(Ordering::Relaxed),
                    alive: own == Some(slot) || self.slot_alive(slot),
                    attached_unix_ms: r.attached_unix_ms.load(Ordering::Relaxed),
                })
            })
            .collect();
        SegmentInfo {
            name: self.name.clone(),
            kind: Kind::from_tag(self.layout.kind),
            size_bytes: self.layout.total_len as u64,
            object_bytes: self.layout.object_len as u64,
            refcount: h.refcount.load(Ordering::Acquire),
            state: state_name(h.state.load(Ordering::Acquire)),
            payload_type: self.layout.fingerprint.type_name(),
            payload_size: self.layout.fingerprint.size,
            table_capacity: self.layout.table_capacity,
            owner_uid: id.map_or(0, |i| i.uid),
            mode: id.map_or(0, |i| i.mode),
            creator_pid: self.layout.creator_pid,
            created_unix_ms: self.layout.created_unix_ms,
            reclaimed_total: h.reclaimed_total.load(Ordering::Relaxed),
            holders,
        }
    }

    /// Whether some other open file description holds slot `slot`'s liveness lock.
    /// An error probing counts as alive: never declare a death we cannot prove (P4).
    fn slot_alive(&self, slot: u32) -> bool {
        sys::byte_locked_by_other(&self.file, holder_lock_byte(slot)).unwrap_or(true)
    }

    /// Whether `name` still refers to this segment's inode.
    fn name_is_ours(&self) -> bool {
        match (sys::fstat(&self.file), sys::stat_name(&self.os_name)) {
            (Ok(a), Ok(b)) => a.dev == b.dev && a.ino == b.ino,
            _ => false,
        }
    }
}

/// Proof that this process holds a segment's admin lock; released on drop.
struct AdminGuard<'a> {
    seg: &'a Mapped,
    /// Released after `Drop::drop` has released the OFD lock.
    _local: std::sync::MutexGuard<'a, ()>,
}

impl AdminGuard<'_> {
    fn count_used(&self) -> u32 {
        (0..self.seg.layout.table_capacity)
            .filter(|&s| self.seg.record(s).state.load(Ordering::Relaxed) != slot_state::FREE)
            .count() as u32
    }

    /// Reclaims every dead holder (never `own`), recomputes the refcount, and returns
    /// the count of live holders left.
    fn sweep(&self, own: Option<u32>, recover: Recover) -> SweepOutcome {
        let seg = self.seg;
        let mut out = SweepOutcome::default();
        for slot in 0..seg.layout.table_capacity {
            let rec = seg.record(slot);
            if rec.state.load(Ordering::Relaxed) == slot_state::FREE {
                continue;
            }
            if own == Some(slot) || seg.slot_alive(slot) {
                out.live += 1;
                continue;
            }
            recover(seg.layout.kind, seg.object(), slot);
            clear_record(rec);
            out.reclaimed += 1;
        }
        let h = seg.header();
        h.refcount.store(out.live, Ordering::Relaxed);
        if out.reclaimed > 0 {
            h.reclaimed_total
                .fetch_add(out.reclaimed as u64, Ordering::Relaxed);
        }
        out
    }

    /// Marks the segment destroyed and unlinks its name if the name is still ours.
    fn destroy(&self) {
        let h = self.seg.header();
        if h.state.load(Ordering::Relaxed) == state::READY {
            h.state.store(state::DESTROYING, Ordering::Relaxed);
            if self.seg.name_is_ours() {
                let _ = sys::unlink(&self.seg.os_name);
            }
        }
    }

    /// Claims a free slot for the calling handle and takes its liveness lock.
    fn register(&self) -> Result<u32> {
        let seg = self.seg;
        for slot in 0..seg.layout.table_capacity {
            let rec = seg.record(slot);
            if rec.state.load(Ordering::Relaxed) != slot_state::FREE {
                continue;
            }
            // A free slot whose lock someone still holds cannot come from an honest
            // peer (detach frees the record and the lock together); skip it.
            if !sys::try_lock_byte(&seg.file, holder_lock_byte(slot))
                .map_err(|e| Error::io("lock", &seg.name, e))?
            {
                continue;
            }
            let me = sys::current_process();
            rec.pid.store(me.pid, Ordering::Relaxed);
            rec.start_ticks.store(me.start_ticks, Ordering::Relaxed);
            rec.boot_id.store(me.boot_id, Ordering::Relaxed);
            rec.attached_unix_ms.store(unix_ms(), Ordering::Relaxed);
            // SYNC POINT: Release pairs with the Acquire in `Mapped::info`, so a reader
            // that sees LIVE sees the identity fields written above.
            rec.state.store(slot_state::LIVE, Ordering::Release);
            seg.header().refcount.fetch_add(1, Ordering::Relaxed);
            return Ok(slot);
        }
        Err(Error::TableFull {
            name: seg.name.clone(),
            capacity: seg.layout.table_capacity,
        })
    }
}

impl Drop for AdminGuard<'_> {
    fn drop(&mut self) {
        self.seg.header().admin_dirty.store(0, Ordering::Relaxed);
        let _ = sys::unlock_byte(&self.seg.file, ADMIN_LOCK_BYTE);
    }
}

fn clear_record(rec: &HolderRecord) {
    rec.pid.store(0, Ordering::Relaxed);
    rec.start_ticks.store(0, Ordering::Relaxed);
    rec.boot_id.store(0, Ordering::Relaxed);
    rec.attached_unix_ms.store(0, Ordering::Relaxed);
    rec.state.store(slot_state::FREE, Ordering::Release);
}

/// A process's handle on a named segment: one slot in its holder table.
///
/// Dropping it detaches; the last detach unlinks the name. A handle belongs to the
/// process that made it: in a `fork`ed child, dropping the inherited copy does nothing
/// (the parent still holds the slot), see docs/ARCHITECTURE.md.
pub(crate) struct Segment {
    mapped: Mapped,
    slot: u32,
    owner_pid: u32,
    timeout: Duration,
    recover: Recover,
}

// SAFETY: the handle owns its descriptor and mapping; everything it touches in the
// mapping is atomics or bytes whose access the object layer synchronises.
unsafe impl Send for Segment {}
// SAFETY: as above; no method needs exclusive access to process-local state.
unsafe impl Sync for Segment {}

static TEMP_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Least time a detach waits for the admin lock before leaving its slot to the sweep.
const DETACH_TIMEOUT: Duration = Duration::from_secs(5);

impl Segment {
    /// Creates a new object under `name`; fails with `AlreadyExists` if a live one is
    /// there. Debris of dead holders under the name is swept away first.
    pub(crate) fn create(name: &str, spec: &ObjectSpec<'_>, opts: &Options) -> Result<Self> {
        let os_name = os_name(name)?;
        if opts.holders == 0 || opts.holders > MAX_HOLDERS {
            return Err(Error::InvalidArgument(format!(
                "holder table capacity {} outside 1..={MAX_HOLDERS}",
                opts.holders
            )));
        }
        let layout = Layout::new(
            spec.kind.tag(),
            opts.holders,
            spec.object_len,
            spec.fingerprint,
        )
        .ok_or_else(|| {
            Error::InvalidArgument(format!("object of {} bytes is too large", spec.object_len))
        })?;
        sweep_init_debris();
        let (temp, mut mapped) = build_temp(name, &layout, spec, opts)?;
        let guard = TempName(&temp);
        // The creator holds the admin lock of its temporary file from here on.
        let admin = mapped.lock_admin(opts.timeout)?;
        create_step(3);
        let slot = admin.register()?;
        // SYNC POINT: READY is published before the name (link below); openers read it
        // under the admin lock, which orders them after us.
        mapped.header().state.store(state::READY, Ordering::Release);
        create_step(4);
        let deadline = Instant::now() + opts.timeout;
        loop {
            match sys::link(&temp, &os_name) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    if !clear_abandoned(name, &os_name, opts, spec.recover)? {
                        return Err(Error::AlreadyExists(name.to_owned()));
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::AlreadyExists(name.to_owned()));
                    }
                }
                Err(e) => return Err(Error::io("link", name, e)),
            }
        }
        create_step(5);
        drop(guard); // unlinks the temporary name; the public name keeps the inode
        drop(admin);
        mapped.os_name = os_name;
        Ok(Segment {
            mapped,
            slot,
            owner_pid: sys::getpid(),
            timeout: opts.timeout,
            recover: spec.recover,
        })
    }

    /// Opens the live object `name`, which must be of `spec`'s kind and fingerprint.
    pub(crate) fn open(name: &str, spec: &ObjectSpec<'_>, opts: &Options) -> Result<Self> {
        Self::open_expecting(
            name,
            Some((spec.kind, &spec.fingerprint)),
            spec.recover,
            opts,
        )
    }

    /// Opens the live object `name` of any kind (`expect` of `None`), or of the
    /// expected kind and fingerprint.
    pub(crate) fn open_expecting(
        name: &str,
        expect: Option<(Kind, &Fingerprint)>,
        recover: Recover,
        opts: &Options,
    ) -> Result<Self> {
        let os_name = os_name(name)?;
        let start = Instant::now();
        loop {
            // Kind and payload are checked only once the segment is known to be live:
            // crash debris of another kind under the name is swept, not an error.
            let mapped = Mapped::open(name, &os_name, opts)?;
            let admin = mapped.lock_admin(opts.timeout)?;
            let st = mapped.header().state.load(Ordering::Acquire);
            if st == state::READY {
                let swept = admin.sweep(None, recover);
                if swept.live == 0 {
                    // Every holder died: the object is gone (P2); do not revive it.
                    admin.destroy();
                } else {
                    mapped.check_expect(expect)?;
                    let slot = admin.register()?;
                    drop(admin);
                    return Ok(Segment {
                        mapped,
                        slot,
                        owner_pid: sys::getpid(),
                        timeout: opts.timeout,
                        recover,
                    });
                }
            } else if st != state::DESTROYING && st != state::REMOVED {
                return Err(Error::corrupted(
                    name,
                    format!("segment state {st} under a public name"),
                ));
            } else if mapped.name_is_ours() {
                // Destroyers mark and unlink under the admin lock we now hold: if the
                // name is still this segment's, its destroyer died in between (or a
                // forced `rm` is mid-way). The object is gone either way; `create`
                // clears the debris.
                return Err(Error::NotFound(name.to_owned()));
            }
            drop(admin);
            // The segment we found is dying; the name is gone or already replaced.
            if start.elapsed() > opts.timeout {
                return Err(Error::Timeout {
                    name: name.to_owned(),
                    what: "a dying segment to leave its name",
                    waited: start.elapsed(),
                });
            }
            std::thread::yield_now();
        }
    }

    /// Opens `name` if a live object is there, else creates it. Race-free between
    /// processes: every caller ends up holding the same object.
    pub(crate) fn open_or_create(
        name: &str,
        spec: &ObjectSpec<'_>,
        opts: &Options,
    ) -> Result<(Self, bool)> {
        let start = Instant::now();
        loop {
            match Self::open(name, spec, opts) {
                Err(Error::NotFound(_)) => {}
                other => return other.map(|s| (s, false)),
            }
            match Self::create(name, spec, opts) {
                Err(Error::AlreadyExists(_)) => {}
                other => return other.map(|s| (s, true)),
            }
            if start.elapsed() > opts.timeout {
                return Err(Error::Timeout {
                    name: name.to_owned(),
                    what: "open_or_create to settle",
                    waited: start.elapsed(),
                });
            }
        }
    }

    /// The object's name.
    pub(crate) fn name(&self) -> &str {
        &self.mapped.name
    }

    /// This handle's slot in the holder table.
    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }

    /// The object area.
    pub(crate) fn object(&self) -> ObjectMem {
        self.mapped.object()
    }

    /// Whether the holder in `slot` is alive (a kernel lock probe: one system call).
    pub(crate) fn holder_alive(&self, slot: u32) -> bool {
        if slot >= self.mapped.layout.table_capacity {
            return false;
        }
        slot == self.slot || self.mapped.slot_alive(slot)
    }

    /// Fails with [`Error::Inherited`] in a process other than the one that opened the
    /// handle (a forked child), where its slot and locks are the parent's.
    pub(crate) fn check_owner(&self) -> Result<()> {
        if sys::getpid() == self.owner_pid {
            Ok(())
        } else {
            Err(Error::Inherited {
                name: self.name().to_owned(),
                owner: self.owner_pid,
            })
        }
    }

    /// Runs the sweep now: reclaims dead holders' slots and their object state.
    pub(crate) fn sweep(&self) -> Result<SweepOutcome> {
        self.check_owner()?;
        let admin = self.mapped.lock_admin(self.timeout)?;
        Ok(admin.sweep(Some(self.slot), self.recover))
    }

    /// Describes the segment.
    pub(crate) fn info(&self) -> SegmentInfo {
        self.mapped.info(Some(self.slot))
    }

    fn detach(&mut self) {
        let m = &self.mapped;
        // A short user timeout must not make a normal last close skip the unlink.
        let Ok(admin) = m.lock_admin(self.timeout.max(DETACH_TIMEOUT)) else {
            // Could not get the admin lock (a stopped peer holds it). Dropping our
            // liveness lock below makes us a dead holder that the next sweep reclaims.
            return;
        };
        clear_record(m.record(self.slot));
        let _ = sys::unlock_byte(&m.file, holder_lock_byte(self.slot));
        let out = admin.sweep(None, self.recover);
        if out.live == 0 {
            admin.destroy();
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // A forked child holds a copy of the parent's handle, not a handle of its own.
        if sys::getpid() == self.owner_pid {
            self.detach();
        }
    }
}

/// Removes the temporary name on every exit path of `create`.
struct TempName<'a>(&'a str);
impl Drop for TempName<'_> {
    fn drop(&mut self) {
        let _ = sys::unlink(self.0);
    }
}

/// Creates, sizes, maps and initialises a segment under a fresh temporary name.
fn build_temp(
    name: &str,
    layout: &Layout,
    spec: &ObjectSpec<'_>,
    opts: &Options,
) -> Result<(String, Mapped)> {
    let temp = format!(
        "{INIT_PREFIX}{}.{}.{}",
        sys::getpid(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed),
        unix_ms()
    );
    let file = sys::create_exclusive(&temp, opts.mode).map_err(|e| Error::io("create", name, e))?;
    let cleanup = TempName(&temp);
    // Hold the admin lock of the temporary file while building it, so a concurrent
    // debris sweep knows the builder is alive. A sweep that slipped in between the
    // create and the lock has unlinked the name (or holds the lock to do so): start
    // over under a fresh name.
    let locked =
        sys::try_lock_byte(&file, ADMIN_LOCK_BYTE).map_err(|e| Error::io("lock", name, e))?;
    let still_ours = match (sys::fstat(&file), sys::stat_name(&temp)) {
        (Ok(a), Ok(b)) => a.dev == b.dev && a.ino == b.ino,
        _ => false,
    };
    if !locked || !still_ours {
        drop(file);
        std::mem::forget(cleanup); // the name is not ours to unlink any more
        return build_temp(name, layout, spec, opts);
    }
    create_step(1);
    if let Err(e) = sys::reserve(&file, layout.total_len as u64) {
        return Err(if e.raw_os_error() == Some(libc::ENOSPC) {
            Error::NoSpace {
                name: name.to_owned(),
                bytes: layout.total_len as u64,
            }
        } else {
            Error::io("reserve", name, e)
        });
    }
    let map = sys::map(&file, layout.total_len, true).map_err(|e| Error::io("map", name, e))?;
    create_step(2);
    let h = map.as_mut_ptr() as *mut Header;
    // SAFETY: the fresh mapping is total_len >= HEADER_LEN bytes, page-aligned, zeroed,
    // and not yet visible to any other process (its name is private and unpublished).
    unsafe {
        h.write(Header {
            magic: layout::MAGIC,
            layout_version: layout::LAYOUT_VERSION,
            kind: layout.kind,
            header_len: layout::HEADER_LEN as u32,
            table_capacity: layout.table_capacity,
            table_offset: layout.table_offset as u64,
            object_offset: layout.object_offset as u64,
            object_len: layout.object_len as u64,
            total_len: layout.total_len as u64,
            fingerprint: layout.fingerprint,
            creator_pid: sys::getpid(),
            _pad0: 0,
            created_unix_ms: unix_ms(),
            state: AtomicU32::new(state::INITIALIZING),
            admin_dirty: AtomicU32::new(0),
            refcount: AtomicU32::new(0),
            _pad1: 0,
            reclaimed_total: Default::default(),
        });
    }
    let object = ObjectMem {
        // SAFETY: as above: in bounds, aligned to 128, exclusively ours.
        ptr: unsafe { map.as_mut_ptr().add(layout.object_offset) },
        len: layout.object_len,
    };
    (spec.init)(object);
    // The admin lock stays held: `create` takes it again through the same open file
    // description, which the kernel grants at once (a description never conflicts with
    // itself), and keeps it until the segment is published.
    let mapped = Mapped::from_file(name, &temp, file, opts)?;
    std::mem::forget(cleanup); // `create` owns the temporary name from here
    Ok((temp, mapped))
}

/// Under `os_name` sits a segment that blocked our `link`. Sweeps it; if it has no live
/// holder, destroys it and returns `true` (the caller retries). `false`: it is alive.
fn clear_abandoned(name: &str, os_name: &str, opts: &Options, recover: Recover) -> Result<bool> {
    let mapped = match Mapped::open(name, os_name, opts) {
        Ok(m) => m,
        Err(Error::NotFound(_)) => return Ok(true),
        Err(e) => return Err(e),
    };
    let admin = mapped.lock_admin(opts.timeout)?;
    let st = mapped.header().state.load(Ordering::Acquire);
    if st != state::READY {
        // Dying: its destroyer unlinks it (or already did). If the name is still ours
        // and no one will unlink it (REMOVED by force, but relinked?), take it down.
        if mapped.name_is_ours() {
            let _ = sys::unlink(os_name);
        }
        return Ok(true);
    }
    let out = admin.sweep(None, recover);
    if out.live == 0 {
        admin.destroy();
        return Ok(true);
    }
    Ok(false)
}

/// A builder takes its temporary file's admin lock microseconds after creating it;
/// a younger file of a live pid may be in that gap and is left alone.
const INIT_GRACE_MS: u64 = 10_000;

/// Removes temporary segments whose builder died (its admin lock is free).
pub(crate) fn sweep_init_debris() -> u32 {
    let mut removed = 0;
    for temp in sys::list_names(INIT_PREFIX).unwrap_or_default() {
        // `.tally-init.<pid>.<n>.<unix ms>`
        let mut parts = temp[INIT_PREFIX.len()..].split('.');
        let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
        let born = parts.nth(1).and_then(|m| m.parse::<u64>().ok());
        let young = born.is_some_and(|b| unix_ms().saturating_sub(b) < INIT_GRACE_MS);
        if young && pid.is_some_and(sys::pid_exists) {
            continue;
        }
        let Ok(file) = sys::open_existing(&temp) else {
            continue;
        };
        if sys::try_lock_byte(&file, ADMIN_LOCK_BYTE).unwrap_or(false) && sys::unlink(&temp).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Admin operations on segments by name, without holding a slot.
pub(crate) mod admin {
    use super::*;

    /// Every name of a tally object in the namespace.
    pub(crate) fn names() -> Result<Vec<String>> {
        Ok(sys::list_names(NAME_PREFIX)
            .map_err(|e| Error::io("list", sys::SHM_DIR, e))?
            .into_iter()
            .map(|n| n[NAME_PREFIX.len()..].to_owned())
            .collect())
    }

    /// Describes `name`.
    pub(crate) fn inspect(name: &str, opts: &Options) -> Result<SegmentInfo> {
        let os = os_name(name)?;
        Ok(Mapped::open(name, &os, opts)?.info(None))
    }

    /// Sweeps `name`: reclaims dead holders, unlinks it if none is left alive.
    pub(crate) fn sweep(name: &str, opts: &Options, recover: Recover) -> Result<SweepOutcome> {
        let os = os_name(name)?;
        let mapped = Mapped::open(name, &os, opts)?;
        let admin = mapped.lock_admin(opts.timeout)?;
        let st = mapped.header().state.load(Ordering::Acquire);
        if st != state::READY {
            let unlinked = mapped.name_is_ours() && sys::unlink(&os).is_ok();
            return Ok(SweepOutcome {
                unlinked,
                ..Default::default()
            });
        }
        let mut out = admin.sweep(None, recover);
        if out.live == 0 {
            admin.destroy();
            out.unlinked = true;
        }
        Ok(out)
    }

    /// Unlinks `name` by force. Live holders keep their mapping; their last detach will
    /// not unlink a new object created under the same name.
    pub(crate) fn remove(name: &str, opts: &Options) -> Result<()> {
        let os = os_name(name)?;
        for _ in 0..3 {
            // A readable tally segment we can lock: mark it REMOVED and unlink the name
            // under the lock, and only if the name is still this segment's (a create
            // may have replaced it; then remove what is there now).
            let mapped = match Mapped::open(name, &os, opts) {
                Ok(m) => m,
                Err(Error::NotFound(n)) => return Err(Error::NotFound(n)),
                // Not a tally segment, or foreign: remove the name whatever it holds
                // (that is what force means).
                Err(_) => break,
            };
            let Ok(_admin) = mapped.lock_admin(Duration::from_millis(200)) else {
                break; // a stopped process holds the lock: force
            };
            if mapped.name_is_ours() {
                mapped
                    .header()
                    .state
                    .store(state::REMOVED, Ordering::Release);
                return sys::unlink(&os).map_err(|e| Error::io("unlink", name, e));
            }
        }
        sys::unlink(&os).map_err(|e| Error::io("unlink", name, e))
    }
}
