//! What publisher and subscriber handles share: the segment, the validated view, the
//! publisher role claim, cursor lines, repair of dead subscribers' cursors, and the
//! blocking waits (spin, then futex sleep in bounded slices).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::error::{BroadcastRecvTimeoutError, BroadcastTryRecvError, Lagged};
use crate::atomics::AtomicU32;
use crate::error::{Error, Result};
use crate::objects::broadcast::{
    BcastView, FLAVOR_BYTES, Found, Geometry, JoinAt, POLICY_LOSSY, PubCursor, SubCursor,
    owner_holder, read_geometry,
};
use crate::objects::role::Exit;
use crate::ring::PeerState;
use crate::segment::{Fingerprint, Kind, ObjectSpec, Options, Segment};
use crate::sys;
use crate::wait::{self, Blocker, Probe, Wait};

/// Which delivery guarantee a broadcast ring gives, chosen at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// The publisher waits for the slowest live subscriber: every subscriber sees
    /// every message. A dead subscriber stops holding it back within one sleep slice
    /// (10 ms) of the publisher waiting on it; a stopped one holds it back.
    Lossless,
    /// The publisher never waits: a subscriber more than a ring behind is told how
    /// many messages it missed ([`Lagged`]) and continues from the oldest one left.
    Lossy,
}

impl Policy {
    pub(crate) fn tag(self) -> u32 {
        match self {
            Policy::Lossless => crate::objects::broadcast::POLICY_LOSSLESS,
            Policy::Lossy => POLICY_LOSSY,
        }
    }

    pub(crate) fn from_tag(tag: u32) -> Policy {
        if tag == POLICY_LOSSY {
            Policy::Lossy
        } else {
            Policy::Lossless
        }
    }

    /// `"lossless"` or `"lossy"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Lossless => "lossless",
            Policy::Lossy => "lossy",
        }
    }
}

/// Where a new subscriber starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Start {
    /// At the next message committed after it subscribed.
    #[default]
    Newest,
    /// At the oldest message still in the ring: lossy, the last `capacity` messages;
    /// lossless, the oldest one the publisher may not yet overwrite (where the slowest
    /// live subscriber is, or up to a ring back when there is none).
    Oldest,
}

pub(crate) struct BcastShared {
    pub seg: Segment,
    pub view: BcastView,
}

fn kind_of(geo: &Geometry) -> Kind {
    if geo.flavor == FLAVOR_BYTES {
        Kind::ByteBroadcast
    } else {
        Kind::Broadcast
    }
}

impl BcastShared {
    fn spec<'a>(fingerprint: Fingerprint, geo: &'a Geometry) -> Result<ObjectSpec<'a>> {
        let object_len = geo
            .object_len()
            .ok_or_else(|| Error::InvalidArgument("broadcast ring too large".into()))?;
        Ok(ObjectSpec {
            kind: kind_of(geo),
            fingerprint,
            object_len,
            init: Box::new(move |mem| {
                // SAFETY: the segment layer hands `init` a fresh, private, 128-aligned
                // area of exactly `object_len` bytes.
                unsafe { crate::objects::broadcast::init(mem.ptr, geo) }
            }),
            recover: crate::objects::recover_any,
        })
    }

    pub(crate) fn stored_geometry(seg: &Segment) -> Result<Geometry> {
        let mem = seg.object();
        // SAFETY: the object area is mapped for `mem.len` bytes, 128-aligned.
        unsafe { read_geometry(mem.ptr, mem.len) }.map_err(|d| Error::corrupted(seg.name(), d))
    }

    /// Validates the ring in `seg` against `expected`: its slot shape always (a byte
    /// ring's message size only if `exact`), its capacity and policy if `exact`.
    pub(crate) fn attach(
        seg: Segment,
        expected: &Geometry,
        exact: bool,
        policy: bool,
    ) -> Result<Arc<Self>> {
        let geo = Self::stored_geometry(&seg)?;
        let bytes = expected.flavor == FLAVOR_BYTES;
        let same_slots = geo.flavor == expected.flavor
            && (bytes && !exact
                || geo.stride == expected.stride
                    && geo.payload_offset == expected.payload_offset
                    && geo.payload_size == expected.payload_size);
        let mismatch = |detail: String| {
            Err(Error::LayoutMismatch {
                name: seg.name().to_owned(),
                detail,
            })
        };
        if !same_slots || (exact && geo.capacity != expected.capacity) {
            return mismatch(format!(
                "the ring has {} slots of {} payload bytes, this call expects {} of {} (Options::any_capacity accepts any capacity)",
                geo.capacity, geo.payload_size, expected.capacity, expected.payload_size
            ));
        }
        if policy && geo.policy != expected.policy {
            return mismatch(format!(
                "the ring is {}, this call asked for {}",
                Policy::from_tag(geo.policy).as_str(),
                Policy::from_tag(expected.policy).as_str()
            ));
        }
        let mem = seg.object();
        // SAFETY: the view's memory is the segment's mapping, which `BcastShared` keeps
        // alive as long as the view (it owns the segment).
        let view = unsafe { BcastView::new(mem.ptr, geo) };
        Ok(Arc::new(BcastShared { seg, view }))
    }

    pub(crate) fn create(
        name: &str,
        fp: Fingerprint,
        geo: Geometry,
        opts: &Options,
    ) -> Result<Arc<Self>> {
        let seg = Segment::create(name, &Self::spec(fp, &geo)?, opts)?;
        Self::attach(seg, &geo, true, true)
    }

    /// Opens a ring of any capacity and policy (and, for bytes, any message size).
    pub(crate) fn open(
        name: &str,
        fp: Fingerprint,
        geo: Geometry,
        opts: &Options,
    ) -> Result<Arc<Self>> {
        let seg = Segment::open(name, &Self::spec(fp, &geo)?, opts)?;
        Self::attach(seg, &geo, false, false)
    }

    pub(crate) fn open_or_create(
        name: &str,
        fp: Fingerprint,
        geo: Geometry,
        opts: &Options,
    ) -> Result<(Arc<Self>, bool)> {
        let (seg, created) = Segment::open_or_create(name, &Self::spec(fp, &geo)?, opts)?;
        let exact = created || !opts.any_capacity;
        Ok((Self::attach(seg, &geo, exact, true)?, created))
    }

    pub(crate) fn policy(&self) -> Policy {
        Policy::from_tag(self.view.geo.policy)
    }

    // --- the publisher role --------------------------------------------------------------

    /// Claims the publisher role for this handle's holder slot, reclaiming a dead
    /// holder's first (as the SPSC ring's `claim`).
    pub(crate) fn claim_publisher(&self) -> Result<PubCursor> {
        self.seg.check_owner()?;
        let word = &self.view.header().ctl.publisher;
        let me = self.seg.slot();
        for attempt in 0..3 {
            let holder = match word.try_claim(me) {
                Ok(()) => {
                    self.roles_changed();
                    return Ok(PubCursor::resume(self.view));
                }
                Err(st) => st.holder_slot().unwrap_or(me),
            };
            if holder == me || self.seg.holder_alive(holder) {
                break;
            }
            if attempt == 0 {
                self.seg.sweep()?;
            } else {
                // Still named after a sweep: not a live table slot. Recover as the sweep
                // would (CASes: only from that holder).
                self.view.recover(holder);
            }
        }
        Err(Error::RoleTaken {
            name: self.seg.name().to_owned(),
            role: "publisher",
        })
    }

    /// Wakes handles waiting for a publisher or subscriber to come or go.
    fn roles_changed(&self) {
        let w = &self.view.header().ctl.roles_changed;
        // SYNC POINT: Release pairs with the Acquire load in `wait_roles`.
        w.fetch_add(1, Ordering::Release);
        sys::futex_wake(w, u32::MAX);
    }

    /// The publisher leaves: its tail is already stored (every commit stores it).
    /// Release the role and wake sleeping subscribers so they see it vacant.
    pub(crate) fn leave_publisher(&self) {
        if self.seg.check_owner().is_err() {
            return;
        }
        self.view.header().ctl.publisher.release(self.seg.slot());
        self.roles_changed();
        self.wake_subscribers();
    }

    /// Where the publisher stands. One lock probe when the role is held.
    pub(crate) fn publisher_state(&self) -> PeerState {
        let st = self.view.header().ctl.publisher.load();
        match st.holder_slot() {
            Some(slot) if self.seg.holder_alive(slot) => PeerState::Connected,
            Some(_) => PeerState::Crashed,
            None if st.claims == 0 => PeerState::NotYetConnected,
            None if st.exit == Exit::Crashed => PeerState::Crashed,
            None => PeerState::Closed,
        }
    }

    /// Whether the publisher has gone: vacated, or its holder is dead (one lock probe,
    /// never waiting for the admin lock).
    pub(crate) fn publisher_gone(&self) -> bool {
        let st = self.view.header().ctl.publisher.load();
        match st.holder_slot() {
            Some(slot) => !self.seg.holder_alive(slot),
            None => st.vacated(),
        }
    }

    /// A blocked subscriber's check: as `publisher_gone`; a dead holder is remembered
    /// in `probe` and reclaimed by a sweep if the admin lock is free now.
    fn publisher_gone_blocking(&self, probe: &mut Probe) -> bool {
        let st = self.view.header().ctl.publisher.load();
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

    /// The non-blocking form: a dead holder is probed at most every `PROBE_EVERY`.
    #[cold]
    fn publisher_gone_polled(&self, probe: &mut Probe) -> bool {
        let st = self.view.header().ctl.publisher.load();
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

    /// Waits until `ok()` holds (checked after each role change), at most until
    /// `deadline`.
    pub(crate) fn wait_roles(&self, deadline: Option<Instant>, ok: impl Fn() -> bool) -> bool {
        let changed = &self.view.header().ctl.roles_changed;
        loop {
            // SYNC POINT: Acquire pairs with the Release increment in `roles_changed`;
            // loaded before the check so a change after the check alters it.
            let seen = changed.load(Ordering::Acquire);
            if ok() {
                return true;
            }
            match wait::sleep_slice(deadline) {
                Some(t) => sys::futex_wait(changed, seen, Some(t)),
                None => return false,
            }
        }
    }

    /// Cursor lines claimed now.
    pub(crate) fn subscriber_count(&self) -> usize {
        (0..self.view.geo.subs)
            .filter(|&i| {
                let c = self.view.cursor(i).expect("i < subs");
                owner_holder(c.owner.load(Ordering::Relaxed)) != 0
            })
            .count()
    }

    // --- subscribers ------------------------------------------------------------------------

    /// Claims a cursor line for a new subscriber and joins at `at`. If every line is
    /// taken, sweeps once (dead subscribers' lines come back) and tries again.
    pub(crate) fn subscribe(&self, at: JoinAt) -> Result<SubCursor> {
        self.seg.check_owner()?;
        let me = self.seg.slot();
        let claimed = match self.view.claim_cursor(me) {
            Some(c) => Some(c),
            None => {
                // Dead subscribers' lines come back with a sweep; lines that name no
                // live table slot at all (a corrupt word) are vacated by CAS.
                self.seg.sweep()?;
                self.view.claim_cursor(me).or_else(|| {
                    self.drop_stale_lines();
                    self.view.claim_cursor(me)
                })
            }
        };
        let Some((line, owner)) = claimed else {
            return Err(Error::TableFull {
                name: self.seg.name().to_owned(),
                capacity: self.view.geo.subs,
            });
        };
        let ctl = &self.view.header().ctl;
        let _ = ctl
            .subscribers_ever
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
        let cur = SubCursor::join(self.view, line, owner, at);
        self.roles_changed();
        Ok(cur)
    }

    /// Vacates every cursor line whose owner names a holder that is not alive (after a
    /// sweep: a slot out of range or free, written by a corrupt or hostile peer).
    #[cold]
    fn drop_stale_lines(&self) {
        for line in 0..self.view.geo.subs {
            let c = self.view.cursor(line).expect("line < subs");
            let owner = c.owner.load(Ordering::Acquire);
            let holder = owner_holder(owner);
            if holder != 0 && !self.seg.holder_alive(holder - 1) {
                self.view.vacate_cursor(line, owner);
            }
        }
    }

    /// A subscriber leaves: free its line, wake a publisher waiting for it.
    /// In a forked child this does nothing: the line is the parent's.
    pub(crate) fn leave_subscriber(&self, cur: &SubCursor) {
        if self.seg.check_owner().is_err() {
            return;
        }
        self.view.vacate_cursor(cur.line, cur.owner);
        self.roles_changed();
        self.wake_publisher();
    }

    /// What is at the subscriber's position: `Ok` if a message is ready, else why not.
    #[inline]
    pub(crate) fn poll(
        &self,
        cur: &mut SubCursor,
        probe: &mut Probe,
    ) -> std::result::Result<(), BroadcastTryRecvError> {
        match self.view.find(cur.pos) {
            Found::Ready => Ok(()),
            Found::Overrun(q) => Err(Lagged(cur.overrun(q, 1)).into()),
            Found::Empty => Err(self.empty_error(cur, probe)),
        }
    }

    #[cold]
    fn empty_error(&self, cur: &mut SubCursor, probe: &mut Probe) -> BroadcastTryRecvError {
        // Gone first, then look again: a publisher commits before it releases its role,
        // so what it committed is seen here (drained before Disconnected).
        if !self.publisher_gone_polled(probe) {
            return BroadcastTryRecvError::Empty;
        }
        match self.view.find(cur.pos) {
            Found::Ready => BroadcastTryRecvError::Empty,
            Found::Overrun(q) => Lagged(cur.overrun(q, 1)).into(),
            Found::Empty => BroadcastTryRecvError::Disconnected,
        }
    }

    /// Lossy: after reading `n` messages from `cur.pos` in place, checks that none was
    /// overwritten during the read and moves past them; if one was, moves to the oldest
    /// message left and reports how many were skipped (the `n` read among them).
    #[inline]
    pub(crate) fn finish(&self, cur: &mut SubCursor, n: u64) -> std::result::Result<(), Lagged> {
        if self.view.geo.lossy() && !self.view.still_intact(cur.pos, n) {
            let seen = cur.pos.wrapping_add(self.view.geo.capacity);
            return Err(Lagged(cur.overrun(seen, n)));
        }
        if cur.release(n) {
            self.wake_publisher();
        }
        Ok(())
    }

    /// Waits until a message is ready at `cur.pos` (or the subscriber was overrun), the
    /// publisher has gone, or the deadline passes.
    pub(crate) fn await_data(
        &self,
        cur: &mut SubCursor,
        spin: Duration,
        deadline: Option<Instant>,
        probe: &mut Probe,
    ) -> std::result::Result<(), BroadcastRecvTimeoutError> {
        loop {
            match self.view.find(cur.pos) {
                Found::Ready => return Ok(()),
                Found::Overrun(q) => return Err(Lagged(cur.overrun(q, 1)).into()),
                Found::Empty => {}
            }
            let view = &self.view;
            let pos = cur.pos;
            let line = view.cursor(cur.line).expect("a claimed line is in range");
            let hdr = view.header();
            let mut b = BcastBlocker {
                word: &hdr.wait.data,
                on_sleep: Some((&line.asleep, &hdr.wait.subs_asleep)),
                ready: || view.find(pos) != Found::Empty,
                gone_fast: || hdr.ctl.publisher.load().vacated(),
                gone_probe: || self.publisher_gone_blocking(probe),
            };
            match wait::block(spin, deadline, &mut b) {
                Wait::Retry => {}
                // One last look: the publisher may have committed before going.
                Wait::Gone => {
                    return match self.view.find(cur.pos) {
                        Found::Ready => Ok(()),
                        Found::Overrun(q) => Err(Lagged(cur.overrun(q, 1)).into()),
                        Found::Empty => Err(BroadcastRecvTimeoutError::Disconnected),
                    };
                }
                Wait::TimedOut => return Err(BroadcastRecvTimeoutError::Timeout),
            }
        }
    }

    // --- reading ahead (lossless rings) ---------------------------------------------

    /// Lossless: the payload of the message `i` places after `cur.pos`, if committed.
    /// `None` on a lossy ring (the publisher may overwrite what is read ahead), for `i`
    /// not below the capacity, or while it is not committed.
    pub(crate) fn ahead(&self, cur: &SubCursor, i: u64) -> Option<*mut u8> {
        if self.view.geo.lossy() || i >= self.view.geo.capacity {
            return None;
        }
        let pos = cur.pos.wrapping_add(i);
        // Committed (Acquire in `find`); the publisher does not write it before this
        // subscriber releases it: `cur.pos` holds it back, and pos < cur.pos + capacity.
        (self.view.find(pos) == Found::Ready).then(|| self.view.payload(pos))
    }

    /// Lossless: waits until the message `i` places after `cur.pos` is committed, the
    /// publisher has gone, or the deadline passes; a lossy ring, or `i` not below the
    /// capacity, times out at once.
    pub(crate) fn await_ahead(
        &self,
        cur: &SubCursor,
        i: u64,
        spin: Duration,
        deadline: Option<Instant>,
        probe: &mut Probe,
    ) -> std::result::Result<(), BroadcastRecvTimeoutError> {
        if self.view.geo.lossy() || i >= self.view.geo.capacity {
            return Err(BroadcastRecvTimeoutError::Timeout);
        }
        let mut at = SubCursor {
            pos: cur.pos.wrapping_add(i),
            ..*cur
        };
        self.await_data(&mut at, spin, deadline, probe)
    }

    /// Lossless: moves past the next `n` messages, or as many of them as are committed
    /// (none on a lossy ring). Returns how many.
    pub(crate) fn release_ahead(&self, cur: &mut SubCursor, n: u64) -> u64 {
        if self.view.geo.lossy() {
            return 0;
        }
        let n = cur.available(n.min(self.view.geo.capacity));
        if n > 0 && cur.release(n) {
            self.wake_publisher();
        }
        n
    }

    /// Wakes subscribers asleep on `data`.
    #[cold]
    pub(crate) fn wake_subscribers(&self) {
        let w = &self.view.header().wait.data;
        // SYNC POINT: Release pairs with the sleeper's Acquire load of the word.
        w.fetch_add(1, Ordering::Release);
        sys::futex_wake(w, u32::MAX);
    }

    /// Wakes a publisher asleep on `space`.
    #[cold]
    pub(crate) fn wake_publisher(&self) {
        let w = &self.view.header().wait.space;
        // SYNC POINT: Release pairs with the sleeper's Acquire load of the word.
        w.fetch_add(1, Ordering::Release);
        sys::futex_wake(w, u32::MAX);
    }

    // --- the publisher's waits -----------------------------------------------------------

    /// Publishes `n` written positions and wakes sleeping subscribers.
    #[inline]
    pub(crate) fn commit(&self, cur: &mut PubCursor, n: u64) {
        if cur.commit(n) {
            self.wake_subscribers();
        }
    }

    /// Vacates the cursors of dead subscribers that hold the publisher back from
    /// writing `want` positions: one liveness probe per laggard, a sweep only if the
    /// admin lock is free now (never waited for), then a CAS on each dead line.
    /// Returns whether any was dropped.
    #[cold]
    pub(crate) fn drop_dead_laggards(&self, tail: u64, want: u64) -> bool {
        let mut swept = false;
        let mut dropped = false;
        let laggards: Vec<(u32, u64)> = self.view.laggards(tail, want).collect();
        for (line, owner) in laggards {
            let holder = owner_holder(owner) - 1;
            if self.seg.holder_alive(holder) {
                continue;
            }
            if !swept {
                swept = true;
                let _ = self.seg.try_sweep();
            }
            if self.view.vacate_cursor(line, owner) {
                self.view
                    .header()
                    .ctl
                    .dropped_dead
                    .fetch_add(1, Ordering::Relaxed);
            }
            dropped = true;
        }
        dropped
    }

    /// Lossless: waits until `want` positions may be written, or the deadline passes.
    /// A dead subscriber holding the publisher back is dropped within one slice.
    pub(crate) fn await_room(
        &self,
        cur: &mut PubCursor,
        want: u64,
        spin: Duration,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), ()> {
        let want = want.min(self.view.geo.capacity);
        loop {
            if cur.room(want) >= want {
                return Ok(());
            }
            let hdr = self.view.header();
            let tail = cur.tail;
            let mut b = BcastBlocker {
                word: &hdr.wait.space,
                on_sleep: None,
                ready: || cur.room(want) >= want,
                gone_fast: || false,
                gone_probe: || self.drop_dead_laggards(tail, want),
            };
            // The publisher's sleep flag: set while it may sleep, so releases wake it.
            let flag = &hdr.wait.pub_asleep;
            match wait::block(
                spin,
                deadline,
                &mut PubSleep {
                    inner: &mut b,
                    flag,
                },
            ) {
                Wait::Retry | Wait::Gone => {}
                Wait::TimedOut => return Err(()),
            }
        }
    }
}

/// A blocked broadcast handle: what it sleeps on and what ends the wait.
struct BcastBlocker<'a, R, F, P> {
    word: &'a AtomicU32,
    /// Subscriber: its line's sleep flag and the sleeper count.
    on_sleep: Option<(&'a AtomicU32, &'a AtomicU32)>,
    ready: R,
    gone_fast: F,
    gone_probe: P,
}

impl<R: FnMut() -> bool, F: FnMut() -> bool, P: FnMut() -> bool> Blocker
    for BcastBlocker<'_, R, F, P>
{
    fn ready(&mut self) -> bool {
        (self.ready)()
    }
    fn gone_fast(&mut self) -> bool {
        (self.gone_fast)()
    }
    fn gone_probe(&mut self) -> bool {
        (self.gone_probe)()
    }
    fn word(&self) -> &AtomicU32 {
        self.word
    }
    fn enter_sleep(&self) {
        if let Some((flag, count)) = self.on_sleep {
            flag.store(1, Ordering::Relaxed);
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn leave_sleep(&self) {
        // Whoever clears the flag takes the sleeper out of the count, exactly once
        // (a recovery of this line may have done it already).
        if let Some((flag, count)) = self.on_sleep
            && flag.swap(0, Ordering::Relaxed) != 0
        {
            let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

/// The publisher's blocker: as its inner one, with the single `pub_asleep` flag.
struct PubSleep<'a, B> {
    inner: &'a mut B,
    flag: &'a AtomicU32,
}

impl<B: Blocker> Blocker for PubSleep<'_, B> {
    fn ready(&mut self) -> bool {
        self.inner.ready()
    }
    fn gone_fast(&mut self) -> bool {
        self.inner.gone_fast()
    }
    fn gone_probe(&mut self) -> bool {
        self.inner.gone_probe()
    }
    fn word(&self) -> &AtomicU32 {
        self.inner.word()
    }
    fn enter_sleep(&self) {
        self.flag.store(1, Ordering::Relaxed);
    }
    fn leave_sleep(&self) {
        self.flag.store(0, Ordering::Relaxed);
    }
}
