//! MPMC rings of variable-length byte messages, up to a size chosen at create time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::shared::{MpmcShared, Side};
use crate::error::{Error, Result};
use crate::objects::mpmc::{FLAVOR_BYTES, Geometry, MpmcView};
use crate::ring::{
    PeerState, RecvError, RecvTimeoutError, ReserveError, ReserveTimeoutError, TryRecvError,
};
use crate::segment::{Fingerprint, Options, SegmentInfo, SweepOutcome};
use crate::wait::{DEFAULT_SPIN, Probe, deadline_after};

/// Payload header of a byte slot: the message length, padded to 8.
const LEN_PREFIX: usize = 8;

/// The length of the message at `pos`, clamped to the slot (P6: a hostile length gives
/// wrong data, never an out-of-bounds read).
///
/// # Safety
/// `pos` must be claimed for reading by the caller.
unsafe fn read_len(view: &MpmcView, pos: u64) -> usize {
    // SAFETY: claimed (Acquire), so the writer's prefix is visible and stable.
    let len = unsafe { (view.payload(pos) as *const u32).read() } as usize;
    len.min(view.geo.payload_size - LEN_PREFIX)
}

fn byte_geometry(capacity: usize, max_message: usize, opts: &Options) -> Result<Geometry> {
    if max_message == 0 || max_message > u32::MAX as usize - LEN_PREFIX {
        return Err(Error::InvalidArgument(format!(
            "max_message {max_message} outside 1..=4 GiB"
        )));
    }
    Geometry::new(capacity, LEN_PREFIX + max_message, 8, FLAVOR_BYTES, opts.holders).ok_or_else(
        || {
            Error::InvalidArgument(format!(
                "capacity {capacity} × {max_message}-byte messages: capacity must be 1..=2^30 and the ring fit in memory"
            ))
        },
    )
}

/// A named MPMC ring of byte messages of up to `max_message` bytes each; see
/// [`MpmcRing`](crate::MpmcRing) for what it guarantees.
///
/// ```
/// # let name = format!("doc-mpmc-bytes-{}", std::process::id());
/// let ring = tally::MpmcByteRing::create(&name, 64, 256)?;
/// let mut tx = ring.producer()?;
/// let mut rx = ring.consumer()?;
/// tx.send(b"hello")?;
/// let msg = rx.peek_wait()?;
/// assert_eq!(&*msg, b"hello");
/// msg.release();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MpmcByteRing {
    shared: Arc<MpmcShared>,
}

impl MpmcByteRing {
    /// Creates a ring of at least `capacity` slots of `max_message` bytes.
    ///
    /// # Errors
    /// As [`Ring::create`](crate::Ring::create).
    pub fn create(name: &str, capacity: usize, max_message: usize) -> Result<Self> {
        Self::create_with(name, capacity, max_message, &Options::default())
    }

    /// Creates with explicit [`Options`].
    ///
    /// # Errors
    /// As [`Ring::create`](crate::Ring::create).
    pub fn create_with(
        name: &str,
        capacity: usize,
        max_message: usize,
        opts: &Options,
    ) -> Result<Self> {
        let geo = byte_geometry(capacity, max_message, opts)?;
        Ok(MpmcByteRing {
            shared: MpmcShared::create(name, Fingerprint::bytes(), geo, opts)?,
        })
    }

    /// Opens the live ring `name`, whatever its sizes.
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
        let geo = byte_geometry(1, 1, opts)?;
        Ok(MpmcByteRing {
            shared: MpmcShared::open(name, Fingerprint::bytes(), geo, opts)?,
        })
    }

    /// Opens `name` or creates it. Returns whether it created.
    ///
    /// # Errors
    /// As [`Ring::open_or_create`](crate::Ring::open_or_create).
    pub fn open_or_create(
        name: &str,
        capacity: usize,
        max_message: usize,
        opts: &Options,
    ) -> Result<(Self, bool)> {
        let geo = byte_geometry(capacity, max_message, opts)?;
        let (shared, created) = MpmcShared::open_or_create(name, Fingerprint::bytes(), geo, opts)?;
        Ok((MpmcByteRing { shared }, created))
    }

    /// A new producer handle.
    ///
    /// # Errors
    /// [`Error::Inherited`] in a forked child.
    pub fn producer(&self) -> Result<MpmcByteProducer> {
        self.shared.join(Side::Producer)?;
        Ok(MpmcByteProducer {
            shared: self.shared.clone(),
            spin: DEFAULT_SPIN,
            probe: Probe::default(),
            pending: None,
        })
    }

    /// A new consumer handle.
    ///
    /// # Errors
    /// [`Error::Inherited`] in a forked child.
    pub fn consumer(&self) -> Result<MpmcByteConsumer> {
        self.shared.join(Side::Consumer)?;
        Ok(MpmcByteConsumer {
            shared: self.shared.clone(),
            spin: DEFAULT_SPIN,
            probe: Probe::default(),
            pending: None,
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

    /// Describes the segment and the ring.
    pub fn info(&self) -> SegmentInfo {
        self.shared.seg.info()
    }

    /// Reclaims dead holders now.
    ///
    /// # Errors
    /// As [`Ring::sweep`](crate::Ring::sweep).
    pub fn sweep(&self) -> Result<SweepOutcome> {
        self.shared.seg.sweep()
    }
}

/// A sending handle of an [`MpmcByteRing`].
pub struct MpmcByteProducer {
    shared: Arc<MpmcShared>,
    spin: Duration,
    probe: Probe,
    pending: Option<u64>,
}

impl MpmcByteProducer {
    fn max(&self) -> usize {
        self.shared.view.geo.payload_size - LEN_PREFIX
    }

    fn check_len(&self, len: usize) -> std::result::Result<(), ReserveError> {
        if len > self.max() {
            return Err(ReserveError::TooLong {
                len,
                max: self.max(),
            });
        }
        Ok(())
    }

    fn slot(&mut self, pos: u64, len: usize) -> MpmcByteWriteSlot<'_> {
        self.pending = Some(pos);
        MpmcByteWriteSlot {
            producer: self,
            pos,
            len,
        }
    }

    /// Reserves a slot for a message of exactly `len` bytes, if one is free.
    ///
    /// # Errors
    /// [`ReserveError::TooLong`], [`ReserveError::Full`], or
    /// [`ReserveError::Disconnected`] if the ring is full and every consumer has gone.
    pub fn reserve(
        &mut self,
        len: usize,
    ) -> std::result::Result<MpmcByteWriteSlot<'_>, ReserveError> {
        self.check_len(len)?;
        let pos = match self.pending {
            Some(pos) => pos,
            None => self.shared.claim_write(&mut self.probe, false)?,
        };
        Ok(self.slot(pos, len))
    }

    /// Reserves a slot for `len` bytes, waiting while the ring is full.
    ///
    /// # Errors
    /// [`ReserveTimeoutError::TooLong`] or [`ReserveTimeoutError::Disconnected`].
    pub fn reserve_wait(
        &mut self,
        len: usize,
    ) -> std::result::Result<MpmcByteWriteSlot<'_>, ReserveTimeoutError> {
        self.check_len(len)?;
        let pos = match self.pending {
            Some(pos) => pos,
            None => self.shared.await_write(self.spin, None, &mut self.probe)?,
        };
        Ok(self.slot(pos, len))
    }

    /// Reserves a slot for `len` bytes, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`reserve_wait`](MpmcByteProducer::reserve_wait), or
    /// [`ReserveTimeoutError::Timeout`].
    pub fn reserve_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> std::result::Result<MpmcByteWriteSlot<'_>, ReserveTimeoutError> {
        self.check_len(len)?;
        let pos = match self.pending {
            Some(pos) => pos,
            None => self
                .shared
                .await_write(self.spin, deadline_after(timeout), &mut self.probe)?,
        };
        Ok(self.slot(pos, len))
    }

    /// Copies `msg` into the ring if a slot is free.
    ///
    /// # Errors
    /// As [`reserve`](MpmcByteProducer::reserve).
    pub fn try_send(&mut self, msg: &[u8]) -> std::result::Result<(), ReserveError> {
        let mut slot = self.reserve(msg.len())?;
        slot.copy_from_slice(msg);
        slot.commit();
        Ok(())
    }

    /// Copies `msg` in, waiting while the ring is full.
    ///
    /// # Errors
    /// As [`reserve_wait`](MpmcByteProducer::reserve_wait).
    pub fn send(&mut self, msg: &[u8]) -> std::result::Result<(), ReserveTimeoutError> {
        let mut slot = self.reserve_wait(msg.len())?;
        slot.copy_from_slice(msg);
        slot.commit();
        Ok(())
    }

    /// Copies `msg` in, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`reserve_timeout`](MpmcByteProducer::reserve_timeout).
    pub fn send_timeout(
        &mut self,
        msg: &[u8],
        timeout: Duration,
    ) -> std::result::Result<(), ReserveTimeoutError> {
        let mut slot = self.reserve_timeout(msg.len(), timeout)?;
        slot.copy_from_slice(msg);
        slot.commit();
        Ok(())
    }

    /// Whether every consumer has gone.
    pub fn is_disconnected(&self) -> bool {
        self.shared.peers(Side::Consumer).is_gone()
    }

    /// Where the consumers stand.
    pub fn consumer_state(&self) -> PeerState {
        self.shared.peers(Side::Consumer)
    }

    /// Waits until a live consumer exists, at most `timeout`.
    pub fn wait_for_consumer(&self, timeout: Duration) -> bool {
        self.shared
            .wait_for_peers(Side::Consumer, deadline_after(timeout))
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

impl Drop for MpmcByteProducer {
    fn drop(&mut self) {
        if let Some(pos) = self.pending.take()
            && self.shared.seg.check_owner().is_ok()
        {
            self.shared.give_up_write(pos);
        }
        self.shared.leave(Side::Producer);
    }
}

/// A reserved byte slot, written in place; [`commit`](MpmcByteWriteSlot::commit)
/// publishes it.
#[must_use = "reserved slots are published only by commit()"]
pub struct MpmcByteWriteSlot<'a> {
    producer: &'a mut MpmcByteProducer,
    pos: u64,
    len: usize,
}

impl MpmcByteWriteSlot<'_> {
    /// Publishes the message.
    pub fn commit(self) {
        let view = &self.producer.shared.view;
        // SAFETY: the claimed slot is ours alone until committed; the prefix is the
        // payload's first, 8-aligned bytes.
        unsafe { (view.payload(self.pos) as *mut u32).write(self.len as u32) };
        self.producer.pending = None;
        self.producer.shared.commit(self.pos);
    }
}

impl std::ops::Deref for MpmcByteWriteSlot<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let view = &self.producer.shared.view;
        // SAFETY: claimed and ours alone; len <= max_message (checked at reserve).
        unsafe { std::slice::from_raw_parts(view.payload(self.pos).add(LEN_PREFIX), self.len) }
    }
}

impl std::ops::DerefMut for MpmcByteWriteSlot<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let view = &self.producer.shared.view;
        // SAFETY: as in `deref`.
        unsafe { std::slice::from_raw_parts_mut(view.payload(self.pos).add(LEN_PREFIX), self.len) }
    }
}

/// A receiving handle of an [`MpmcByteRing`].
pub struct MpmcByteConsumer {
    shared: Arc<MpmcShared>,
    spin: Duration,
    probe: Probe,
    pending: Option<u64>,
}

impl MpmcByteConsumer {
    fn slot(&mut self, pos: u64) -> MpmcByteReadSlot<'_> {
        self.pending = Some(pos);
        // SAFETY: `pos` is claimed for reading by this handle.
        let len = unsafe { read_len(&self.shared.view, pos) };
        MpmcByteReadSlot {
            consumer: self,
            pos,
            len,
        }
    }

    /// Hands out the next committed message in place.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`], or [`TryRecvError::Disconnected`] once every producer has
    /// gone and everything committed was received.
    pub fn peek(&mut self) -> std::result::Result<MpmcByteReadSlot<'_>, TryRecvError> {
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
    pub fn peek_wait(&mut self) -> std::result::Result<MpmcByteReadSlot<'_>, RecvError> {
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
    ) -> std::result::Result<MpmcByteReadSlot<'_>, RecvTimeoutError> {
        let pos = match self.pending {
            Some(pos) => pos,
            None => self
                .shared
                .await_read(self.spin, deadline_after(timeout), &mut self.probe)?,
        };
        Ok(self.slot(pos))
    }

    /// Copies the next message into `buf` (replacing its contents).
    ///
    /// # Errors
    /// As [`peek`](MpmcByteConsumer::peek).
    pub fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> std::result::Result<(), TryRecvError> {
        self.peek()?.copy_into(buf);
        Ok(())
    }

    /// Receives into `buf`, waiting while empty.
    ///
    /// # Errors
    /// As [`peek_wait`](MpmcByteConsumer::peek_wait).
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> std::result::Result<(), RecvError> {
        self.peek_wait()?.copy_into(buf);
        Ok(())
    }

    /// Receives into `buf`, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`peek_timeout`](MpmcByteConsumer::peek_timeout).
    pub fn recv_timeout_into(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> std::result::Result<(), RecvTimeoutError> {
        self.peek_timeout(timeout)?.copy_into(buf);
        Ok(())
    }

    /// Committed messages waiting (a snapshot).
    pub fn len(&self) -> usize {
        self.shared.view.committed() as usize
    }

    /// Whether no committed message is waiting (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every producer has gone.
    pub fn is_disconnected(&self) -> bool {
        self.shared.peers(Side::Producer).is_gone()
    }

    /// Where the producers stand.
    pub fn producer_state(&self) -> PeerState {
        self.shared.peers(Side::Producer)
    }

    /// Waits until a live producer exists, at most `timeout`.
    pub fn wait_for_producer(&self, timeout: Duration) -> bool {
        self.shared
            .wait_for_peers(Side::Producer, deadline_after(timeout))
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

impl Drop for MpmcByteConsumer {
    fn drop(&mut self) {
        if let Some(pos) = self.pending.take()
            && self.shared.seg.check_owner().is_ok()
        {
            self.shared.give_back_read(pos);
        }
        self.shared.leave(Side::Consumer);
    }
}

/// A byte message read in place; [`release`](MpmcByteReadSlot::release) frees it.
#[must_use = "peeked messages are freed only by release()"]
pub struct MpmcByteReadSlot<'a> {
    consumer: &'a mut MpmcByteConsumer,
    pos: u64,
    len: usize,
}

impl MpmcByteReadSlot<'_> {
    /// Frees the slot for the producers.
    pub fn release(self) {
        self.consumer.pending = None;
        self.consumer.shared.release(self.pos);
    }

    fn copy_into(self, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(&self);
        self.release();
    }
}

impl std::ops::Deref for MpmcByteReadSlot<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let view = &self.consumer.shared.view;
        // SAFETY: claimed for reading, not released; len clamped to the slot.
        unsafe { std::slice::from_raw_parts(view.payload(self.pos).add(LEN_PREFIX), self.len) }
    }
}

// SAFETY: the handles hold no pointer but through `shared`, whose mapping outlives
// them; slot claims make a claimed payload the handle's alone.
unsafe impl Send for MpmcByteProducer {}
// SAFETY: as above.
unsafe impl Send for MpmcByteConsumer {}

impl fmt::Debug for MpmcByteRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpmcByteRing")
            .field("name", &self.name())
            .field("capacity", &self.capacity())
            .field("max_message", &self.max_message())
            .finish()
    }
}

impl fmt::Debug for MpmcByteProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpmcByteProducer")
            .field("ring", &self.shared.seg.name())
            .field("pending", &self.pending)
            .finish()
    }
}

impl fmt::Debug for MpmcByteConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpmcByteConsumer")
            .field("ring", &self.shared.seg.name())
            .field("pending", &self.pending)
            .finish()
    }
}

impl fmt::Debug for MpmcByteWriteSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpmcByteWriteSlot")
            .field("position", &self.pos)
            .field("len", &self.len)
            .finish()
    }
}

impl fmt::Debug for MpmcByteReadSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpmcByteReadSlot")
            .field("position", &self.pos)
            .field("len", &self.len)
            .finish()
    }
}
