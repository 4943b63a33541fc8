//! The bridge's wire format: a fixed 48-byte little-endian header, then the payload
//! bytes unchanged. bridge/README.md documents it for readers in other languages.
//!
//! ```text
//! offset size field
//!  0     4    magic        b"TLYB"
//!  4     1    version      1
//!  5     1    flags        bit 0: byte-ring message (variable length); others 0
//!  6     2    header_len   48 (payload starts here; a later version may grow it)
//!  8     8    type_id      FNV-1a 64 of the payload's canonical schema text
//! 16     8    sequence     the message's position in the exported ring
//! 24     4    payload_len  bytes of payload after the header
//! 28     4    reserved     0
//! 32     8    stream       identity of the exported ring (changes if it is recreated)
//! 40     8    session      random per exporter process (changes on restart)
//! 48     n    payload
//! ```

/// First four bytes of every sample.
pub const MAGIC: [u8; 4] = *b"TLYB";
/// The version this build writes and reads.
pub const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 48;
/// Flag: the payload is one message of a byte ring (any length up to its maximum).
pub const FLAG_BYTES: u8 = 1;

/// A sample's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub flags: u8,
    pub type_id: u64,
    pub seq: u64,
    pub len: u32,
    pub stream: u64,
    pub session: u64,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5] = self.flags;
        out[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        out[8..16].copy_from_slice(&self.type_id.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..28].copy_from_slice(&self.len.to_le_bytes());
        out[28..32].copy_from_slice(&0u32.to_le_bytes());
        out[32..40].copy_from_slice(&self.stream.to_le_bytes());
        out[40..48].copy_from_slice(&self.session.to_le_bytes());
    }

    /// Decodes a sample (untrusted bytes): its header and payload, or why not.
    pub fn read(sample: &[u8]) -> Result<(Header, &[u8]), String> {
        if sample.len() < HEADER_LEN {
            return Err(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                sample.len()
            ));
        }
        if sample[0..4] != MAGIC {
            return Err("not a tally-bridge sample (bad magic)".into());
        }
        if sample[4] != VERSION {
            return Err(format!(
                "wire version {}, this build reads {VERSION}",
                sample[4]
            ));
        }
        let u16_at = |i: usize| u16::from_le_bytes([sample[i], sample[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes(sample[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(sample[i..i + 8].try_into().expect("8 bytes"));
        let header_len = usize::from(u16_at(6));
        if header_len < HEADER_LEN || header_len > sample.len() {
            return Err(format!("header length {header_len}"));
        }
        let h = Header {
            flags: sample[5],
            type_id: u64_at(8),
            seq: u64_at(16),
            len: u32_at(24),
            stream: u64_at(32),
            session: u64_at(40),
        };
        let payload = &sample[header_len..];
        if payload.len() != h.len as usize {
            return Err(format!(
                "payload of {} bytes, the header says {}",
                payload.len(),
                h.len
            ));
        }
        Ok((h, payload))
    }
}

/// An importer's acknowledgement on `KEY/@tally/ack`: 24 bytes, little-endian.
///
/// ```text
///  0  4  magic   b"TLYA"
///  4  4  version 1 (u32)
///  8  8  stream  the stream of the samples acknowledged
/// 16  8  next    every sequence below it is written (the next one expected)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub stream: u64,
    pub next: u64,
}

/// First four bytes of an acknowledgement.
pub const ACK_MAGIC: [u8; 4] = *b"TLYA";

impl Ack {
    /// The 24 bytes on the wire.
    pub fn to_bytes(self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..4].copy_from_slice(&ACK_MAGIC);
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..16].copy_from_slice(&self.stream.to_le_bytes());
        b[16..24].copy_from_slice(&self.next.to_le_bytes());
        b
    }

    /// Decodes untrusted bytes; `None` if they are not an acknowledgement.
    pub fn read(b: &[u8]) -> Option<Ack> {
        if b.len() != 24 || b[0..4] != ACK_MAGIC || b[4..8] != 1u32.to_le_bytes() {
            return None;
        }
        Some(Ack {
            stream: u64::from_le_bytes(b[8..16].try_into().ok()?),
            next: u64::from_le_bytes(b[16..24].try_into().ok()?),
        })
    }
}

/// FNV-1a 64, as tally hashes schema texts.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let h = Header {
            flags: 0,
            type_id: 0x0102_0304_0506_0708,
            seq: 42,
            len: 3,
            stream: 7,
            session: 9,
        };
        let mut buf = vec![0u8; HEADER_LEN + 3];
        h.write(&mut buf);
        buf[HEADER_LEN..].copy_from_slice(b"abc");
        let (got, payload) = Header::read(&buf).unwrap();
        assert_eq!(got, h);
        assert_eq!(payload, b"abc");
        assert_eq!(&buf[0..4], b"TLYB");
        assert_eq!(buf[16], 42, "little-endian sequence");
        assert!(Header::read(&buf[..HEADER_LEN + 2]).is_err());
        assert!(Header::read(&buf[..10]).is_err());
        let mut bad = buf.clone();
        bad[0] = b'X';
        assert!(Header::read(&bad).is_err());
        let mut bad = buf.clone();
        bad[4] = 2;
        assert!(Header::read(&bad).is_err());
        let mut bad = buf;
        bad[6] = 200;
        assert!(Header::read(&bad).is_err());
    }

    #[test]
    fn ack_round_trip() {
        let a = Ack {
            stream: 5,
            next: 77,
        };
        assert_eq!(Ack::read(&a.to_bytes()), Some(a));
        assert_eq!(Ack::read(&a.to_bytes()[..23]), None);
        let mut b = a.to_bytes();
        b[0] = 0;
        assert_eq!(Ack::read(&b), None);
    }

    #[test]
    fn fnv_matches_tally() {
        use tally::Message;
        assert_eq!(fnv1a(b"u64"), u64::schema().canonical_hash());
    }
}
