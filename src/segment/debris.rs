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
