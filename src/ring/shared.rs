//! What producer and consumer handles share: the segment, the validated view, role
//! claims, and the blocking waits (spin, then futex sleep in bounded slices).

use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use super::error::{ReserveError, TryRecvError};
use crate::error::{Error, Result};
use crate::objects::ring::endpoint::{ConsumerCursor, ProducerCursor, role_vacated};
use crate::objects::ring::{Geometry, RingView, VACANT, read_geometry};
use crate::segment::{Fingerprint, Kind, ObjectSpec, Options, Segment};
use crate::sys;

/// How long a blocked caller spins before it sleeps.
pub(crate) const SPIN: Duration = Duration::from_micros(20);
/// Longest single futex sleep: a sleeper re-checks its peer's liveness this often, so
/// a dead peer is noticed within one slice.
pub(crate) const SLICE: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Role {
    Producer,
    Consumer,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }
}

pub(crate) enum Wait {
    /// The condition may hold now: retry the operation.
    Retry,
    /// The peer has gone.
    Gone,
    /// The deadline passed.
    TimedOut,
}

pub(crate) struct Shared {
    pub seg: Segment,
    pub view: RingView,
}

impl Shared {
    fn spec<'a>(fingerprint: Fingerprint, geo: &'a Geometry) -> Result<ObjectSpec<'a>> {
        let object_len = geo
            .object_len()
            .ok_or_else(|| Error::InvalidArgument("ring too large".into()))?;
        Ok(ObjectSpec {
            kind: Kind::SpscRing,
            fingerprint,
            object_len,
            init: Box::new(move |mem| {
                // SAFETY: the segment layer hands `init` a fresh, private, 128-aligned
                // area of exactly `object_len` bytes.
                unsafe { crate::objects::ring::init(mem.ptr, geo) }
            }),
            recover: crate::objects::recover_any,
        })
    }

    fn attach(seg: Segment, expected: &Geometry, check_capacity: bool) -> Result<Arc<Self>> {
        let mem = seg.object();
        // SAFETY: the object area is mapped for `mem.len` bytes, 128-aligned.
        let geo = unsafe { read_geometry(mem.ptr, mem.len) }
            .map_err(|d| Error::corrupted(seg.name(), d))?;
        let same_slots = geo.flavor == expected.flavor
            && geo.stride == expected.stride
            && geo.payload_offset == expected.payload_offset
            && geo.payload_size == expected.payload_size;
        if !same_slots || (check_capacity && geo.capacity != expected.capacity) {
            return Err(Error::LayoutMismatch {
                name: seg.name().to_owned(),
                detail: format!("ring has {geo:?}, expected {expected:?}"),
            });
        }
        // SAFETY: the view's memory is the segment's mapping, which `Shared` keeps
        // alive as long as the view (it owns the segment).
        let view = unsafe { RingView::new(mem.ptr, geo) };
        Ok(Arc::new(Shared { seg, view }))
    }

    pub(crate) fn create(
        name: &str,
        fp: Fingerprint,
        geo: Geometry,
        opts: &Options,
    ) -> Result<Arc<Self>> {
        let seg = Segment::create(name, &Self::spec(fp, &geo)?, opts)?;
        Self::attach(seg, &geo, true)
    }

    /// Opens; `geo` gives the slot shape expected (its capacity is ignored).
    pub(crate) fn open(
        name: &str,
        fp: Fingerprint,
        geo: Geometry,
        opts: &Options,
    ) -> Result<Arc<Self>> {
        let seg = Segment::open(name, &Self::spec(fp, &geo)?, opts)?;
        Self::attach(seg, &geo, false)
    }

    /// Opens a byte ring of any capacity and message size.
    pub(crate) fn open_any_bytes(name: &str, opts: &Options) -> Result<Arc<Self>> {
        let probe =
            Geometry::new(1, 16, 8, crate::objects::ring::FLAVOR_BYTES).expect("valid geometry");
        let seg = Segment::open(name, &Self::spec(Fingerprint::bytes(), &probe)?, opts)?;
        let mem = seg.object();
        // SAFETY: the object area is mapped for `mem.len` bytes, 128-aligned.
        let geo = unsafe { read_geometry(mem.ptr, mem.len) }
            .map_err(|d| Error::corrupted(seg.name(), d))?;
        if geo.flavor != crate::objects::ring::FLAVOR_BYTES
            || geo.payload_offset != 8
            || geo.payload_size < 9
        {
            return Err(Error::LayoutMismatch {
                name: seg.name().to_owned(),
                detail: format!("not a byte ring: {geo:?}"),
            });
        }
        Self::attach(seg, &geo, true)
    }

    pub(crate) fn open_or_create(
        name: &str,
        fp: Fingerprint,
        geo: Geometry,
        opts: &Options,
    ) -> Result<(Arc<Self>, bool)> {
        let (seg, created) = Segment::open_or_create(name, &Self::spec(fp, &geo)?, opts)?;
        Ok((Self::attach(seg, &geo, created)?, created))
    }

    fn role_words(&self, role: Role) -> (&crate::atomics::AtomicU32, &crate::atomics::AtomicU32) {
        let ctl = &self.view.header().ctl;
        match role {
            Role::Producer => (&ctl.producer, &ctl.producer_gen),
            Role::Consumer => (&ctl.consumer, &ctl.consumer_gen),
        }
    }

    /// Claims `role` for this handle's holder slot.
    pub(crate) fn claim(&self, role: Role) -> Result<()> {
        self.seg.check_owner()?;
        let (word, gen_) = self.role_words(role);
        let me = self.seg.slot() + 1;
        for attempt in 0..2 {
            // SYNC POINT: Acquire pairs with the Release that vacated the role (drop or
            // recovery), so we see the tail/head our predecessor left.
            match word.compare_exchange(VACANT, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => {
                    // SYNC POINT: Release pairs with the Acquire in `role_vacated`.
                    gen_.fetch_add(1, Ordering::Release);
                    return Ok(());
                }
                Err(holder)
                    if attempt == 0
                        && holder != me
                        && !self.seg.holder_alive(holder.wrapping_sub(1)) =>
                {
                    // Its holder died and no sweep has run yet: run one, then retry.
                    self.seg.sweep()?;
                }
                Err(_) => break,
            }
        }
        Err(Error::RoleTaken {
            name: self.seg.name().to_owned(),
            role: role.name(),
        })
    }

    pub(crate) fn release_role(&self, role: Role) {
        let (word, _) = self.role_words(role);
        // SYNC POINT: Release pairs with the next claimant's Acquire CAS in `claim`.
        let _ = word.compare_exchange(
            self.seg.slot() + 1,
            VACANT,
            Ordering::Release,
            Ordering::Relaxed,
        );
    }

    /// Whether `role` was held once and is vacant now: one load, no system call.
    #[inline]
    pub(crate) fn role_vacated(&self, role: Role) -> bool {
        let (word, gen_) = self.role_words(role);
        role_vacated(word, gen_)
    }

    /// What an empty poll reports: `Disconnected` once the producer role is vacant and
    /// nothing is left at `cur.head`, else `Empty`. No system call.
    #[inline]
    pub(crate) fn empty_error(&self, cur: &ConsumerCursor) -> TryRecvError {
        if self.role_vacated(Role::Producer) && !self.view.is_committed(cur.head) {
            TryRecvError::Disconnected
        } else {
            TryRecvError::Empty
        }
    }

    /// What a failed reservation reports: `Disconnected` once the consumer role is
    /// vacant, else `Full`. No system call.
    #[cold]
    pub(crate) fn full_error(&self) -> ReserveError {
        if self.role_vacated(Role::Consumer) {
            ReserveError::Disconnected
        } else {
            ReserveError::Full
        }
    }

    /// A producer handle leaves: record where it stopped, release the role, and wake a
    /// consumer asleep on the next slot so it sees the role vacant.
    /// In a forked child this does nothing: the role is the parent's.
    pub(crate) fn leave_producer(&self, cur: &ProducerCursor) {
        if self.seg.check_owner().is_err() {
            return;
        }
        cur.park();
        // A consumer about to sleep on the seq word of the slot at tail must not miss
        // this wake. If that slot is free (the ring is not full), change the word to the
        // value of the position 2^31 ahead: never "committed" for any position near
        // head (capacity divides 2^31), and the next producer overwrites it. The change
        // makes a `futex_wait` on the old value return at once.
        //
        // Read the word while we still hold the role, and change it after releasing
        // only if it is unchanged: a successor that claimed the role in between may
        // already have committed this very position, and must not lose it.
        let seq = self.view.seq(cur.tail);
        let free = cur.tail.wrapping_sub(self.view.load_head()) < self.view.geo.capacity;
        let before = seq.load(Ordering::Relaxed);
        self.release_role(Role::Producer);
        if free {
            // SYNC POINT: Release pairs with the sleeper's Acquire load of this word,
            // after which it sees the role vacated by `release_role` above. No ABA: a
            // successor's commit stores tail+1, which `before` (a previous lap's value,
            // 0 or an earlier marker) never is.
            let _ = seq.compare_exchange(
                before,
                RingView::committed_seq(cur.tail) ^ (1 << 31),
                Ordering::Release,
                Ordering::Relaxed,
            );
        }
        sys::futex_wake(seq, u32::MAX);
    }

    /// A consumer handle leaves: release the role and wake a producer asleep for space.
    /// In a forked child this does nothing: the role is the parent's.
    pub(crate) fn leave_consumer(&self) {
        if self.seg.check_owner().is_err() {
            return;
        }
        self.release_role(Role::Consumer);
        let released = &self.view.header().head.released;
        // SYNC POINT: Release pairs with the Acquire load of `released` in
        // `sleep_space`, whose re-check then sees the role vacant. Changing the word
        // also keeps a producer that is about to sleep on its old value awake.
        // 2^31 + 1, so two leaves in a row do not restore the value either.
        released.fetch_add((1 << 31) + 1, Ordering::Release);
        sys::futex_wake(released, u32::MAX);
    }

    /// Whether the holder of `role` has gone: vacated, or dead (then a sweep reclaims
    /// it). One lock probe, so only called from the slow path.
    pub(crate) fn role_gone(&self, role: Role) -> bool {
        let (word, gen_) = self.role_words(role);
        if role_vacated(word, gen_) {
            return true;
        }
        // Acquire pairs with the claim CAS; only the slot number is used, to probe.
        let holder = word.load(Ordering::Acquire);
        if holder != VACANT && !self.seg.holder_alive(holder - 1) {
            let _ = self.seg.sweep();
            return true;
        }
        false
    }

    /// Waits until position `cur.head` may be committed, the producer has gone, or the
    /// deadline passes.
    pub(crate) fn wait_data(&self, cur: &ConsumerCursor, deadline: Option<Instant>) -> Wait {
        let view = &self.view;
        let seq = view.seq(cur.head);
        let spin_until = Instant::now() + SPIN;
        let mut spins = 0u32;
        while !view.is_committed(cur.head) {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(64) && Instant::now() >= spin_until {
                return self.sleep_data(cur, seq, deadline);
            }
        }
        Wait::Retry
    }

    #[cold]
    fn sleep_data(
        &self,
        cur: &ConsumerCursor,
        seq: &crate::atomics::AtomicU32,
        deadline: Option<Instant>,
    ) -> Wait {
        let flag = &self.view.header().wait.consumer_waiting;
        loop {
            flag.store(1, Ordering::Relaxed);
            // SYNC POINT: SeqCst fence orders our flag store before the seq re-check,
            // pairing with the producer's seq store before its flag load in `commit`.
            // x86 lets the producer's load pass its own store, so a wake may be lost;
            // the bounded SLICE below is the backstop.
            fence(Ordering::SeqCst);
            let seen = seq.load(Ordering::Acquire);
            let outcome = if seen == RingView::committed_seq(cur.head) {
                Some(Wait::Retry)
            } else if self.role_gone(Role::Producer) {
                Some(Wait::Gone)
            } else {
                match sleep_slice(deadline) {
                    Some(t) => {
                        sys::futex_wait(seq, seen, Some(t));
                        None
                    }
                    None => Some(Wait::TimedOut),
                }
            };
            flag.store(0, Ordering::Relaxed);
            if let Some(w) = outcome {
                return w;
            }
            if self.view.is_committed(cur.head) {
                return Wait::Retry;
            }
        }
    }

    /// Waits until at least `want` slots may be free, the consumer has gone, or the
    /// deadline passes.
    pub(crate) fn wait_space(
        &self,
        cur: &mut ProducerCursor,
        want: u64,
        deadline: Option<Instant>,
    ) -> Wait {
        let spin_until = Instant::now() + SPIN;
        let mut spins = 0u32;
        while cur.free(want) < want {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(64) && Instant::now() >= spin_until {
                return self.sleep_space(cur, want, deadline);
            }
        }
        Wait::Retry
    }

    #[cold]
    fn sleep_space(&self, cur: &mut ProducerCursor, want: u64, deadline: Option<Instant>) -> Wait {
        let w = &self.view.header().wait;
        loop {
            w.producer_waiting.store(1, Ordering::Relaxed);
            // SYNC POINT: as in `sleep_data`, paired with the consumer's head store
            // before its flag load in `release`.
            fence(Ordering::SeqCst);
            let released = &self.view.header().head.released;
            let seen = released.load(Ordering::Acquire);
            let outcome = if cur.free(want) >= want {
                Some(Wait::Retry)
            } else if self.role_gone(Role::Consumer) {
                Some(Wait::Gone)
            } else {
                match sleep_slice(deadline) {
                    Some(t) => {
                        sys::futex_wait(released, seen, Some(t));
                        None
                    }
                    None => Some(Wait::TimedOut),
                }
            };
            w.producer_waiting.store(0, Ordering::Relaxed);
            if let Some(o) = outcome {
                return o;
            }
            if cur.free(want) >= want {
                return Wait::Retry;
            }
        }
    }
}

/// The next sleep: at most one SLICE, at most until the deadline; None if it passed.
fn sleep_slice(deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        None => Some(SLICE),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            (!left.is_zero()).then(|| left.min(SLICE))
        }
    }
}

/// Deadline of a timeout from now (None if it overflows: wait forever).
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
