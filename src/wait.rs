//! The one blocking loop of every handle: spin on a condition, then sleep on a futex
//! word in bounded slices, honouring the caller's deadline and noticing a peer that
//! has gone. Object kinds say what they wait for through [`Blocker`].

use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::{Duration, Instant};

use crate::sys;

/// How long a blocked caller spins before it sleeps, unless its handle says otherwise.
pub(crate) const DEFAULT_SPIN: Duration = Duration::from_micros(20);
/// Longest single futex sleep: a sleeper re-checks its peer's liveness this often, so
/// a dead peer is noticed within one slice.
pub(crate) const SLICE: Duration = Duration::from_millis(10);
/// How often a non-blocking call that would block probes a peer's liveness (a system
/// call) when the object's words say the peer is there.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(5);

/// How a wait ended.
pub(crate) enum Wait {
    /// The condition may hold now: retry the operation.
    Retry,
    /// The peer has gone.
    Gone,
    /// The deadline passed.
    TimedOut,
}

/// What one wait is for.
pub(crate) trait Blocker {
    /// Whether the condition holds (the operation may succeed now). No system call.
    fn ready(&mut self) -> bool;
    /// Whether the peer has certainly gone, from shared words alone (no system call).
    fn gone_fast(&mut self) -> bool;
    /// Whether the peer has gone, probing liveness if needed (may make system calls;
    /// never waits for a lock).
    fn gone_probe(&mut self) -> bool;
    /// The futex word the peer changes when the condition may have changed.
    fn word(&self) -> &AtomicU32;
    /// Registers this waiter as (about to be) asleep, so the peer wakes it.
    fn enter_sleep(&self);
    /// Undoes [`enter_sleep`](Blocker::enter_sleep).
    fn leave_sleep(&self);
}

/// Spins on `b.ready()` for `spin` (checking the deadline and `gone_fast` as it goes,
/// and `gone_probe` once per slice, so a handle that spins for ever still returns),
/// then sleeps on `b.word()` in slices of at most [`SLICE`], never past `deadline`.
///
/// A passed deadline is checked first: callers loop on `block` until their claim
/// succeeds, and a hostile image can make `ready` (or `gone_probe`) say yes while the
/// claim keeps failing, so `block` returning at once must still end at the deadline
/// (P6: no wait without a bound).
pub(crate) fn block(spin: Duration, deadline: Option<Instant>, b: &mut impl Blocker) -> Wait {
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return Wait::TimedOut;
    }
    let start = Instant::now();
    let mut next_probe = start + SLICE;
    let mut spins = 0u32;
    while !b.ready() {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(64) {
            continue;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Wait::TimedOut;
        }
        if now.duration_since(start) >= spin {
            return sleep(deadline, b);
        }
        if b.gone_fast() {
            return Wait::Gone;
        }
        if now >= next_probe {
            next_probe = now + SLICE;
            if b.gone_probe() {
                return Wait::Gone;
            }
        }
    }
    Wait::Retry
}

#[cold]
fn sleep(deadline: Option<Instant>, b: &mut impl Blocker) -> Wait {
    loop {
        b.enter_sleep();
        // SYNC POINT: the SeqCst fence orders our registration before the re-check,
        // pairing with the peer's store (of the condition) before its load of the
        // registration. x86 lets the peer's load pass its own store, so a wake may be
        // lost; the bounded SLICE below is the backstop.
        fence(Ordering::SeqCst);
        // SYNC POINT: Acquire pairs with the peer's Release change of the word.
        let seen = b.word().load(Ordering::Acquire);
        let outcome = if b.ready() {
            Some(Wait::Retry)
        } else if b.gone_probe() {
            Some(Wait::Gone)
        } else {
            match sleep_slice(deadline) {
                Some(t) => {
                    sys::futex_wait(b.word(), seen, Some(t));
                    None
                }
                None => Some(Wait::TimedOut),
            }
        };
        b.leave_sleep();
        if let Some(w) = outcome {
            return w;
        }
        if b.ready() {
            return Wait::Retry;
        }
    }
}

/// The next sleep: at most one SLICE, at most until the deadline; None if it passed.
pub(crate) fn sleep_slice(deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        None => Some(SLICE),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            (!left.is_zero()).then(|| left.min(SLICE))
        }
    }
}

/// Deadline of a timeout from now (None if it overflows: wait for ever).
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// A handle's record of liveness probes made on the non-blocking path: at most one
/// probe per [`PROBE_EVERY`], tried every 256th would-block call, and a peer found
/// dead is remembered (`dead`, the shared word that named it) until that word changes.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    polls: u32,
    last_ns: u64,
    /// The raw shared word whose holder a probe found dead.
    pub dead: Option<u64>,
}

impl Probe {
    /// Whether it is time for a probe now.
    pub(crate) fn due(&mut self) -> bool {
        self.polls = self.polls.wrapping_add(1);
        if !self.polls.is_multiple_of(256) {
            return false;
        }
        let now = sys::monotonic_ns();
        if now.saturating_sub(self.last_ns) < PROBE_EVERY.as_nanos() as u64 {
            return false;
        }
        self.last_ns = now;
        true
    }
}
