//! Named multi-producer multi-consumer rings whose claims survive their holders dying.

mod bytes;
pub(crate) mod shared;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::message::Message;
use crate::objects::mpmc::{FLAVOR_TYPED, Geometry};
use crate::ring::{
    PeerState, RecvError, RecvTimeoutError, ReserveError, ReserveTimeoutError, SendError,
    SendTimeoutError, TryRecvError, TrySendError,
};
use crate::segment::layout::OBJECT_ALIGN;
use crate::segment::{Fingerprint, Options, SegmentInfo, SweepOutcome};
use crate::wait::{DEFAULT_SPIN, Probe, deadline_after};
pub use bytes::{
    MpmcByteConsumer, MpmcByteProducer, MpmcByteReadSlot, MpmcByteRing, MpmcByteWriteSlot,
};
use shared::{MpmcShared, Side};

/// A named multi-producer multi-consumer ring of `T` values in shared memory.
///
/// Any number of [`MpmcProducer`] and [`MpmcConsumer`] handles, in any number of
/// processes and threads, share it. A producer that dies between claiming a slot and
/// committing it never wedges the ring: that one position is skipped. A consumer that
/// dies holding a message in place (between `peek` and `release`) does not lose it: it
/// is delivered again to another consumer.
///
/// ```
/// # let name = format!("doc-mpmc-{}", std::process::id());
/// let ring = tally::MpmcRing::<u64>::create(&name, 1024)?;
/// let (mut a, mut b) = (ring.producer()?, ring.producer()?);
/// let mut rx = ring.consumer()?;
/// a.send(1)?;
/// b.send(2)?;
/// let mut got = vec![rx.recv()?, rx.recv()?];
/// got.sort();
/// assert_eq!(got, [1, 2]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MpmcRing<T: Message> {
    shared: Arc<MpmcShared>,
    _t: PhantomData<fn(T) -> T>,
}

fn typed_geometry<T: Message>(capacity: usize, opts: &Options) -> Result<Geometry> {
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
        opts.holders,
    )
    .ok_or_else(|| {
        Error::InvalidArgument(format!(
            "capacity {capacity} of {}-byte slots: capacity must be 1..=2^30 and the ring fit in memory",
            std::mem::size_of::<T>()
        ))
    })
}

impl<T: Message> MpmcRing<T> {
    /// Creates a ring of at least `capacity` slots (rounded up to a power of two).
    ///
    /// # Errors
    /// As [`Ring::create`](crate::Ring::create).
    pub fn create(name: &str, capacity: usize) -> Result<Self> {
        Self::create_with(name, capacity, &Options::default())
    }

    /// Creates a ring with explicit [`Options`].
    ///
    /// # Errors
    /// As [`Ring::create`](crate::Ring::create).
    pub fn create_with(name: &str, capacity: usize, opts: &Options) -> Result<Self> {
        let geo = typed_geometry::<T>(capacity, opts)?;
        Ok(Self::wrap(MpmcShared::create(
            name,
            Fingerprint::of::<T>(),
            geo,
            opts,
        )?))
    }

    /// Opens the live ring `name`, of any capacity; its payload type must be `T`.
    ///
    /// # Errors
    /// As [`Ring::open`](crate::Ring::open).
    pub fn open(name: &str) -> Result<Self> {
        Self::open_with(name, &Options::default())
    }

    /// Opens with explicit [`Options`].
    ///
    /// # Errors
    /// As [`Ring::open`](crate::Ring::open).
    pub fn open_with(name: &str, opts: &Options) -> Result<Self> {
        let geo = typed_geometry::<T>(1, opts)?;
        Ok(Self::wrap(MpmcShared::open(
            name,
            Fingerprint::of::<T>(),
            geo,
            opts,
        )?))
    }

    /// Opens `name`, or creates it with `capacity` slots. Returns whether it created.
    ///
    /// # Errors
    /// As [`Ring::open_or_create`](crate::Ring::open_or_create).
    pub fn open_or_create(name: &str, capacity: usize, opts: &Options) -> Result<(Self, bool)> {
        let geo = typed_geometry::<T>(capacity, opts)?;
        let (shared, created) =
            MpmcShared::open_or_create(name, Fingerprint::of::<T>(), geo, opts)?;
        Ok((Self::wrap(shared), created))
    }

    fn wrap(shared: Arc<MpmcShared>) -> Self {
        MpmcRing {
            shared,
            _t: PhantomData,
        }
    }

    /// A new producer handle (any number may exist).
    ///
    /// # Errors
    /// [`Error::Inherited`] in a forked child.
    pub fn producer(&self) -> Result<MpmcProducer<T>> {
        self.shared.join(Side::Producer)?;
        Ok(MpmcProducer {
            shared: self.shared.clone(),
            spin: DEFAULT_SPIN,
            probe: Probe::default(),
            pending: None,
            _t: PhantomData,
        })
    }

    /// A new consumer handle (any number may exist).
    ///
    /// # Errors
    /// [`Error::Inherited`] in a forked child.
    pub fn consumer(&self) -> Result<MpmcConsumer<T>> {
        self.shared.join(Side::Consumer)?;
        Ok(MpmcConsumer {
            shared: self.shared.clone(),
            spin: DEFAULT_SPIN,
            probe: Probe::default(),
            pending: None,
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

    /// Describes the segment and the ring.
    pub fn info(&self) -> SegmentInfo {
        self.shared.seg.info()
    }

    /// Reclaims dead holders now: skips their unfinished writes, redelivers the
    /// messages they held.
    ///
    /// # Errors
    /// As [`Ring::sweep`](crate::Ring::sweep).
    pub fn sweep(&self) -> Result<SweepOutcome> {
        self.shared.seg.sweep()
    }
}

/// A sending handle of an [`MpmcRing`]. Dropping it with a reserved, uncommitted slot
/// gives the position up (consumers step over it).
///
/// Blocking works as on the SPSC ring: spin for [`spin`](MpmcProducer::spin), then sleep
/// on a futex in slices of at most 10 ms, never past the deadline.
pub struct MpmcProducer<T: Message> {
    shared: Arc<MpmcShared>,
    spin: Duration,
    probe: Probe,
    /// A claimed position whose slot guard was dropped uncommitted: the next
    /// reservation hands it out again.
    pending: Option<u64>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Message> MpmcProducer<T> {
    #[inline]
    fn slot(&mut self, pos: u64) -> MpmcWriteSlot<'_, T> {
        self.pending = Some(pos);
        let ptr = self.shared.view.payload(pos) as *mut T;
        MpmcWriteSlot {
            producer: self,
            pos,
            ptr,
        }
    }

    /// Reserves a slot for writing in place, if one is free. Nothing is visible to
    /// consumers until [`MpmcWriteSlot::commit`].
    ///
    /// # Errors
    /// [`ReserveError::Full`], or [`ReserveError::Disconnected`] if the ring is full and
    /// every consumer has gone.
    #[inline]
    pub fn reserve(&mut self) -> std::result::Result<MpmcWriteSlot<'_, T>, ReserveError> {
        let pos = match self.pending {
            Some(pos) => pos,
            None => self.shared.claim_write(&mut self.probe, false)?,
        };
        Ok(self.slot(pos))
    }

    /// Reserves a slot, waiting while the ring is full.
    ///
    /// # Errors
    /// [`ReserveTimeoutError::Disconnected`] if the ring is full and every consumer has
    /// gone.
    pub fn reserve_wait(
        &mut self,
    ) -> std::result::Result<MpmcWriteSlot<'_, T>, ReserveTimeoutError> {
        let pos = match self.pending {
            Some(pos) => pos,
            None => self.shared.await_write(self.spin, None, &mut self.probe)?,
        };
        Ok(self.slot(pos))
    }

    /// Reserves a slot, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ReserveTimeoutError::Timeout`] or [`ReserveTimeoutError::Disconnected`].
    pub fn reserve_timeout(
        &mut self,
        timeout: Duration,
    ) -> std::result::Result<MpmcWriteSlot<'_, T>, ReserveTimeoutError> {
        let pos = match self.pending {
            Some(pos) => pos,
            None => self
                .shared
                .await_write(self.spin, deadline_after(timeout), &mut self.probe)?,
        };
        Ok(self.slot(pos))
    }

    /// Copies `value` into the ring if a slot is free.
    ///
    /// # Errors
    /// [`TrySendError::Full`] or [`TrySendError::Disconnected`], with the value.
    #[inline]
    pub fn try_send(&mut self, value: T) -> std::result::Result<(), TrySendError<T>> {
        match self.reserve() {
            Ok(slot) => {
                slot.write(value);
                Ok(())
            }
            Err(ReserveError::Disconnected) => Err(TrySendError::Disconnected(value)),
            Err(_) => Err(TrySendError::Full(value)),
        }
    }

    /// Sends `value`, waiting while the ring is full.
    ///
    /// # Errors
    /// [`SendError`] with the value if the ring is full and every consumer has gone.
    pub fn send(&mut self, value: T) -> std::result::Result<(), SendError<T>> {
        match self.reserve_wait() {
            Ok(slot) => {
                slot.write(value);
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
    pub fn send_timeout(
        &mut self,
        value: T,
        timeout: Duration,
    ) -> std::result::Result<(), SendTimeoutError<T>> {
        match self.reserve_timeout(timeout) {
            Ok(slot) => {
                slot.write(value);
                Ok(())
            }
            Err(ReserveTimeoutError::Timeout) => Err(SendTimeoutError::Timeout(value)),
            Err(_) => Err(SendTimeoutError::Disconnected(value)),
        }
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.shared.view.geo.capacity as usize
    }

    /// Whether every consumer has gone (a lock probe per holder that counts
    /// consumers, until a live one; never waits for a lock).
    pub fn is_disconnected(&self) -> bool {
        self.shared.peers(Side::Consumer).is_gone()
    }

    /// Where the consumers stand: none yet, some live, or all closed or crashed.
    pub fn consumer_state(&self) -> PeerState {
        self.shared.peers(Side::Consumer)
    }

    /// Waits until a live consumer exists, at most `timeout`. Returns whether one does.
    pub fn wait_for_consumer(&self, timeout: Duration) -> bool {
        self.shared
            .wait_for_peers(Side::Consumer, deadline_after(timeout))
    }

    /// How long a waiting call spins before it sleeps (default 20 µs).
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// Sets how long a waiting call spins before it sleeps; see
    /// [`Producer::set_spin`](crate::Producer::set_spin).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }
}

// SAFETY: the handle holds no pointer but through `shared`, whose mapping outlives it;
// slot claims make a reserved payload this handle's alone.
unsafe impl<T: Message> Send for MpmcProducer<T> {}

impl<T: Message> Drop for MpmcProducer<T> {
    fn drop(&mut self) {
        if let Some(pos) = self.pending.take()
            && self.shared.seg.check_owner().is_ok()
        {
            self.shared.give_up_write(pos);
        }
        self.shared.leave(Side::Producer);
    }
}

impl<T: Message> fmt::Debug for MpmcProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpmcProducer")
            .field("ring", &self.shared.seg.name())
            .field("pending", &self.pending)
            .field("spin", &self.spin)
            .finish()
    }
}

/// A reserved slot of an MPMC ring, written in place. [`commit`](MpmcWriteSlot::commit)
/// publishes it; dropping it keeps the reservation for the handle's next `reserve`.
#[must_use = "reserved slots are published only by commit()"]
pub struct MpmcWriteSlot<'a, T: Message> {
    producer: &'a mut MpmcProducer<T>,
    pos: u64,
    ptr: *mut T,
}

impl<T: Message> MpmcWriteSlot<'_, T> {
    /// Publishes the slot to the consumers.
    #[inline]
    pub fn commit(self) {
        self.producer.pending = None;
        self.producer.shared.commit(self.pos);
    }

    #[inline]
    fn write(self, value: T) {
        // SAFETY: the claimed slot is ours alone until committed; aligned, in bounds.
        unsafe { self.ptr.write(value) };
        self.commit();
    }
}

impl<T: Message> std::ops::Deref for MpmcWriteSlot<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: claimed (Writing, naming our holder) and ours alone; T: Pod.
        unsafe { &*self.ptr }
    }
}

impl<T: Message> std::ops::DerefMut for MpmcWriteSlot<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`.
        unsafe { &mut *self.ptr }
    }
}

impl<T: Message> fmt::Debug for MpmcWriteSlot<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpmcWriteSlot")
            .field("position", &self.pos)
            .finish_non_exhaustive()
    }
}

/// A receiving handle of an [`MpmcRing`]. Dropping it with a peeked, unreleased
/// message gives the message back: another consumer receives it.
pub struct MpmcConsumer<T: Message> {
    shared: Arc<MpmcShared>,
    spin: Duration,
    probe: Probe,
    /// A claimed message whose guard was dropped unreleased: the next peek hands it
    /// out again.
    pending: Option<u64>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Message> MpmcConsumer<T> {
    #[inline]
    fn slot(&mut self, pos: u64) -> MpmcReadSlot<'_, T> {
        self.pending = Some(pos);
        let ptr = self.shared.view.payload(pos) as *const T;
        MpmcReadSlot {
            consumer: self,
            pos,
            ptr,
        }
    }

    /// Hands out the next committed message in place, until
    /// [`MpmcReadSlot::release`].
    ///
    /// # Errors
    /// [`TryRecvError::Empty`], or [`TryRecvError::Disconnected`] once every producer has
    /// gone and everything committed was received.
    #[inline]
    pub fn peek(&mut self) -> std::result::Result<MpmcReadSlot<'_, T>, TryRecvError> {
        let pos = match self.pending {
            Some(pos) => pos,
            None => self.shared.claim_read(&mut self.probe, false)?,
        };
        Ok(self.slot(pos))
    }

    /// Hands out the next message in place, waiting while the ring is empty.
    ///
    /// # Errors
    /// [`RecvError`] once every producer has gone and everything was received.
    pub fn peek_wait(&mut self) -> std::result::Result<MpmcReadSlot<'_, T>, RecvError> {
        let pos = match self.pending {
            Some(pos) => pos,
            None => self
                .shared
                .await_read(self.spin, None, &mut self.probe)
                .map_err(|_| RecvError)?,
        };
        Ok(self.slot(pos))
    }

    /// Hands out the next message in place, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Disconnected`].
    pub fn peek_timeout(
        &mut self,
        timeout: Duration,
    ) -> std::result::Result<MpmcReadSlot<'_, T>, RecvTimeoutError> {
        let pos = match self.pending {
            Some(pos) => pos,
            None => self
                .shared
                .await_read(self.spin, deadline_after(timeout), &mut self.probe)?,
        };
        Ok(self.slot(pos))
    }

    /// Copies the next message out, if one is committed.
    ///
    /// # Errors
    /// As [`peek`](MpmcConsumer::peek).
    #[inline]
    pub fn try_recv(&mut self) -> std::result::Result<T, TryRecvError> {
        Ok(self.peek()?.take())
    }

    /// Receives, waiting while the ring is empty.
    ///
    /// # Errors
    /// As [`peek_wait`](MpmcConsumer::peek_wait).
    pub fn recv(&mut self) -> std::result::Result<T, RecvError> {
        Ok(self.peek_wait()?.take())
    }

    /// Receives, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`peek_timeout`](MpmcConsumer::peek_timeout).
    pub fn recv_timeout(&mut self, timeout: Duration) -> std::result::Result<T, RecvTimeoutError> {
        Ok(self.peek_timeout(timeout)?.take())
    }

    /// Committed messages waiting (a snapshot, counted up to the capacity).
    pub fn len(&self) -> usize {
        self.shared.view.committed() as usize
    }

    /// Whether no committed message is waiting (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.shared.view.geo.capacity as usize
    }

    /// Whether every producer has gone.
    pub fn is_disconnected(&self) -> bool {
        self.shared.peers(Side::Producer).is_gone()
    }

    /// Where the producers stand: none yet, some live, or all closed or crashed.
    pub fn producer_state(&self) -> PeerState {
        self.shared.peers(Side::Producer)
    }

    /// Waits until a live producer exists, at most `timeout`. Returns whether one does.
    pub fn wait_for_producer(&self, timeout: Duration) -> bool {
        self.shared
            .wait_for_peers(Side::Producer, deadline_after(timeout))
    }

    /// How long a waiting call spins before it sleeps (default 20 µs).
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// Sets how long a waiting call spins before it sleeps; see
    /// [`Producer::set_spin`](crate::Producer::set_spin).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }
}

// SAFETY: as for MpmcProducer.
unsafe impl<T: Message> Send for MpmcConsumer<T> {}

impl<T: Message> Drop for MpmcConsumer<T> {
    fn drop(&mut self) {
        if let Some(pos) = self.pending.take()
            && self.shared.seg.check_owner().is_ok()
        {
            self.shared.give_back_read(pos);
        }
        self.shared.leave(Side::Consumer);
    }
}

impl<T: Message> fmt::Debug for MpmcConsumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpmcConsumer")
            .field("ring", &self.shared.seg.name())
            .field("pending", &self.pending)
            .field("spin", &self.spin)
            .finish()
    }
}

/// A message of an MPMC ring, read in place. [`release`](MpmcReadSlot::release) frees
/// it; dropping the guard keeps it for the handle's next `peek`.
#[must_use = "peeked messages are freed only by release()"]
pub struct MpmcReadSlot<'a, T: Message> {
    consumer: &'a mut MpmcConsumer<T>,
    pos: u64,
    ptr: *const T,
}

impl<T: Message> MpmcReadSlot<'_, T> {
    /// Frees the slot for the producers.
    #[inline]
    pub fn release(self) {
        self.consumer.pending = None;
        self.consumer.shared.release(self.pos);
    }

    #[inline]
    fn take(self) -> T {
        // SAFETY: claimed for reading (Acquire on the claim), so the producer's writes
        // are visible and nobody writes it until we release; aligned, T: Pod.
        let value = unsafe { self.ptr.read() };
        self.release();
        value
    }
}

impl<T: Message> std::ops::Deref for MpmcReadSlot<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: claimed for reading and not released: no producer writes it.
        unsafe { &*self.ptr }
    }
}

impl<T: Message> fmt::Debug for MpmcReadSlot<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpmcReadSlot")
            .field("position", &self.pos)
            .finish_non_exhaustive()
    }
}

impl<T: Message> fmt::Debug for MpmcRing<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpmcRing")
            .field("name", &self.name())
            .field("payload", &std::any::type_name::<T>())
            .field("capacity", &self.capacity())
            .finish()
    }
}
