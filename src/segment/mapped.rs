//! A mapped, validated segment: its header and holder table, the admin lock, the
//! sweep, registration and destroy.

use super::*;

/// A mapped, validated segment with no holder slot of its own.
pub(crate) struct Mapped {
    pub(super) name: String,
    pub(super) os_name: String,
    pub(super) file: File,
    pub(super) map: MmapRaw,
    pub(super) layout: Layout,
    /// Device and inode of `file` (they never change for an open descriptor), to tell
    /// whether a name still refers to this segment with one `stat` of the name.
    pub(super) dev_ino: (u64, u64),
    /// OFD locks belong to the open file description, so threads sharing this handle
    /// would all "hold" the admin lock at once; this mutex makes them take turns.
    pub(super) local_admin: std::sync::Mutex<()>,
}

impl Mapped {
    /// Opens and validates `name` as a tally segment of any kind.
    pub(super) fn open(name: &str, os_name: &str, opts: &Options) -> Result<Self> {
        let file = sys::open_existing(os_name).map_err(|e| open_error(name, os_name, e))?;
        Self::from_file(name, os_name, file, opts)
    }

    pub(super) fn from_file(name: &str, os_name: &str, file: File, opts: &Options) -> Result<Self> {
        let id = sys::fstat(&file).map_err(|e| Error::io("stat", name, e))?;
        if id.uid != sys::geteuid() && !opts.allow_foreign_owner {
            return Err(Error::PermissionDenied {
                name: name.to_owned(),
                reason: format!(
                    "owned by uid {} with mode {:04o} (you are uid {}); set \
                     Options::allow_foreign_owner to accept it",
                    id.uid,
                    id.mode,
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
        Self::from_mapping(name, os_name, file, map, &id)
    }

    /// Validates the segment in `map`, a mapping of all of `file` (whose identity is `id`).
    pub(super) fn from_mapping(
        name: &str,
        os_name: &str,
        file: File,
        map: MmapRaw,
        id: &sys::FileId,
    ) -> Result<Self> {
        // SAFETY: the mapping is `map.len()` bytes long and page-aligned.
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
            dev_ino: (id.dev, id.ino),
            local_admin: std::sync::Mutex::new(()),
        })
    }

    /// Whether the segment holds the expected kind and payload (`None`: any).
    pub(super) fn check_expect(&self, expect: Option<(Kind, &Fingerprint)>) -> Result<()> {
        if let Some((kind, fp)) = expect {
            fp.check().map_err(Error::InvalidArgument)?;
            let found = Kind::from_tag(self.layout.kind);
            if found != kind {
                return Err(Error::KindMismatch {
                    name: self.name.clone(),
                    expected: kind,
                    found,
                });
            }
            if let Some(detail) = fp.mismatch(&self.layout.fingerprint) {
                return Err(Error::LayoutMismatch {
                    name: self.name.clone(),
                    detail,
                });
            }
        }
        Ok(())
    }

    pub(super) fn header(&self) -> &Header {
        // SAFETY: validated: the mapping holds at least HEADER_LEN bytes, page-aligned,
        // and Header is repr(C) plain data and atomics, valid for any bit pattern.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    pub(super) fn record(&self, slot: u32) -> &HolderRecord {
        assert!(slot < self.layout.table_capacity);
        let off = self.layout.table_offset + slot as usize * RECORD_LEN;
        // SAFETY: `slot` is bounds-checked against the validated capacity, so the record
        // lies inside the mapping; the offset is 8-aligned; any bit pattern is valid.
        unsafe { &*(self.map.as_ptr().add(off) as *const HolderRecord) }
    }

    pub(super) fn object(&self) -> ObjectMem {
        ObjectMem {
            // SAFETY: object_offset + object_len <= mapping length (validated).
            ptr: unsafe { self.map.as_mut_ptr().add(self.layout.object_offset) },
            len: self.layout.object_len,
        }
    }

    /// Takes the admin lock, waiting at most `timeout`.
    pub(super) fn lock_admin(&self, timeout: Duration) -> Result<AdminGuard<'_>> {
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
                return Ok(self.admin_taken(local));
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    name: self.name.clone(),
                    what: "the segment's admin lock",
                    waited: start.elapsed(),
                });
            }
            // Never sleep past the caller's bound: a short `timeout` is a promise.
            std::thread::sleep(backoff.min(timeout.saturating_sub(start.elapsed())));
            backoff = (backoff * 2).min(Duration::from_millis(2));
        }
    }

    /// The admin section, once this handle's open file description holds the OFD lock
    /// and `local` is its process-local mutex.
    fn admin_taken<'a>(&'a self, local: std::sync::MutexGuard<'a, ()>) -> AdminGuard<'a> {
        let h = self.header();
        // SYNC POINT: the lock itself orders us after the previous holder (the kernel's
        // lock handoff is a full barrier); Relaxed is enough here.
        let repair = h.admin_dirty.swap(1, Ordering::Relaxed) != 0;
        let guard = AdminGuard {
            seg: self,
            _local: local,
        };
        if repair {
            // The previous admin-lock holder died mid-update: the refcount is the
            // number of used slots again (a sweep then makes it the live count).
            h.refcount.store(guard.count_used(), Ordering::Relaxed);
        }
        guard
    }

    /// The admin section of a segment whose OFD admin lock this handle's description
    /// already holds (a creator's private segment): no system call.
    pub(super) fn adopt_admin(&self) -> AdminGuard<'_> {
        let local = match self.local_admin.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        self.admin_taken(local)
    }

    /// Whether any holder other than the caller's own handle is alive: one
    /// `F_OFD_GETLK` over every slot's lock byte. Locks held through this handle's own
    /// open file description are not seen, so call it holding no slot lock of its own
    /// (before registering, or after unlocking one's slot). Holder locks are taken only
    /// under the admin lock, by a holder registering, so under it a lock found here is
    /// a live holder's (without it, possibly one that is closing: that holder probes
    /// again once its own lock is gone). An error probing counts as alive (P4).
    pub(super) fn any_holder_alive(&self) -> bool {
        sys::range_locked_by_other(
            &self.file,
            holder_lock_byte(0),
            u64::from(self.layout.table_capacity),
        )
        .unwrap_or(true)
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
            payload_schema: self.layout.fingerprint.schema_text(),
            table_capacity: self.layout.table_capacity,
            owner_uid: id.map_or(0, |i| i.uid),
            mode: id.map_or(0, |i| i.mode),
            creator_pid: self.layout.creator_pid,
            created_unix_ms: self.layout.created_unix_ms,
            reclaimed_total: h.reclaimed_total.load(Ordering::Relaxed),
            holders,
            ring: crate::objects::ring_info(self.layout.kind, self.object()),
            sync: crate::objects::sync_info(self.layout.kind, self.object()),
            broadcast: crate::objects::broadcast_info(self.layout.kind, self.object()),
        }
    }

    /// Whether some other open file description holds slot `slot`'s liveness lock.
    /// An error probing counts as alive: never declare a death we cannot prove (P4).
    pub(super) fn slot_alive(&self, slot: u32) -> bool {
        sys::byte_locked_by_other(&self.file, holder_lock_byte(slot)).unwrap_or(true)
    }

    /// Removes the creation-time names (`.tally-init.*`) that still refer to this
    /// segment's file. A creator killed between publishing its segment (`link`) and
    /// unlinking the temporary name leaves that second name behind, and a file's memory
    /// is freed only when its last name goes. Called under the admin lock: a live creator
    /// holds the same lock from before it publishes until its temporary name is gone, so
    /// a name found here is never one a live creator still uses. One `fstat`; the
    /// directory is scanned only when the file has a second name.
    pub(super) fn unlink_temp_names(&self) {
        let Ok(id) = sys::fstat(&self.file) else {
            return;
        };
        let published = self.name_is_ours();
        self.unlink_temp_names_of(id.nlink.saturating_sub(u64::from(published)));
    }

    /// As [`unlink_temp_names`](Self::unlink_temp_names), knowing that the file has
    /// `others` names besides its public one: nothing to do (and no system call) at 0.
    fn unlink_temp_names_of(&self, others: u64) {
        if others == 0 {
            return;
        }
        for temp in sys::list_names(INIT_PREFIX).unwrap_or_default() {
            if sys::stat_name(&temp).is_ok_and(|t| (t.dev, t.ino) == self.dev_ino) {
                let _ = sys::unlink(&temp);
            }
        }
    }

    /// Whether `name` still refers to this segment's inode.
    pub(super) fn name_is_ours(&self) -> bool {
        self.stat_if_ours().is_some()
    }

    /// The identity of the file the public name refers to, if that is this segment's.
    fn stat_if_ours(&self) -> Option<sys::FileId> {
        sys::stat_name(&self.os_name)
            .ok()
            .filter(|b| (b.dev, b.ino) == self.dev_ino)
    }
}

/// Proof that this process holds a segment's admin lock; released on drop.
pub(super) struct AdminGuard<'a> {
    pub(super) seg: &'a Mapped,
    /// Released after `Drop::drop` has released the OFD lock.
    pub(super) _local: std::sync::MutexGuard<'a, ()>,
}

impl AdminGuard<'_> {
    pub(super) fn count_used(&self) -> u32 {
        (0..self.seg.layout.table_capacity)
            .filter(|&s| self.seg.record(s).state.load(Ordering::Relaxed) != slot_state::FREE)
            .count() as u32
    }

    /// Reclaims every dead holder (never `own`), recomputes the refcount, and returns
    /// the count of live holders left.
    pub(super) fn sweep(&self, own: Option<u32>, recover: Recover) -> SweepOutcome {
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
            // A holder closing (without the admin lock) frees its record before it
            // drops its lock: a free lock with a FREE record now is a clean close.
            // SYNC POINT: Acquire pairs with the Release store in `clear_record`; the
            // kernel orders that store before the unlock our probe observed.
            if rec.state.load(Ordering::Acquire) == slot_state::FREE {
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

    /// Marks the segment destroyed and unlinks its name if the name is still ours;
    /// returns whether this call unlinked the public name (`false` when it had already
    /// gone or been replaced by a new object, which is left alone). Also removes any
    /// temporary name the segment still has, so that nothing pins its memory (P1).
    pub(super) fn destroy(&self) -> bool {
        let seg = self.seg;
        let h = seg.header();
        if h.state.load(Ordering::Relaxed) != state::READY {
            seg.unlink_temp_names();
            return false;
        }
        h.state.store(state::DESTROYING, Ordering::Relaxed);
        // One `stat` of the name says whether it is ours and how many names the file
        // has: after unlinking the public one, any left are temporary names.
        match seg.stat_if_ours() {
            Some(id) if sys::unlink(&seg.os_name).is_ok() => {
                seg.unlink_temp_names_of(id.nlink.saturating_sub(1));
                true
            }
            _ => {
                seg.unlink_temp_names();
                false
            }
        }
    }

    /// Claims a free slot for the calling handle and takes its liveness lock. A table
    /// with no free slot is swept (dead holders' slots are reclaimed when needed), and
    /// the claim tried once more.
    pub(super) fn register(&self, recover: Recover) -> Result<u32> {
        match self.register_free() {
            Err(Error::TableFull { .. }) if self.sweep(None, recover).reclaimed > 0 => {
                self.register_free()
            }
            other => other,
        }
    }

    fn register_free(&self) -> Result<u32> {
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

pub(super) fn clear_record(rec: &HolderRecord) {
    rec.pid.store(0, Ordering::Relaxed);
    rec.start_ticks.store(0, Ordering::Relaxed);
    rec.boot_id.store(0, Ordering::Relaxed);
    rec.attached_unix_ms.store(0, Ordering::Relaxed);
    rec.state.store(slot_state::FREE, Ordering::Release);
}

/// The error for a failed open of `os_name`. A permission error says who owns the file
/// and with what mode, where the file can be looked at, and what would let the caller
/// in; any other error is mapped as usual.
pub(super) fn open_error(name: &str, os_name: &str, e: std::io::Error) -> Error {
    let denied = matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM));
    let Some(id) = denied.then(|| sys::stat_name(os_name).ok()).flatten() else {
        return Error::io("open", name, e);
    };
    let me = sys::geteuid();
    let hint = if id.uid == me {
        format!(
            "it is yours, but mode {:04o} does not let you read and write it: chmod it, or \
             create it with an Options::mode that does (owner read and write, 0o600)",
            id.mode
        )
    } else {
        format!(
            "it is owned by uid {} with mode {:04o} and you are uid {me}: ask its owner to \
             create it with an Options::mode that lets you read and write it (or to chmod \
             it), or run as uid {}; a segment of another owner is then accepted with \
             Options::allow_foreign_owner",
            id.uid, id.mode, id.uid
        )
    };
    Error::PermissionDenied {
        name: name.to_owned(),
        reason: format!("open {}/{os_name}: {e}; {hint}", sys::SHM_DIR),
    }
}
