//! Workers on the resource semaphore and the mutex.

use std::time::Duration;

use tally::{LockError, Mutex, Semaphore, SemaphoreWaitError};

use super::{Ctx, maybe_die, stopping};
use crate::stats::slot;

/// The mutex's value: `[count, owner pid, pending, ambiguous]`.
///
/// - `count`: increments made (read, a pause, write back: not atomic on purpose, so two
///   holders at once would lose one);
/// - `owner`: the pid inside, 0 when free: a locker that finds another pid there without
///   the lock being abandoned has caught two holders at once;
/// - `pending`: 1 from just before the increment until after its acknowledgement (the
///   worker's progress counter): a locker that takes an abandoned lock with `pending`
///   set cannot know whether the dead owner acknowledged, and counts one `ambiguous`;
/// - `ambiguous`: how many such increments; the final count must lie between the
///   acknowledged increments and that plus `ambiguous`.
pub type Counter = [u64; 4];

/// Index of the increment count in [`Counter`].
pub const COUNT: usize = 0;
/// Index of the owner pid.
pub const OWNER: usize = 1;
/// Index of the pending flag.
pub const PENDING: usize = 2;
/// Index of the ambiguous count.
pub const AMBIGUOUS: usize = 3;

/// A permit worker's hook: die at a random step of acquire or release, 1 in 50 000.
fn sync_hook(_step: u32) {
    maybe_die(50_000);
}

/// Takes a permit, holds it briefly, returns it; until told to stop.
pub fn permits(ctx: &mut Ctx) -> Result<(), String> {
    let sem = Semaphore::open(&ctx.names.semaphore()).map_err(|e| e.to_string())?;
    if ctx.args.chaos {
        tally::__private::set_sync_step_hook(sync_hook);
    }
    let mut taken = 0u64;
    while !stopping() {
        match sem.acquire_timeout(Duration::from_millis(50)) {
            Ok(permit) => {
                for _ in 0..ctx.rng.range(0, 2000) {
                    std::hint::spin_loop();
                }
                drop(permit);
                taken += 1;
                ctx.stats.set(slot::PROGRESS, taken);
            }
            Err(SemaphoreWaitError::Timeout) => {}
            Err(e) => ctx.fail(format_args!("acquire: {e}")),
        }
    }
    Ok(())
}

/// Increments the counter under the lock, checking nobody else is inside.
pub fn mutex(ctx: &mut Ctx) -> Result<(), String> {
    let m = Mutex::<Counter>::open(&ctx.names.mutex()).map_err(|e| e.to_string())?;
    let me = u64::from(std::process::id());
    let mut acked = 0u64;
    while !stopping() {
        let (mut g, abandoned) = match m.lock_timeout(Duration::from_millis(100)) {
            Ok(g) => (g, false),
            Err(LockError::Abandoned(mut g)) => {
                g.clear_abandoned();
                (g, true)
            }
            Err(LockError::Timeout) => continue,
            Err(e) => {
                ctx.fail(format_args!("lock: {e}"));
                continue;
            }
        };
        if abandoned {
            ctx.stats.bump(slot::RETRIES);
            if g[PENDING] != 0 {
                g[AMBIGUOUS] += 1;
            }
        } else if g[OWNER] != 0 {
            let other = g[OWNER];
            drop(g);
            ctx.fail(format_args!(
                "took the lock while pid {other} was inside (lock not abandoned)"
            ));
            continue;
        }
        g[OWNER] = me;
        g[PENDING] = 1;
        let c = std::hint::black_box(g[COUNT]);
        for _ in 0..ctx.rng.range(0, 300) {
            std::hint::spin_loop();
        }
        g[COUNT] = c + 1;
        acked += 1;
        ctx.stats.set(slot::PROGRESS, acked);
        g[PENDING] = 0;
        if g[OWNER] != me {
            let other = g[OWNER];
            drop(g);
            ctx.fail(format_args!(
                "pid {other} wrote the owner while we held the lock"
            ));
            continue;
        }
        g[OWNER] = 0;
        drop(g);
    }
    Ok(())
}
