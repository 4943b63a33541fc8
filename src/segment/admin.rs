//! Admin operations on segments by name, without holding a slot.

use super::*;

/// Every name of a tally object in the namespace.
pub(crate) fn names() -> Result<Vec<String>> {
    Ok(sys::list_names(NAME_PREFIX)
        .map_err(|e| Error::io("list", sys::SHM_DIR, e))?
        .into_iter()
        .map(|n| n[NAME_PREFIX.len()..].to_owned())
        .collect())
}

/// The temporary files of segments being created, and of creators that died.
pub(crate) fn creations() -> Result<Vec<Creation>> {
    debris::creations()
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
        mapped.unlink_temp_names();
        return Ok(SweepOutcome {
            unlinked,
            ..Default::default()
        });
    }
    let mut out = admin.sweep(None, recover);
    if out.live == 0 {
        // The name may have been replaced by a new object since we opened it (a
        // forced `rm` and a create): then it was not ours to unlink, and we did not.
        out.unlinked = admin.destroy();
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
            return sys::unlink(&os).map_err(|e| unlink_error(name, &os, e));
        }
    }
    sys::unlink(&os).map_err(|e| unlink_error(name, &os, e))
}

/// The error for a failed unlink of `os_name`: a permission error (another user's
/// object in the sticky shared-memory directory) names the owner, the mode and who may
/// remove it, as a failed open does; any other error is mapped as usual.
fn unlink_error(name: &str, os_name: &str, e: std::io::Error) -> Error {
    let denied = matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM));
    let Some(id) = denied.then(|| sys::stat_name(os_name).ok()).flatten() else {
        return Error::io("unlink", name, e);
    };
    Error::PermissionDenied {
        name: name.to_owned(),
        reason: format!(
            "unlink {dir}/{os_name}: {e}; it is owned by uid {} with mode {:04o} and you are \
             uid {}: only its owner (or root) may remove it from {dir}",
            id.uid,
            id.mode,
            sys::geteuid(),
            dir = sys::SHM_DIR
        ),
    }
}
