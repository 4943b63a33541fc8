//! Typed broadcast rings whose payload type is known only at run time, as
//! [`UntypedRing`](crate::UntypedRing) is for SPSC rings: a bridge opens a
//! `Broadcast<T>` another program created and moves its messages as byte slices of
//! exactly the payload's size, or creates one from a [`Schema`] it received, with the
//! fingerprint `Broadcast::<T>` would give it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::{BroadcastRecvTimeoutError, BroadcastTryRecvError, Lagged};
use super::join_at;
use super::shared::{BcastShared, Policy, Start};
use crate::error::{Error, Result};
use crate::message::Schema;
use crate::objects::broadcast::{FLAVOR_TYPED, Geometry, PubCursor, SubCursor};
use crate::ring::ReserveTimeoutError;
use crate::segment::layout::OBJECT_ALIGN;
use crate::segment::{Fingerprint, Kind, Options, Segment, SegmentInfo};
use crate::wait::{DEFAULT_SPIN, Probe, deadline_after};

/// A typed broadcast ring ([`Broadcast<T>`](crate::Broadcast)) attached without knowing
/// `T` at compile time: its payload is described by the [`Schema`] stored in the
/// segment, and its handles move messages as byte slices of exactly
/// [`message_size`](UntypedBroadcast::message_size) bytes.
///
/// ```
/// use tally::{Broadcast, Policy, Start, UntypedBroadcast};
/// # let name = format!("doc-untyped-bcast-{}", std::process::id());
/// let feed = Broadcast::<u32>::create(&name, 8, Policy::Lossless)?;
/// let any = UntypedBroadcast::open(&name)?;
/// assert_eq!(any.schema().canonical(), "u32");
/// let mut rx = any.subscribe(Start::Newest)?;
///
/// feed.publisher()?.try_send(7).unwrap();
/// let msg = rx.peek().unwrap();
/// assert_eq!(&*msg, &7u32.to_ne_bytes());
/// assert_eq!(msg.position(), 0);
/// msg.release().unwrap();
/// # Ok::<(), tally::Error>(())
/// ```
pub struct UntypedBroadcast {
    shared: Arc<BcastShared>,
    schema: Schema,
    align: usize,
}

/// The slot shape of a broadcast ring of `size`-byte payloads aligned to `align`.
fn untyped_geometry(
    capacity: usize,
    size: usize,
    align: usize,
    policy: Policy,
    subs: u32,
) -> Result<Geometry> {
    if !align.is_power_of_two() || align > OBJECT_ALIGN {
        return Err(Error::InvalidArgument(format!(
            "payload alignment {align}: tally lays out payloads aligned to a power of two up to {OBJECT_ALIGN}"
        )));
    }
    Geometry::new(capacity, size, align, FLAVOR_TYPED, policy.tag(), subs).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "capacity {capacity} of {size}-byte slots: capacity must be 1..=2^30 and the ring fit in memory"
        ))
    })
}

impl UntypedBroadcast {
    /// Opens the live typed broadcast ring `name`, whatever its payload type, capacity
    /// and policy.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no live object has the name; [`Error::KindMismatch`] if
    /// it is not a typed broadcast ring; [`Error::Corrupted`] if its stored schema is
    /// unreadable or disagrees with its slots; otherwise as
    /// [`Broadcast::open`](crate::Broadcast::open).
    pub fn open(name: &str) -> Result<Self> {
        Self::open_with(name, &Options::default())
    }

    /// Opens with explicit [`Options`].
    ///
    /// # Errors
    /// As [`open`](UntypedBroadcast::open).
    pub fn open_with(name: &str, opts: &Options) -> Result<Self> {
        let seg = Segment::open_expecting(name, None, crate::objects::recover_any, opts)?;
        let found = seg.info().kind;
        if found != Kind::Broadcast {
            return Err(Error::KindMismatch {
                name: name.to_owned(),
                expected: Kind::Broadcast,
                found,
            });
        }
        let stored = BcastShared::stored_geometry(&seg)?;
        let (schema, align) = crate::message::stored_payload(&seg, |size, align| {
            untyped_geometry(1, size, align, Policy::Lossless, 1).is_ok_and(|g| {
                g.stride == stored.stride
                    && g.payload_offset == stored.payload_offset
                    && g.payload_size == stored.payload_size
            })
        })?;
        let geo = untyped_geometry(1, schema.size(), align, Policy::Lossless, opts.holders)?;
        let shared = BcastShared::attach(seg, &geo, false, false)?;
        Ok(UntypedBroadcast {
            shared,
            schema,
            align,
        })
    }

    /// Creates a typed broadcast ring of at least `capacity` slots of the payload
    /// `schema` describes, aligned to `schema.align()`: the object
    /// `Broadcast::<T>::create` makes for a `T` with that schema, so
    /// `Broadcast::<T>::open` accepts it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a schema no `Message` type can have or a bad
    /// capacity; otherwise as [`Broadcast::create_with`](crate::Broadcast::create_with).
    pub fn create(
        name: &str,
        schema: &Schema,
        capacity: usize,
        policy: Policy,
        opts: &Options,
    ) -> Result<Self> {
        let (fp, geo) = Self::layout(schema, capacity, policy, opts)?;
        let shared = BcastShared::create(name, fp, geo, opts)?;
        Ok(Self::wrap(shared, schema))
    }

    /// Opens `name`, which must hold `schema`'s payload and have `policy` (any
    /// capacity), or creates it with `capacity` slots. Returns whether it created.
    ///
    /// # Errors
    /// [`Error::LayoutMismatch`] if the existing ring holds another payload (the
    /// message names the first field that differs) or has another policy;
    /// [`Error::KindMismatch`] if it is not a typed broadcast ring; otherwise as
    /// [`create`](UntypedBroadcast::create) and [`open`](UntypedBroadcast::open).
    pub fn open_or_create(
        name: &str,
        schema: &Schema,
        capacity: usize,
        policy: Policy,
        opts: &Options,
    ) -> Result<(Self, bool)> {
        let (fp, geo) = Self::layout(schema, capacity, policy, opts)?;
        let opts = opts.clone().any_capacity(true);
        let (shared, created) = BcastShared::open_or_create(name, fp, geo, &opts)?;
        Ok((Self::wrap(shared, schema), created))
    }

    fn layout(
        schema: &Schema,
        capacity: usize,
        policy: Policy,
        opts: &Options,
    ) -> Result<(Fingerprint, Geometry)> {
        let (size, align) = (schema.size(), schema.align());
        let geo = untyped_geometry(capacity, size, align, policy, opts.holders)?;
        Ok((Fingerprint::of_schema(schema, size, align), geo))
    }

    fn wrap(shared: Arc<BcastShared>, schema: &Schema) -> Self {
        UntypedBroadcast {
            shared,
            align: schema.align(),
            schema: schema.clone(),
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

    /// Claims the publisher role, as [`Broadcast::publisher`](crate::Broadcast::publisher).
    ///
    /// # Errors
    /// As [`Broadcast::publisher`](crate::Broadcast::publisher).
    pub fn publisher(&self) -> Result<UntypedPublisher> {
        let cursor = self.shared.claim_publisher()?;
        Ok(UntypedPublisher {
            cursor,
            shared: self.shared.clone(),
        })
    }

    /// A new subscriber starting at `start`, as
    /// [`Broadcast::subscribe`](crate::Broadcast::subscribe).
    ///
    /// # Errors
    /// As [`Broadcast::subscribe`](crate::Broadcast::subscribe).
    pub fn subscribe(&self, start: Start) -> Result<UntypedSubscriber> {
        let cursor = self.shared.subscribe(join_at(start))?;
        Ok(UntypedSubscriber {
            cursor,
            shared: self.shared.clone(),
            probe: Probe::default(),
        })
    }
}

impl fmt::Debug for UntypedBroadcast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntypedBroadcast")
            .field("name", &self.name())
            .field("schema", &self.schema.canonical())
            .field("message_size", &self.message_size())
            .field("capacity", &self.capacity())
            .field("policy", &self.policy())
            .finish()
    }
}

/// The publishing side of an [`UntypedBroadcast`]; dropping it releases the role.
pub struct UntypedPublisher {
    cursor: PubCursor,
    shared: Arc<BcastShared>,
}

// SAFETY: as for `Publisher`: the cursor points into the mapping `shared` keeps alive,
// and the role claim makes this the only publisher.
unsafe impl Send for UntypedPublisher {}

impl UntypedPublisher {
    /// Reserves the next slot, waiting at most `timeout` (`Duration::MAX`: for ever)
    /// while the slowest live subscriber of a lossless ring is a ring behind (a lossy
    /// ring never waits). The slot is a byte slice of exactly the message size.
    ///
    /// # Errors
    /// [`ReserveTimeoutError::Timeout`] if no slot came free in time.
    pub fn reserve_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<UntypedBroadcastWriteSlot<'_>, ReserveTimeoutError> {
        self.shared
            .await_room(&mut self.cursor, 1, DEFAULT_SPIN, deadline_after(timeout))
            .map_err(|()| ReserveTimeoutError::Timeout)?;
        self.cursor.begin(1);
        Ok(UntypedBroadcastWriteSlot { publisher: self })
    }

    /// The position the next message will have (counting on across publishers).
    pub fn position(&self) -> u64 {
        self.cursor.tail
    }

    /// Subscribers attached now.
    pub fn subscribers(&self) -> usize {
        self.shared.subscriber_count()
    }
}

impl Drop for UntypedPublisher {
    fn drop(&mut self) {
        self.shared.leave_publisher();
    }
}

impl fmt::Debug for UntypedPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntypedPublisher")
            .field("ring", &self.shared.seg.name())
            .field("position", &self.cursor.tail)
            .finish()
    }
}

/// A reserved slot of an [`UntypedBroadcast`], written in place through
/// `DerefMut<[u8]>`.
#[must_use = "reserved slots are published only by commit(); dropping them un-reserves them"]
pub struct UntypedBroadcastWriteSlot<'a> {
    publisher: &'a mut UntypedPublisher,
}

impl UntypedBroadcastWriteSlot<'_> {
    /// Publishes the message to every subscriber.
    pub fn commit(self) {
        let p = self.publisher;
        p.shared.commit(&mut p.cursor, 1);
    }
}

impl std::ops::Deref for UntypedBroadcastWriteSlot<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let c = &self.publisher.cursor;
        // SAFETY: the reserved slot's payload is ours alone until commit, mapped for
        // `payload_size` bytes (validated geometry); any byte value is valid.
        unsafe { std::slice::from_raw_parts(c.view.payload(c.tail), c.view.geo.payload_size) }
    }
}

impl std::ops::DerefMut for UntypedBroadcastWriteSlot<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let c = &self.publisher.cursor;
        // SAFETY: as in `deref`.
        unsafe { std::slice::from_raw_parts_mut(c.view.payload(c.tail), c.view.geo.payload_size) }
    }
}

impl fmt::Debug for UntypedBroadcastWriteSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntypedBroadcastWriteSlot")
            .field("position", &self.publisher.cursor.tail)
            .finish_non_exhaustive()
    }
}

/// A receiving side of an [`UntypedBroadcast`]; dropping it frees its cursor line.
pub struct UntypedSubscriber {
    cursor: SubCursor,
    shared: Arc<BcastShared>,
    probe: Probe,
}

// SAFETY: as for `Subscriber`.
unsafe impl Send for UntypedSubscriber {}

impl UntypedSubscriber {
    /// Hands out the next message in place.
    ///
    /// # Errors
    /// As [`Subscriber::peek`](crate::Subscriber::peek).
    pub fn peek(&mut self) -> Result<UntypedBroadcastReadSlot<'_>, BroadcastTryRecvError> {
        self.shared.poll(&mut self.cursor, &mut self.probe)?;
        Ok(UntypedBroadcastReadSlot { subscriber: self })
    }

    /// Hands out the next message in place, waiting at most `timeout`
    /// (`Duration::MAX`: for ever).
    ///
    /// # Errors
    /// As [`Subscriber::peek_timeout`](crate::Subscriber::peek_timeout).
    pub fn peek_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<UntypedBroadcastReadSlot<'_>, BroadcastRecvTimeoutError> {
        self.shared.await_data(
            &mut self.cursor,
            DEFAULT_SPIN,
            deadline_after(timeout),
            &mut self.probe,
        )?;
        Ok(UntypedBroadcastReadSlot { subscriber: self })
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
        // SAFETY: committed, and not overwritten while this subscriber holds it back
        // (lossless, within a ring of its position); mapped for `payload_size` bytes
        // (validated geometry). The borrow of `self` keeps `release_n` away.
        Some(unsafe { std::slice::from_raw_parts(p, self.shared.view.geo.payload_size) })
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
            DEFAULT_SPIN,
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
}

impl Drop for UntypedSubscriber {
    fn drop(&mut self) {
        self.shared.leave_subscriber(&self.cursor);
    }
}

impl fmt::Debug for UntypedSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntypedSubscriber")
            .field("ring", &self.shared.seg.name())
            .field("position", &self.cursor.pos)
            .finish()
    }
}

/// A message of an [`UntypedBroadcast`], read in place through `Deref<[u8]>`;
/// [`release`](UntypedBroadcastReadSlot::release) says whether the read was good.
#[must_use = "release() moves past the message and says whether the read was good"]
pub struct UntypedBroadcastReadSlot<'a> {
    subscriber: &'a mut UntypedSubscriber,
}

impl UntypedBroadcastReadSlot<'_> {
    /// The message's position in the ring.
    pub fn position(&self) -> u64 {
        self.subscriber.cursor.pos
    }

    /// Moves past the message; `Err(Lagged)` (lossy only) if it was overwritten while
    /// read: treat what was read as garbage.
    ///
    /// # Errors
    /// [`Lagged`] as above; never on a lossless ring.
    pub fn release(self) -> Result<(), Lagged> {
        let s = self.subscriber;
        s.shared.finish(&mut s.cursor, 1)
    }
}

impl std::ops::Deref for UntypedBroadcastReadSlot<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let c = &self.subscriber.cursor;
        // SAFETY: a ready slot, mapped for `payload_size` bytes (validated geometry); any
        // byte is valid. Lossless: not overwritten before release; lossy: an overwrite
        // is reported by `release`.
        unsafe { std::slice::from_raw_parts(c.view.payload(c.pos), c.view.geo.payload_size) }
    }
}

impl fmt::Debug for UntypedBroadcastReadSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntypedBroadcastReadSlot")
            .field("position", &self.subscriber.cursor.pos)
            .finish_non_exhaustive()
    }
}
