//! What travels on the rings and what consumers write down.
//!
//! A message is `[producer u32][seq u32][payload len u32][checksum u32][payload]`, all
//! little-endian; the payload is derived from `(producer, seq)` and the checksum covers
//! the producer, the sequence number, the length and every payload byte. A consumer
//! appends one 16-byte [`Record`] per message to its log, with one `write(2)`, *before*
//! it releases the message: a consumer killed between the write and the release makes
//! the ring deliver that message again (at-least-once), which the checker recognises.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use crate::rng::mix;

/// Bytes of a message's header.
pub const HEADER: usize = 16;

/// FNV-1a over the header fields and the payload, folded to 32 bits.
pub fn checksum(producer: u32, seq: u32, payload: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    for b in producer
        .to_le_bytes()
        .into_iter()
        .chain(seq.to_le_bytes())
        .chain((payload.len() as u32).to_le_bytes())
    {
        eat(b);
    }
    for &b in payload {
        eat(b);
    }
    (h ^ (h >> 32)) as u32
}

/// The payload length of message `seq` of `producer`, for a largest payload `max`:
/// between `max / 2` and `max`, so byte rings carry messages of several lengths.
pub fn payload_len(producer: u32, seq: u32, max: usize) -> usize {
    if max < 2 {
        return max;
    }
    let h = mix((u64::from(producer) << 32) | u64::from(seq));
    max - (h % (max as u64 / 2 + 1)) as usize
}

/// Writes message `seq` of `producer` into `buf` (of [`HEADER`] + the payload length).
/// `corrupt` writes a checksum that does not match (the planted torn message).
pub fn encode(buf: &mut [u8], producer: u32, seq: u32, corrupt: bool) {
    let (head, payload) = buf.split_at_mut(HEADER);
    let mut state = mix((u64::from(producer) << 32) ^ u64::from(seq) ^ 0xa5a5);
    for chunk in payload.chunks_mut(8) {
        state = mix(state);
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let mut sum = checksum(producer, seq, payload);
    if corrupt {
        sum = !sum;
    }
    head[0..4].copy_from_slice(&producer.to_le_bytes());
    head[4..8].copy_from_slice(&seq.to_le_bytes());
    head[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    head[12..16].copy_from_slice(&sum.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// What a consumer received: the header it read and the checksum it computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Producer id from the header.
    pub producer: u32,
    /// Sequence number from the header.
    pub seq: u32,
    /// Checksum carried by the message.
    pub carried: u32,
    /// Checksum of what arrived (differs from `carried` for a torn message).
    pub computed: u32,
}

/// Bytes of a [`Record`] in a log.
pub const RECORD: usize = 16;

impl Record {
    /// Reads a received message. A message too short for its header, or whose length
    /// field disagrees with its size, is torn.
    pub fn of_message(msg: &[u8]) -> Record {
        if msg.len() < HEADER {
            return Record {
                producer: 0,
                seq: 0,
                carried: 0,
                computed: 1,
            };
        }
        let (producer, seq, len, carried) = (
            u32_at(msg, 0),
            u32_at(msg, 4),
            u32_at(msg, 8),
            u32_at(msg, 12),
        );
        let payload = &msg[HEADER..];
        let computed = if len as usize == payload.len() {
            checksum(producer, seq, payload)
        } else {
            !carried
        };
        Record {
            producer,
            seq,
            carried,
            computed,
        }
    }

    /// The 16 bytes written to a log.
    pub fn to_bytes(self) -> [u8; RECORD] {
        let mut b = [0; RECORD];
        b[0..4].copy_from_slice(&self.producer.to_le_bytes());
        b[4..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..12].copy_from_slice(&self.carried.to_le_bytes());
        b[12..16].copy_from_slice(&self.computed.to_le_bytes());
        b
    }

    /// Parses one log record.
    pub fn from_bytes(b: &[u8]) -> Record {
        Record {
            producer: u32_at(b, 0),
            seq: u32_at(b, 4),
            carried: u32_at(b, 8),
            computed: u32_at(b, 12),
        }
    }

    /// Whether the message arrived as it was sent.
    pub fn intact(&self) -> bool {
        self.carried == self.computed
    }
}

/// An append-only log of [`Record`]s: one `write(2)` per record, no buffering, so what
/// a killed consumer wrote is in the file.
#[derive(Debug)]
pub struct Log(File);

impl Log {
    /// Creates the log at `path`.
    pub fn create(path: &Path) -> io::Result<Log> {
        Ok(Log(File::options()
            .create_new(true)
            .append(true)
            .open(path)?))
    }

    /// Appends `rec`.
    pub fn append(&mut self, rec: Record) -> io::Result<()> {
        self.0.write_all(&rec.to_bytes())
    }
}

/// Reads a log: its whole records, and how many trailing bytes formed no whole record
/// (a write cut short).
pub fn read_log(path: &Path) -> io::Result<(Vec<Record>, usize)> {
    let bytes = std::fs::read(path)?;
    let whole = bytes.len() / RECORD * RECORD;
    let recs = bytes[..whole]
        .chunks_exact(RECORD)
        .map(Record::from_bytes)
        .collect();
    Ok((recs, bytes.len() - whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_and_a_flipped_byte_is_torn() {
        for max in [0usize, 1, 8, 64, 4096] {
            let len = payload_len(3, 9, max);
            assert!(len <= max && len >= max / 2);
            let mut buf = vec![0; HEADER + len];
            encode(&mut buf, 3, 9, false);
            let r = Record::of_message(&buf);
            assert_eq!((r.producer, r.seq), (3, 9));
            assert!(r.intact());
            assert_eq!(Record::from_bytes(&r.to_bytes()), r);
            if len > 0 {
                buf[HEADER + len / 2] ^= 1;
                assert!(!Record::of_message(&buf).intact());
            }
            buf.pop();
            assert!(!Record::of_message(&buf).intact() || buf.len() < HEADER);
        }
        let mut buf = vec![0; HEADER + 8];
        encode(&mut buf, 1, 2, true);
        assert!(!Record::of_message(&buf).intact());
        assert!(!Record::of_message(&buf[..10]).intact());
    }
}
