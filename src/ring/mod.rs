//! Named single-producer single-consumer rings: the zero-copy hot path.

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
use crate::objects::ring::endpoint::{ConsumerCursor, ProducerCursor};
use crate::objects::ring::{FLAVOR_TYPED, Geometry};
use crate::segment::layout::OBJECT_ALIGN;
use crate::segment::{Fingerprint, Options, SegmentInfo, SweepOutcome};
use crate::wait::{DEFAULT_SPIN, Probe, deadline_after};
pub use bytes::{
    ByteConsumer, ByteProducer, ByteReadBatch, ByteReadSlot, ByteRing, ByteWriteBatch,
    ByteWriteSlot,
};
pub use error::{
    RecvError, RecvTimeoutError, ReserveError, ReserveTimeoutError, SendError, SendTimeoutError,
    TryRecvError, TrySendError,
};
pub use shared::PeerState;
use shared::{Role, Shared};
pub use untyped::{
    UntypedConsumer, UntypedProducer, UntypedReadSlot, UntypedRing, UntypedWriteSlot,
};

/// A named SPSC ring of `T` values in shared memory, alive while any process holds it.
///
/// A `Ring` is an attachment; the sending and receiving are done by the [`Producer`]
/// and [`Consumer`] roles it hands out, each claimable by one live handle at a time.
///
/// ```
/// # let name = format!("doc-ring-{}", std::process::id());
/// let ring = tally::Ring::<u64>::create(&name, 1024)?;
/// let mut tx = ring.producer()?;
/// let mut rx = ring.consumer()?;
///
/// // Zero-copy: write in place, then publish.
/// let mut slot = tx.reserve().unwrap();
/// *slot = 42;
/// slot.commit();
///
/// // Read in place, then free the slot.
/// let msg = rx.peek().unwrap();
/// assert_eq!(*msg, 42);
/// msg.release();
///
/// // Copying helpers on top.
/// tx.try_send(7).unwrap();
/// assert_eq!(rx.try_recv(), Ok(7));
/// # Ok::<(), tally::Error>(())
/// ```
pub struct Ring<T: Message> {
    shared: Arc<Shared>,
    _t: PhantomData<fn(T) -> T>,
}

/// The slot shape of a `Ring<T>`: refuses what it cannot lay out (every constructor
/// goes through here, so none hands out a misaligned `&mut T`).
fn typed_geometry<T: Message>(capacity: usize) -> Result<Geometry> {
    let align = std::mem::align_of::<T>();
    if align > OBJECT_ALIGN {
        return Err(Error::InvalidArgument(format!(
            "payload {} is aligned to {align} bytes; tally lays out payloads aligned up to {OBJECT_ALIGN}",
            std::any::type_name::<T>()
        )));
    }
    Geometry::new(capacity, std::mem::size_of::<T>(), std::mem::align_of::<T>(), FLAVOR_TYPED).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "capacity {capacity} of {}-byte slots: capacity must be 1..=2^30 and the ring fit in memory",
            std::mem::size_of::<T>()
        ))
    })
}

impl<T: Message> Ring<T> {
    /// Creates a ring of at least `capacity` slots (rounded up to a power of two).
    ///
    /// # Errors
    /// [`Error::InvalidName`] or [`Error::InvalidArgument`] for a bad name or size;
    /// [`Error::AlreadyExists`] if a live object has the name; [`Error::NoSpace`] if
    /// `/dev/shm` cannot hold it; [`Error::PermissionDenied`] or [`Error::Io`] from the
    /// system. A payload aligned above 128 bytes is an [`Error::InvalidArgument`].
    pub fn create(name: &str, capacity: usize) -> Result<Self> {
        Self::create_with(name, capacity, &Options::default())
    }

    /// Creates a ring with explicit [`Options`].
    ///
    /// # Errors
    /// [`Error::InvalidName`] or [`Error::InvalidArgument`] for a bad name or size;
    /// [`Error::AlreadyExists`] if a live object has the name; [`Error::NoSpace`] if
    /// `/dev/shm` cannot hold it; [`Error::PermissionDenied`] or [`Error::Io`] from the
    /// system.
    pub fn create_with(name: &str, capacity: usize, opts: &Options) -> Result<Self> {
        let shared = Shared::create(
            name,
            Fingerprint::of::<T>(),
            typed_geometry::<T>(capacity)?,
            opts,
        )?;
        Ok(Self::wrap(shared))
    }

    /// Opens the live ring `name`; its payload type must be `T`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no live object has the name; [`Error::KindMismatch`] or
    /// [`Error::LayoutMismatch`] if it holds another kind or payload;
    /// [`Error::VersionMismatch`] or [`Error::Corrupted`] for a segment this build
    /// cannot read; [`Error::TableFull`] if its holder table is full;
    /// [`Error::PermissionDenied`], [`Error::Timeout`] or [`Error::Io`] from the
    /// system.
    pub fn open(name: &str) -> Result<Self> {
        Self::open_with(name, &Options::default())
    }

    /// Opens with explicit [`Options`].
    ///
    /// # Errors
    /// [`Error::NotFound`] if no live object has the name; [`Error::KindMismatch`] or
    /// [`Error::LayoutMismatch`] if it holds another kind or payload;
    /// [`Error::VersionMismatch`] or [`Error::Corrupted`] for a segment this build
    /// cannot read; [`Error::TableFull`] if its holder table is full;
    /// [`Error::PermissionDenied`], [`Error::Timeout`] or [`Error::Io`] from the
    /// system.
    pub fn open_with(name: &str, opts: &Options) -> Result<Self> {
        let shared = Shared::open(name, Fingerprint::of::<T>(), typed_geometry::<T>(1)?, opts)?;
        Ok(Self::wrap(shared))
    }

    /// Opens `name`, or creates it with `capacity` slots. Returns whether it created.
    ///
    /// # Errors
    /// As `create` and `open`. An existing ring of another capacity (or, for a byte
    /// ring, message size) is a [`Error::LayoutMismatch`] unless
    /// [`Options::any_capacity`](crate::Options::any_capacity).
    pub fn open_or_create(name: &str, capacity: usize, opts: &Options) -> Result<(Self, bool)> {
        let (shared, created) = Shared::open_or_create(
            name,
            Fingerprint::of::<T>(),
            typed_geometry::<T>(capacity)?,
            opts,
        )?;
        Ok((Self::wrap(shared), created))
    }

    fn wrap(shared: Arc<Shared>) -> Self {
        Ring {
            shared,
            _t: PhantomData,
        }
    }

    /// Claims the producer role. Fails with [`Error::RoleTaken`] while a live handle
    /// holds it; a dead holder's claim is reclaimed first.
    ///
    /// # Errors
    /// [`Error::RoleTaken`] while a live handle holds the role; [`Error::Inherited`] in
    /// a forked child; [`Error::Timeout`] if reclaiming a dead holder's role waits for
    /// the admin lock longer than [`Options::timeout`](crate::Options::timeout).
    pub fn producer(&self) -> Result<Producer<T>> {
        self.shared.claim(Role::Producer)?;
        Ok(Producer {
            cursor: ProducerCursor::resume(self.shared.view),
            shared: self.shared.clone(),
            spin: DEFAULT_SPIN,
            probe: Probe::default(),
            _t: PhantomData,
        })
    }

    /// Claims the consumer role.
    ///
    /// # Errors
    /// [`Error::RoleTaken`] while a live handle holds the role; [`Error::Inherited`] in
    /// a forked child; [`Error::Timeout`] if reclaiming a dead holder's role waits for
    /// the admin lock longer than [`Options::timeout`](crate::Options::timeout).
    pub fn consumer(&self) -> Result<Consumer<T>> {
        self.shared.claim(Role::Consumer)?;
        Ok(Consumer {
            cursor: ConsumerCursor::resume(self.shared.view),
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

    /// The object's name.
    pub fn name(&self) -> &str {
        self.shared.seg.name()
    }

    /// Describes the segment.
    pub fn info(&self) -> SegmentInfo {
        self.shared.seg.info()
    }

    /// Reclaims dead holders now.
    ///
    /// # Errors
    /// [`Error::Inherited`] in a forked child; [`Error::Timeout`] if the admin lock
    /// stays held longer than [`Options::timeout`](crate::Options::timeout).
    pub fn sweep(&self) -> Result<SweepOutcome> {
        self.shared.seg.sweep()
    }
}

/// The sending side of a [`Ring`]. Dropping it releases the role; a consumer that has
/// drained the ring then sees `Disconnected`.
///
/// Non-blocking calls (`reserve`, `reserve_many`, `try_send`) make no system call
/// except a futex wake when the consumer sleeps. Waiting calls (`reserve_wait`,
/// `reserve_timeout`, `send`, `send_timeout`) spin for [`spin`](Producer::spin), then
/// sleep on a futex in slices of at most 10 ms, and return when a slot is free, the
/// consumer has gone, or the deadline passes — never later than the deadline plus one
/// scheduling delay.
pub struct Producer<T: Message> {
    cursor: ProducerCursor,
    shared: Arc<Shared>,
    spin: Duration,
    probe: Probe,
    _t: PhantomData<fn(T) -> T>,
}

// SAFETY: the cursor's pointers are into the mapping that `shared` keeps alive, and the
// role claim makes this the only producer; moving it to another thread is fine.
unsafe impl<T: Message> Send for Producer<T> {}

impl<T: Message> Producer<T> {
    #[inline]
    fn slot_ptr(&self, pos: u64) -> *mut T {
        self.cursor.view.payload(pos) as *mut T
    }

    #[inline]
    fn slot_at_tail(&mut self) -> WriteSlot<'_, T> {
        let ptr = self.slot_ptr(self.cursor.tail);
        WriteSlot {
            producer: self,
            ptr,
        }
    }

    /// Reserves the next slot for writing in place, if one is free. Nothing is
    /// visible to the consumer until [`WriteSlot::commit`]; dropping the slot
    /// un-reserves it.
    ///
    /// # Errors
    /// [`ReserveError::Full`] if no slot is free; [`ReserveError::Disconnected`] if
    /// none is free and the consumer has gone.
    #[inline]
    pub fn reserve(&mut self) -> Result<WriteSlot<'_, T>, ReserveError> {
        if self.cursor.free(1) == 0 {
            return Err(self.shared.full_error(&mut self.probe));
        }
        Ok(self.slot_at_tail())
    }

    /// Reserves the next slot, waiting while the ring is full.
    ///
    /// ```
    /// # let name = format!("doc-reserve-wait-{}", std::process::id());
    /// let ring = tally::Ring::<u64>::create(&name, 8)?;
    /// let mut tx = ring.producer()?;
    /// let mut slot = tx.reserve_wait()?;
    /// *slot = 7;
    /// slot.commit();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ReserveTimeoutError::Disconnected`] if the ring is full and the consumer has
    /// gone.
    pub fn reserve_wait(&mut self) -> Result<WriteSlot<'_, T>, ReserveTimeoutError> {
        self.shared
            .await_space(&mut self.cursor, 1, self.spin, None, &mut self.probe)?;
        Ok(self.slot_at_tail())
    }

    /// Reserves the next slot, waiting at most `timeout` for one to come free.
    ///
    /// # Errors
    /// [`ReserveTimeoutError::Timeout`] if none came free in time;
    /// [`ReserveTimeoutError::Disconnected`] if the ring is full and the consumer has
    /// gone.
    pub fn reserve_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<WriteSlot<'_, T>, ReserveTimeoutError> {
        self.shared.await_space(
            &mut self.cursor,
            1,
            self.spin,
            deadline_after(timeout),
            &mut self.probe,
        )?;
        Ok(self.slot_at_tail())
    }

    /// Reserves up to `max` consecutive slots (at least one) for writing in place.
    ///
    /// # Errors
    /// As [`reserve`](Producer::reserve).
    #[inline]
    pub fn reserve_many(&mut self, max: usize) -> Result<WriteBatch<'_, T>, ReserveError> {
        let n = self.cursor.free(max as u64).min(max as u64);
        if n == 0 {
            return Err(self.shared.full_error(&mut self.probe));
        }
        Ok(WriteBatch {
            producer: self,
            len: n as usize,
        })
    }

    /// Copies `value` into the ring if a slot is free. No system call unless the
    /// consumer sleeps (then one futex wake).
    ///
    /// # Errors
    /// [`TrySendError::Full`] or [`TrySendError::Disconnected`], with the value.
    #[inline]
    pub fn try_send(&mut self, value: T) -> Result<(), TrySendError<T>> {
        if self.cursor.free(1) == 0 {
            return Err(match self.shared.full_error(&mut self.probe) {
                ReserveError::Disconnected => TrySendError::Disconnected(value),
                _ => TrySendError::Full(value),
            });
        }
        self.write_and_commit(value);
        Ok(())
    }

    #[inline]
    fn write_and_commit(&mut self, value: T) {
        // SAFETY: the caller saw the slot at tail free; it is ours alone until
        // committed, and the payload pointer is aligned for T and valid for
        // size_of::<T>() bytes.
        unsafe { self.slot_ptr(self.cursor.tail).write(value) };
        self.cursor.commit(1);
    }

    /// Sends `value`, waiting while the ring is full.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc-send-{}", std::process::id());
    /// let ring = tally::Ring::<u64>::create(&name, 8)?;
    /// let mut tx = ring.producer()?;
    /// tx.send(42)?; // SendError<u64> is a std::error::Error
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`SendError`] with the value if the ring is full and the consumer has gone.
    pub fn send(&mut self, value: T) -> Result<(), SendError<T>> {
        match self
            .shared
            .await_space(&mut self.cursor, 1, self.spin, None, &mut self.probe)
        {
            Ok(()) => {
                self.write_and_commit(value);
                Ok(())
            }
            Err(_) => Err(SendError(value)),
        }
    }

    /// Sends `value`, waiting at most `timeout` for a free slot.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] or [`SendTimeoutError::Disconnected`], with the
    /// value.
    pub fn send_timeout(&mut self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        let deadline = deadline_after(timeout);
        match self
            .shared
            .await_space(&mut self.cursor, 1, self.spin, deadline, &mut self.probe)
        {
            Ok(()) => {
                self.write_and_commit(value);
                Ok(())
            }
            Err(ReserveTimeoutError::Timeout) => Err(SendTimeoutError::Timeout(value)),
            Err(_) => Err(SendTimeoutError::Disconnected(value)),
        }
    }

    /// Free slots right now (reloads the consumer's position).
    pub fn free_slots(&mut self) -> usize {
        self.cursor.free(u64::MAX) as usize
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.cursor.view.geo.capacity as usize
    }

    /// Whether the consumer has gone (see [`PeerState::is_gone`]). One kernel lock
    /// probe while a consumer holds the role; never waits for a lock.
    pub fn is_disconnected(&self) -> bool {
        self.shared.role_gone(Role::Consumer)
    }

    /// Where the consumer stands: not yet connected, connected, closed, or crashed.
    pub fn consumer_state(&self) -> PeerState {
        self.shared.peer_state(Role::Consumer)
    }

    /// Waits until a live consumer holds the role (at once if one does), at most
    /// `timeout` (`Duration::MAX`: for ever). Returns whether one does.
    pub fn wait_for_consumer(&self, timeout: Duration) -> bool {
        self.shared
            .wait_for_peer(Role::Consumer, deadline_after(timeout))
    }

    /// How long a waiting call spins before it sleeps (default 20 µs).
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// Sets how long a waiting call spins before it sleeps. `Duration::ZERO` sleeps at
    /// once; `Duration::MAX` spins for ever (one core busy while waiting, no wake-up
    /// latency). A spinner still notices a departed consumer and its deadline.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }
}

impl<T: Message> Drop for Producer<T> {
    fn drop(&mut self) {
        self.shared.leave_producer(&self.cursor);
    }
}

impl<T: Message> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("ring", &self.shared.seg.name())
            .field("tail", &self.cursor.tail)
            .field("capacity", &self.cursor.view.geo.capacity)
            .field("spin", &self.spin)
            .finish()
    }
}

/// A reserved slot, written in place. [`commit`](WriteSlot::commit) publishes it.
#[must_use = "reserved slots are published only by commit(); dropping them un-reserves them"]
pub struct WriteSlot<'a, T: Message> {
    producer: &'a mut Producer<T>,
    ptr: *mut T,
}

impl<T: Message> WriteSlot<'_, T> {
    /// Publishes the slot to the consumer.
    #[inline]
    pub fn commit(self) {
        self.producer.cursor.commit(1);
    }
}

impl<T: Message> std::ops::Deref for WriteSlot<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the reserved slot is ours alone until commit; T: Message, so whatever
        // bytes a previous lap (or a hostile peer) left are a valid T.
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

/// Consecutive reserved slots. Write them with [`slot`](WriteBatch::slot) or
/// [`fill_with`](WriteBatch::fill_with), then commit all or a prefix.
#[must_use = "reserved slots are published only by commit(); dropping them un-reserves them"]
pub struct WriteBatch<'a, T: Message> {
    producer: &'a mut Producer<T>,
    len: usize,
}

impl<T: Message> WriteBatch<'_, T> {
    /// Number of slots reserved.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a batch has at least one slot.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th reserved slot, in place. Panics if `i >= len()`.
    #[inline]
    pub fn slot(&mut self, i: usize) -> &mut T {
        assert!(i < self.len, "slot {i} outside a batch of {}", self.len);
        let ptr = self
            .producer
            .slot_ptr(self.producer.cursor.tail.wrapping_add(i as u64));
        // SAFETY: reserved and exclusively ours until commit; T: Message.
        unsafe { &mut *ptr }
    }

    /// Writes `f(i)` into every slot.
    #[inline]
    pub fn fill_with(&mut self, mut f: impl FnMut(usize) -> T) {
        let tail = self.producer.cursor.tail;
        for i in 0..self.len {
            // SAFETY: reserved, exclusively ours, aligned, in bounds (masked).
            unsafe {
                self.producer
                    .slot_ptr(tail.wrapping_add(i as u64))
                    .write(f(i))
            };
        }
    }

    /// Publishes every slot of the batch.
    #[inline]
    pub fn commit(self) {
        let n = self.len as u64;
        self.producer.cursor.commit(n);
    }

    /// Publishes the first `n` slots (at most `len()`); the rest are un-reserved.
    #[inline]
    pub fn commit_n(self, n: usize) {
        let n = n.min(self.len) as u64;
        self.producer.cursor.commit(n);
    }
}

/// The receiving side of a [`Ring`]. Dropping it releases the role.
///
/// Waiting calls (`peek_wait`, `peek_timeout`, `recv`, `recv_timeout`) block as the
/// [`Producer`]'s do.
pub struct Consumer<T: Message> {
    cursor: ConsumerCursor,
    shared: Arc<Shared>,
    spin: Duration,
    probe: Probe,
    _t: PhantomData<fn(T) -> T>,
}

// SAFETY: as for Producer.
unsafe impl<T: Message> Send for Consumer<T> {}

impl<T: Message> Consumer<T> {
    #[inline]
    fn slot_ptr(&self, pos: u64) -> *const T {
        self.cursor.view.payload(pos) as *const T
    }

    #[inline]
    fn slot_at_head(&mut self) -> ReadSlot<'_, T> {
        let ptr = self.slot_ptr(self.cursor.head);
        ReadSlot {
            consumer: self,
            ptr,
        }
    }

    /// Hands out the next committed message in place. It stays in the ring until
    /// [`ReadSlot::release`]; dropping the slot without releasing leaves it there.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`], or [`TryRecvError::Disconnected`] once the producer has
    /// gone and everything it committed was received.
    #[inline]
    pub fn peek(&mut self) -> Result<ReadSlot<'_, T>, TryRecvError> {
        if !self.cursor.view.is_committed(self.cursor.head) {
            return Err(self.shared.empty_error(&self.cursor, &mut self.probe));
        }
        Ok(self.slot_at_head())
    }

    /// Hands out the next message in place, waiting while the ring is empty.
    ///
    /// ```
    /// # let name = format!("doc-peek-wait-{}", std::process::id());
    /// let ring = tally::Ring::<u64>::create(&name, 8)?;
    /// let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
    /// tx.send(5)?;
    /// let msg = rx.peek_wait()?;
    /// assert_eq!(*msg, 5);
    /// msg.release();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`RecvError`] once the producer has gone and everything it committed was
    /// received.
    pub fn peek_wait(&mut self) -> Result<ReadSlot<'_, T>, RecvError> {
        self.shared
            .await_data(&self.cursor, self.spin, None, &mut self.probe)
            .map_err(|_| RecvError)?;
        Ok(self.slot_at_head())
    }

    /// Hands out the next message in place, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Disconnected`].
    pub fn peek_timeout(&mut self, timeout: Duration) -> Result<ReadSlot<'_, T>, RecvTimeoutError> {
        self.shared.await_data(
            &self.cursor,
            self.spin,
            deadline_after(timeout),
            &mut self.probe,
        )?;
        Ok(self.slot_at_head())
    }

    /// Hands out up to `max` consecutive committed messages in place.
    ///
    /// # Errors
    /// As [`peek`](Consumer::peek).
    #[inline]
    pub fn peek_many(&mut self, max: usize) -> Result<ReadBatch<'_, T>, TryRecvError> {
        let n = self.cursor.available(max as u64);
        if n == 0 {
            return Err(self.shared.empty_error(&self.cursor, &mut self.probe));
        }
        Ok(ReadBatch {
            consumer: self,
            len: n as usize,
        })
    }

    /// Copies the next message out, if one is committed.
    ///
    /// # Errors
    /// As [`peek`](Consumer::peek).
    #[inline]
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        if !self.cursor.view.is_committed(self.cursor.head) {
            return Err(self.shared.empty_error(&self.cursor, &mut self.probe));
        }
        Ok(self.read_and_release())
    }

    #[inline]
    fn read_and_release(&mut self) -> T {
        // SAFETY: the caller saw the slot committed (Acquire in is_committed), so the
        // producer finished writing it and won't touch it before we release; aligned,
        // in bounds, T: Message.
        let value = unsafe { self.slot_ptr(self.cursor.head).read() };
        self.cursor.release(1);
        value
    }

    /// Receives, waiting while the ring is empty.
    ///
    /// # Errors
    /// [`RecvError`] once the producer has gone and everything it committed was
    /// received.
    pub fn recv(&mut self) -> Result<T, RecvError> {
        self.shared
            .await_data(&self.cursor, self.spin, None, &mut self.probe)
            .map_err(|_| RecvError)?;
        Ok(self.read_and_release())
    }

    /// Receives, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Disconnected`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.shared.await_data(
            &self.cursor,
            self.spin,
            deadline_after(timeout),
            &mut self.probe,
        )?;
        Ok(self.read_and_release())
    }

    /// Whether the producer has gone (see [`PeerState::is_gone`]). One kernel lock
    /// probe while a producer holds the role; never waits for a lock.
    pub fn is_disconnected(&self) -> bool {
        self.shared.role_gone(Role::Producer)
    }

    /// Where the producer stands: not yet connected, connected, closed, or crashed.
    pub fn producer_state(&self) -> PeerState {
        self.shared.peer_state(Role::Producer)
    }

    /// Waits until a live producer holds the role (at once if one does), at most
    /// `timeout` (`Duration::MAX`: for ever). Returns whether one does.
    pub fn wait_for_producer(&self, timeout: Duration) -> bool {
        self.shared
            .wait_for_peer(Role::Producer, deadline_after(timeout))
    }

    /// Committed messages waiting, counted up to the capacity.
    pub fn len(&self) -> usize {
        self.cursor.available(self.cursor.view.geo.capacity) as usize
    }

    /// Whether nothing is committed.
    pub fn is_empty(&self) -> bool {
        !self.cursor.view.is_committed(self.cursor.head)
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.cursor.view.geo.capacity as usize
    }

    /// How long a waiting call spins before it sleeps (default 20 µs).
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// Sets how long a waiting call spins before it sleeps; see
    /// [`Producer::set_spin`].
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }
}

impl<T: Message> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.shared.leave_consumer();
    }
}

impl<T: Message> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("ring", &self.shared.seg.name())
            .field("head", &self.cursor.head)
            .field("capacity", &self.cursor.view.geo.capacity)
            .field("spin", &self.spin)
            .finish()
    }
}

/// A committed message, read in place. [`release`](ReadSlot::release) frees it.
#[must_use = "peeked messages are freed only by release(); dropping them leaves them in the ring"]
pub struct ReadSlot<'a, T: Message> {
    consumer: &'a mut Consumer<T>,
    ptr: *const T,
}

impl<T: Message> ReadSlot<'_, T> {
    /// Frees the slot for the producer.
    #[inline]
    pub fn release(self) {
        self.consumer.cursor.release(1);
    }
}

impl<T: Message> std::ops::Deref for ReadSlot<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: committed and not yet released: the producer does not write it.
        unsafe { &*self.ptr }
    }
}

/// Consecutive committed messages, read in place.
#[must_use = "peeked messages are freed only by release(); dropping them leaves them in the ring"]
pub struct ReadBatch<'a, T: Message> {
    consumer: &'a mut Consumer<T>,
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
        let ptr = self
            .consumer
            .slot_ptr(self.consumer.cursor.head.wrapping_add(i as u64));
        // SAFETY: committed and unreleased.
        unsafe { &*ptr }
    }

    /// The messages in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        (0..self.len).map(move |i| self.get(i))
    }

    /// Frees every message of the batch.
    #[inline]
    pub fn release(self) {
        let n = self.len as u64;
        self.consumer.cursor.release(n);
    }

    /// Frees the first `n` messages (at most `len()`).
    #[inline]
    pub fn release_n(self, n: usize) {
        let n = n.min(self.len) as u64;
        self.consumer.cursor.release(n);
    }
}

impl<T: Message> fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("name", &self.name())
            .field("payload", &std::any::type_name::<T>())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl<T: Message> fmt::Debug for WriteSlot<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteSlot")
            .field("position", &self.producer.cursor.tail)
            .finish_non_exhaustive()
    }
}

impl<T: Message> fmt::Debug for WriteBatch<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBatch")
            .field("first", &self.producer.cursor.tail)
            .field("len", &self.len)
            .finish()
    }
}

impl<T: Message> fmt::Debug for ReadSlot<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadSlot")
            .field("position", &self.consumer.cursor.head)
            .finish_non_exhaustive()
    }
}

impl<T: Message> fmt::Debug for ReadBatch<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadBatch")
            .field("first", &self.consumer.cursor.head)
            .field("len", &self.len)
            .finish()
    }
}
