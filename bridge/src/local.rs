//! The local objects a bridge reads or writes: typed SPSC rings (any payload, through
//! `UntypedRing`), byte rings, typed broadcast rings (any payload, through
//! `UntypedBroadcast`) and byte broadcast rings.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use tally::{
    BroadcastRecvTimeoutError, ByteBroadcast, ByteConsumer, ByteProducer, BytePublisher, ByteRing,
    ByteSubscriber, Error, Kind, Options, Policy, RecvTimeoutError, Schema, SegmentInfo, Start,
    UntypedBroadcast, UntypedConsumer, UntypedProducer, UntypedPublisher, UntypedRing,
    UntypedSubscriber,
};

use crate::wire::{self, FLAG_BYTES};

/// How often a blocked write looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// A ring the bridge exports or imports.
#[derive(Debug)]
pub enum Local {
    /// A typed SPSC ring, whatever its payload.
    Typed(UntypedRing),
    /// A byte ring.
    Bytes(ByteRing),
    /// A typed broadcast ring, whatever its payload.
    Broadcast(UntypedBroadcast),
    /// A byte broadcast ring.
    ByteBroadcast(ByteBroadcast),
}

/// What kind of ring an importer creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// An SPSC ring (typed, or bytes).
    Ring,
    /// A broadcast ring (typed, or bytes) of this policy.
    Broadcast(Policy),
}

impl Local {
    /// Opens the live ring `name`: a typed or byte SPSC ring, or a typed or byte
    /// broadcast ring.
    ///
    /// # Errors
    /// As [`UntypedRing::open`] and the other kinds' `open`; a `KindMismatch` naming
    /// the SPSC ring for any other kind.
    pub fn open(name: &str) -> tally::Result<Local> {
        match UntypedRing::open(name) {
            Ok(r) => Ok(Local::Typed(r)),
            Err(Error::KindMismatch {
                found: Kind::ByteRing,
                ..
            }) => Ok(Local::Bytes(ByteRing::open(name)?)),
            Err(Error::KindMismatch {
                found: Kind::Broadcast,
                ..
            }) => Ok(Local::Broadcast(UntypedBroadcast::open(name)?)),
            Err(Error::KindMismatch {
                found: Kind::ByteBroadcast,
                ..
            }) => Ok(Local::ByteBroadcast(ByteBroadcast::open(name)?)),
            Err(e) => Err(e),
        }
    }

    /// Opens `name`, which must hold `schema`'s payload (`bytes`: messages of up to
    /// `max_message` bytes) in a ring of this `shape` (any capacity), or creates it.
    ///
    /// # Errors
    /// `LayoutMismatch` for another payload, largest message or policy; otherwise as
    /// the kinds' `open_or_create`.
    pub fn open_or_create(
        name: &str,
        shape: Shape,
        schema: &str,
        capacity: usize,
        max_message: usize,
    ) -> tally::Result<Local> {
        let opts = Options::default().any_capacity(true);
        if schema != "bytes" {
            let schema = Schema::from_canonical(schema)?;
            return Ok(match shape {
                Shape::Ring => {
                    Local::Typed(UntypedRing::open_or_create(name, &schema, capacity, &opts)?.0)
                }
                Shape::Broadcast(policy) => Local::Broadcast(
                    UntypedBroadcast::open_or_create(name, &schema, capacity, policy, &opts)?.0,
                ),
            });
        }
        // Any capacity, and (checked here) exactly the exporter's largest message.
        let (ring, max) = match shape {
            Shape::Ring => {
                let r = ByteRing::open_or_create(name, capacity, max_message, &opts)?.0;
                let max = r.max_message();
                (Local::Bytes(r), max)
            }
            Shape::Broadcast(policy) => {
                let r =
                    ByteBroadcast::open_or_create(name, capacity, max_message, policy, &opts)?.0;
                let max = r.max_message();
                (Local::ByteBroadcast(r), max)
            }
        };
        if max != max_message {
            return Err(Error::LayoutMismatch {
                name: name.to_owned(),
                detail: format!(
                    "the ring takes messages of up to {max} bytes, the exported one up to {max_message}"
                ),
            });
        }
        Ok(ring)
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        match self {
            Local::Typed(r) => r.name(),
            Local::Bytes(r) => r.name(),
            Local::Broadcast(r) => r.name(),
            Local::ByteBroadcast(r) => r.name(),
        }
    }

    /// Describes the segment.
    pub fn info(&self) -> SegmentInfo {
        match self {
            Local::Typed(r) => r.info(),
            Local::Bytes(r) => r.info(),
            Local::Broadcast(r) => r.info(),
            Local::ByteBroadcast(r) => r.info(),
        }
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        match self {
            Local::Typed(r) => r.capacity(),
            Local::Bytes(r) => r.capacity(),
            Local::Broadcast(r) => r.capacity(),
            Local::ByteBroadcast(r) => r.capacity(),
        }
    }

    /// Whether it holds byte messages (of any length up to its largest).
    pub fn is_bytes(&self) -> bool {
        matches!(self, Local::Bytes(_) | Local::ByteBroadcast(_))
    }

    /// A broadcast ring's policy; `None` for an SPSC ring.
    pub fn policy(&self) -> Option<Policy> {
        match self {
            Local::Typed(_) | Local::Bytes(_) => None,
            Local::Broadcast(r) => Some(r.policy()),
            Local::ByteBroadcast(r) => Some(r.policy()),
        }
    }

    /// The payload's canonical schema text (`bytes` for byte messages).
    pub fn schema_text(&self) -> String {
        match self {
            Local::Typed(r) => r.schema().canonical(),
            Local::Broadcast(r) => r.schema().canonical(),
            Local::Bytes(_) | Local::ByteBroadcast(_) => "bytes".to_owned(),
        }
    }

    /// The payload's identity on the wire: FNV-1a of the schema text.
    pub fn type_id(&self) -> u64 {
        wire::fnv1a(self.schema_text().as_bytes())
    }

    /// The header flags of this ring's samples.
    pub fn flags(&self) -> u8 {
        if self.is_bytes() { FLAG_BYTES } else { 0 }
    }

    /// A typed ring's message size, or a byte ring's largest message.
    pub fn message_size(&self) -> usize {
        match self {
            Local::Typed(r) => r.message_size(),
            Local::Bytes(r) => r.max_message(),
            Local::Broadcast(r) => r.message_size(),
            Local::ByteBroadcast(r) => r.max_message(),
        }
    }

    /// The payload's alignment (1 for bytes).
    pub fn align(&self) -> usize {
        match self {
            Local::Typed(r) => r.align(),
            Local::Broadcast(r) => r.align(),
            Local::Bytes(_) | Local::ByteBroadcast(_) => 1,
        }
    }

    /// The kind's name in the exporter's description.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Local::Typed(_) => "ring",
            Local::Bytes(_) => "byte_ring",
            Local::Broadcast(_) => "broadcast",
            Local::ByteBroadcast(_) => "byte_broadcast",
        }
    }

    /// What the exporter answers on `KEY/@tally`.
    pub fn describe(&self) -> serde_json::Value {
        let mut d = json!({
            "kind": self.kind_name(),
            "schema": self.schema_text(),
            "type_id": format!("{:016x}", self.type_id()),
            "message_size": self.message_size(),
            "align": self.align(),
            "capacity": self.capacity(),
        });
        if let Some(policy) = self.policy() {
            d["policy"] = json!(policy.as_str());
        }
        d
    }

    /// A reader that can read ahead of what it frees: an SPSC ring's consumer role, or
    /// a subscriber of a lossless broadcast ring, at its oldest message. `None` for a
    /// lossy broadcast ring.
    ///
    /// # Errors
    /// As `Ring::consumer` and `Broadcast::subscribe`.
    pub fn consumer(&self) -> tally::Result<Option<Source>> {
        Ok(match self {
            Local::Typed(r) => Some(Source::Typed(r.consumer()?)),
            Local::Bytes(r) => Some(Source::Bytes(r.consumer()?)),
            Local::Broadcast(r) if r.policy() == Policy::Lossless => {
                Some(Source::Broadcast(r.subscribe(Start::Oldest)?))
            }
            Local::ByteBroadcast(r) if r.policy() == Policy::Lossless => {
                Some(Source::ByteBroadcast(r.subscribe(Start::Oldest)?))
            }
            Local::Broadcast(_) | Local::ByteBroadcast(_) => None,
        })
    }

    /// Subscribes to a lossy broadcast ring at its oldest message; `None` otherwise.
    ///
    /// # Errors
    /// As `Broadcast::subscribe`.
    pub fn subscribe(&self) -> tally::Result<Option<Feed>> {
        Ok(match self {
            Local::Broadcast(r) if r.policy() == Policy::Lossy => {
                Some(Feed::Typed(r.subscribe(Start::Oldest)?))
            }
            Local::ByteBroadcast(r) if r.policy() == Policy::Lossy => {
                Some(Feed::Bytes(r.subscribe(Start::Oldest)?))
            }
            _ => None,
        })
    }

    /// Claims the producer (or publisher) role.
    ///
    /// # Errors
    /// As `Ring::producer` and `Broadcast::publisher`.
    pub fn producer(&self) -> tally::Result<Sink> {
        Ok(match self {
            Local::Typed(r) => Sink::Typed(r.producer()?),
            Local::Bytes(r) => Sink::Bytes(r.producer()?),
            Local::Broadcast(r) => Sink::Broadcast(r.publisher()?),
            Local::ByteBroadcast(r) => Sink::ByteBroadcast(r.publisher()?),
        })
    }
}

/// What an exporter reads ahead of what it frees: an SPSC ring's consumer, or a
/// subscriber of a lossless broadcast ring.
pub enum Source {
    Typed(UntypedConsumer),
    Bytes(ByteConsumer),
    Broadcast(UntypedSubscriber),
    ByteBroadcast(ByteSubscriber),
}

/// A broadcast wait's outcome as a ring's (a lossless ring does not lag).
fn as_ring(e: BroadcastRecvTimeoutError) -> RecvTimeoutError {
    match e {
        BroadcastRecvTimeoutError::Disconnected => RecvTimeoutError::Disconnected,
        BroadcastRecvTimeoutError::Timeout | BroadcastRecvTimeoutError::Lagged(_) => {
            RecvTimeoutError::Timeout
        }
    }
}

impl Source {
    pub fn position(&self) -> u64 {
        match self {
            Source::Typed(c) => c.position(),
            Source::Bytes(c) => c.position(),
            Source::Broadcast(s) => s.position(),
            Source::ByteBroadcast(s) => s.position(),
        }
    }

    pub fn peek_at(&self, i: u64) -> Option<&[u8]> {
        match self {
            Source::Typed(c) => c.peek_at(i),
            Source::Bytes(c) => c.peek_at(i),
            Source::Broadcast(s) => s.peek_at(i),
            Source::ByteBroadcast(s) => s.peek_at(i),
        }
    }

    pub fn wait_at(&mut self, i: u64, timeout: Duration) -> Result<(), RecvTimeoutError> {
        match self {
            Source::Typed(c) => c.wait_at(i, timeout),
            Source::Bytes(c) => c.wait_at(i, timeout),
            Source::Broadcast(s) => s.wait_at(i, timeout).map_err(as_ring),
            Source::ByteBroadcast(s) => s.wait_at(i, timeout).map_err(as_ring),
        }
    }

    pub fn release_n(&mut self, n: u64) -> u64 {
        match self {
            Source::Typed(c) => c.release_n(n),
            Source::Bytes(c) => c.release_n(n),
            Source::Broadcast(s) => s.release_n(n),
            Source::ByteBroadcast(s) => s.release_n(n),
        }
    }
}

/// The exporter's subscriber of a lossy broadcast ring.
pub enum Feed {
    Typed(UntypedSubscriber),
    Bytes(ByteSubscriber),
}

impl Feed {
    /// Appends the next message to `out`, waiting at most `timeout`, and returns its
    /// position in the ring. A message overwritten while it was copied (lossy) is
    /// taken off `out` again and reported as `Lagged`, as are the ones overwritten
    /// before it was read.
    ///
    /// # Errors
    /// As `Subscriber::peek_timeout`.
    pub fn read_into(
        &mut self,
        out: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<u64, BroadcastRecvTimeoutError> {
        let mark = out.len();
        let (position, good) = match self {
            Feed::Typed(s) => {
                let slot = s.peek_timeout(timeout)?;
                out.extend_from_slice(&slot);
                (slot.position(), slot.release())
            }
            Feed::Bytes(s) => {
                let slot = s.peek_timeout(timeout)?;
                out.extend_from_slice(&slot);
                (slot.position(), slot.release())
            }
        };
        match good {
            Ok(()) => Ok(position),
            Err(lagged) => {
                out.truncate(mark);
                Err(lagged.into())
            }
        }
    }

    /// The position of the next message to read.
    pub fn position(&self) -> u64 {
        match self {
            Feed::Typed(s) => s.position(),
            Feed::Bytes(s) => s.position(),
        }
    }
}

/// The importer's producer (or publisher) handle.
pub enum Sink {
    Typed(UntypedProducer),
    Bytes(ByteProducer),
    Broadcast(UntypedPublisher),
    ByteBroadcast(BytePublisher),
}

impl Sink {
    pub fn position(&self) -> u64 {
        match self {
            Sink::Typed(p) => p.position(),
            Sink::Bytes(p) => p.position(),
            Sink::Broadcast(p) => p.position(),
            Sink::ByteBroadcast(p) => p.position(),
        }
    }

    /// Writes `payload` (of a size the ring takes), waiting while the ring is full;
    /// `false` if `stop` was set first.
    pub fn write(&mut self, payload: &[u8], stop: &AtomicBool) -> bool {
        loop {
            let done = match self {
                Sink::Typed(p) => p.reserve_timeout(POLL).map(|mut slot| {
                    slot.copy_from_slice(payload);
                    slot.commit();
                }),
                Sink::Bytes(p) => p.reserve_timeout(payload.len(), POLL).map(|mut slot| {
                    slot.copy_from_slice(payload);
                    slot.commit();
                }),
                Sink::Broadcast(p) => p.reserve_timeout(POLL).map(|mut slot| {
                    slot.copy_from_slice(payload);
                    slot.commit();
                }),
                Sink::ByteBroadcast(p) => p.reserve_timeout(payload.len(), POLL).map(|mut slot| {
                    slot.copy_from_slice(payload);
                    slot.commit();
                }),
            };
            if done.is_ok() {
                return true;
            }
            // Full: wait for the consumer (or a new one), unless told to stop.
            if stop.load(Ordering::Acquire) {
                return false;
            }
        }
    }
}
