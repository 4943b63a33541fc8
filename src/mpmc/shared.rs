//! What every MPMC handle shares: the segment, the validated view, handle counts per
//! holder, claims that repair a dead holder's leftovers, and the blocking waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::objects::mpmc::{
    FLAVOR_BYTES, Geometry, MpmcView, Phase, ReadClaim, SlotState, WriteClaim, read_geometry,
};
use crate::ring::{PeerState, RecvTimeoutError, ReserveError, ReserveTimeoutError, TryRecvError};
use crate::segment::{Fingerprint, Kind, ObjectSpec, Options, Segment};
use crate::sys;
use crate::wait::{self, Blocker, Probe, Wait};

/// Which side a handle is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Producer,
    Consumer,
}

impl Side {
    /// The handle-count unit of this side in a holder's role word.
    fn unit(self) -> u32 {
        match self {
            Side::Producer => 1,
            Side::Consumer => 1 << 16,
        }
    }

    fn count(self, roles: u32) -> u32 {
        match self {
            Side::Producer => roles & 0xffff,
            Side::Consumer => roles >> 16,
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Producer => Side::Consumer,
            Side::Consumer => Side::Producer,
        }
    }
}

pub(crate) struct MpmcShared {
    pub seg: Segment,
    pub view: MpmcView,
}

impl MpmcShared {
    fn spec<'a>(fingerprint: Fingerprint, geo: &'a Geometry) -> Result<ObjectSpec<'a>> {
        let object_len = geo
            .object_len()
            .ok_or_else(|| Error::InvalidArgument("ring too large".into()))?;
        Ok(ObjectSpec {
            kind: kind_of(geo),
            fingerprint,
            object_len,
            init: Box::new(move |mem| {
                // SAFETY: the segment layer hands `init` a fresh, private, 128-aligned
                // area of exactly `object_len` bytes.
                unsafe { crate::objects::mpmc::init(mem.ptr, geo) }
            }),
            recover: crate::objects::recover_any,
        })
    }

    /// Validates the ring in `seg` against `expected` (its capacity too if `exact`).
    fn attach(seg: Segment, expected: &Geometry, exact: bool) -> Result<Arc<Self>> {
        let mem = seg.object();
        // SAFETY: the object area is mapped for `mem.len` bytes, 128-aligned.
        let geo = unsafe { read_geometry(mem.ptr, mem.len) }
            .map_err(|d| Error::corrupted(seg.name(), d))?;
        let same_slots = geo.flavor == expected.flavor
            && geo.stride == expected.stride
            && geo.payload_offset == expected.payload_offset
            && (geo.payload_size == expected.payload_size
                || (!exact && expected.flavor == FLAVOR_BYTES));
        if !same_slots || (exact && geo.capacity != expected.capacity) {
            return Err(Error::LayoutMismatch {
                name: seg.name().to_owned(),
                detail: format!(
                    "the ring has {} slots of {} payload bytes, this call expects {} of {} (Options::any_capacity accepts any capacity)",
                    geo.capacity, geo.payload_size, expected.capacity, expected.payload_size
                ),
            });
        }
        if seg.slot() >= geo.holders {
            return Err(Error::corrupted(
                seg.name(),
                format!(
                    "holder slot {} is beyond the ring's {} role counts",
                    seg.slot(),
                    geo.holders
                ),
            ));
        }
        // SAFETY: the view's memory is the segment's mapping, which `MpmcShared` keeps
        // alive as long as the view (it owns the segment).
        let view = unsafe { MpmcView::new(mem.ptr, geo) };
        Ok(Arc::new(MpmcShared { seg, view }))
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

    /// Opens a ring of any capacity (and, for bytes, any message size).
    pub(crate) fn open(
        name: &str,
        fp: Fingerprint,
        geo: Geometry,
        opts: &Options,
    ) -> Result<Arc<Self>> {
        let seg = Segment::open(name, &Self::spec(fp, &geo)?, opts)?;
        let stored = Self::stored_geometry(&seg)?;
        let expected = Geometry {
            capacity: stored.capacity,
            payload_size: if geo.flavor == FLAVOR_BYTES {
                stored.payload_size
            } else {
                geo.payload_size
            },
            stride: if geo.flavor == FLAVOR_BYTES {
                stored.stride
            } else {
                geo.stride
            },
            ..geo
        };
        Self::attach(seg, &expected, false)
    }

    pub(crate) fn open_or_create(
        name: &str,
        fp: Fingerprint,
        geo: Geometry,
        opts: &Options,
    ) -> Result<(Arc<Self>, bool)> {
        let (seg, created) = Segment::open_or_create(name, &Self::spec(fp, &geo)?, opts)?;
        if created || !opts.any_capacity {
            return Ok((Self::attach(seg, &geo, true)?, created));
        }
        let stored = Self::stored_geometry(&seg)?;
        let expected = Geometry {
            capacity: stored.capacity,
            ..if geo.flavor == FLAVOR_BYTES {
                Geometry {
                    payload_size: stored.payload_size,
                    stride: stored.stride,
                    ..geo
                }
            } else {
                geo
            }
        };
        Ok((Self::attach(seg, &expected, false)?, false))
    }

    fn stored_geometry(seg: &Segment) -> Result<Geometry> {
        let mem = seg.object();
        // SAFETY: the object area is mapped for `mem.len` bytes, 128-aligned.
        unsafe { read_geometry(mem.ptr, mem.len) }.map_err(|d| Error::corrupted(seg.name(), d))
    }

    fn me(&self) -> u32 {
        self.seg.slot()
    }

    fn my_roles(&self) -> &AtomicU32 {
        self.view
            .roles(self.me())
            .expect("checked at attach: our slot has a role count")
    }

    /// A new handle of `side` in this process.
    pub(crate) fn join(&self, side: Side) -> Result<()> {
        self.seg.check_owner()?;
        let ctl = &self.view.header().ctl;
        let roles = self.my_roles();
        if side.count(roles.load(Ordering::Relaxed)) == 0xffff {
            return Err(Error::InvalidArgument(
                "65535 handles of one side through one attachment".into(),
            ));
        }
        roles.fetch_add(side.unit(), Ordering::Relaxed);
        let ever = match side {
            Side::Producer => &ctl.producers_ever,
            Side::Consumer => &ctl.consumers_ever,
        };
        let _ = ever.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
        self.roles_changed();
        Ok(())
    }

    /// A handle of `side` goes. In a forked child this does nothing.
    pub(crate) fn leave(&self, side: Side) {
        if self.seg.check_owner().is_err() {
            return;
        }
        let _ = self
            .my_roles()
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                (side.count(r) > 0).then(|| r - side.unit())
            });
        self.roles_changed();
        // Waiters of either side re-check whether their peers are gone.
        self.wake(&self.view.header().wait.data);
        self.wake(&self.view.header().wait.space);
    }

    fn roles_changed(&self) {
        let w = &self.view.header().ctl.roles_changed;
        // SYNC POINT: Release pairs with the Acquire load in `wait_for_peers`.
        w.fetch_add(1, Ordering::Release);
        sys::futex_wake(w, u32::MAX);
    }

    fn wake(&self, word: &AtomicU32) {
        // SYNC POINT: Release pairs with the sleeper's Acquire load of the word.
        word.fetch_add(1, Ordering::Release);
        sys::futex_wake(word, u32::MAX);
    }

    /// Handles of `side` counted in the role array, and whether any was ever made.
    fn counted(&self, side: Side) -> (u32, bool) {
        let ctl = &self.view.header().ctl;
        let ever = match side {
            Side::Producer => ctl.producers_ever.load(Ordering::Relaxed),
            Side::Consumer => ctl.consumers_ever.load(Ordering::Relaxed),
        };
        let total = (0..self.view.geo.holders)
            .filter_map(|s| self.view.roles(s))
            .map(|r| side.count(r.load(Ordering::Relaxed)))
            .sum();
        (total, ever > 0)
    }

    /// Where the handles of `side` stand: none ever, some live, or all gone (closed, or
    /// crashed if a dead holder still counts handles). Probes the holders that count
    /// handles of `side` (a lock probe each, stopping at the first live one).
    pub(crate) fn peers(&self, side: Side) -> PeerState {
        let (_, ever) = self.counted(side);
        if !ever {
            return PeerState::NotYetConnected;
        }
        let mut dead = false;
        for s in 0..self.view.geo.holders {
            let Some(r) = self.view.roles(s) else { break };
            if side.count(r.load(Ordering::Relaxed)) == 0 {
                continue;
            }
            if s == self.me() || self.seg.holder_alive(s) {
                return PeerState::Connected;
            }
            dead = true;
        }
        if dead {
            PeerState::Crashed
        } else {
            PeerState::Closed
        }
    }

    /// Whether every handle of `side` has gone, by the counts alone (no system call).
    fn peers_gone_fast(&self, side: Side) -> bool {
        let (total, ever) = self.counted(side);
        ever && total == 0
    }

    /// Repairs the claim in `st` if its holder is dead: skips a dead writer's position,
    /// redelivers a dead reader's message. Returns whether it repaired anything.
    fn repair_if_dead(&self, st: SlotState) -> bool {
        let Some(slot) = st.holder_slot() else {
            return false;
        };
        if slot == self.me() || self.seg.holder_alive(slot) {
            return false;
        }
        let repaired = match st.phase {
            Phase::Writing => self.view.skip(st.pos, st.holder),
            Phase::Reading => self.view.orphan(st.pos, st.holder),
            _ => false,
        };
        if repaired {
            let w = &self.view.header().wait;
            self.wake(&w.data);
            self.wake(&w.space);
            // Reclaim the dead holder's slot too, if nobody is in an admin section.
            let _ = self.seg.try_sweep();
        }
        repaired
    }

    /// Claims a position to write. A slot in the way whose claimer died is repaired
    /// (with a liveness probe at most every few ms unless `force`).
    pub(crate) fn claim_write(
        &self,
        probe: &mut Probe,
        force: bool,
    ) -> std::result::Result<u64, ReserveError> {
        for _ in 0..3 {
            match self.view.try_write(self.me()) {
                WriteClaim::Got(pos) => return Ok(pos),
                WriteClaim::Full { blocker } => {
                    if self.peers_gone_fast(Side::Consumer) {
                        return Err(ReserveError::Disconnected);
                    }
                    if !(force || probe.due()) {
                        return Err(ReserveError::Full);
                    }
                    if self.repair_if_dead(blocker) {
                        continue;
                    }
                    return Err(if self.peers(Side::Consumer).is_gone() {
                        ReserveError::Disconnected
                    } else {
                        ReserveError::Full
                    });
                }
            }
        }
        Err(ReserveError::Full)
    }

    /// Claims a message to read. A position at `head` whose writer died is skipped
    /// (with a liveness probe at most every few ms unless `force`).
    pub(crate) fn claim_read(
        &self,
        probe: &mut Probe,
        force: bool,
    ) -> std::result::Result<u64, TryRecvError> {
        for _ in 0..3 {
            let stalled = match self.view.try_read(self.me()) {
                ReadClaim::Got(pos) => return Ok(pos),
                ReadClaim::Empty => None,
                ReadClaim::InFlight(st) => Some(st),
            };
            if !(force || probe.due()) {
                return Err(
                    if stalled.is_none() && self.peers_gone_fast(Side::Producer) {
                        TryRecvError::Disconnected
                    } else {
                        TryRecvError::Empty
                    },
                );
            }
            if let Some(st) = stalled
                && self.repair_if_dead(st)
            {
                continue;
            }
            return Err(
                if stalled.is_none() && self.peers(Side::Producer).is_gone() {
                    TryRecvError::Disconnected
                } else {
                    TryRecvError::Empty
                },
            );
        }
        Err(TryRecvError::Empty)
    }

    /// Waits for a position to write.
    pub(crate) fn await_write(
        &self,
        spin: Duration,
        deadline: Option<Instant>,
        probe: &mut Probe,
    ) -> std::result::Result<u64, ReserveTimeoutError> {
        let mut force = false;
        loop {
            match self.claim_write(probe, force) {
                Ok(pos) => return Ok(pos),
                Err(ReserveError::Disconnected) => return Err(ReserveTimeoutError::Disconnected),
                Err(_) => {}
            }
            let mut b = MpmcBlocker {
                shared: self,
                side: Side::Producer,
            };
            match wait::block(spin, deadline, &mut b) {
                Wait::Retry => force = false,
                Wait::Gone => force = true,
                Wait::TimedOut => return Err(ReserveTimeoutError::Timeout),
            }
        }
    }

    /// Waits for a message to read.
    pub(crate) fn await_read(
        &self,
        spin: Duration,
        deadline: Option<Instant>,
        probe: &mut Probe,
    ) -> std::result::Result<u64, RecvTimeoutError> {
        let mut force = false;
        loop {
            match self.claim_read(probe, force) {
                Ok(pos) => return Ok(pos),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            let mut b = MpmcBlocker {
                shared: self,
                side: Side::Consumer,
            };
            match wait::block(spin, deadline, &mut b) {
                Wait::Retry => force = false,
                Wait::Gone => force = true,
                Wait::TimedOut => return Err(RecvTimeoutError::Timeout),
            }
        }
    }

    /// Publishes a written position, waking sleeping consumers.
    #[inline]
    pub(crate) fn commit(&self, pos: u64) {
        if self.view.commit(pos) {
            self.wake(&self.view.header().wait.data);
        }
    }

    /// Frees a read position, waking sleeping producers.
    #[inline]
    pub(crate) fn release(&self, pos: u64) {
        if self.view.release(pos) {
            self.wake(&self.view.header().wait.space);
        }
    }

    /// A claimed position its producer handle gives up (dropped unwritten).
    pub(crate) fn give_up_write(&self, pos: u64) {
        if self.view.skip(pos, self.me() + 1) {
            self.wake(&self.view.header().wait.data);
        }
    }

    /// A message its consumer handle gives back unreleased: another consumer gets it.
    pub(crate) fn give_back_read(&self, pos: u64) {
        if self.view.orphan(pos, self.me() + 1) {
            self.wake(&self.view.header().wait.data);
        }
    }

    /// Waits until a live handle of `side` exists, at most until `deadline`.
    pub(crate) fn wait_for_peers(&self, side: Side, deadline: Option<Instant>) -> bool {
        let changed = &self.view.header().ctl.roles_changed;
        loop {
            // SYNC POINT: Acquire pairs with the Release increment in `roles_changed`;
            // loaded before the check so a join after the check changes it.
            let seen = changed.load(Ordering::Acquire);
            if self.peers(side) == PeerState::Connected {
                return true;
            }
            match wait::sleep_slice(deadline) {
                Some(t) => sys::futex_wait(changed, seen, Some(t)),
                None => return false,
            }
        }
    }
}

/// The segment kind of a geometry's flavor.
fn kind_of(geo: &Geometry) -> Kind {
    if geo.flavor == FLAVOR_BYTES {
        Kind::MpmcByteRing
    } else {
        Kind::MpmcRing
    }
}

/// A blocked MPMC handle of `side`.
struct MpmcBlocker<'a> {
    shared: &'a MpmcShared,
    side: Side,
}

impl Blocker for MpmcBlocker<'_> {
    fn ready(&mut self) -> bool {
        match self.side {
            Side::Producer => self.shared.view.write_ready(),
            Side::Consumer => self.shared.view.read_ready(),
        }
    }
    fn gone_fast(&mut self) -> bool {
        self.shared.peers_gone_fast(self.side.other())
    }
    fn gone_probe(&mut self) -> bool {
        // "Gone" here means "re-evaluate with a forced probe": the slot in the way has
        // a dead claimer (repairable), or every peer has gone.
        let view = &self.shared.view;
        let in_the_way = match self.side {
            Side::Producer => {
                let pos = view.header().tail.load(Ordering::Relaxed);
                SlotState::decode(view.state(pos).load(Ordering::Acquire))
            }
            Side::Consumer => view.state_at_head(),
        };
        let dead_claimer = in_the_way
            .holder_slot()
            .is_some_and(|s| s != self.shared.me() && !self.shared.seg.holder_alive(s));
        dead_claimer || self.shared.peers(self.side.other()).is_gone()
    }
    fn word(&self) -> &AtomicU32 {
        let w = &self.shared.view.header().wait;
        match self.side {
            Side::Producer => &w.space,
            Side::Consumer => &w.data,
        }
    }
    fn enter_sleep(&self) {
        let w = &self.shared.view.header().wait;
        match self.side {
            Side::Producer => w.producers_asleep.fetch_add(1, Ordering::Relaxed),
            Side::Consumer => w.consumers_asleep.fetch_add(1, Ordering::Relaxed),
        };
    }
    fn leave_sleep(&self) {
        let w = &self.shared.view.header().wait;
        let dec = |n: u32| n.checked_sub(1);
        let _ = match self.side {
            Side::Producer => {
                w.producers_asleep
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, dec)
            }
            Side::Consumer => {
                w.consumers_asleep
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, dec)
            }
        };
    }
}
