//! What producer and consumer handles share: the segment, the validated view, role
//! claims, and the blocking waits (spin, then futex sleep in bounded slices).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::error::{RecvTimeoutError, ReserveError, ReserveTimeoutError, TryRecvError};
use crate::atomics::AtomicU32;
use crate::error::{Error, Result};
use crate::objects::ring::endpoint::{ConsumerCursor, ProducerCursor};
use crate::objects::ring::{FLAVOR_BYTES, Geometry, RingView, read_geometry};
use crate::objects::role::{Exit, RoleWord};
use crate::segment::{Fingerprint, Kind, ObjectSpec, Options, Segment};
use crate::sys;
use crate::wait::{self, Blocker, Probe, Wait};

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

/// Where a ring's peer stands, as [`Producer::consumer_state`](crate::Producer::consumer_state)
/// and [`Consumer::producer_state`](crate::Consumer::producer_state) report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerState {
    /// No handle has held the peer role yet.
    NotYetConnected,
    /// A live handle holds the peer role.
    Connected,
    /// The last holder released the role cleanly (dropped its handle).
    Closed,
    /// The last holder died: its process ended without releasing the role (the role
    /// may still name it until a sweep, a claim or an open reclaims its slot).
    Crashed,
}

impl PeerState {
    /// Whether the peer has gone: [`Closed`](PeerState::Closed) or
    /// [`Crashed`](PeerState::Crashed).
    pub fn is_gone(self) -> bool {
        matches!(self, PeerState::Closed | PeerState::Crashed)
    }
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
            kind: if geo.flavor == FLAVOR_BYTES {
                Kind::ByteRing
            } else {
                Kind::SpscRing
            },
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

    fn attach(seg: Segment, expected: &Geometry, check: Check) -> Result<Arc<Self>> {
        let mem = seg.object();
        // SAFETY: the object area is mapped for `mem.len` bytes, 128-aligned.
        let geo = unsafe { read_geometry(mem.ptr, mem.len) }
            .map_err(|d| Error::corrupted(seg.name(), d))?;
        let mismatch = |detail: String| {
            Err(Error::LayoutMismatch {
                name: seg.name().to_owned(),
                detail,
            })
        };
        if check == Check::AnyByteRing {
            if geo.flavor != FLAVOR_BYTES || geo.payload_offset != 8 || geo.payload_size < 9 {
                return mismatch(format!("not a byte ring: {geo:?}"));
            }
        } else {
            let same_slots = geo.flavor == expected.flavor
                && geo.stride == expected.stride
                && geo.payload_offset == expected.payload_offset
                && geo.payload_size == expected.payload_size;
            if !same_slots {
                return mismatch(describe_slots(&geo, expected));
            }
            if check == Check::Exact && geo.capacity != expected.capacity {
                return mismatch(format!(
                    "the ring has {} slots, this call asked for {} (Options::any_capacity accepts any)",
                    geo.capacity, expected.capacity
                ));
            }
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
        Self::attach(seg, &geo, Check::Exact)
    }

    /// Opens a ring of any capacity; `geo` gives the slot shape expected.
    pub(crate) fn open(
        name: &str,
        fp: Fingerprint,
        geo: Geometry,
        opts: &Options,
    ) -> Result<Arc<Self>> {
        let seg = Segment::open(name, &Self::spec(fp, &geo)?, opts)?;
        Self::attach(seg, &geo, Check::AnyCapacity)
    }

    /// Attaches to an opened segment that holds a typed ring whose slots have `geo`'s
    /// shape (any capacity): for rings whose payload is known only at run time.
    pub(crate) fn attach_typed(seg: Segment, geo: &Geometry) -> Result<Arc<Self>> {
        Self::attach(seg, geo, Check::AnyCapacity)
    }

    /// Opens a byte ring of any capacity and message size.
    pub(crate) fn open_any_bytes(name: &str, opts: &Options) -> Result<Arc<Self>> {
        let probe = Geometry::new(1, 16, 8, FLAVOR_BYTES).expect("valid geometry");
        let seg = Segment::open(name, &Self::spec(Fingerprint::bytes(), &probe)?, opts)?;
        Self::attach(seg, &probe, Check::AnyByteRing)
    }

    /// Opens or creates. An existing ring must have `geo`'s capacity (and slot shape),
    /// unless `opts.any_capacity`.
    pub(crate) fn open_or_create(
        name: &str,
        fp: Fingerprint,
        geo: Geometry,
        opts: &Options,
    ) -> Result<(Arc<Self>, bool)> {
        let (seg, created) = Segment::open_or_create(name, &Self::spec(fp, &geo)?, opts)?;
        let check = match (created, opts.any_capacity, geo.flavor) {
            (true, _, _) | (false, false, _) => Check::Exact,
            (false, true, FLAVOR_BYTES) => Check::AnyByteRing,
            (false, true, _) => Check::AnyCapacity,
        };
        Ok((Self::attach(seg, &geo, check)?, created))
    }

    fn role_word(&self, role: Role) -> &RoleWord {
        let ctl = &self.view.header().ctl;
        match role {
            Role::Producer => &ctl.producer,
            Role::Consumer => &ctl.consumer,
        }
    }

    /// Claims `role` for this handle's holder slot. A role whose holder is dead is
    /// reclaimed first (by a sweep); one that names a slot that is not a live holder at
    /// all (free, out of range: a crash between table updates, or a corrupt word) is
    /// vacated by CAS.
    pub(crate) fn claim(&self, role: Role) -> Result<()> {
        self.seg.check_owner()?;
        let word = self.role_word(role);
        let me = self.seg.slot();
        for attempt in 0..3 {
            let holder = match word.try_claim(me) {
                Ok(()) => {
                    self.roles_changed();
                    return Ok(());
                }
                Err(st) => st.holder_slot().unwrap_or(me),
            };
            if holder == me || self.seg.holder_alive(holder) {
                break;
            }
            if attempt == 0 {
                // Its holder died and no sweep has run yet: the sweep recovers what
                // it left and vacates the role.
                self.seg.sweep()?;
            } else {
                // Still named after a sweep: not a live table slot. Recover the role
                // as the sweep would (a CAS: only from that holder).
                crate::objects::ring::recover(&self.view, holder);
            }
        }
        Err(Error::RoleTaken {
            name: self.seg.name().to_owned(),
            role: role.name(),
        })
    }

    /// Wakes handles waiting for a peer to appear or leave.
    fn roles_changed(&self) {
        let w = &self.view.header().ctl.roles_changed;
        // SYNC POINT: Release pairs with the Acquire load in `wait_for_peer`; the role
        // word itself carries the claim's ordering.
        w.fetch_add(1, Ordering::Release);
        sys::futex_wake(w, u32::MAX);
    }

    pub(crate) fn release_role(&self, role: Role) {
        self.role_word(role).release(self.seg.slot());
        self.roles_changed();
    }

    /// Whether `role` was held once and is vacant now: one load, no system call.
    #[inline]
    pub(crate) fn role_vacated(&self, role: Role) -> bool {
        self.role_word(role).load().vacated()
    }

    /// The state of the peer holding `role`. One lock probe when it is held.
    pub(crate) fn peer_state(&self, role: Role) -> PeerState {
        let st = self.role_word(role).load();
        match st.holder_slot() {
            Some(slot) if self.seg.holder_alive(slot) => PeerState::Connected,
            Some(_) => PeerState::Crashed,
            None if st.claims == 0 => PeerState::NotYetConnected,
            None if st.exit == Exit::Crashed => PeerState::Crashed,
            None => PeerState::Closed,
        }
    }

    /// Whether the holder of `role` has gone: vacated, or its holder is dead. One lock
    /// probe at most, never waiting for the admin lock, so it answers at once even
    /// while a stopped process holds that lock.
    pub(crate) fn role_gone(&self, role: Role) -> bool {
        let st = self.role_word(role).load();
        match st.holder_slot() {
            Some(slot) => !self.seg.holder_alive(slot),
            None => st.vacated(),
        }
    }

    /// A blocked handle's check: as [`role_gone`](Self::role_gone), and a dead holder
    /// is remembered in `probe` (so non-blocking calls agree from then on) and
    /// reclaimed by a sweep if the admin lock is free now (it is never waited for).
    fn peer_gone_blocking(&self, role: Role, probe: &mut Probe) -> bool {
        let st = self.role_word(role).load();
        let Some(slot) = st.holder_slot() else {
            return st.vacated();
        };
        if self.seg.holder_alive(slot) {
            return false;
        }
        probe.dead = Some(st.raw());
        let _ = self.seg.try_sweep();
        true
    }

    /// The cold path of a non-blocking call that would block: whether the peer has gone.
    /// A vacated role is seen at once (one load); a dead holder that no sweep has
    /// reclaimed yet is noticed by a lock probe made at most every `PROBE_EVERY`, and
    /// then reported on every call until the role word changes.
    #[cold]
    pub(crate) fn peer_gone_polled(&self, role: Role, probe: &mut Probe) -> bool {
        let st = self.role_word(role).load();
        let Some(slot) = st.holder_slot() else {
            return st.vacated();
        };
        if probe.dead == Some(st.raw()) {
            return true;
        }
        if !probe.due() || self.seg.holder_alive(slot) {
            return false;
        }
        probe.dead = Some(st.raw());
        let _ = self.seg.try_sweep();
        true
    }

    /// What an empty poll reports: `Disconnected` once nothing is left at `cur.head`
    /// and the producer has gone, else `Empty`.
    #[inline]
    pub(crate) fn empty_error(&self, cur: &ConsumerCursor, probe: &mut Probe) -> TryRecvError {
        if !self.view.is_committed(cur.head) && self.peer_gone_polled(Role::Producer, probe) {
            TryRecvError::Disconnected
        } else {
            TryRecvError::Empty
        }
    }

    /// What a failed reservation reports: `Disconnected` once the consumer has gone,
    /// else `Full`.
    #[cold]
    pub(crate) fn full_error(&self, probe: &mut Probe) -> ReserveError {
        if self.peer_gone_polled(Role::Consumer, probe) {
            ReserveError::Disconnected
        } else {
            ReserveError::Full
        }
    }

    /// Waits until the peer `role` is held by a live handle, or the deadline passes.
    pub(crate) fn wait_for_peer(&self, role: Role, deadline: Option<Instant>) -> bool {
        let changed = &self.view.header().ctl.roles_changed;
        loop {
            // SYNC POINT: Acquire pairs with the Release increment in `roles_changed`;
            // loaded before the check so a claim after the check changes it.
            let seen = changed.load(Ordering::Acquire);
            if self.peer_state(role) == PeerState::Connected {
                return true;
            }
            match wait::sleep_slice(deadline) {
                Some(t) => sys::futex_wait(changed, seen, Some(t)),
                None => return false,
            }
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

    /// Waits until position `cur.head` may be committed, the producer has gone, or the
    /// deadline passes: spins for `spin`, then sleeps.
    pub(crate) fn wait_data(
        &self,
        cur: &ConsumerCursor,
        spin: Duration,
        deadline: Option<Instant>,
        probe: &mut Probe,
    ) -> Wait {
        let view = &self.view;
        let mut b = RingBlocker {
            shared: self,
            word: view.seq(cur.head),
            flag: &view.header().wait.consumer_waiting,
            peer: Role::Producer,
            probe,
            ready: || view.is_committed(cur.head),
        };
        wait::block(spin, deadline, &mut b)
    }

    /// Waits until at least `want` slots may be free, the consumer has gone, or the
    /// deadline passes: spins for `spin`, then sleeps.
    pub(crate) fn wait_space(
        &self,
        cur: &mut ProducerCursor,
        want: u64,
        spin: Duration,
        deadline: Option<Instant>,
        probe: &mut Probe,
    ) -> Wait {
        let hdr = self.view.header();
        let mut b = RingBlocker {
            shared: self,
            word: &hdr.head.released,
            flag: &hdr.wait.producer_waiting,
            peer: Role::Consumer,
            probe,
            ready: || cur.free(want) >= want,
        };
        wait::block(spin, deadline, &mut b)
    }
}

/// A blocked ring handle: what it sleeps on and whose departure ends the wait.
struct RingBlocker<'a, F> {
    shared: &'a Shared,
    /// The futex word its peer changes when the condition may have changed.
    word: &'a AtomicU32,
    /// Its "I may be asleep" flag, which the peer checks before waking.
    flag: &'a AtomicU32,
    /// The role whose departure ends the wait.
    peer: Role,
    probe: &'a mut Probe,
    ready: F,
}

impl<F: FnMut() -> bool> Blocker for RingBlocker<'_, F> {
    fn ready(&mut self) -> bool {
        (self.ready)()
    }
    fn gone_fast(&mut self) -> bool {
        self.shared.role_vacated(self.peer)
    }
    fn gone_probe(&mut self) -> bool {
        self.shared.peer_gone_blocking(self.peer, self.probe)
    }
    fn word(&self) -> &AtomicU32 {
        self.word
    }
    fn enter_sleep(&self) {
        self.flag.store(1, Ordering::Relaxed);
    }
    fn leave_sleep(&self) {
        self.flag.store(0, Ordering::Relaxed);
    }
}

/// How much of an existing ring's geometry must match.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Slot shape and capacity.
    Exact,
    /// Slot shape; any capacity.
    AnyCapacity,
    /// Any byte ring.
    AnyByteRing,
}

/// Why two slot shapes differ, in a user's terms.
fn describe_slots(found: &Geometry, expected: &Geometry) -> String {
    let what = |g: &Geometry| match g.flavor {
        FLAVOR_BYTES => format!(
            "byte messages of up to {} bytes",
            g.payload_size.saturating_sub(8)
        ),
        _ => format!("{}-byte payloads", g.payload_size),
    };
    format!(
        "the ring holds {} in {}-byte slots, this call expects {} in {}-byte slots",
        what(found),
        found.stride,
        what(expected),
        expected.stride
    )
}

impl Shared {
    /// Waits until `want` slots are free: `Ok`, or why not.
    pub(crate) fn await_space(
        &self,
        cur: &mut ProducerCursor,
        want: u64,
        spin: Duration,
        deadline: Option<Instant>,
        probe: &mut Probe,
    ) -> std::result::Result<(), ReserveTimeoutError> {
        loop {
            if cur.free(want) >= want {
                return Ok(());
            }
            match self.wait_space(cur, want, spin, deadline, probe) {
                Wait::Retry => {}
                // One last look: the consumer may have freed slots before going.
                Wait::Gone if cur.free(want) >= want => return Ok(()),
                Wait::Gone => return Err(ReserveTimeoutError::Disconnected),
                Wait::TimedOut => return Err(ReserveTimeoutError::Timeout),
            }
        }
    }

    /// Waits until position `cur.head` is committed: `Ok`, or why not.
    pub(crate) fn await_data(
        &self,
        cur: &ConsumerCursor,
        spin: Duration,
        deadline: Option<Instant>,
        probe: &mut Probe,
    ) -> std::result::Result<(), RecvTimeoutError> {
        loop {
            if self.view.is_committed(cur.head) {
                return Ok(());
            }
            match self.wait_data(cur, spin, deadline, probe) {
                Wait::Retry => {}
                // One last look: the producer may have committed before going.
                Wait::Gone if self.view.is_committed(cur.head) => return Ok(()),
                Wait::Gone => return Err(RecvTimeoutError::Disconnected),
                Wait::TimedOut => return Err(RecvTimeoutError::Timeout),
            }
        }
    }
}
