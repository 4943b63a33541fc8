//! A process's attachment: create (build under a temporary name, publish with
//! `link`), open, open-or-create, and detach.

use super::*;

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
        spec.fingerprint.check().map_err(Error::InvalidArgument)?;
        let layout = Layout::new(
            spec.kind.tag(),
            opts.holders,
            spec.object_len,
            spec.fingerprint.clone(),
        )
        .ok_or_else(|| {
            Error::InvalidArgument(format!("object of {} bytes is too large", spec.object_len))
        })?;
        sweep_init_debris();
        let me = sys::current_process().pid;
        let (temp, mut mapped) = build_temp(name, &layout, spec, opts, me)?;
        let guard = TempName(&temp);
        // The creator holds the admin lock of its temporary file from here on (taken
        // in `build_temp` through the same open file description).
        let admin = mapped.adopt_admin();
        create_step(3);
        let slot = admin.register(spec.recover)?;
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
            owner_pid: me,
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
                // Alive if some other holder's liveness lock is held: one lock probe
                // over the whole table. Dead holders' slots are left to whoever needs
                // them (a full table, a claim, a sweep). With no lock held, the sweep
                // decides (it also recovers what the dead left).
                if !mapped.any_holder_alive() && admin.sweep(None, recover).live == 0 {
                    // Every holder died: the object is gone (P2); do not revive it.
                    admin.destroy();
                } else {
                    mapped.check_expect(expect)?;
                    let slot = admin.register(recover)?;
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
    /// Waits for the admin lock at most [`Options::timeout`] (5 s by default); use
    /// [`sweep_within`](Self::sweep_within) or [`try_sweep`](Self::try_sweep) where a
    /// caller has a tighter bound of its own.
    pub(crate) fn sweep(&self) -> Result<SweepOutcome> {
        self.sweep_within(self.timeout)
    }

    /// Runs the sweep if the admin lock can be had within `timeout`, whatever
    /// [`Options::timeout`] says: for checks with a deadline of their own, such as a
    /// `recv_timeout(10 ms)` that finds its peer's liveness lock free, or a quick
    /// `is_disconnected()`. A stopped (SIGSTOP) or slow process may hold the admin lock
    /// for any time; this call then returns within about `timeout` (plus one sleep of at
    /// most 2 ms), having changed nothing. `Duration::ZERO` tries once.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] (`what`: "the segment's admin lock") if the lock stayed held
    /// for `timeout`: another process is mid-way through an attach, detach or sweep, so
    /// the caller knows nothing new and should treat its peer as alive for now (P4);
    /// [`Error::Inherited`] in a forked child; [`Error::Io`] if the lock call fails.
    pub(crate) fn sweep_within(&self, timeout: Duration) -> Result<SweepOutcome> {
        self.check_owner()?;
        let admin = self.mapped.lock_admin(timeout)?;
        Ok(admin.sweep(Some(self.slot), self.recover))
    }

    /// Runs the sweep only if the admin lock is free right now; `Ok(None)` ("busy")
    /// without waiting if another process or thread holds it. The non-blocking form of
    /// [`sweep_within`](Self::sweep_within), for polls that must never block.
    ///
    /// # Errors
    ///
    /// [`Error::Inherited`] in a forked child; [`Error::Io`] if the lock call fails.
    pub(crate) fn try_sweep(&self) -> Result<Option<SweepOutcome>> {
        match self.sweep_within(Duration::ZERO) {
            Ok(out) => Ok(Some(out)),
            Err(Error::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Describes the segment.
    pub(crate) fn info(&self) -> SegmentInfo {
        self.mapped.info(Some(self.slot))
    }

    fn detach(&mut self) {
        let m = &self.mapped;
        // Leave without the admin lock: count ourselves out, free the record, then
        // drop the liveness lock, in this order (a sweep that finds the lock free
        // re-reads the record and skips a FREE one: a clean close is never "reclaimed";
        // a refcount store by a concurrent sweep never leaves us counted twice out).
        let before = m
            .header()
            .refcount
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
        clear_record(m.record(self.slot));
        let _ = sys::unlock_byte(&m.file, holder_lock_byte(self.slot));
        // Am I the last? One lock probe over the table. Of holders that close at once,
        // each drops its lock before it probes, so the last to drop finds none. (A
        // refcount that says we were the only one skips this probe: a hint only, the
        // decision is made below, under the admin lock.)
        let others_likely = before.is_ok_and(|c| c > 1);
        if others_likely && m.any_holder_alive() {
            return;
        }
        // Apparently the last: decide under the admin lock, where opens register and
        // destroys happen. A short user timeout must not make it skip the unlink.
        let Ok(admin) = m.lock_admin(self.timeout.max(DETACH_TIMEOUT)) else {
            // Could not get the admin lock (a stopped peer holds it): the next open,
            // create or sweep finds nobody alive and destroys the object.
            return;
        };
        // An open may have registered meanwhile. With no live lock left, the sweep
        // reclaims the dead holders, and the last live holder's close unlinks (P1).
        if !m.any_holder_alive() && admin.sweep(None, self.recover).live == 0 {
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
    me: u32,
) -> Result<(String, Mapped)> {
    let temp = format!(
        "{INIT_PREFIX}{me}.{}.{}",
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed),
        unix_ms()
    );
    check_space(name, layout.total_len as u64)?;
    let (file, id) =
        sys::create_exclusive(&temp, opts.mode).map_err(|e| Error::io("create", name, e))?;
    let cleanup = TempName(&temp);
    // Hold the admin lock of the temporary file while building it, so a concurrent
    // debris sweep knows the builder is alive. A sweep that slipped in between the
    // create and the lock has unlinked the name (or holds the lock to do so): start
    // over under a fresh name.
    let locked =
        sys::try_lock_byte(&file, ADMIN_LOCK_BYTE).map_err(|e| Error::io("lock", name, e))?;
    let still_ours = sys::stat_name(&temp).is_ok_and(|b| (b.dev, b.ino) == (id.dev, id.ino));
    if !locked || !still_ours {
        drop(file);
        std::mem::forget(cleanup); // the name is not ours to unlink any more
        return build_temp(name, layout, spec, opts, me);
    }
    create_step(1);
    if let Err(e) = sys::reserve(&file, layout.total_len as u64) {
        // Space may have gone between the check above and here.
        return Err(if e.raw_os_error() == Some(libc::ENOSPC) {
            no_space(name, layout.total_len as u64)
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
            fingerprint: layout.stored_fingerprint(),
            creator_pid: me,
            _pad0: 0,
            created_unix_ms: unix_ms(),
            state: AtomicU32::new(state::INITIALIZING),
            admin_dirty: AtomicU32::new(0),
            refcount: AtomicU32::new(0),
            _pad1: 0,
            reclaimed_total: Default::default(),
            schema_offset: layout.schema_offset as u64,
            schema_len: layout.schema_bytes().len() as u64,
        });
    }
    let schema = layout.schema_bytes();
    // SAFETY: Layout::new placed schema_len bytes at schema_offset, before the object
    // area and inside the fresh, private mapping.
    unsafe {
        std::ptr::copy_nonoverlapping(
            schema.as_ptr(),
            map.as_mut_ptr().add(layout.schema_offset),
            schema.len(),
        );
    }
    let object = ObjectMem {
        // SAFETY: as above: in bounds, aligned to 128, exclusively ours.
        ptr: unsafe { map.as_mut_ptr().add(layout.object_offset) },
        len: layout.object_len,
    };
    (spec.init)(object);
    // The admin lock stays held: `create` adopts it (`Mapped::adopt_admin`, no system
    // call) and keeps it until the segment is published.
    let id = sys::FileId {
        len: layout.total_len as u64,
        ..id
    };
    let mapped = Mapped::from_mapping(name, &temp, file, map, &id)?;
    std::mem::forget(cleanup); // `create` owns the temporary name from here
    Ok((temp, mapped))
}

/// Fails fast with [`Error::NoSpace`] when the shared-memory file system has less free
/// space than `bytes`, before any file exists: reserving more than is free would take
/// long (the kernel allocates page by page before it gives up) or get the process
/// killed where memory runs out first. A file system that reports no size, or whose
/// size cannot be read, is left to `fallocate` to judge.
fn check_space(name: &str, bytes: u64) -> Result<()> {
    // Below this, a reservation that fails (`ENOSPC`, the same `NoSpace`) takes no
    // time worth a `statfs` on every create.
    const CHECK_ABOVE: u64 = 1 << 20;
    if bytes <= CHECK_ABOVE {
        return Ok(());
    }
    match sys::shm_free_bytes() {
        Ok(Some(free)) if bytes > free => Err(Error::NoSpace {
            name: name.to_owned(),
            bytes,
            free,
        }),
        _ => Ok(()),
    }
}

/// [`Error::NoSpace`] for `bytes`, with the free space as the file system reports it now.
fn no_space(name: &str, bytes: u64) -> Error {
    let free = sys::shm_free_bytes().ok().flatten().unwrap_or(0);
    Error::NoSpace {
        name: name.to_owned(),
        bytes,
        free,
    }
}
