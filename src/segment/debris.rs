//! Crash debris: abandoned segments that block a create, temporary files of dead
//! builders.

use super::*;

/// Under `os_name` sits a segment that blocked our `link`. Sweeps it; if it has no live
/// holder, destroys it and returns `true` (the caller retries). `false`: it is alive.
pub(super) fn clear_abandoned(
    name: &str,
    os_name: &str,
    opts: &Options,
    recover: Recover,
) -> Result<bool> {
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
        mapped.unlink_temp_names();
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

/// What a temporary name says about its builder: `.tally-init.<pid>.<n>.<unix ms>`.
fn parse_temp(temp: &str) -> (Option<u32>, Option<u64>) {
    let mut parts = temp[INIT_PREFIX.len()..].split('.');
    let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
    let born = parts.nth(1).and_then(|m| m.parse::<u64>().ok());
    (pid, born)
}

/// Whether the builder may be between creating the file and locking it: the file is
/// young and a process with its pid exists.
fn in_grace(pid: Option<u32>, born: Option<u64>) -> bool {
    let young = born.is_some_and(|b| unix_ms().saturating_sub(b) < INIT_GRACE_MS);
    young && pid.is_some_and(sys::pid_exists)
}

/// Removes temporary segments whose builder died (its admin lock is free).
///
/// Only ever unlinks a temporary *name*; it never changes a segment's state or holder
/// table. That matters for a temporary name that is also a published segment's second
/// name (its creator was killed between `link` and the unlink of the temporary name):
/// unlinking it leaves the object under its public name exactly as it was, to be
/// destroyed by the ordinary sweep of that name, and only when no holder of it is
/// alive. The admin lock is held while unlinking, so a creator that is still alive
/// (it holds the lock until its temporary name is gone) is never raced.
pub(crate) fn sweep_init_debris() -> u32 {
    let mut removed = 0;
    for temp in sys::list_names(INIT_PREFIX).unwrap_or_default() {
        let (pid, born) = parse_temp(&temp);
        if in_grace(pid, born) {
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

/// Every temporary file in the namespace: segments being built, and what builders
/// that died mid-create left (see [`Creation`]).
pub(crate) fn creations() -> Result<Vec<Creation>> {
    let names = sys::list_names(INIT_PREFIX).map_err(|e| Error::io("list", sys::SHM_DIR, e))?;
    let now = unix_ms();
    let mut out = Vec::with_capacity(names.len());
    for temp in names {
        // Gone since the listing: its builder finished or a sweep took it.
        let Ok(id) = sys::stat_name(&temp) else {
            continue;
        };
        let (pid, born) = parse_temp(&temp);
        let (builder_alive, would_sweep) = match sys::open_existing(&temp) {
            Ok(file) => {
                // A failed probe counts as alive, as in the holder sweep (P4).
                let locked = sys::byte_locked_by_other(&file, ADMIN_LOCK_BYTE).unwrap_or(true);
                let alive = locked || in_grace(pid, born);
                (alive, !alive)
            }
            // Another user's file: the sweep cannot open it either.
            Err(_) => (pid.is_some_and(sys::pid_exists), false),
        };
        out.push(Creation {
            temp_name: temp,
            builder_pid: pid,
            builder_alive,
            bytes: id.len,
            allocated_bytes: id.allocated,
            age_ms: born.map(|b| now.saturating_sub(b)),
            published: id.nlink > 1,
            would_sweep,
        });
    }
    Ok(out)
}
