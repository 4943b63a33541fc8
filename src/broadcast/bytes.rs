//! The byte flavor of the broadcast ring: variable-length messages of up to
//! `max_message` bytes, each slot's payload `[len: u32][pad: u32][bytes]`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::{BroadcastRecvError, BroadcastRecvTimeoutError, BroadcastTryRecvError, Lagged};
use super::shared::{BcastShared, Policy, Start};
use super::{join_at, untimed};
use crate::error::{Error, Result};
use crate::objects::broadcast::{FLAVOR_BYTES, Geometry, PubCursor, SubCursor};
use crate::ring::{PeerState, ReserveError, ReserveTimeoutError};
use crate::segment::{Fingerprint, Options, SegmentInfo, SweepOutcome};
use crate::wait::{DEFAULT_SPIN, Probe, deadline_after};

/// Bytes before a message: its length (u32) and padding.
const LEN_PREFIX: usize = 8;

/// A named broadcast ring of byte messages of up to `max_message` bytes each. See
/// [`Broadcast`](crate::Broadcast) for the policies and guarantees.
///
/// ```
/// use tally::{ByteBroadcast, Policy, Start};
/// # let name = format!("doc-bytebcast-{}", std::process::id());
/// let feed = ByteBroadcast::create(&name, 64, 256, Policy::Lossy)?;
/// let mut tx = feed.publisher()?;
/// let mut rx = feed.subscribe(Start::Newest)?;
/// tx.try_send(b"tick").unwrap();
/// let msg = rx.peek().unwrap();
/// assert_eq!(&*msg, b"tick");
/// msg.release().unwrap(); // Ok: not overwritten while read
/// # Ok::<(), tally::Error>(())
/// ```
pub struct ByteBroadcast {
    shared: Arc<BcastShared>,
}

fn byte_geometry(
    capacity: usize,
    max_message: usize,
    policy: Policy,
    subs: u32,
) -> Result<Geometry> {
    if max_message == 0 || max_message > u32::MAX as usize - LEN_PREFIX {
        return Err(Error::InvalidArgument(format!(
            "max_message {max_message} outside 1..=4 GiB"
        )));
    }
    Geometry::new(
        capacity,
        LEN_PREFIX + max_message,
        8,
        FLAVOR_BYTES,
        policy.tag(),
        subs,
    )
    .ok_or_else(|| {
        Error::InvalidArgument(format!(
            "capacity {capacity} × {max_message}-byte messages: capacity must be 1..=2^30 and the ring fit in memory"
        ))
    })
}

impl ByteBroadcast {
    /// Creates a ring of at least `capacity` slots of `max_message` bytes.
    ///
    /// # Errors
    /// [`Error::InvalidName`] or [`Error::InvalidArgument`] for a bad name or size;
    /// [`Error::AlreadyExists`] if a live object has the name; [`Error::NoSpace`] if
    /// `/dev/shm` cannot hold it; [`Error::PermissionDenied`] or [`Error::Io`] from the
    /// system.
    pub fn create(name: &str, capacity: usize, max_message: usize, policy: Policy) -> Result<Self> {
        Self::create_with(name, capacity, max_message, policy, &Options::default())
    }

    /// Creates a ring with explicit [`Options`].
    ///
    /// # Errors
    /// As [`create`](ByteBroadcast::create).
    pub fn create_with(
        name: &str,
        capacity: usize,
        max_message: usize,
        policy: Policy,
        opts: &Options,
    ) -> Result<Self> {
        let geo = byte_geometry(capacity, max_message, policy, opts.holders)?;
        Ok(ByteBroadcast {
            shared: BcastShared::create(name, Fingerprint::bytes(), geo, opts)?,
        })
    }

    /// Opens the live byte broadcast ring `name` (any capacity, size and policy).
    ///
    /// # Errors
    /// [`Error::NotFound`] if no live object has the name; [`Error::KindMismatch`] if
    /// it holds another kind; [`Error::VersionMismatch`] or [`Error::Corrupted`] for a
    /// segment this build cannot read; [`Error::TableFull`] if its holder table is full;
    /// [`Error::PermissionDenied`], [`Error::Timeout`] or [`Error::Io`] from the system.
    pub fn open(name: &str) -> Result<Self> {
        Self::open_with(name, &Options::default())
    }

    /// Opens with explicit [`Options`].
    ///
    /// # Errors
    /// As [`open`](ByteBroadcast::open).
    pub fn open_with(name: &str, opts: &Options) -> Result<Self> {
        let geo = byte_geometry(1, 1, Policy::Lossless, opts.holders)?;
        Ok(ByteBroadcast {
            shared: BcastShared::open(name, Fingerprint::bytes(), geo, opts)?,
        })
    }

    /// Opens `name`, or creates it. Returns whether it created. An existing ring must
    /// have this policy, and this capacity and message size unless
    /// [`Options::any_capacity`](crate::Options::any_capacity).
    ///
    /// # Errors
    /// As `create` and `open`; [`Error::LayoutMismatch`] for another policy or shape.
    pub fn open_or_create(
        name: &str,
        capacity: usize,
        max_message: usize,
        policy: Policy,
        opts: &Options,
    ) -> Result<(Self, bool)> {
        let geo = byte_geometry(capacity, max_message, policy, opts.holders)?;
        let (shared, created) = BcastShared::open_or_create(name, Fingerprint::bytes(), geo, opts)?;
        Ok((ByteBroadcast { shared }, created))
    }

    /// Claims the publisher role (see [`Broadcast::publisher`](crate::Broadcast::publisher)).
    ///
    /// # Errors
    /// [`Error::RoleTaken`] while a live handle holds the role; [`Error::Inherited`] in
    /// a forked child; [`Error::Timeout`] if reclaiming a dead holder's role waits too
    /// long for the admin lock.
    pub fn publisher(&self) -> Result<BytePublisher> {
        let cursor = self.shared.claim_publisher()?;
        Ok(BytePublisher {
            cursor,
            shared: self.shared.clone(),
            spin: DEFAULT_SPIN,
            probe: Probe::default(),
        })
    }

    /// A new subscriber starting at `start`.
    ///
    /// # Errors
    /// [`Error::TableFull`] if every cursor line is taken by a live subscriber;
    /// [`Error::Inherited`] in a forked child; [`Error::Timeout`] if reclaiming dead
    /// subscribers' lines waits for the admin lock too long.
    pub fn subscribe(&self, start: Start) -> Result<ByteSubscriber> {
        let cursor = self.shared.subscribe(join_at(start))?;
        Ok(ByteSubscriber {
            cursor,
            shared: self.shared.clone(),
            spin: DEFAULT_SPIN,
            probe: Probe::default(),
        })
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.shared.view.geo.capacity as usize
    }

    /// Largest message, in bytes.
    pub fn max_message(&self) -> usize {
        self.shared.view.geo.payload_size - LEN_PREFIX
    }

    /// The ring's policy.
    pub fn policy(&self) -> Policy {
        self.shared.policy()
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

/// The publishing side of a [`ByteBroadcast`].
pub struct BytePublisher {
    cursor: PubCursor,
    shared: Arc<BcastShared>,
    spin: Duration,
    probe: Probe,
}

// SAFETY: as for `Publisher`.
unsafe impl Send for BytePublisher {}

impl BytePublisher {
    fn max(&self) -> usize {
        self.cursor.view.geo.payload_size - LEN_PREFIX
    }

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
    fn slot_at_tail(&mut self, len: usize) -> ByteBroadcastWriteSlot<'_> {
        self.cursor.begin(1);
        ByteBroadcastWriteSlot {
            publisher: self,
            len,
        }
    }

    /// Reserves a slot for a message of exactly `len` bytes, written in place.
    ///
    /// # Errors
    /// [`ReserveError::TooLong`] if `len` exceeds the ring's message size;
    /// [`ReserveError::Full`] (lossless only) while the slowest live subscriber is a
    /// ring behind.
    #[inline]
    pub fn reserve(&mut self, len: usize) -> Result<ByteBroadcastWriteSlot<'_>, ReserveError> {
        self.check_len(len)?;
        if self.cursor.room(1) == 0 {
            if self.probe.due() {
                self.shared.drop_dead_laggards(self.cursor.tail, 1);
            }
            return Err(ReserveError::Full);
        }
        Ok(self.slot_at_tail(len))
    }

    /// Reserves a slot for `len` bytes, waiting while the slowest live subscriber is a
    /// ring behind.
    ///
    /// # Errors
    /// [`ReserveTimeoutError::TooLong`] if `len` exceeds the ring's message size.
    pub fn reserve_wait(
        &mut self,
        len: usize,
    ) -> Result<ByteBroadcastWriteSlot<'_>, ReserveTimeoutError> {
        self.reserve_timeout(len, Duration::MAX)
    }

    /// Reserves a slot for `len` bytes, waiting at most `timeout` for room
    /// (`Duration::MAX`: for ever).
    ///
    /// # Errors
    /// [`ReserveTimeoutError::TooLong`]; [`ReserveTimeoutError::Timeout`].
    pub fn reserve_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<ByteBroadcastWriteSlot<'_>, ReserveTimeoutError> {
        self.check_len(len)?;
        self.shared
            .await_room(&mut self.cursor, 1, self.spin, deadline_after(timeout))
            .map_err(|()| ReserveTimeoutError::Timeout)?;
        Ok(self.slot_at_tail(len))
    }

    /// Copies `msg` into the ring if a slot is free (lossy: always).
    ///
    /// # Errors
    /// As [`reserve`](BytePublisher::reserve).
    pub fn try_send(&mut self, msg: &[u8]) -> Result<(), ReserveError> {
        let mut slot = self.reserve(msg.len())?;
        slot.copy_from_slice(msg);
        slot.commit();
        Ok(())
    }

    /// Sends `msg`, waiting while the slowest live subscriber is a ring behind.
    ///
    /// # Errors
    /// [`ReserveTimeoutError::TooLong`] if `msg` exceeds the ring's message size.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), ReserveTimeoutError> {
        self.send_timeout(msg, Duration::MAX)
    }

    /// Sends `msg`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`ReserveTimeoutError::TooLong`]; [`ReserveTimeoutError::Timeout`].
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

    /// The position the next message will have.
    pub fn position(&self) -> u64 {
        self.cursor.tail
    }

    /// Subscribers attached now.
    pub fn subscribers(&self) -> usize {
        self.shared.subscriber_count()
    }

    /// Waits until at least `n` subscribers are attached, at most `timeout`.
    pub fn wait_for_subscribers(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_roles(deadline_after(timeout), || {
            self.shared.subscriber_count() >= n
        })
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

impl Drop for BytePublisher {
    fn drop(&mut self) {
        self.shared.leave_publisher();
    }
}

/// A reserved byte slot of a fixed length, written in place.
#[must_use = "reserved slots are published only by commit(); dropping them un-reserves them"]
pub struct ByteBroadcastWriteSlot<'a> {
    publisher: &'a mut BytePublisher,
    len: usize,
}

impl ByteBroadcastWriteSlot<'_> {
    /// Publishes the message to every subscriber.
    #[inline]
    pub fn commit(self) {
        let p = self.publisher;
        let at = p.cursor.view.payload(p.cursor.tail) as *mut u32;
        // SAFETY: the reserved slot's payload starts with its 8-aligned length word.
        unsafe { at.write(self.len as u32) };
        p.shared.commit(&mut p.cursor, 1);
    }
}

impl std::ops::Deref for ByteBroadcastWriteSlot<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        let p = self
            .publisher
            .cursor
            .view
            .payload(self.publisher.cursor.tail);
        // SAFETY: reserved and ours; len <= max so the bytes lie inside the slot.
        unsafe { std::slice::from_raw_parts(p.add(LEN_PREFIX), self.len) }
    }
}

impl std::ops::DerefMut for ByteBroadcastWriteSlot<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        let p = self
            .publisher
            .cursor
            .view
            .payload(self.publisher.cursor.tail);
        // SAFETY: as in `deref`, and exclusively ours until commit.
        unsafe { std::slice::from_raw_parts_mut(p.add(LEN_PREFIX), self.len) }
    }
}

/// A receiving side of a [`ByteBroadcast`] (see [`Subscriber`](crate::Subscriber)).
pub struct ByteSubscriber {
    cursor: SubCursor,
    shared: Arc<BcastShared>,
    spin: Duration,
    probe: Probe,
}

// SAFETY: as for `Subscriber`.
unsafe impl Send for ByteSubscriber {}

impl ByteSubscriber {
    /// The stored length of the message at our position, clamped to the slot (a torn
    /// or hostile length is then caught by `finish` or merely reads wrong bytes).
    fn len_at_pos(&self) -> usize {
        self.len_in(self.cursor.view.payload(self.cursor.pos))
    }

    /// The stored length of the message whose slot payload starts at `p`, clamped.
    fn len_in(&self, p: *mut u8) -> usize {
        let at = p as *const u32;
        // SAFETY: the payload starts with a 4-aligned length word inside the slot.
        let len = unsafe { std::ptr::read_volatile(at) } as usize;
        len.min(self.cursor.view.geo.payload_size - LEN_PREFIX)
    }

    fn slot_at_pos(&mut self) -> ByteBroadcastReadSlot<'_> {
        let len = self.len_at_pos();
        ByteBroadcastReadSlot {
            subscriber: self,
            len,
        }
    }

    /// Hands out the next message in place.
    ///
    /// # Errors
    /// As [`Subscriber::peek`](crate::Subscriber::peek).
    pub fn peek(&mut self) -> Result<ByteBroadcastReadSlot<'_>, BroadcastTryRecvError> {
        self.shared.poll(&mut self.cursor, &mut self.probe)?;
        Ok(self.slot_at_pos())
    }

    /// Hands out the next message in place, waiting while there is none.
    ///
    /// # Errors
    /// As [`Subscriber::peek_wait`](crate::Subscriber::peek_wait).
    pub fn peek_wait(&mut self) -> Result<ByteBroadcastReadSlot<'_>, BroadcastRecvError> {
        self.shared
            .await_data(&mut self.cursor, self.spin, None, &mut self.probe)
            .map_err(untimed)?;
        Ok(self.slot_at_pos())
    }

    /// Hands out the next message in place, waiting at most `timeout`
    /// (`Duration::MAX`: for ever).
    ///
    /// # Errors
    /// As [`Subscriber::peek_timeout`](crate::Subscriber::peek_timeout).
    pub fn peek_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<ByteBroadcastReadSlot<'_>, BroadcastRecvTimeoutError> {
        self.shared.await_data(
            &mut self.cursor,
            self.spin,
            deadline_after(timeout),
            &mut self.probe,
        )?;
        Ok(self.slot_at_pos())
    }

    fn copy_into(&mut self, buf: &mut Vec<u8>) -> Result<(), Lagged> {
        let len = self.len_at_pos();
        let p = self.cursor.view.payload(self.cursor.pos);
        buf.clear();
        buf.reserve(len);
        // SAFETY: `len` is clamped to the slot; the bytes may be being overwritten on a
        // lossy ring, which `finish` detects before `buf` is reported good. u8 has no
        // invalid values; a plain copy of shared bytes (as every shm seqlock reader).
        unsafe {
            std::ptr::copy_nonoverlapping(p.add(LEN_PREFIX), buf.as_mut_ptr(), len);
            buf.set_len(len);
        }
        self.shared.finish(&mut self.cursor, 1)
    }

    /// Copies the next message into `buf` (replacing its contents), if one is
    /// committed and was not overwritten during the copy.
    ///
    /// # Errors
    /// As [`Subscriber::try_recv`](crate::Subscriber::try_recv).
    pub fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> Result<(), BroadcastTryRecvError> {
        self.shared.poll(&mut self.cursor, &mut self.probe)?;
        Ok(self.copy_into(buf)?)
    }

    /// Receives into `buf`, waiting while there is nothing new.
    ///
    /// # Errors
    /// As [`Subscriber::recv`](crate::Subscriber::recv).
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<(), BroadcastRecvError> {
        self.shared
            .await_data(&mut self.cursor, self.spin, None, &mut self.probe)
            .map_err(untimed)?;
        Ok(self.copy_into(buf)?)
    }

    /// Receives into `buf`, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Subscriber::recv_timeout`](crate::Subscriber::recv_timeout).
    pub fn recv_timeout_into(
        &mut self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<(), BroadcastRecvTimeoutError> {
        self.shared.await_data(
            &mut self.cursor,
            self.spin,
            deadline_after(timeout),
            &mut self.probe,
        )?;
        Ok(self.copy_into(buf)?)
    }

    /// The position of the next message this subscriber reads.
    pub fn position(&self) -> u64 {
        self.cursor.pos
    }

    /// Lossless rings: the committed message `i` places after the next one to read
    /// (`0`: the next one), in place and without moving past it; `None` if it is not
    /// committed (yet), `i` is not below the capacity, or the ring is lossy (the
    /// publisher may overwrite what is read ahead). With [`wait_at`](Self::wait_at)
    /// and [`release_n`](Self::release_n) this reads ahead of what it frees: a bridge
    /// holds the publisher back until the far side has the messages.
    pub fn peek_at(&self, i: u64) -> Option<&[u8]> {
        let p = self.shared.ahead(&self.cursor, i)?;
        let len = self.len_in(p);
        // SAFETY: committed, and not overwritten while this subscriber holds it back
        // (lossless, within a ring of its position); `len` is clamped to the slot.
        Some(unsafe { std::slice::from_raw_parts(p.add(LEN_PREFIX), len) })
    }

    /// Lossless rings: waits at most `timeout` (`Duration::MAX`: for ever) until the
    /// message `i` places after the next one is committed (see
    /// [`peek_at`](Self::peek_at)).
    ///
    /// # Errors
    /// [`BroadcastRecvTimeoutError::Timeout`] (at once on a lossy ring, or for `i` not
    /// below the capacity), or [`BroadcastRecvTimeoutError::Disconnected`] once the
    /// publisher has gone and it was never committed.
    pub fn wait_at(&mut self, i: u64, timeout: Duration) -> Result<(), BroadcastRecvTimeoutError> {
        self.shared.await_ahead(
            &self.cursor,
            i,
            self.spin,
            deadline_after(timeout),
            &mut self.probe,
        )
    }

    /// Lossless rings: moves past the next `n` messages, or as many of them as are
    /// committed; returns how many (0 on a lossy ring).
    pub fn release_n(&mut self, n: u64) -> u64 {
        self.shared.release_ahead(&mut self.cursor, n)
    }

    /// Whether the publisher has gone.
    pub fn is_disconnected(&self) -> bool {
        self.shared.publisher_gone()
    }

    /// Where the publisher stands.
    pub fn publisher_state(&self) -> PeerState {
        self.shared.publisher_state()
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

impl Drop for ByteSubscriber {
    fn drop(&mut self) {
        self.shared.leave_subscriber(&self.cursor);
    }
}

/// A byte message read in place; [`release`](ByteBroadcastReadSlot::release) says
/// whether the read was good.
#[must_use = "release() moves past the message and says whether the read was good"]
pub struct ByteBroadcastReadSlot<'a> {
    subscriber: &'a mut ByteSubscriber,
    len: usize,
}

impl ByteBroadcastReadSlot<'_> {
    /// The message's position in the ring.
    pub fn position(&self) -> u64 {
        self.subscriber.cursor.pos
    }

    /// Moves past the message; `Err(Lagged)` (lossy only) if it was overwritten while
    /// read.
    ///
    /// # Errors
    /// [`Lagged`] as above.
    pub fn release(self) -> Result<(), Lagged> {
        let s = self.subscriber;
        s.shared.finish(&mut s.cursor, 1)
    }
}

impl std::ops::Deref for ByteBroadcastReadSlot<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        let s = &self.subscriber;
        let p = s.cursor.view.payload(s.cursor.pos);
        // SAFETY: len is clamped to the slot; lossless: not overwritten before release;
        // lossy: overwrites are reported by `release`.
        unsafe { std::slice::from_raw_parts(p.add(LEN_PREFIX), self.len) }
    }
}

impl fmt::Debug for ByteBroadcast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteBroadcast")
            .field("name", &self.name())
            .field("capacity", &self.capacity())
            .field("max_message", &self.max_message())
            .field("policy", &self.policy())
            .finish()
    }
}

impl fmt::Debug for BytePublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BytePublisher")
            .field("ring", &self.shared.seg.name())
            .field("position", &self.cursor.tail)
            .finish()
    }
}

impl fmt::Debug for ByteSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteSubscriber")
            .field("ring", &self.shared.seg.name())
            .field("position", &self.cursor.pos)
            .finish()
    }
}

impl fmt::Debug for ByteBroadcastWriteSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteBroadcastWriteSlot")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ByteBroadcastReadSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteBroadcastReadSlot")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}
