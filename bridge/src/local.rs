//! The local objects a bridge reads or writes: typed SPSC rings (any payload, through
//! `UntypedRing`) and byte rings.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use tally::{
    ByteConsumer, ByteProducer, ByteRing, Error, Kind, Options, RecvTimeoutError, SegmentInfo,
    UntypedConsumer, UntypedProducer, UntypedRing,
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
}

impl Local {
    /// Opens the live ring `name`: a typed ring or a byte ring.
    ///
    /// # Errors
    /// As [`UntypedRing::open`] and [`ByteRing::open`].
    pub fn open(name: &str) -> tally::Result<Local> {
        match UntypedRing::open(name) {
            Ok(r) => Ok(Local::Typed(r)),
            Err(Error::KindMismatch {
                found: Kind::ByteRing,
                ..
            }) => Ok(Local::Bytes(ByteRing::open(name)?)),
            Err(e) => Err(e),
        }
    }

    /// Opens `name` (any capacity), which must be a byte ring of `max_message`, or
    /// creates it.
    ///
    /// # Errors
    /// As [`ByteRing::open_or_create`].
    pub fn open_or_create_bytes(
        name: &str,
        capacity: usize,
        max_message: usize,
    ) -> tally::Result<Local> {
        let opts = Options::default();
        match ByteRing::open(name) {
            Ok(r) if r.max_message() == max_message => return Ok(Local::Bytes(r)),
            Ok(r) => {
                return Err(Error::LayoutMismatch {
                    name: name.to_owned(),
                    detail: format!(
                        "the byte ring takes messages of up to {} bytes, the exported one up to {max_message}",
                        r.max_message()
                    ),
                });
            }
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let (ring, _) = ByteRing::open_or_create(name, capacity, max_message, &opts)?;
        Ok(Local::Bytes(ring))
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        match self {
            Local::Typed(r) => r.name(),
            Local::Bytes(r) => r.name(),
        }
    }

    /// Describes the segment.
    pub fn info(&self) -> SegmentInfo {
        match self {
            Local::Typed(r) => r.info(),
            Local::Bytes(r) => r.info(),
        }
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        match self {
            Local::Typed(r) => r.capacity(),
            Local::Bytes(r) => r.capacity(),
        }
    }

    /// The payload's canonical schema text (`bytes` for a byte ring).
    pub fn schema_text(&self) -> String {
        match self {
            Local::Typed(r) => r.schema().canonical(),
            Local::Bytes(_) => "bytes".to_owned(),
        }
    }

    /// The payload's identity on the wire: FNV-1a of the schema text.
    pub fn type_id(&self) -> u64 {
        wire::fnv1a(self.schema_text().as_bytes())
    }

    /// The header flags of this ring's samples.
    pub fn flags(&self) -> u8 {
        match self {
            Local::Typed(_) => 0,
            Local::Bytes(_) => FLAG_BYTES,
        }
    }

    /// A typed ring's message size, or a byte ring's largest message.
    pub fn message_size(&self) -> usize {
        match self {
            Local::Typed(r) => r.message_size(),
            Local::Bytes(r) => r.max_message(),
        }
    }

    /// What the exporter answers on `KEY/@tally`.
    pub fn describe(&self) -> serde_json::Value {
        json!({
            "kind": match self { Local::Typed(_) => "ring", Local::Bytes(_) => "byte_ring" },
            "schema": self.schema_text(),
            "type_id": format!("{:016x}", self.type_id()),
            "message_size": self.message_size(),
            "align": match self { Local::Typed(r) => r.align(), Local::Bytes(_) => 1 },
            "capacity": self.capacity(),
        })
    }

    /// Claims the consumer role.
    ///
    /// # Errors
    /// As `Ring::consumer`.
    pub fn consumer(&self) -> tally::Result<Source> {
        Ok(match self {
            Local::Typed(r) => Source::Typed(r.consumer()?),
            Local::Bytes(r) => Source::Bytes(r.consumer()?),
        })
    }

    /// Claims the producer role.
    ///
    /// # Errors
    /// As `Ring::producer`.
    pub fn producer(&self) -> tally::Result<Sink> {
        Ok(match self {
            Local::Typed(r) => Sink::Typed(r.producer()?),
            Local::Bytes(r) => Sink::Bytes(r.producer()?),
        })
    }
}

/// The exporter's consumer handle.
pub enum Source {
    Typed(UntypedConsumer),
    Bytes(ByteConsumer),
}

impl Source {
    pub fn position(&self) -> u64 {
        match self {
            Source::Typed(c) => c.position(),
            Source::Bytes(c) => c.position(),
        }
    }

    pub fn peek_at(&self, i: u64) -> Option<&[u8]> {
        match self {
            Source::Typed(c) => c.peek_at(i),
            Source::Bytes(c) => c.peek_at(i),
        }
    }

    pub fn wait_at(&mut self, i: u64, timeout: Duration) -> Result<(), RecvTimeoutError> {
        match self {
            Source::Typed(c) => c.wait_at(i, timeout),
            Source::Bytes(c) => c.wait_at(i, timeout),
        }
    }

    pub fn release_n(&mut self, n: u64) -> u64 {
        match self {
            Source::Typed(c) => c.release_n(n),
            Source::Bytes(c) => c.release_n(n),
        }
    }
}

/// The importer's producer handle.
pub enum Sink {
    Typed(UntypedProducer),
    Bytes(ByteProducer),
}

impl Sink {
    pub fn position(&self) -> u64 {
        match self {
            Sink::Typed(p) => p.position(),
            Sink::Bytes(p) => p.position(),
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
