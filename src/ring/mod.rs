//! Named single-producer single-consumer rings: the zero-copy hot path.

mod bytes;
mod error;
pub(crate) mod shared;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::message::Message;
use crate::objects::ring::endpoint::{ConsumerCursor, ProducerCursor};
use crate::objects::ring::{FLAVOR_TYPED, Geometry};
use crate::segment::{Fingerprint, Options, SegmentInfo, SweepOutcome};
pub use bytes::{
    ByteConsumer, ByteProducer, ByteReadBatch, ByteReadSlot, ByteRing, ByteWriteBatch,
    ByteWriteSlot,
};
pub use error::{RecvTimeoutError, ReserveError, SendTimeoutError, TryRecvError, TrySendError};
use shared::{Role, Shared, Wait, deadline_after};

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

fn typed_geometry<T: Message>(capacity: usize) -> Result<Geometry> {
    Geometry::new(capacity, std::mem::size_of::<T>(), std::mem::align_of::<T>(), FLAVOR_TYPED).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "capacity {capacity} of {}-byte slots: capacity must be 1..=2^30 and the ring fit in memory",
            std::mem::size_of::<T>()
        ))
    })
}

impl<T: Message> Ring<T> {
    /// Creates a ring of at least `capacity` slots (rounded up to a power of two).
    pub fn create(name: &str, capacity: usize) -> Result<Self> {
        Self::create_with(name, capacity, &Options::default())
    }

    /// Creates a ring with explicit [`Options`].
    pub fn create_with(name: &str, capacity: usize, opts: &Options) -> Result<Self> {
        if std::mem::align_of::<T>() > 128 {
            return Err(Error::InvalidArgument(
                "payload alignment above 128 bytes".into(),
            ));
        }
        let shared = Shared::create(
            name,
            Fingerprint::of::<T>(),
            typed_geometry::<T>(capacity)?,
            opts,
        )?;
        Ok(Self::wrap(shared))
    }

    /// Opens the live ring `name`; its payload type must be `T`.
    pub fn open(name: &str) -> Result<Self> {
        Self::open_with(name, &Options::default())
    }

    /// Opens with explicit [`Options`].
    pub fn open_with(name: &str, opts: &Options) -> Result<Self> {
        let shared = Shared::open(name, Fingerprint::of::<T>(), typed_geometry::<T>(1)?, opts)?;
        Ok(Self::wrap(shared))
    }

    /// Opens `name`, or creates it with `capacity` slots. Returns whether it created.
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
    pub fn producer(&self) -> Result<Producer<T>> {
        self.shared.claim(Role::Producer)?;
        Ok(Producer {
            cursor: ProducerCursor::resume(self.shared.view),
            shared: self.shared.clone(),
            _t: PhantomData,
        })
    }

    /// Claims the consumer role.
    pub fn consumer(&self) -> Result<Consumer<T>> {
        self.shared.claim(Role::Consumer)?;
        Ok(Consumer {
            cursor: ConsumerCursor::resume(self.shared.view),
            shared: self.shared.clone(),
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
    pub fn sweep(&self) -> Result<SweepOutcome> {
        self.shared.seg.sweep()
    }
}

/// The sending side of a [`Ring`]. Dropping it releases the role; a consumer that has
/// drained the ring then sees `Disconnected`.
pub struct Producer<T: Message> {
    cursor: ProducerCursor,
    shared: Arc<Shared>,
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

    /// Reserves the next slot for writing in place. Nothing is visible to the
    /// consumer until [`WriteSlot::commit`]; dropping the slot un-reserves it.
    #[inline]
    pub fn reserve(&mut self) -> Result<WriteSlot<'_, T>, ReserveError> {
        if self.cursor.free(1) == 0 {
            return Err(self.shared.full_error());
        }
        let ptr = self.slot_ptr(self.cursor.tail);
        Ok(WriteSlot {
            producer: self,
            ptr,
        })
    }

    /// Reserves up to `max` consecutive slots (at least one) for writing in place.
    #[inline]
    pub fn reserve_many(&mut self, max: usize) -> Result<WriteBatch<'_, T>, ReserveError> {
        let n = self.cursor.free(max as u64).min(max as u64);
        if n == 0 {
            return Err(self.shared.full_error());
        }
        Ok(WriteBatch {
            producer: self,
            len: n as usize,
        })
    }

    /// Copies `value` into the ring if a slot is free. No system call unless the
    /// consumer sleeps (then one futex wake).
    #[inline]
    pub fn try_send(&mut self, value: T) -> Result<(), TrySendError<T>> {
        if self.cursor.free(1) == 0 {
            return Err(match self.shared.full_error() {
                ReserveError::Disconnected => TrySendError::Disconnected(value),
                _ => TrySendError::Full(value),
            });
        }
        // SAFETY: the slot at tail is free (free >= 1) and ours alone until committed;
        // the payload pointer is aligned for T and valid for size_of::<T>() bytes.
        unsafe { self.slot_ptr(self.cursor.tail).write(value) };
        self.cursor.commit(1);
        Ok(())
    }

    /// Sends `value`, waiting while the ring is full. Fails only if the consumer goes.
    pub fn send(&mut self, value: T) -> Result<(), T> {
        self.send_until(value, None)
            .map_err(SendTimeoutError::into_inner)
    }

    /// Sends `value`, waiting at most `timeout` for a free slot.
    pub fn send_timeout(&mut self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_until(value, deadline_after(timeout))
    }

    fn send_until(
        &mut self,
        mut value: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<T>> {
        loop {
            match self.try_send(value) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(v)) => {
                    return Err(SendTimeoutError::Disconnected(v));
                }
                Err(TrySendError::Full(v)) => value = v,
            }
            match self.shared.wait_space(&mut self.cursor, 1, deadline) {
                Wait::Retry => {}
                Wait::Gone => {
                    // One last try: the consumer may have freed a slot before going.
                    return self
                        .try_send(value)
                        .map_err(|e| SendTimeoutError::Disconnected(e.into_inner()));
                }
                Wait::TimedOut => return Err(SendTimeoutError::Timeout(value)),
            }
        }
    }

    /// Free slots right now (reloads the consumer's position).
    pub fn free_slots(&mut self) -> usize {
        self.cursor.free(u64::MAX) as usize
    }

    /// Whether the consumer role is vacant after having been held, or its holder died.
    pub fn is_disconnected(&self) -> bool {
        self.shared.role_gone(Role::Consumer)
    }
}

impl<T: Message> Drop for Producer<T> {
    fn drop(&mut self) {
        self.shared.leave_producer(&self.cursor);
    }
}

/// A reserved slot, written in place. [`commit`](WriteSlot::commit) publishes it.
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
        // SAFETY: the reserved slot is ours alone until commit; T: Pod, so whatever
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
        // SAFETY: reserved and exclusively ours until commit; T: Pod.
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

/// The receiving side of a [`Ring`].
pub struct Consumer<T: Message> {
    cursor: ConsumerCursor,
    shared: Arc<Shared>,
    _t: PhantomData<fn(T) -> T>,
}

// SAFETY: as for Producer.
unsafe impl<T: Message> Send for Consumer<T> {}

impl<T: Message> Consumer<T> {
    #[inline]
    fn slot_ptr(&self, pos: u64) -> *const T {
        self.cursor.view.payload(pos) as *const T
    }

    /// Hands out the next committed message in place. It stays in the ring until
    /// [`ReadSlot::release`]; dropping the slot without releasing leaves it there.
    #[inline]
    pub fn peek(&mut self) -> Result<ReadSlot<'_, T>, TryRecvError> {
        if !self.cursor.view.is_committed(self.cursor.head) {
            return Err(self.shared.empty_error(&self.cursor));
        }
        let ptr = self.slot_ptr(self.cursor.head);
        Ok(ReadSlot {
            consumer: self,
            ptr,
        })
    }

    /// Hands out up to `max` consecutive committed messages in place.
    #[inline]
    pub fn peek_many(&mut self, max: usize) -> Result<ReadBatch<'_, T>, TryRecvError> {
        let n = self.cursor.available(max as u64);
        if n == 0 {
            return Err(self.shared.empty_error(&self.cursor));
        }
        Ok(ReadBatch {
            consumer: self,
            len: n as usize,
        })
    }

    /// Copies the next message out, if one is committed.
    #[inline]
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        if !self.cursor.view.is_committed(self.cursor.head) {
            return Err(self.shared.empty_error(&self.cursor));
        }
        // SAFETY: committed (Acquire in is_committed), so the producer finished writing
        // it and won't touch it before we release; aligned, in bounds, T: Pod.
        let value = unsafe { self.slot_ptr(self.cursor.head).read() };
        self.cursor.release(1);
        Ok(value)
    }

    /// Receives, waiting while the ring is empty. `Err` once the producer has gone
    /// and everything it committed has been received.
    pub fn recv(&mut self) -> Result<T, RecvTimeoutError> {
        self.recv_until(None)
    }

    /// Receives, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_until(deadline_after(timeout))
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        loop {
            match self.try_recv() {
                Ok(v) => return Ok(v),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            match self.shared.wait_data(&self.cursor, deadline) {
                Wait::Retry => {}
                Wait::Gone => {
                    return self.try_recv().map_err(|_| RecvTimeoutError::Disconnected);
                }
                Wait::TimedOut => return Err(RecvTimeoutError::Timeout),
            }
        }
    }

    /// Whether the producer role is vacant after having been held, or its holder died.
    pub fn is_disconnected(&self) -> bool {
        self.shared.role_gone(Role::Producer)
    }

    /// Committed messages waiting, counted up to the capacity.
    pub fn len(&self) -> usize {
        self.cursor.available(self.cursor.view.geo.capacity) as usize
    }

    /// Whether nothing is committed.
    pub fn is_empty(&self) -> bool {
        !self.cursor.view.is_committed(self.cursor.head)
    }
}

impl<T: Message> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.shared.leave_consumer();
    }
}

/// A committed message, read in place. [`release`](ReadSlot::release) frees it.
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
