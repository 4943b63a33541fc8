//! Rings of variable-length byte messages, up to a slot size chosen at create time.

mod ahead;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::{RecvError, RecvTimeoutError, ReserveError, ReserveTimeoutError, TryRecvError};
use super::shared::{PeerState, Role, Shared};
use crate::error::{Error, Result};
use crate::objects::ring::endpoint::{ConsumerCursor, ProducerCursor};
use crate::objects::ring::{FLAVOR_BYTES, Geometry, RingView};
use crate::segment::{Fingerprint, Options, SegmentInfo, SweepOutcome};
use crate::wait::{DEFAULT_SPIN, Probe, deadline_after};

/// Payload header of a byte slot: the message length, padded to 8.
const LEN_PREFIX: usize = 8;

/// Writes the length prefix of the slot of `pos`.
///
/// # Safety
/// The slot of `pos` must be reserved by the caller and not yet committed.
#[inline]
unsafe fn write_len(view: &RingView, pos: u64, len: usize) {
    // SAFETY: the caller owns the slot; the prefix is the payload's first, 8-aligned
    // bytes.
    unsafe { (view.payload(pos) as *mut u32).write(len as u32) };
}

/// The length of the committed message at `pos`. A hostile length is clamped to the
/// slot: wrong data, never an out-of-bounds read (P6).
///
/// # Safety
/// `pos` must be committed (its seq seen with Acquire) and not yet released.
#[inline]
unsafe fn read_len(view: &RingView, pos: u64) -> usize {
    // SAFETY: committed, so the prefix was written before the seq we acquired, and
    // the producer does not touch the slot until it is released.
    let len = unsafe { (view.payload(pos) as *const u32).read() } as usize;
    len.min(view.geo.payload_size - LEN_PREFIX)
}

/// A named SPSC ring of byte messages of up to `max_message` bytes each.
///
/// ```
/// # let name = format!("doc-bytes-{}", std::process::id());
/// let ring = tally::ByteRing::create(&name, 64, 256)?;
/// let mut tx = ring.producer()?;
/// let mut rx = ring.consumer()?;
/// let mut slot = tx.reserve(5).unwrap();
/// slot.copy_from_slice(b"hello");
/// slot.commit();
/// let msg = rx.peek().unwrap();
/// assert_eq!(&*msg, b"hello");
/// msg.release();
/// # Ok::<(), tally::Error>(())
/// ```
pub struct ByteRing {
    shared: Arc<Shared>,
}

fn byte_geometry(capacity: usize, max_message: usize) -> Result<Geometry> {
    if max_message == 0 || max_message > u32::MAX as usize - LEN_PREFIX {
        return Err(Error::InvalidArgument(format!(
            "max_message {max_message} outside 1..=4 GiB"
        )));
    }
    Geometry::new(capacity, LEN_PREFIX + max_message, 8, FLAVOR_BYTES).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "capacity {capacity} × {max_message}-byte messages: capacity must be 1..=2^30 and the ring fit in memory"
        ))
    })
}

impl ByteRing {
    /// Creates a ring of at least `capacity` slots of `max_message` bytes.
    ///
    /// # Errors
    /// [`Error::InvalidName`] or [`Error::InvalidArgument`] for a bad name or size;
    /// [`Error::AlreadyExists`] if a live object has the name; [`Error::NoSpace`] if
    /// `/dev/shm` cannot hold it; [`Error::PermissionDenied`] or [`Error::Io`] from the
    /// system.
    pub fn create(name: &str, capacity: usize, max_message: usize) -> Result<Self> {
        Self::create_with(name, capacity, max_message, &Options::default())
    }

    /// Creates with explicit [`Options`].
    ///
    /// # Errors
    /// [`Error::InvalidName`] or [`Error::InvalidArgument`] for a bad name or size;
    /// [`Error::AlreadyExists`] if a live object has the name; [`Error::NoSpace`] if
    /// `/dev/shm` cannot hold it; [`Error::PermissionDenied`] or [`Error::Io`] from the
    /// system.
    pub fn create_with(
        name: &str,
        capacity: usize,
        max_message: usize,
        opts: &Options,
    ) -> Result<Self> {
        let geo = byte_geometry(capacity, max_message)?;
        Ok(ByteRing {
            shared: Shared::create(name, Fingerprint::bytes(), geo, opts)?,
        })
    }

    /// Opens the live byte ring `name`, whatever its sizes.
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
        let seg_geo = Shared::open_any_bytes(name, opts)?;
        Ok(ByteRing { shared: seg_geo })
    }

    /// Opens `name` or creates it. Returns whether it created.
    ///
    /// # Errors
    /// As `create` and `open`. An existing ring of another capacity (or, for a byte
    /// ring, message size) is a [`Error::LayoutMismatch`] unless
    /// [`Options::any_capacity`](crate::Options::any_capacity).
    pub fn open_or_create(
        name: &str,
        capacity: usize,
        max_message: usize,
        opts: &Options,
    ) -> Result<(Self, bool)> {
        let geo = byte_geometry(capacity, max_message)?;
        let (shared, created) = Shared::open_or_create(name, Fingerprint::bytes(), geo, opts)?;
        Ok((ByteRing { shared }, created))
    }

    /// Claims the producer role.
    ///
    /// # Errors
    /// [`Error::RoleTaken`] while a live handle holds the role; [`Error::Inherited`] in
    /// a forked child; [`Error::Timeout`] if reclaiming a dead holder's role waits for
    /// the admin lock longer than [`Options::timeout`](crate::Options::timeout).
    pub fn producer(&self) -> Result<ByteProducer> {
        self.shared.claim(Role::Producer)?;
        Ok(ByteProducer {
            cursor: ProducerCursor::resume(self.shared.view),
            shared: self.shared.clone(),
            spin: DEFAULT_SPIN,
            probe: Probe::default(),
        })
    }

    /// Claims the consumer role.
    ///
    /// # Errors
    /// [`Error::RoleTaken`] while a live handle holds the role; [`Error::Inherited`] in
    /// a forked child; [`Error::Timeout`] if reclaiming a dead holder's role waits for
    /// the admin lock longer than [`Options::timeout`](crate::Options::timeout).
    pub fn consumer(&self) -> Result<ByteConsumer> {
        self.shared.claim(Role::Consumer)?;
        Ok(ByteConsumer {
            cursor: ConsumerCursor::resume(self.shared.view),
            shared: self.shared.clone(),
            spin: DEFAULT_SPIN,
            probe: Probe::default(),
        })
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.shared.view.geo.capacity as usize
    }

    /// Largest message in bytes.
    pub fn max_message(&self) -> usize {
        self.shared.view.geo.payload_size - LEN_PREFIX
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

/// The sending side of a [`ByteRing`].
pub struct ByteProducer {
    cursor: ProducerCursor,
    shared: Arc<Shared>,
    spin: Duration,
    probe: Probe,
}

// SAFETY: see `Producer`.
unsafe impl Send for ByteProducer {}

impl ByteProducer {
    fn max(&self) -> usize {
        self.cursor.view.geo.payload_size - LEN_PREFIX
    }

    #[inline]
    fn check_len(&self, len: usize) -> Result<(), ReserveError> {
        if len > self.max() {
            return Err(ReserveError::TooLong {
                len,
                max: self.max(),
            });
        }
        Ok(())
    }

    #[inline]
    fn slot_at_tail(&mut self, len: usize) -> ByteWriteSlot<'_> {
        ByteWriteSlot {
            producer: self,
            len,
        }
    }

    /// Reserves a slot for a message of exactly `len` bytes, to be written in place,
    /// if one is free.
    ///
    /// # Errors
    /// [`ReserveError::TooLong`] if `len` exceeds [`ByteRing::max_message`];
    /// [`ReserveError::Full`]; [`ReserveError::Disconnected`] if the ring is full and
    /// the consumer has gone.
    #[inline]
    pub fn reserve(&mut self, len: usize) -> Result<ByteWriteSlot<'_>, ReserveError> {
        self.check_len(len)?;
        if self.cursor.free(1) == 0 {
            return Err(self.shared.full_error(&mut self.probe));
        }
        Ok(self.slot_at_tail(len))
    }

    /// Reserves a slot for `len` bytes, waiting while the ring is full.
    ///
    /// # Errors
    /// [`ReserveTimeoutError::TooLong`]; [`ReserveTimeoutError::Disconnected`] if the
    /// ring is full and the consumer has gone.
    pub fn reserve_wait(&mut self, len: usize) -> Result<ByteWriteSlot<'_>, ReserveTimeoutError> {
        self.check_len(len)?;
        self.shared
            .await_space(&mut self.cursor, 1, self.spin, None, &mut self.probe)?;
        Ok(self.slot_at_tail(len))
    }

    /// Reserves a slot for `len` bytes, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`reserve_wait`](ByteProducer::reserve_wait), or
    /// [`ReserveTimeoutError::Timeout`].
    pub fn reserve_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<ByteWriteSlot<'_>, ReserveTimeoutError> {
        self.check_len(len)?;
        self.shared.await_space(
            &mut self.cursor,
            1,
            self.spin,
            deadline_after(timeout),
            &mut self.probe,
        )?;
        Ok(self.slot_at_tail(len))
    }

    /// Reserves up to `max` consecutive slots (at least one), each for a message of
    /// exactly `len` bytes, to be written in place.
    ///
    /// # Errors
    /// As [`reserve`](ByteProducer::reserve).
    #[inline]
    pub fn reserve_many(
        &mut self,
        max: usize,
        len: usize,
    ) -> Result<ByteWriteBatch<'_>, ReserveError> {
        self.check_len(len)?;
        let n = self.cursor.free(max as u64).min(max as u64);
        if n == 0 {
            return Err(self.shared.full_error(&mut self.probe));
        }
        Ok(ByteWriteBatch {
            producer: self,
            count: n as usize,
            msg_len: len,
        })
    }

    /// Copies `msg` into the ring if a slot is free.
    ///
    /// # Errors
    /// As [`reserve`](ByteProducer::reserve).
    #[inline]
    pub fn try_send(&mut self, msg: &[u8]) -> Result<(), ReserveError> {
        let mut slot = self.reserve(msg.len())?;
        slot.copy_from_slice(msg);
        slot.commit();
        Ok(())
    }

    /// Copies `msg` in, waiting while the ring is full.
    ///
    /// # Errors
    /// As [`reserve_wait`](ByteProducer::reserve_wait).
    pub fn send(&mut self, msg: &[u8]) -> Result<(), ReserveTimeoutError> {
        let mut slot = self.reserve_wait(msg.len())?;
        slot.copy_from_slice(msg);
        slot.commit();
        Ok(())
    }

    /// Copies `msg` in, waiting at most `timeout` for a free slot.
    ///
    /// # Errors
    /// As [`reserve_timeout`](ByteProducer::reserve_timeout).
    pub fn send_timeout(
        &mut self,
        msg: &[u8],
        timeout: Duration,
    ) -> Result<(), ReserveTimeoutError> {
        let mut slot = self.reserve_timeout(msg.len(), timeout)?;
        slot.copy_from_slice(msg);
        slot.commit();
        Ok(())
    }

    /// Free slots right now (reloads the consumer's position).
    pub fn free_slots(&mut self) -> usize {
        self.cursor.free(u64::MAX) as usize
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.cursor.view.geo.capacity as usize
    }

    /// Whether the consumer has gone; see [`Producer::is_disconnected`](crate::Producer::is_disconnected).
    pub fn is_disconnected(&self) -> bool {
        self.shared.role_gone(Role::Consumer)
    }

    /// Where the consumer stands.
    pub fn consumer_state(&self) -> PeerState {
        self.shared.peer_state(Role::Consumer)
    }

    /// Waits until a live consumer holds the role, at most `timeout`.
    pub fn wait_for_consumer(&self, timeout: Duration) -> bool {
        self.shared
            .wait_for_peer(Role::Consumer, deadline_after(timeout))
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

impl Drop for ByteProducer {
    fn drop(&mut self) {
        self.shared.leave_producer(&self.cursor);
    }
}

/// A reserved byte slot of a fixed length, written in place.
#[must_use = "reserved slots are published only by commit(); dropping them un-reserves them"]
pub struct ByteWriteSlot<'a> {
    producer: &'a mut ByteProducer,
    len: usize,
}

impl ByteWriteSlot<'_> {
    /// Publishes the message.
    #[inline]
    pub fn commit(self) {
        let cursor = &mut self.producer.cursor;
        // SAFETY: the slot at tail is reserved by this slot guard and not committed.
        unsafe { write_len(&cursor.view, cursor.tail, self.len) };
        cursor.commit(1);
    }
}

impl std::ops::Deref for ByteWriteSlot<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        let p = self.producer.cursor.view.payload(self.producer.cursor.tail);
        // SAFETY: reserved and ours; len <= max so the bytes lie inside the slot.
        unsafe { std::slice::from_raw_parts(p.add(LEN_PREFIX), self.len) }
    }
}

impl std::ops::DerefMut for ByteWriteSlot<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        let p = self.producer.cursor.view.payload(self.producer.cursor.tail);
        // SAFETY: as in `deref`, and exclusively ours until commit.
        unsafe { std::slice::from_raw_parts_mut(p.add(LEN_PREFIX), self.len) }
    }
}

/// Consecutive reserved byte slots, each for a message of the same length.
#[must_use = "reserved slots are published only by commit(); dropping them un-reserves them"]
pub struct ByteWriteBatch<'a> {
    producer: &'a mut ByteProducer,
    count: usize,
    msg_len: usize,
}

impl ByteWriteBatch<'_> {
    /// Number of slots reserved.
    #[inline]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Always `false`: a batch has at least one slot.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bytes of the `i`-th message, in place. Panics if `i >= len()`.
    #[inline]
    pub fn slot(&mut self, i: usize) -> &mut [u8] {
        assert!(i < self.count, "slot {i} outside a batch of {}", self.count);
        let p = self
            .producer
            .cursor
            .view
            .payload(self.producer.cursor.tail.wrapping_add(i as u64));
        // SAFETY: reserved and exclusively ours until commit; len <= max fits the slot.
        unsafe { std::slice::from_raw_parts_mut(p.add(LEN_PREFIX), self.msg_len) }
    }

    /// Publishes every message of the batch.
    #[inline]
    pub fn commit(self) {
        let (count, len) = (self.count, self.msg_len);
        let cursor = &mut self.producer.cursor;
        for i in 0..count as u64 {
            // SAFETY: the batch reserved these slots and none is committed yet.
            unsafe { write_len(&cursor.view, cursor.tail.wrapping_add(i), len) };
        }
        cursor.commit(count as u64);
    }
}

/// The receiving side of a [`ByteRing`].
pub struct ByteConsumer {
    cursor: ConsumerCursor,
    shared: Arc<Shared>,
    spin: Duration,
    probe: Probe,
}

// SAFETY: see `Producer`.
unsafe impl Send for ByteConsumer {}

impl ByteConsumer {
    #[inline]
    fn slot_at_head(&mut self) -> ByteReadSlot<'_> {
        // SAFETY: callers saw the slot at head committed; it is not released.
        let len = unsafe { read_len(&self.cursor.view, self.cursor.head) };
        ByteReadSlot {
            consumer: self,
            len,
        }
    }

    /// Hands out the next committed message in place, until [`ByteReadSlot::release`].
    ///
    /// # Errors
    /// [`TryRecvError::Empty`], or [`TryRecvError::Disconnected`] once the producer has
    /// gone and everything it committed was received.
    #[inline]
    pub fn peek(&mut self) -> Result<ByteReadSlot<'_>, TryRecvError> {
        if !self.cursor.view.is_committed(self.cursor.head) {
            return Err(self.shared.empty_error(&self.cursor, &mut self.probe));
        }
        Ok(self.slot_at_head())
    }

    /// Hands out the next message in place, waiting while the ring is empty.
    ///
    /// # Errors
    /// [`RecvError`] once the producer has gone and everything was received.
    pub fn peek_wait(&mut self) -> Result<ByteReadSlot<'_>, RecvError> {
        self.shared
            .await_data(&self.cursor, self.spin, None, &mut self.probe)
            .map_err(|_| RecvError)?;
        Ok(self.slot_at_head())
    }

    /// Hands out the next message in place, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Disconnected`].
    pub fn peek_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<ByteReadSlot<'_>, RecvTimeoutError> {
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
    /// As [`peek`](ByteConsumer::peek).
    #[inline]
    pub fn peek_many(&mut self, max: usize) -> Result<ByteReadBatch<'_>, TryRecvError> {
        let n = self.cursor.available(max as u64);
        if n == 0 {
            return Err(self.shared.empty_error(&self.cursor, &mut self.probe));
        }
        Ok(ByteReadBatch {
            consumer: self,
            count: n as usize,
        })
    }

    /// Copies the next message into `buf` (replacing its contents).
    ///
    /// # Errors
    /// As [`peek`](ByteConsumer::peek).
    #[inline]
    pub fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> Result<(), TryRecvError> {
        let msg = self.peek()?;
        copy_out(msg, buf);
        Ok(())
    }

    /// Receives into `buf`, waiting while empty.
    ///
    /// # Errors
    /// As [`peek_wait`](ByteConsumer::peek_wait).
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<(), RecvError> {
        let msg = self.peek_wait()?;
        copy_out(msg, buf);
        Ok(())
    }

    /// Receives into `buf`, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`peek_timeout`](ByteConsumer::peek_timeout).
    pub fn recv_timeout_into(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<(), RecvTimeoutError> {
        let msg = self.peek_timeout(timeout)?;
        copy_out(msg, buf);
        Ok(())
    }

    /// Whether the producer has gone; see [`Consumer::is_disconnected`](crate::Consumer::is_disconnected).
    pub fn is_disconnected(&self) -> bool {
        self.shared.role_gone(Role::Producer)
    }

    /// Where the producer stands.
    pub fn producer_state(&self) -> PeerState {
        self.shared.peer_state(Role::Producer)
    }

    /// Waits until a live producer holds the role, at most `timeout`.
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
    /// [`Producer::set_spin`](crate::Producer::set_spin).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }
}

/// Copies a peeked message into `buf` and releases it.
fn copy_out(msg: ByteReadSlot<'_>, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&msg);
    msg.release();
}

impl Drop for ByteConsumer {
    fn drop(&mut self) {
        self.shared.leave_consumer();
    }
}

/// A committed byte message, read in place.
#[must_use = "peeked messages are freed only by release(); dropping them leaves them in the ring"]
pub struct ByteReadSlot<'a> {
    consumer: &'a mut ByteConsumer,
    len: usize,
}

impl ByteReadSlot<'_> {
    /// Frees the slot for the producer.
    #[inline]
    pub fn release(self) {
        self.consumer.cursor.release(1);
    }
}

impl std::ops::Deref for ByteReadSlot<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        let p = self.consumer.cursor.view.payload(self.consumer.cursor.head);
        // SAFETY: committed and unreleased; len was clamped to the slot.
        unsafe { std::slice::from_raw_parts(p.add(LEN_PREFIX), self.len) }
    }
}

/// Consecutive committed byte messages, read in place.
#[must_use = "peeked messages are freed only by release(); dropping them leaves them in the ring"]
pub struct ByteReadBatch<'a> {
    consumer: &'a mut ByteConsumer,
    count: usize,
}

impl ByteReadBatch<'_> {
    /// Number of messages.
    #[inline]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Always `false`.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `i`-th message. Panics if `i >= len()`.
    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        assert!(
            i < self.count,
            "message {i} outside a batch of {}",
            self.count
        );
        let view = &self.consumer.cursor.view;
        let pos = self.consumer.cursor.head.wrapping_add(i as u64);
        // SAFETY: committed (seen by `available`) and not released.
        let len = unsafe { read_len(view, pos) };
        // SAFETY: len is clamped to the slot, which stays unwritten until release.
        unsafe { std::slice::from_raw_parts(view.payload(pos).add(LEN_PREFIX), len) }
    }

    /// Frees every message of the batch.
    #[inline]
    pub fn release(self) {
        let n = self.count as u64;
        self.consumer.cursor.release(n);
    }
}

impl fmt::Debug for ByteRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteRing")
            .field("name", &self.name())
            .field("capacity", &self.capacity())
            .field("max_message", &self.max_message())
            .finish()
    }
}

impl fmt::Debug for ByteProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteProducer")
            .field("ring", &self.shared.seg.name())
            .field("tail", &self.cursor.tail)
            .field("spin", &self.spin)
            .finish()
    }
}

impl fmt::Debug for ByteConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteConsumer")
            .field("ring", &self.shared.seg.name())
            .field("head", &self.cursor.head)
            .field("spin", &self.spin)
            .finish()
    }
}

impl fmt::Debug for ByteWriteSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteWriteSlot")
            .field("position", &self.producer.cursor.tail)
            .field("len", &self.len)
            .finish()
    }
}

impl fmt::Debug for ByteWriteBatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteWriteBatch")
            .field("first", &self.producer.cursor.tail)
            .field("count", &self.count)
            .field("msg_len", &self.msg_len)
            .finish()
    }
}

impl fmt::Debug for ByteReadSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteReadSlot")
            .field("position", &self.consumer.cursor.head)
            .field("len", &self.len)
            .finish()
    }
}

impl fmt::Debug for ByteReadBatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteReadBatch")
            .field("first", &self.consumer.cursor.head)
            .field("count", &self.count)
            .finish()
    }
}
