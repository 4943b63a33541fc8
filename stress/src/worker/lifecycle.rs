//! The lifecycle worker: open_or_create, use and drop on a few names, racing other
//! lifecycle workers while processes are killed (also inside create, through the
//! library's create hook). Every attempt must end in a usable object, or in a typed
//! error that a retry resolves within the recovery bound.

use std::time::{Duration, Instant};

use tally::{Error, Event, Flavor, LockError, MpmcByteRing, Mutex, Options, Reset, Semaphore};

use super::{Ctx, maybe_die, stopping};
use crate::names::LIFECYCLE_NAMES;
use crate::stats::slot;

/// How long an attempt may keep failing with retryable errors.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(5);

/// A lifecycle worker's hook: die at a random step of create (or of a semaphore
/// acquire or release, or an event's set), 1 in 2000.
fn create_hook(_step: u32) {
    maybe_die(2000);
}

/// An object kept open across cycles, so that opens also meet live objects.
#[allow(dead_code)] // held only to keep the object alive
enum Kept {
    Mpmc(MpmcByteRing),
    Sem(Semaphore),
    Mutex(Mutex<u64>),
    Event(Event),
}

/// Whether a retry may resolve `e`: races with another creator or the last close, and
/// waits on a lock. Anything else (a corrupted or mismatched object) is a failure.
fn retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::AlreadyExists(_)
            | Error::NotFound(_)
            | Error::Timeout { .. }
            | Error::TableFull { .. }
            | Error::Io { .. }
    )
}

/// One cycle on name `i`: open or create it, use it, and either drop it or keep it.
fn cycle(ctx: &mut Ctx, i: usize) -> Result<Option<Kept>, Error> {
    let name = ctx.names.lifecycle(i);
    let opts = Options::default();
    let keep = ctx.rng.chance(1, 4);
    Ok(match LIFECYCLE_NAMES[i] {
        "life-mpmc" => {
            let (ring, _) = MpmcByteRing::open_or_create(&name, 8, 32, &opts)?;
            let mut tx = ring.producer()?;
            let mut rx = ring.consumer()?;
            let _ = tx.try_send(b"lifecycle");
            let mut buf = Vec::new();
            let _ = rx.try_recv_into(&mut buf);
            drop((tx, rx));
            keep.then_some(Kept::Mpmc(ring))
        }
        "life-sem" => {
            let (sem, _) = Semaphore::open_or_create(&name, Flavor::Resource, 2, 2, &opts)?;
            if let Ok(p) = sem.try_acquire() {
                drop(p);
            }
            keep.then_some(Kept::Sem(sem))
        }
        "life-mutex" => {
            let (m, _) = Mutex::<u64>::open_or_create(&name, 0, &opts)?;
            match m.lock_timeout(Duration::from_secs(1)) {
                Ok(mut g) => *g += 1,
                Err(LockError::Abandoned(mut g)) => {
                    g.clear_abandoned();
                    *g += 1;
                }
                Err(_) => {
                    return Err(Error::Timeout {
                        name: name.clone(),
                        what: "the lifecycle mutex",
                        waited: Duration::from_secs(1),
                    });
                }
            }
            keep.then_some(Kept::Mutex(m))
        }
        _ => {
            let (ev, _) = Event::open_or_create(&name, Reset::Manual, &opts)?;
            ev.set();
            ev.reset();
            keep.then_some(Kept::Event(ev))
        }
    })
}

/// Cycles until told to stop.
pub fn run(ctx: &mut Ctx) -> Result<(), String> {
    if ctx.args.chaos {
        tally::__private::set_create_hook(create_hook);
        // Also inside the lifecycle semaphore's acquire and release, and the event's set.
        tally::__private::set_sync_step_hook(create_hook);
    }
    let mut kept: Vec<Kept> = Vec::new();
    let mut cycles = 0u64;
    while !stopping() {
        let i = ctx.rng.range(0, LIFECYCLE_NAMES.len() as u64 - 1) as usize;
        let start = Instant::now();
        loop {
            match cycle(ctx, i) {
                Ok(k) => {
                    if let Some(k) = k {
                        kept.push(k);
                    }
                    if kept.len() > 2 || (!kept.is_empty() && ctx.rng.chance(1, 3)) {
                        kept.remove(0);
                    }
                    cycles += 1;
                    ctx.stats.set(slot::PROGRESS, cycles);
                    break;
                }
                Err(e) if retryable(&e) && start.elapsed() < RECOVERY_BOUND => {
                    ctx.stats.bump(slot::RETRIES);
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => {
                    ctx.fail(format_args!(
                        "{} after {:?}: {e} ({e:?})",
                        ctx.names.lifecycle(i),
                        start.elapsed()
                    ));
                    break;
                }
            }
        }
    }
    Ok(())
}
