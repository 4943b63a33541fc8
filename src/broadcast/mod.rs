//! Named broadcast rings: one publisher writes each message once, in place; any number
//! of subscribers (threads or processes) read it in place, each at its own cursor.

mod bytes;
mod error;
pub(crate) mod shared;
mod untyped;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::message::Message;
use crate::objects::broadcast::{FLAVOR_TYPED, Geometry, JoinAt, PubCursor, SubCursor};
use crate::ring::{PeerState, ReserveError, ReserveTimeoutError, SendTimeoutError, TrySendError};
use crate::segment::layout::OBJECT_ALIGN;
use crate::segment::{Fingerprint, Options, SegmentInfo, SweepOutcome};
use crate::wait::{DEFAULT_SPIN, Probe, deadline_after};
pub use bytes::{
    ByteBroadcast, ByteBroadcastReadSlot, ByteBroadcastWriteSlot, BytePublisher, ByteSubscriber,
};
pub use error::{BroadcastRecvError, BroadcastRecvTimeoutError, BroadcastTryRecvError, Lagged};
use shared::BcastShared;
pub use shared::{Policy, Start};
pub use untyped::{
    UntypedBroadcast, UntypedBroadcastReadSlot, UntypedBroadcastWriteSlot, UntypedPublisher,
    UntypedSubscriber,
};

/// A named broadcast ring of `T` values in shared memory: one [`Publisher`], any number
/// of [`Subscriber`]s (up to the holder table's capacity), each reading every message.
///
/// The [`Policy`] chosen at creation says what happens when a subscriber falls a ring
/// behind: [`Lossless`](Policy::Lossless) makes the publisher wait for it (a dead
/// subscriber stops counting); [`Lossy`](Policy::Lossy) overwrites, and the subscriber
/// learns exactly how many messages it missed ([`Lagged`]).
///
/// ```
/// use tally::{Broadcast, Policy, Start};
/// # let name = format!("doc-bcast-{}", std::process::id());
/// let feed = Broadcast::<u64>::create(&name, 1024, Policy::Lossless)?;
/// let mut tx = feed.publisher()?;
/// let mut a = feed.subscribe(Start::Newest)?;
/// let mut b = feed.subscribe(Start::Newest)?;
///
/// // Written once, in place.
/// let mut slot = tx.reserve().unwrap();
/// *slot = 42;
/// slot.commit();
///
/// // Read in place by every subscriber; release() says whether the read was good.
/// let msg = a.peek().unwrap();
/// assert_eq!(*msg, 42);
/// msg.release().unwrap();
/// assert_eq!(b.try_recv(), Ok(42));
/// # Ok::<(), tally::Error>(())
/// ```
pub struct Broadcast<T: Message> {
    shared: Arc<BcastShared>,
    _t: PhantomData<fn(T) -> T>,
}

/// The slot shape of a `Broadcast<T>`.
fn typed_geometry<T: Message>(capacity: usize, policy: Policy, subs: u32) -> Result<Geometry> {
    let align = std::mem::align_of::<T>();
    if align > OBJECT_ALIGN {
        return Err(Error::InvalidArgument(format!(
            "payload {} is aligned to {align} bytes; tally lays out payloads aligned up to {OBJECT_ALIGN}",
            std::any::type_name::<T>()
        )));
    }
    Geometry::new(
        capacity,
        std::mem::size_of::<T>(),
        align,
        FLAVOR_TYPED,
        policy.tag(),
        subs,
    )
    .ok_or_else(|| {
        Error::InvalidArgument(format!(
            "capacity {capacity} of {}-byte slots: capacity must be 1..=2^30 and the ring fit in memory",
            std::mem::size_of::<T>()
        ))
    })
}

impl<T: Message> Broadcast<T> {
    /// Creates a ring of at least `capacity` slots (rounded up to a power of two).
    ///
    /// # Errors
    /// [`Error::InvalidName`] or [`Error::InvalidArgument`] for a bad name or size;
    /// [`Error::AlreadyExists`] if a live object has the name; [`Error::NoSpace`] if
    /// `/dev/shm` cannot hold it; [`Error::PermissionDenied`] or [`Error::Io`] from the
    /// system.
    pub fn create(name: &str, capacity: usize, policy: Policy) -> Result<Self> {
        Self::create_with(name, capacity, policy, &Options::default())
    }

    /// Creates a ring with explicit [`Options`]; `opts.holders` also bounds the number
    /// of subscribers.
    ///
    /// # Errors
    /// As [`create`](Broadcast::create).
    pub fn create_with(
        name: &str,
        capacity: usize,
        policy: Policy,
        opts: &Options,
    ) -> Result<Self> {
        let geo = typed_geometry::<T>(capacity, policy, opts.holders)?;
        Ok(Self::wrap(BcastShared::create(
            name,
            Fingerprint::of::<T>(),
            geo,
            opts,
        )?))
    }

    /// Opens the live ring `name` (any capacity and policy); its payload type must be `T`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no live object has the name; [`Error::KindMismatch`] or
    /// [`Error::LayoutMismatch`] if it holds another kind or payload;
    /// [`Error::VersionMismatch`] or [`Error::Corrupted`] for a segment this build
    /// cannot read; [`Error::TableFull`] if its holder table is full;
    /// [`Error::PermissionDenied`], [`Error::Timeout`] or [`Error::Io`] from the system.
    pub fn open(name: &str) -> Result<Self> {
        Self::open_with(name, &Options::default())
    }

    /// Opens with explicit [`Options`].
    ///
    /// # Errors
    /// As [`open`](Broadcast::open).
    pub fn open_with(name: &str, opts: &Options) -> Result<Self> {
        let geo = typed_geometry::<T>(1, Policy::Lossless, opts.holders)?;
        Ok(Self::wrap(BcastShared::open(
            name,
            Fingerprint::of::<T>(),
            geo,
            opts,
        )?))
    }

    /// Opens `name`, or creates it. Returns whether it created. An existing ring must
    /// have this policy, and this capacity unless
    /// [`Options::any_capacity`](crate::Options::any_capacity).
    ///
    /// # Errors
    /// As `create` and `open`; [`Error::LayoutMismatch`] for another policy or capacity.
    pub fn open_or_create(
        name: &str,
        capacity: usize,
        policy: Policy,
        opts: &Options,
    ) -> Result<(Self, bool)> {
        let geo = typed_geometry::<T>(capacity, policy, opts.holders)?;
        let (shared, created) =
            BcastShared::open_or_create(name, Fingerprint::of::<T>(), geo, opts)?;
        Ok((Self::wrap(shared), created))
    }

    fn wrap(shared: Arc<BcastShared>) -> Self {
        Broadcast {
            shared,
            _t: PhantomData,
        }
    }

    /// Claims the publisher role; a successor continues the sequence where the last
    /// publisher stopped (after a crash: after its last committed message).
    ///
    /// # Errors
    /// [`Error::RoleTaken`] while a live handle holds the role; [`Error::Inherited`] in
    /// a forked child; [`Error::Timeout`] if reclaiming a dead holder's role waits for
    /// the admin lock longer than [`Options::timeout`](crate::Options::timeout).
    pub fn publisher(&self) -> Result<Publisher<T>> {
        let cursor = self.shared.claim_publisher()?;
        Ok(Publisher {
            cursor,
            shared: self.shared.clone(),
            spin: DEFAULT_SPIN,
            probe: Probe::default(),
            _t: PhantomData,
        })
    }

    /// A new subscriber with a cursor of its own, starting at `start`.
    ///
    /// # Errors
    /// [`Error::TableFull`] if every cursor line is taken by a live subscriber;
    /// [`Error::Inherited`] in a forked child; [`Error::Timeout`] if reclaiming dead
    /// subscribers' lines waits for the admin lock too long.
    pub fn subscribe(&self, start: Start) -> Result<Subscriber<T>> {
        let cursor = self.shared.subscribe(join_at(start))?;
        Ok(Subscriber {
            cursor,
            shared: self.shared.clone(),
            spin: DEFAULT_SPIN,
            probe: Probe::default(),
            _t: PhantomData,
        })
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.shared.view.geo.capacity as usize
    }

    /// The ring's policy.
    pub fn policy(&self) -> Policy {
        self.shared.policy()
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.shared.seg.name()
    }

    /// Describes the segment (with [`SegmentInfo::broadcast`]).
    pub fn info(&self) -> SegmentInfo {
        self.shared.seg.info()
    }

    /// Reclaims dead holders now: vacates a dead publisher's role and dead
    /// subscribers' cursors.
    ///
    /// # Errors
    /// [`Error::Inherited`] in a forked child; [`Error::Timeout`] if the admin lock
    /// stays held longer than [`Options::timeout`](crate::Options::timeout).
    pub fn sweep(&self) -> Result<SweepOutcome> {
        self.shared.seg.sweep()
    }
}

pub(crate) fn join_at(start: Start) -> JoinAt {
    match start {
        Start::Newest => JoinAt::Newest,
        Start::Oldest => JoinAt::Oldest,
    }
}

/// The publishing side of a [`Broadcast`]. Dropping it releases the role; subscribers
/// that have drained the ring then see `Disconnected`.
///
/// Lossless: non-blocking calls return `Full` while the slowest live subscriber is a
/// ring behind; waiting calls spin for [`spin`](Publisher::spin), then sleep, and drop
/// a dead subscriber's cursor within one sleep slice (10 ms). Lossy: never full.
/// A publisher is never disconnected: with no subscriber, it keeps writing.
pub struct Publisher<T: Message> {
    cursor: PubCursor,
    shared: Arc<BcastShared>,
    spin: Duration,
    probe: Probe,
    _t: PhantomData<fn(T) -> T>,
}

// SAFETY: the cursor's pointers are into the mapping that `shared` keeps alive, and the
// role claim makes this the only publisher; moving it to another thread is fine.
unsafe impl<T: Message> Send for Publisher<T> {}

impl<T: Message> Publisher<T> {
    #[inline]
    fn slot_ptr(&self, pos: u64) -> *mut T {
        self.cursor.view.payload(pos) as *mut T
    }

    #[inline]
    fn slot_at_tail(&mut self) -> WriteSlot<'_, T> {
        self.cursor.begin(1);
        let ptr = self.slot_ptr(self.cursor.tail);
        WriteSlot {
            publisher: self,
            ptr,
        }
    }

    /// Reserves the next slot for writing in place. Nothing is visible to subscribers
    /// until [`WriteSlot::commit`]; dropping the slot un-reserves it (lossy: the
    /// message that slot held is lost all the same).
    ///
    /// # Errors
    /// [`ReserveError::Full`] (lossless only) while the slowest live subscriber is a
    /// ring behind.
    #[inline]
    pub fn reserve(&mut self) -> Result<WriteSlot<'_, T>, ReserveError> {
        if self.cursor.room(1) == 0 {
            return Err(self.full());
        }
        Ok(self.slot_at_tail())
    }

    #[cold]
    fn full(&mut self) -> ReserveError {
        // A dead laggard is dropped by a liveness probe made at most every 5 ms (the
        // waiting calls probe once per sleep slice).
        if self.probe.due() {
            self.shared.drop_dead_laggards(self.cursor.tail, 1);
        }
        ReserveError::Full
    }

    /// Reserves the next slot, waiting while the slowest live subscriber is a ring
    /// behind (lossless; lossy never waits).
    pub fn reserve_wait(&mut self) -> WriteSlot<'_, T> {
        let _ = self.shared.await_room(&mut self.cursor, 1, self.spin, None);
        self.slot_at_tail()
    }

    /// Reserves the next slot, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ReserveTimeoutError::Timeout`] if no slot came free in time.
    pub fn reserve_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<WriteSlot<'_, T>, ReserveTimeoutError> {
        self.shared
            .await_room(&mut self.cursor, 1, self.spin, deadline_after(timeout))
            .map_err(|()| ReserveTimeoutError::Timeout)?;
        Ok(self.slot_at_tail())
    }

    /// Reserves up to `max` consecutive slots (at least one) for writing in place.
    ///
    /// # Errors
    /// As [`reserve`](Publisher::reserve).
    #[inline]
    pub fn reserve_many(&mut self, max: usize) -> Result<WriteBatch<'_, T>, ReserveError> {
        let n = self.cursor.room(max as u64);
        if n == 0 {
            return Err(self.full());
        }
        self.cursor.begin(n);
        Ok(WriteBatch {
            publisher: self,
            len: n as usize,
        })
    }

    /// Copies `value` into the ring if a slot is free (lossy: always).
    ///
    /// # Errors
    /// [`TrySendError::Full`] with the value (lossless only).
    #[inline]
    pub fn try_send(&mut self, value: T) -> Result<(), TrySendError<T>> {
        if self.cursor.room(1) == 0 {
            self.full();
            return Err(TrySendError::Full(value));
        }
        self.write_and_commit(value);
        Ok(())
    }

    #[inline]
    fn write_and_commit(&mut self, value: T) {
        self.cursor.begin(1);
        // SAFETY: the slot at tail may be written (room checked; lossy: marked as being
        // written); aligned for T, valid for size_of::<T>() bytes.
        unsafe { self.slot_ptr(self.cursor.tail).write(value) };
        self.shared.commit(&mut self.cursor, 1);
    }

    /// Sends `value`, waiting while the slowest live subscriber is a ring behind.
    pub fn send(&mut self, value: T) {
        let _ = self.shared.await_room(&mut self.cursor, 1, self.spin, None);
        self.write_and_commit(value);
    }

    /// Sends `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] with the value.
    pub fn send_timeout(&mut self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        match self
            .shared
            .await_room(&mut self.cursor, 1, self.spin, deadline_after(timeout))
        {
            Ok(()) => {
                self.write_and_commit(value);
                Ok(())
            }
            Err(()) => Err(SendTimeoutError::Timeout(value)),
        }
    }

    /// The position the next message will have (messages are numbered from 0 over the
    /// ring's life, across publishers).
    pub fn position(&self) -> u64 {
        self.cursor.tail
    }

    /// Subscribers attached now (cursor lines claimed, dead ones included until they
    /// are reclaimed).
    pub fn subscribers(&self) -> usize {
        self.shared.subscriber_count()
    }

    /// Waits until at least `n` subscribers are attached, at most `timeout`. Returns
    /// whether they are.
    pub fn wait_for_subscribers(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_roles(deadline_after(timeout), || {
            self.shared.subscriber_count() >= n
        })
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.cursor.view.geo.capacity as usize
    }

    /// How long a waiting call spins before it sleeps (default 20 µs).
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// Sets how long a waiting call spins before it sleeps (`Duration::MAX`: for ever,
    /// still dropping dead subscribers once per 10 ms).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }
}

impl<T: Message> Drop for Publisher<T> {
    fn drop(&mut self) {
        self.shared.leave_publisher();
    }
}

impl<T: Message> fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("ring", &self.shared.seg.name())
            .field("policy", &self.shared.policy())
            .field("position", &self.cursor.tail)
            .field("spin", &self.spin)
            .finish()
    }
}

/// A reserved slot, written in place. [`commit`](WriteSlot::commit) publishes it.
#[must_use = "reserved slots are published only by commit(); dropping them un-reserves them"]
pub struct WriteSlot<'a, T: Message> {
    publisher: &'a mut Publisher<T>,
    ptr: *mut T,
}

impl<T: Message> WriteSlot<'_, T> {
    /// Publishes the slot to every subscriber.
    #[inline]
    pub fn commit(self) {
        let p = self.publisher;
        p.shared.commit(&mut p.cursor, 1);
    }
}

impl<T: Message> std::ops::Deref for WriteSlot<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the reserved slot is the publisher's until commit (lossless: no
        // subscriber reads it; lossy: readers of the old lap detect the overwrite);
        // T: Message, so any bytes are a valid T.
        unsafe { &*self.ptr }
    }
}

impl<T: Message> std::ops::DerefMut for WriteSlot<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`.
        unsafe { &mut *self.ptr }
    }
}

/// Consecutive reserved slots. Write them, then commit all or a prefix.
#[must_use = "reserved slots are published only by commit(); dropping them un-reserves them"]
pub struct WriteBatch<'a, T: Message> {
    publisher: &'a mut Publisher<T>,
    len: usize,
}

impl<T: Message> WriteBatch<'_, T> {
    /// Number of slots reserved.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th slot. Panics if `i >= len()`.
    #[inline]
    pub fn slot(&mut self, i: usize) -> &mut T {
        assert!(i < self.len, "slot {i} outside a batch of {}", self.len);
        let p = &self.publisher;
        let ptr = p.slot_ptr(p.cursor.tail.wrapping_add(i as u64));
        // SAFETY: reserved, the publisher's until commit (as `WriteSlot::deref`).
        unsafe { &mut *ptr }
    }

    /// Writes every slot with `f(i)`.
    pub fn fill_with(&mut self, mut f: impl FnMut(usize) -> T) {
        for i in 0..self.len {
            *self.slot(i) = f(i);
        }
    }

    /// Publishes every slot of the batch.
    #[inline]
    pub fn commit(self) {
        let n = self.len as u64;
        let p = self.publisher;
        p.shared.commit(&mut p.cursor, n);
    }

    /// Publishes the first `n` slots (at most `len()`).
    #[inline]
    pub fn commit_n(self, n: usize) {
        let n = n.min(self.len) as u64;
        let p = self.publisher;
        p.shared.commit(&mut p.cursor, n);
    }
}

/// A receiving side of a [`Broadcast`], with a cursor of its own. Dropping it frees its
/// cursor (a lossless publisher stops waiting for it).
///
/// Reads are in place. On a lossy ring the publisher may overwrite a message while it
/// is read: [`ReadSlot::release`] then reports [`Lagged`] instead of `Ok`, so a message
/// is good only once its release returned `Ok` (`try_recv`/`recv` copy it out and check
/// for you). Lossless reads are never overwritten.
pub struct Subscriber<T: Message> {
    cursor: SubCursor,
    shared: Arc<BcastShared>,
    spin: Duration,
    probe: Probe,
    _t: PhantomData<fn(T) -> T>,
}

// SAFETY: as for Publisher: the cursor line is this handle's alone.
unsafe impl<T: Message> Send for Subscriber<T> {}

impl<T: Message> Subscriber<T> {
    #[inline]
    fn slot_ptr(&self, pos: u64) -> *const T {
        self.cursor.view.payload(pos) as *const T
    }

    #[inline]
    fn slot_at_pos(&mut self) -> ReadSlot<'_, T> {
        let ptr = self.slot_ptr(self.cursor.pos);
        ReadSlot {
            subscriber: self,
            ptr,
        }
    }

    /// Hands out the next message in place. Dropping the slot without releasing it
    /// leaves the subscriber at that message.
    ///
    /// # Errors
    /// [`BroadcastTryRecvError::Empty`]; [`BroadcastTryRecvError::Lagged`] (lossy) if
    /// messages were overwritten unread (the next call reads the oldest left);
    /// [`BroadcastTryRecvError::Disconnected`] once the publisher has gone and
    /// everything it committed was read.
    #[inline]
    pub fn peek(&mut self) -> Result<ReadSlot<'_, T>, BroadcastTryRecvError> {
        self.shared.poll(&mut self.cursor, &mut self.probe)?;
        Ok(self.slot_at_pos())
    }

    /// Hands out the next message in place, waiting while there is none.
    ///
    /// # Errors
    /// [`BroadcastRecvError::Lagged`] as for [`peek`](Subscriber::peek);
    /// [`BroadcastRecvError::Disconnected`] once the publisher has gone and everything
    /// it committed was read.
    pub fn peek_wait(&mut self) -> Result<ReadSlot<'_, T>, BroadcastRecvError> {
        self.shared
            .await_data(&mut self.cursor, self.spin, None, &mut self.probe)
            .map_err(untimed)?;
        Ok(self.slot_at_pos())
    }

    /// Hands out the next message in place, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`BroadcastRecvTimeoutError::Timeout`], `Lagged` or `Disconnected`.
    pub fn peek_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<ReadSlot<'_, T>, BroadcastRecvTimeoutError> {
        self.shared.await_data(
            &mut self.cursor,
            self.spin,
            deadline_after(timeout),
            &mut self.probe,
        )?;
        Ok(self.slot_at_pos())
    }

    /// Hands out up to `max` consecutive committed messages in place.
    ///
    /// # Errors
    /// As [`peek`](Subscriber::peek).
    #[inline]
    pub fn peek_many(&mut self, max: usize) -> Result<ReadBatch<'_, T>, BroadcastTryRecvError> {
        self.shared.poll(&mut self.cursor, &mut self.probe)?;
        let n = self.cursor.available(max.max(1) as u64).max(1);
        Ok(ReadBatch {
            subscriber: self,
            len: n as usize,
        })
    }

    /// Copies the next message out, if one is committed; on a lossy ring, only if it was
    /// not overwritten while it was copied.
    ///
    /// # Errors
    /// As [`peek`](Subscriber::peek).
    #[inline]
    pub fn try_recv(&mut self) -> Result<T, BroadcastTryRecvError> {
        self.shared.poll(&mut self.cursor, &mut self.probe)?;
        Ok(self.read_and_finish()?)
    }

    #[inline]
    fn read_and_finish(&mut self) -> Result<T, Lagged> {
        // SAFETY: committed at our position (Acquire in `find`); aligned, in bounds,
        // T: Message. A volatile read: on a lossy ring the publisher may be overwriting
        // it, which `finish` detects before the value is returned.
        let value = unsafe { std::ptr::read_volatile(self.slot_ptr(self.cursor.pos)) };
        self.shared.finish(&mut self.cursor, 1)?;
        Ok(value)
    }

    /// Receives, waiting while there is nothing new.
    ///
    /// # Errors
    /// As [`peek_wait`](Subscriber::peek_wait).
    pub fn recv(&mut self) -> Result<T, BroadcastRecvError> {
        self.shared
            .await_data(&mut self.cursor, self.spin, None, &mut self.probe)
            .map_err(untimed)?;
        Ok(self.read_and_finish()?)
    }

    /// Receives, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`peek_timeout`](Subscriber::peek_timeout).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, BroadcastRecvTimeoutError> {
        self.shared.await_data(
            &mut self.cursor,
            self.spin,
            deadline_after(timeout),
            &mut self.probe,
        )?;
        Ok(self.read_and_finish()?)
    }

    /// The position of the next message this subscriber reads.
    pub fn position(&self) -> u64 {
        self.cursor.pos
    }

    /// Messages committed that this subscriber has not read yet (lossy: may exceed the
    /// capacity; the excess is reported as [`Lagged`] on the next read).
    pub fn lag(&self) -> u64 {
        self.cursor.view.tail().saturating_sub(self.cursor.pos)
    }

    /// Whether the publisher has gone (see [`PeerState::is_gone`]). One kernel lock
    /// probe while a publisher holds the role; never waits for a lock.
    pub fn is_disconnected(&self) -> bool {
        self.shared.publisher_gone()
    }

    /// Where the publisher stands: not yet connected, connected, closed, or crashed.
    pub fn publisher_state(&self) -> PeerState {
        self.shared.publisher_state()
    }

    /// Waits until a live publisher holds the role, at most `timeout`. Returns whether
    /// one does.
    pub fn wait_for_publisher(&self, timeout: Duration) -> bool {
        self.shared.wait_roles(deadline_after(timeout), || {
            self.shared.publisher_state() == PeerState::Connected
        })
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.cursor.view.geo.capacity as usize
    }

    /// How long a waiting call spins before it sleeps (default 20 µs).
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// Sets how long a waiting call spins before it sleeps.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }
}

pub(crate) fn untimed(e: BroadcastRecvTimeoutError) -> BroadcastRecvError {
    match e {
        BroadcastRecvTimeoutError::Lagged(n) => BroadcastRecvError::Lagged(n),
        _ => BroadcastRecvError::Disconnected,
    }
}

impl<T: Message> Drop for Subscriber<T> {
    fn drop(&mut self) {
        self.shared.leave_subscriber(&self.cursor);
    }
}

impl<T: Message> fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("ring", &self.shared.seg.name())
            .field("policy", &self.shared.policy())
            .field("line", &self.cursor.line)
            .field("position", &self.cursor.pos)
            .field("spin", &self.spin)
            .finish()
    }
}

/// A message read in place. [`release`](ReadSlot::release) moves past it and says
/// whether what was read is good.
#[must_use = "release() moves past the message and says whether the read was good"]
pub struct ReadSlot<'a, T: Message> {
    subscriber: &'a mut Subscriber<T>,
    ptr: *const T,
}

impl<T: Message> ReadSlot<'_, T> {
    /// Moves past the message. `Ok`: what was read through this slot is the message as
    /// committed. Lossy only: `Err(Lagged(n))` if the publisher began overwriting it
    /// during the read; treat what was read as garbage (`n` counts it, and any others
    /// skipped).
    ///
    /// # Errors
    /// [`Lagged`] as above; never on a lossless ring.
    #[inline]
    pub fn release(self) -> Result<(), Lagged> {
        let s = self.subscriber;
        s.shared.finish(&mut s.cursor, 1)
    }
}

impl<T: Message> std::ops::Deref for ReadSlot<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: committed at our position. Lossless: not overwritten before we
        // release. Lossy: it may be overwritten under us (the bytes stay a valid T, as
        // T: Message is Pod), which `release` reports.
        unsafe { &*self.ptr }
    }
}

/// Consecutive messages read in place.
#[must_use = "release() moves past the messages and says whether the read was good"]
pub struct ReadBatch<'a, T: Message> {
    subscriber: &'a mut Subscriber<T>,
    len: usize,
}

impl<T: Message> ReadBatch<'_, T> {
    /// Number of messages.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th message. Panics if `i >= len()`.
    #[inline]
    pub fn get(&self, i: usize) -> &T {
        assert!(i < self.len, "message {i} outside a batch of {}", self.len);
        let s = &self.subscriber;
        let ptr = s.slot_ptr(s.cursor.pos.wrapping_add(i as u64));
        // SAFETY: as `ReadSlot::deref`.
        unsafe { &*ptr }
    }

    /// The messages in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        (0..self.len).map(move |i| self.get(i))
    }

    /// Moves past every message of the batch. `Err(Lagged(n))` (lossy only) if any was
    /// overwritten during the read: treat the whole batch as not received (`n` counts
    /// all of it, and any others skipped).
    ///
    /// # Errors
    /// [`Lagged`] as above; never on a lossless ring.
    #[inline]
    pub fn release(self) -> Result<(), Lagged> {
        let n = self.len as u64;
        let s = self.subscriber;
        s.shared.finish(&mut s.cursor, n)
    }

    /// Moves past the first `n` messages (at most `len()`), as
    /// [`release`](ReadBatch::release) for those.
    ///
    /// # Errors
    /// As [`release`](ReadBatch::release).
    #[inline]
    pub fn release_n(self, n: usize) -> Result<(), Lagged> {
        let n = n.min(self.len) as u64;
        let s = self.subscriber;
        s.shared.finish(&mut s.cursor, n)
    }
}

impl<T: Message> fmt::Debug for Broadcast<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcast")
            .field("name", &self.name())
            .field("payload", &std::any::type_name::<T>())
            .field("capacity", &self.capacity())
            .field("policy", &self.policy())
            .finish()
    }
}

impl<T: Message> fmt::Debug for WriteSlot<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteSlot")
            .field("position", &self.publisher.cursor.tail)
            .finish_non_exhaustive()
    }
}

impl<T: Message> fmt::Debug for WriteBatch<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBatch")
            .field("first", &self.publisher.cursor.tail)
            .field("len", &self.len)
            .finish()
    }
}

impl<T: Message> fmt::Debug for ReadSlot<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadSlot")
            .field("position", &self.subscriber.cursor.pos)
            .finish_non_exhaustive()
    }
}

impl<T: Message> fmt::Debug for ReadBatch<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadBatch")
            .field("first", &self.subscriber.cursor.pos)
            .field("len", &self.len)
            .finish()
    }
}
