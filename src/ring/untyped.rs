//! Typed SPSC rings whose payload type is known only at run time: a bridge or a
//! recorder opens a `Ring<T>` some other program created and moves its messages as
//! byte slices of exactly the payload's size, or creates one from a [`Schema`] it
//! received, with the fingerprint `Ring::<T>` would give it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::shared::{Role, Shared};
use super::{RecvTimeoutError, ReserveTimeoutError, TryRecvError};
use crate::error::{Error, Result};
use crate::message::Schema;
use crate::objects::ring::endpoint::{ConsumerCursor, ProducerCursor};
use crate::objects::ring::{FLAVOR_TYPED, Geometry};
use crate::segment::layout::OBJECT_ALIGN;
use crate::segment::{Fingerprint, Kind, Options, Segment, SegmentInfo};
use crate::wait::{DEFAULT_SPIN, Probe, deadline_after};

/// A typed SPSC ring ([`Ring<T>`](crate::Ring)) attached without knowing `T` at
/// compile time: its payload is described by the [`Schema`] stored in the segment,
/// and its handles move messages as byte slices of exactly
/// [`message_size`](UntypedRing::message_size) bytes.
///
/// ```
/// # let name = format!("doc-untyped-{}", std::process::id());
/// let ring = tally::Ring::<u64>::create(&name, 8)?;
/// let mut tx = ring.producer()?;
/// tx.try_send(7).unwrap();
///
/// let any = tally::UntypedRing::open(&name)?;
/// assert_eq!(any.schema().canonical(), "u64");
/// let mut rx = any.consumer()?;
/// let msg = rx.peek_timeout(std::time::Duration::from_secs(1))?;
/// assert_eq!(&*msg, &7u64.to_ne_bytes());
/// assert_eq!(msg.position(), 0);
/// msg.release();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct UntypedRing {
    shared: Arc<Shared>,
    schema: Schema,
    align: usize,
}

/// The slot shape of a ring of `size`-byte payloads aligned to `align`.
fn untyped_geometry(capacity: usize, size: usize, align: usize) -> Result<Geometry> {
    if !align.is_power_of_two() || align > OBJECT_ALIGN {
        return Err(Error::InvalidArgument(format!(
            "payload alignment {align}: tally lays out payloads aligned to a power of two up to {OBJECT_ALIGN}"
        )));
    }
    Geometry::new(capacity, size, align, FLAVOR_TYPED).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "capacity {capacity} of {size}-byte slots: capacity must be 1..=2^30 and the ring fit in memory"
        ))
    })
}

impl UntypedRing {
    /// Opens the live typed SPSC ring `name`, whatever its payload type.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no live object has the name; [`Error::KindMismatch`] if
    /// it is not a typed SPSC ring; [`Error::Corrupted`] if its stored schema is
    /// unreadable or disagrees with its slots; otherwise as
    /// [`Ring::open`](crate::Ring::open).
    pub fn open(name: &str) -> Result<Self> {
        Self::open_with(name, &Options::default())
    }

    /// Opens with explicit [`Options`].
    ///
    /// # Errors
    /// As [`open`](UntypedRing::open).
    pub fn open_with(name: &str, opts: &Options) -> Result<Self> {
        let seg = Segment::open_expecting(name, None, crate::objects::recover_any, opts)?;
        let info = seg.info();
        if info.kind != Kind::SpscRing {
            return Err(Error::KindMismatch {
                name: name.to_owned(),
                expected: Kind::SpscRing,
                found: info.kind,
            });
        }
        let (schema, align) = crate::message::stored_payload(&seg, |size, align| {
            untyped_geometry(1, size, align)
                .ok()
                .is_some_and(|g| Self::slots_match(&seg, &g))
        })?;
        let size = schema.size();
        let geo = untyped_geometry(1, size, align)?;
        let shared = Shared::attach_typed(seg, &geo)?;
        Ok(UntypedRing {
            shared,
            schema,
            align,
        })
    }

    /// Creates a typed ring of at least `capacity` slots of the payload `schema`
    /// describes, aligned to `schema.align()`: the same object `Ring::<T>::create`
    /// makes for a `T` with that schema, so `Ring::<T>::open` accepts it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a schema no `Message` type can have or a bad
    /// capacity; otherwise as [`Ring::create_with`](crate::Ring::create_with).
    pub fn create(name: &str, schema: &Schema, capacity: usize, opts: &Options) -> Result<Self> {
        let (fp, geo) = Self::layout(schema, capacity)?;
        let shared = Shared::create(name, fp, geo, opts)?;
        Ok(Self::wrap(shared, schema))
    }

    /// Opens `name`, which must hold `schema`'s payload (any capacity), or creates it
    /// with `capacity` slots. Returns whether it created.
    ///
    /// # Errors
    /// [`Error::LayoutMismatch`] if the existing ring holds another payload (the
    /// message names the first field that differs); [`Error::KindMismatch`] if it is
    /// not a typed ring; otherwise as [`create`](UntypedRing::create) and
    /// [`open`](UntypedRing::open).
    pub fn open_or_create(
        name: &str,
        schema: &Schema,
        capacity: usize,
        opts: &Options,
    ) -> Result<(Self, bool)> {
        let (fp, geo) = Self::layout(schema, capacity)?;
        let opts = opts.clone().any_capacity(true);
        let (shared, created) = Shared::open_or_create(name, fp, geo, &opts)?;
        Ok((Self::wrap(shared, schema), created))
    }

    fn layout(schema: &Schema, capacity: usize) -> Result<(Fingerprint, Geometry)> {
        let (size, align) = (schema.size(), schema.align());
        let geo = untyped_geometry(capacity, size, align)?;
        Ok((Fingerprint::of_schema(schema, size, align), geo))
    }

    fn wrap(shared: Arc<Shared>, schema: &Schema) -> Self {
        UntypedRing {
            shared,
            align: schema.align(),
            schema: schema.clone(),
        }
    }

    fn slots_match(seg: &Segment, geo: &Geometry) -> bool {
        let mem = seg.object();
        // SAFETY: the object area is mapped for `mem.len` bytes, 128-aligned.
        match unsafe { crate::objects::ring::read_geometry(mem.ptr, mem.len) } {
            Ok(found) => {
                found.flavor == geo.flavor
                    && found.stride == geo.stride
                    && found.payload_offset == geo.payload_offset
                    && found.payload_size == geo.payload_size
            }
            Err(_) => false,
        }
    }

    /// The payload's schema as the segment stores it; its
    /// [`canonical_hash`](Schema::canonical_hash) is the payload's identity.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Bytes of one message (`size_of` the payload type).
    pub fn message_size(&self) -> usize {
        self.shared.view.geo.payload_size
    }

    /// The payload's alignment.
    pub fn align(&self) -> usize {
        self.align
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

    /// Claims the producer role, as [`Ring::producer`](crate::Ring::producer).
    ///
    /// # Errors
    /// As [`Ring::producer`](crate::Ring::producer).
    pub fn producer(&self) -> Result<UntypedProducer> {
        self.shared.claim(Role::Producer)?;
        Ok(UntypedProducer {
            cursor: ProducerCursor::resume(self.shared.view),
            shared: self.shared.clone(),
            probe: Probe::default(),
        })
    }

    /// Claims the consumer role, as [`Ring::consumer`](crate::Ring::consumer). It
    /// resumes where the previous consumer released its last message.
    ///
    /// # Errors
    /// As [`Ring::consumer`](crate::Ring::consumer).
    pub fn consumer(&self) -> Result<UntypedConsumer> {
        self.shared.claim(Role::Consumer)?;
        Ok(UntypedConsumer {
            cursor: ConsumerCursor::resume(self.shared.view),
            shared: self.shared.clone(),
            probe: Probe::default(),
        })
    }
}

impl fmt::Debug for UntypedRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntypedRing")
            .field("name", &self.name())
            .field("schema", &self.schema.canonical())
            .field("message_size", &self.message_size())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// The sending side of an [`UntypedRing`]; dropping it releases the role.
pub struct UntypedProducer {
    cursor: ProducerCursor,
    shared: Arc<Shared>,
    probe: Probe,
}

// SAFETY: as for `Producer`: the cursor points into the mapping `shared` keeps alive,
// and the role claim makes this the only producer.
unsafe impl Send for UntypedProducer {}

impl UntypedProducer {
    /// Reserves the next slot, waiting at most `timeout` (`Duration::MAX`: for ever)
    /// while the ring is full. The slot is a byte slice of exactly the message size.
    ///
    /// # Errors
    /// [`ReserveTimeoutError::Timeout`], or [`ReserveTimeoutError::Disconnected`] if
    /// the ring is full and the consumer has gone.
    pub fn reserve_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<UntypedWriteSlot<'_>, ReserveTimeoutError> {
        let deadline = if timeout == Duration::MAX {
            None
        } else {
            deadline_after(timeout)
        };
        self.shared
            .await_space(&mut self.cursor, 1, DEFAULT_SPIN, deadline, &mut self.probe)?;
        Ok(UntypedWriteSlot { producer: self })
    }

    /// The ring position the next committed message will have (0 for the ring's
    /// first message, counting on across producers).
    pub fn position(&self) -> u64 {
        self.cursor.tail
    }

    /// Whether the consumer has gone.
    pub fn is_disconnected(&self) -> bool {
        self.shared.role_gone(Role::Consumer)
    }
}

impl Drop for UntypedProducer {
    fn drop(&mut self) {
        self.shared.leave_producer(&self.cursor);
    }
}

impl fmt::Debug for UntypedProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntypedProducer")
            .field("ring", &self.shared.seg.name())
            .field("tail", &self.cursor.tail)
            .finish()
    }
}

/// A reserved slot of an [`UntypedRing`], written in place through `DerefMut<[u8]>`.
#[must_use = "reserved slots are published only by commit(); dropping them un-reserves them"]
pub struct UntypedWriteSlot<'a> {
    producer: &'a mut UntypedProducer,
}

impl UntypedWriteSlot<'_> {
    /// Publishes the slot to the consumer.
    pub fn commit(self) {
        self.producer.cursor.commit(1);
    }
}

impl std::ops::Deref for UntypedWriteSlot<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let c = &self.producer.cursor;
        // SAFETY: the reserved slot's payload is ours alone until commit, mapped for
        // `payload_size` bytes (validated geometry); any byte value is valid.
        unsafe { std::slice::from_raw_parts(c.view.payload(c.tail), c.view.geo.payload_size) }
    }
}

impl std::ops::DerefMut for UntypedWriteSlot<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let c = &self.producer.cursor;
        // SAFETY: as in `deref`.
        unsafe { std::slice::from_raw_parts_mut(c.view.payload(c.tail), c.view.geo.payload_size) }
    }
}

impl fmt::Debug for UntypedWriteSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntypedWriteSlot")
            .field("position", &self.producer.cursor.tail)
            .finish_non_exhaustive()
    }
}

/// The receiving side of an [`UntypedRing`]; dropping it releases the role.
pub struct UntypedConsumer {
    cursor: ConsumerCursor,
    shared: Arc<Shared>,
    probe: Probe,
}

// SAFETY: as for `UntypedProducer`.
unsafe impl Send for UntypedConsumer {}

impl UntypedConsumer {
    /// Hands out the next committed message in place, if there is one.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`], or [`TryRecvError::Disconnected`] once the producer has
    /// gone and everything it committed was received.
    pub fn peek(&mut self) -> Result<UntypedReadSlot<'_>, TryRecvError> {
        if !self.cursor.view.is_committed(self.cursor.head) {
            return Err(self.shared.empty_error(&self.cursor, &mut self.probe));
        }
        Ok(UntypedReadSlot { consumer: self })
    }

    /// Hands out the next message in place, waiting at most `timeout`
    /// (`Duration::MAX`: for ever). It stays in the ring until
    /// [`UntypedReadSlot::release`].
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] or [`RecvTimeoutError::Disconnected`].
    pub fn peek_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<UntypedReadSlot<'_>, RecvTimeoutError> {
        let deadline = if timeout == Duration::MAX {
            None
        } else {
            deadline_after(timeout)
        };
        self.shared
            .await_data(&self.cursor, DEFAULT_SPIN, deadline, &mut self.probe)?;
        Ok(UntypedReadSlot { consumer: self })
    }

    /// The ring position of the next message to read: how many messages the ring's
    /// consumers have released so far. It survives a consumer's restart.
    pub fn position(&self) -> u64 {
        self.cursor.head
    }

    /// The committed message `i` places after the next one to read (`0`: the next
    /// one), in place and without releasing anything; `None` if it is not committed
    /// (yet), or `i` is not below the capacity. With [`wait_at`](Self::wait_at) and
    /// [`release_n`](Self::release_n) this reads ahead of what it frees: a bridge
    /// keeps messages in the ring until the far side has them.
    pub fn peek_at(&self, i: u64) -> Option<&[u8]> {
        let geo = self.cursor.view.geo;
        if i >= geo.capacity {
            return None;
        }
        let pos = self.cursor.head.wrapping_add(i);
        // Positions head..=pos are committed in order, so checking pos suffices: the
        // producer never commits past a slot we have not released (i < capacity).
        if !self.cursor.view.is_committed(pos) {
            return None;
        }
        // SAFETY: committed (Acquire in is_committed) and not released: the producer
        // does not write it until we release it; mapped for `payload_size` bytes
        // (validated geometry). The borrow of `self` keeps `release_n` away.
        Some(unsafe { std::slice::from_raw_parts(self.cursor.view.payload(pos), geo.payload_size) })
    }

    /// Waits at most `timeout` (`Duration::MAX`: for ever) until the message `i`
    /// places after the next one is committed (see [`peek_at`](Self::peek_at)).
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`], or [`RecvTimeoutError::Disconnected`] once the
    /// producer has gone and it was never committed. `i` not below the capacity is a
    /// `Timeout` at once.
    pub fn wait_at(&mut self, i: u64, timeout: Duration) -> Result<(), RecvTimeoutError> {
        if i >= self.cursor.view.geo.capacity {
            return Err(RecvTimeoutError::Timeout);
        }
        let at = ConsumerCursor {
            view: self.cursor.view,
            head: self.cursor.head.wrapping_add(i),
        };
        let deadline = if timeout == Duration::MAX {
            None
        } else {
            deadline_after(timeout)
        };
        self.shared
            .await_data(&at, DEFAULT_SPIN, deadline, &mut self.probe)
    }

    /// Frees the next `n` messages for the producer, or as many of them as are
    /// committed. Returns how many it freed.
    pub fn release_n(&mut self, n: u64) -> u64 {
        let n = self.cursor.available(n.min(self.cursor.view.geo.capacity));
        if n > 0 {
            self.cursor.release(n);
        }
        n
    }

    /// Whether the producer has gone.
    pub fn is_disconnected(&self) -> bool {
        self.shared.role_gone(Role::Producer)
    }
}

impl Drop for UntypedConsumer {
    fn drop(&mut self) {
        self.shared.leave_consumer();
    }
}

impl fmt::Debug for UntypedConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntypedConsumer")
            .field("ring", &self.shared.seg.name())
            .field("head", &self.cursor.head)
            .finish()
    }
}

/// A committed message of an [`UntypedRing`], read in place through `Deref<[u8]>`.
#[must_use = "peeked messages are freed only by release(); dropping them leaves them in the ring"]
pub struct UntypedReadSlot<'a> {
    consumer: &'a mut UntypedConsumer,
}

impl UntypedReadSlot<'_> {
    /// The message's ring position (see [`UntypedConsumer::position`]).
    pub fn position(&self) -> u64 {
        self.consumer.cursor.head
    }

    /// Frees the slot for the producer.
    pub fn release(self) {
        self.consumer.cursor.release(1);
    }
}

impl std::ops::Deref for UntypedReadSlot<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let c = &self.consumer.cursor;
        // SAFETY: committed and not yet released, so the producer does not write it;
        // mapped for `payload_size` bytes (validated geometry); any byte is valid.
        unsafe { std::slice::from_raw_parts(c.view.payload(c.head), c.view.geo.payload_size) }
    }
}

impl fmt::Debug for UntypedReadSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntypedReadSlot")
            .field("position", &self.consumer.cursor.head)
            .finish_non_exhaustive()
    }
}
