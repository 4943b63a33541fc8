//! Administration of tally objects by name: what `tally ls/inspect/sweep/rm` do.

use std::time::Duration;

use crate::error::{Error, Result};
pub use crate::segment::Creation;
use crate::segment::{self, Options, Segment, SegmentInfo, SweepOutcome, admin};

/// The names of every tally object in the shared-memory namespace.
///
/// # Errors
/// [`Error::Io`] if the shared-memory directory cannot be listed.
pub fn list() -> Result<Vec<String>> {
    admin::names()
}

/// Segments being created and creation debris: the temporary files (`.tally-init.*`)
/// that a create builds an object in before publishing it under its name. A creator
/// killed mid-create (say while reserving 16 GiB) leaves one behind, invisible to
/// [`list`]; [`sweep_all`] removes those whose builder is dead
/// ([`Creation::would_sweep`]).
///
/// # Errors
///
/// [`Error::Io`] if the shared-memory directory cannot be read.
pub fn creations() -> Result<Vec<Creation>> {
    admin::creations()
}

/// Describes the object `name`, with each holder's pid and liveness.
///
/// # Errors
/// [`Error::NotFound`], [`Error::InvalidName`], [`Error::VersionMismatch`],
/// [`Error::Corrupted`], [`Error::PermissionDenied`] or [`Error::Io`].
pub fn inspect(name: &str) -> Result<SegmentInfo> {
    admin::inspect(name, &Options::default())
}

/// Describes `name` with explicit options (for foreign-owned segments).
///
/// # Errors
/// As [`inspect`].
pub fn inspect_with(name: &str, opts: &Options) -> Result<SegmentInfo> {
    admin::inspect(name, opts)
}

/// What one sweep of one or all objects did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Dead holders whose slots (and object state) were reclaimed.
    pub reclaimed_holders: u32,
    /// Names unlinked because no live holder remained.
    pub unlinked: Vec<String>,
    /// Temporary files of creators that died mid-create, removed.
    pub init_debris_removed: u32,
    /// Objects that could not be swept, with why.
    pub errors: Vec<(String, String)>,
}

/// Sweeps the object `name`: reclaims its dead holders, unlinks it if none is alive.
///
/// # Errors
/// As [`inspect`], and [`Error::Timeout`] if the admin lock stays held longer than
/// [`Options::timeout`].
pub fn sweep(name: &str) -> Result<SweepReport> {
    let out = admin::sweep(name, &Options::default(), crate::objects::recover_any)?;
    Ok(SweepReport {
        reclaimed_holders: out.reclaimed,
        unlinked: if out.unlinked {
            vec![name.to_owned()]
        } else {
            vec![]
        },
        init_debris_removed: 0,
        errors: vec![],
    })
}

/// Sweeps every tally object, and removes debris of creators that died mid-create.
///
/// # Errors
/// [`Error::Io`] if the shared-memory directory cannot be listed; objects that cannot
/// be swept are reported in [`SweepReport::errors`].
pub fn sweep_all() -> Result<SweepReport> {
    let mut report = SweepReport {
        init_debris_removed: segment::sweep_init_debris(),
        ..Default::default()
    };
    for name in list()? {
        match sweep(&name) {
            Ok(r) => {
                report.reclaimed_holders += r.reclaimed_holders;
                report.unlinked.extend(r.unlinked);
            }
            // Gone between listing and sweeping: nothing to do.
            Err(Error::NotFound(_)) => {}
            Err(e) => report.errors.push((name, e.to_string())),
        }
    }
    Ok(report)
}

/// Unlinks `name` by force. Live holders keep working on their mapping, detached
/// from the name; a new object may be created under it at once.
///
/// # Errors
/// [`Error::NotFound`], [`Error::InvalidName`], or [`Error::Io`] if the name cannot be
/// unlinked.
pub fn remove(name: &str) -> Result<()> {
    admin::remove(name, &Options::default())
}

/// A handle on an object of any kind, that only keeps it alive: what `tally hold` uses.
pub struct Holder {
    seg: Segment,
}

impl Holder {
    /// Attaches to the live object `name`, whatever its kind.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no live object has the name; [`Error::KindMismatch`] or
    /// [`Error::LayoutMismatch`] if it holds another kind or payload;
    /// [`Error::VersionMismatch`] or [`Error::Corrupted`] for a segment this build
    /// cannot read; [`Error::TableFull`] if its holder table is full;
    /// [`Error::PermissionDenied`], [`Error::Timeout`] or [`Error::Io`] from the
    /// system.
    pub fn open(name: &str, opts: &Options) -> Result<Self> {
        Ok(Holder {
            seg: Segment::open_expecting(name, None, crate::objects::recover_any, opts)?,
        })
    }

    /// Describes the held object.
    pub fn info(&self) -> SegmentInfo {
        self.seg.info()
    }

    /// Reclaims the object's dead holders now, waiting for its admin lock at most
    /// [`Options::timeout`].
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if another process held the admin lock all that time (it may
    /// be stopped); [`Error::Inherited`] in a forked child.
    pub fn sweep(&self) -> Result<SweepOutcome> {
        self.seg.sweep()
    }

    /// Reclaims the object's dead holders if its admin lock can be had within
    /// `timeout`: returns within about `timeout` even while a stopped process holds
    /// the lock. `Duration::ZERO` tries once.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the lock stayed held for `timeout` (nothing was changed);
    /// [`Error::Inherited`] in a forked child.
    pub fn sweep_within(&self, timeout: Duration) -> Result<SweepOutcome> {
        self.seg.sweep_within(timeout)
    }

    /// Reclaims the object's dead holders only if its admin lock is free right now;
    /// `Ok(None)` if another process or thread holds it. Never waits.
    ///
    /// # Errors
    ///
    /// [`Error::Inherited`] in a forked child.
    pub fn try_sweep(&self) -> Result<Option<SweepOutcome>> {
        self.seg.try_sweep()
    }
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder")
            .field("name", &self.seg.name())
            .finish()
    }
}
