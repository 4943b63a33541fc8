//! The in-segment header and holder table: what every tally segment starts with.
//!
//! ```text
//! offset 0          Header (256 bytes, one per segment)
//! table_offset      HolderRecord × table_capacity (32 bytes each)
//! schema_offset     the payload's canonical schema text (schema_len bytes), right
//!                   after the table
//! object_offset     the object's own area (object_len bytes), 128-byte aligned
//! total_len         end of file
//! ```
//!
//! Lock bytes (file offsets used only for OFD locks, never for data):
//! byte 0 is the admin lock, byte `1 + i` is holder slot `i`'s liveness token.
//!
//! The immutable part of the header is written before the segment is published under
//! its name and is read by openers once, into a validated [`Layout`] copy; nothing
//! is re-read from shared memory after validation.

use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::message::BYTES;
pub(crate) use crate::message::MAX_SCHEMA_LEN;

/// `b"TALLYSEG"`: the first eight bytes of every segment.
pub const MAGIC: [u8; 8] = *b"TALLYSEG";
/// Bumped whenever the header, table or any object layout changes incompatibly.
pub const LAYOUT_VERSION: u32 = 2;
/// Bytes reserved for the header; the table starts here.
pub const HEADER_LEN: usize = 256;
/// Object areas start on this boundary: two cache lines, the prefetch pair on x86_64
/// (the same figure `crossbeam_utils::CachePadded` uses there).
pub const OBJECT_ALIGN: usize = 128;
/// Default holder-table capacity.
pub const DEFAULT_HOLDERS: u32 = 64;
/// Largest holder table a segment may declare.
pub const MAX_HOLDERS: u32 = 4096;
/// Largest segment tally creates or maps (1 TiB): a bound on hostile lengths.
pub const MAX_SEGMENT_LEN: u64 = 1 << 40;
/// Longest payload type name kept in the fingerprint.
pub const TYPE_NAME_LEN: usize = 48;

/// File offset of the admin lock byte.
pub const ADMIN_LOCK_BYTE: u64 = 0;
/// File offset of holder slot `slot`'s liveness lock byte.
pub const fn holder_lock_byte(slot: u32) -> u64 {
    1 + slot as u64
}

/// Lifecycle state of a segment (`Header::state`).
pub mod state {
    /// Being built under a temporary name; never seen under a public name.
    pub const INITIALIZING: u32 = 1;
    /// Published and usable.
    pub const READY: u32 = 2;
    /// The last holder left (or died): it is being or has been unlinked.
    pub const DESTROYING: u32 = 3;
    /// Unlinked by force (`tally rm`); holders keep their mapping but never unlink.
    pub const REMOVED: u32 = 4;
}

/// State of one holder slot (`HolderRecord::state`).
pub mod slot_state {
    /// Unused.
    pub const FREE: u32 = 0;
    /// Held; the holder's lock byte is its liveness token.
    pub const LIVE: u32 = 1;
}

/// What payload an object carries, so two programs that disagree fail at open.
///
/// Compared: the payload's size, alignment and canonical [`Schema`](crate::Schema)
/// text (field names, types and offsets, recursively; `bytes` for untyped objects).
/// Not compared: the type's name, kept for messages and `tally inspect`.
#[derive(Clone, Debug)]
pub struct Fingerprint {
    /// `size_of` the payload type (0 for raw bytes).
    pub size: u32,
    /// `align_of` the payload type (1 for raw bytes).
    pub align: u32,
    /// FNV-1a of the canonical schema text.
    pub schema_hash: u64,
    /// The canonical schema text (at most [`MAX_SCHEMA_LEN`] bytes when valid).
    schema: Box<[u8]>,
    /// The type name without module paths, truncated, for messages only.
    name: String,
    /// Why this program's payload type cannot be used (a manual `Message` impl whose
    /// schema does not describe the type); reported at create and open.
    defect: Option<String>,
}

impl Fingerprint {
    /// The fingerprint of `T`: its size, alignment and schema.
    pub fn of<T: crate::Message>() -> Self {
        Self::of_schema(
            &T::schema(),
            std::mem::size_of::<T>(),
            std::mem::align_of::<T>(),
        )
    }

    /// The fingerprint of a payload of `size` bytes aligned to `align` that `schema`
    /// describes: what [`of`](Self::of) gives for a type with that schema and layout.
    pub fn of_schema(schema: &crate::Schema, size: usize, align: usize) -> Self {
        let text = schema.canonical();
        let defect = if schema.size() != size || schema.align() != align {
            Some(format!(
                "its schema describes {} bytes aligned to {}, the type is {size} bytes aligned to {align}",
                schema.size(),
                schema.align()
            ))
        } else if text.len() > MAX_SCHEMA_LEN {
            Some(format!(
                "its schema is {} bytes long, over the {MAX_SCHEMA_LEN}-byte bound",
                text.len()
            ))
        } else if size > u32::MAX as usize {
            Some(format!("{size} bytes is too large a payload"))
        } else {
            schema.check().err()
        };
        Self::new(&schema.type_name(), size, align, text.into_bytes(), defect)
    }

    /// The fingerprint of untyped bytes.
    pub fn bytes() -> Self {
        Self::new("bytes", 0, 1, BYTES.as_bytes().to_vec(), None)
    }

    fn new(name: &str, size: usize, align: usize, schema: Vec<u8>, defect: Option<String>) -> Self {
        Fingerprint {
            size: size as u32,
            align: align as u32,
            schema_hash: crate::sys::fnv1a(&schema),
            schema: schema.into_boxed_slice(),
            name: truncate(name, TYPE_NAME_LEN).to_owned(),
            defect,
        }
    }

    /// The (possibly truncated) type name.
    pub fn type_name(&self) -> String {
        self.name.clone()
    }

    /// The canonical schema text, lossily decoded.
    pub fn schema_text(&self) -> String {
        String::from_utf8_lossy(&self.schema).into_owned()
    }

    /// Whether both describe the same payload (the type names are not compared).
    pub fn same_payload(&self, other: &Fingerprint) -> bool {
        self.size == other.size
            && self.align == other.align
            && self.schema_hash == other.schema_hash
            && self.schema == other.schema
    }

    /// Fails if this program's payload type cannot be used (see `defect`).
    pub(crate) fn check(&self) -> Result<(), String> {
        match &self.defect {
            None => Ok(()),
            Some(d) => Err(format!("payload type {}: {d}", self.name)),
        }
    }

    /// What differs between this program's payload (`self`) and the object's, first
    /// field first; `None` if they agree.
    pub(crate) fn mismatch(&self, object: &Fingerprint) -> Option<String> {
        if self.same_payload(object) {
            return None;
        }
        let what = crate::message::first_difference(&self.schema, &object.schema)
            .unwrap_or_else(|| "the payloads differ".to_owned());
        Some(format!(
            "{what} (payload {}, {} bytes, align {} here; {}, {} bytes, align {} in the object)",
            self.name, self.size, self.align, object.name, object.size, object.align
        ))
    }

    fn stored(&self) -> StoredFingerprint {
        let mut name = [0u8; TYPE_NAME_LEN];
        name[..self.name.len()].copy_from_slice(self.name.as_bytes());
        StoredFingerprint {
            size: self.size,
            align: self.align,
            schema_hash: self.schema_hash,
            name,
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    let end = (0..=max.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    &s[..end]
}

/// The header's copy of a [`Fingerprint`]; the schema text lies in its own area.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct StoredFingerprint {
    pub size: u32,
    pub align: u32,
    /// FNV-1a of the schema area's bytes.
    pub schema_hash: u64,
    /// The type name, truncated, zero-padded: for messages and `tally inspect`.
    pub name: [u8; TYPE_NAME_LEN],
}

/// The segment header. `#[repr(C)]`, fixed size, and only plain data and atomics.
#[repr(C)]
pub struct Header {
    // --- immutable after publication -------------------------------------------------
    pub magic: [u8; 8],
    pub layout_version: u32,
    pub kind: u32,
    pub header_len: u32,
    pub table_capacity: u32,
    pub table_offset: u64,
    pub object_offset: u64,
    pub object_len: u64,
    pub total_len: u64,
    pub fingerprint: StoredFingerprint,
    pub creator_pid: u32,
    pub _pad0: u32,
    pub created_unix_ms: u64,
    // --- mutable, changed under the admin lock (`refcount` also by a closing holder) ---
    /// One of [`state`].
    pub state: AtomicU32,
    /// Non-zero while an admin-lock holder is mid-update; a successor that finds it set
    /// knows the previous holder died there and repairs the refcount from the table.
    pub admin_dirty: AtomicU32,
    /// Used holder slots: incremented by a registering holder, decremented by a closing
    /// one (without the admin lock), set to the live count by every sweep. Dead holders
    /// not yet reclaimed are counted until a sweep. Diagnostics only.
    pub refcount: AtomicU32,
    pub _pad1: u32,
    /// Number of dead holders reclaimed over the segment's life.
    pub reclaimed_total: AtomicU64,
    // --- immutable after publication (added in layout version 2) ----------------------
    /// Where the payload's schema text lies: right after the table, before the object.
    pub schema_offset: u64,
    pub schema_len: u64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_LEN);
// The schema's place in the header, as docs/ARCHITECTURE.md and tests/message.rs give it.
const _: () = assert!(std::mem::offset_of!(Header, fingerprint) == 56);
const _: () = assert!(std::mem::offset_of!(Header, schema_offset) == 160);
const _: () = assert!(std::mem::offset_of!(Header, schema_len) == 168);

/// One holder: who it is (diagnostics) and whether the slot is used.
/// Liveness itself is the OFD lock on [`holder_lock_byte`], not these fields.
#[repr(C)]
pub struct HolderRecord {
    /// One of [`slot_state`].
    pub state: AtomicU32,
    pub pid: AtomicU32,
    pub start_ticks: AtomicU64,
    pub boot_id: AtomicU64,
    pub attached_unix_ms: AtomicU64,
}

/// Size of one holder record.
pub const RECORD_LEN: usize = std::mem::size_of::<HolderRecord>();
const _: () = assert!(RECORD_LEN == 32);

/// Why a header failed validation.
#[derive(Debug)]
pub enum LayoutError {
    /// Written by another layout version.
    Version(u32),
    /// Not a well-formed tally header.
    Corrupt(String),
}

/// The validated, process-private copy of a segment's immutable header fields and
/// payload schema.
#[derive(Clone, Debug)]
pub struct Layout {
    pub kind: u32,
    pub table_capacity: u32,
    pub table_offset: usize,
    pub schema_offset: usize,
    pub object_offset: usize,
    pub object_len: usize,
    pub total_len: usize,
    pub fingerprint: Fingerprint,
    pub creator_pid: u32,
    pub created_unix_ms: u64,
}

/// `(table_offset, schema_offset, object_offset)` for `holders` slots and a schema of
/// `schema_len` bytes.
fn offsets(holders: u32, schema_len: usize) -> Option<(usize, usize, usize)> {
    let table_offset = HEADER_LEN;
    let table_end = table_offset.checked_add((holders as usize).checked_mul(RECORD_LEN)?)?;
    let schema_end = table_end.checked_add(schema_len)?;
    Some((
        table_offset,
        table_end,
        schema_end.checked_next_multiple_of(OBJECT_ALIGN)?,
    ))
}

impl Layout {
    /// The layout of a new segment with `holders` slots, `fingerprint`'s schema and an
    /// object of `object_len`.
    pub fn new(
        kind: u32,
        holders: u32,
        object_len: usize,
        fingerprint: Fingerprint,
    ) -> Option<Self> {
        let (table_offset, schema_offset, object_offset) =
            offsets(holders, fingerprint.schema.len())?;
        let total_len = object_offset.checked_add(object_len)?;
        if total_len as u64 > MAX_SEGMENT_LEN {
            return None;
        }
        Some(Layout {
            kind,
            table_capacity: holders,
            table_offset,
            schema_offset,
            object_offset,
            object_len,
            total_len,
            fingerprint,
            creator_pid: 0,
            created_unix_ms: 0,
        })
    }

    /// The header's fixed-size copy of the fingerprint.
    pub fn stored_fingerprint(&self) -> StoredFingerprint {
        self.fingerprint.stored()
    }

    /// The schema text to write at `schema_offset`.
    pub fn schema_bytes(&self) -> &[u8] {
        &self.fingerprint.schema
    }

    /// Reads and validates the immutable header of a mapping of `mapped_len` bytes.
    ///
    /// # Safety
    /// `base` must be valid for reads of `mapped_len` bytes and 8-byte aligned.
    pub unsafe fn read(base: *const u8, mapped_len: usize) -> Result<Self, LayoutError> {
        if mapped_len < HEADER_LEN {
            return Err(LayoutError::Corrupt(format!(
                "file is {mapped_len} bytes, shorter than the {HEADER_LEN}-byte header"
            )));
        }
        // SAFETY: the caller guarantees HEADER_LEN readable, aligned bytes; a volatile
        // copy takes one snapshot that a concurrent writer cannot change under us.
        let magic = unsafe { std::ptr::read_volatile(base as *const [u8; 8]) };
        if magic != MAGIC {
            return Err(LayoutError::Corrupt(format!("bad magic {magic:02x?}")));
        }
        let h = base as *const Header;
        // SAFETY: as above; each field read is inside the header and aligned.
        let (
            version,
            kind,
            header_len,
            cap,
            table_offset,
            object_offset,
            object_len,
            total_len,
            fp,
            schema_offset,
            schema_len,
            pid,
            ms,
        ) = unsafe {
            (
                std::ptr::read_volatile(&raw const (*h).layout_version),
                std::ptr::read_volatile(&raw const (*h).kind),
                std::ptr::read_volatile(&raw const (*h).header_len),
                std::ptr::read_volatile(&raw const (*h).table_capacity),
                std::ptr::read_volatile(&raw const (*h).table_offset),
                std::ptr::read_volatile(&raw const (*h).object_offset),
                std::ptr::read_volatile(&raw const (*h).object_len),
                std::ptr::read_volatile(&raw const (*h).total_len),
                std::ptr::read_volatile(&raw const (*h).fingerprint),
                std::ptr::read_volatile(&raw const (*h).schema_offset),
                std::ptr::read_volatile(&raw const (*h).schema_len),
                std::ptr::read_volatile(&raw const (*h).creator_pid),
                std::ptr::read_volatile(&raw const (*h).created_unix_ms),
            )
        };
        if version != LAYOUT_VERSION {
            return Err(LayoutError::Version(version));
        }
        if header_len as usize != HEADER_LEN {
            return Err(LayoutError::Corrupt(format!(
                "header length {header_len}, expected {HEADER_LEN}"
            )));
        }
        if cap == 0 || cap > MAX_HOLDERS {
            return Err(LayoutError::Corrupt(format!(
                "holder table capacity {cap} outside 1..={MAX_HOLDERS}"
            )));
        }
        if schema_len == 0 || schema_len > MAX_SCHEMA_LEN as u64 {
            return Err(LayoutError::Corrupt(format!(
                "payload schema length {schema_len} outside 1..={MAX_SCHEMA_LEN}"
            )));
        }
        let (expected_table, expected_schema, expected_object) = offsets(cap, schema_len as usize)
            .ok_or_else(|| LayoutError::Corrupt("holder table overflows".into()))?;
        if table_offset != expected_table as u64
            || schema_offset != expected_schema as u64
            || object_offset != expected_object as u64
        {
            return Err(LayoutError::Corrupt(format!(
                "table at {table_offset} / schema at {schema_offset} / object at {object_offset}, expected {expected_table} / {expected_schema} / {expected_object}"
            )));
        }
        let end = object_offset
            .checked_add(object_len)
            .ok_or_else(|| LayoutError::Corrupt("object length overflows".into()))?;
        if end != total_len || total_len > mapped_len as u64 || total_len > MAX_SEGMENT_LEN {
            return Err(LayoutError::Corrupt(format!(
                "object {object_offset}+{object_len} and total length {total_len} do not fit the {mapped_len}-byte mapping"
            )));
        }
        // The schema area ends before object_offset <= total_len <= mapped_len (checked
        // above), so every byte read here is inside the mapping.
        let schema: Vec<u8> = (expected_schema..expected_schema + schema_len as usize)
            // SAFETY: in bounds (see above); bytes need no alignment; one volatile
            // snapshot of each byte, validated below before any use.
            .map(|i| unsafe { std::ptr::read_volatile(base.add(i)) })
            .collect();
        if crate::sys::fnv1a(&schema) != fp.schema_hash {
            return Err(LayoutError::Corrupt(
                "payload schema does not match its hash".into(),
            ));
        }
        if let Err(e) = crate::message::parse(&schema) {
            return Err(LayoutError::Corrupt(format!(
                "payload schema unreadable: {e}"
            )));
        }
        let name_end = fp
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(TYPE_NAME_LEN);
        let name = String::from_utf8_lossy(&fp.name[..name_end]);
        let mut fingerprint = Fingerprint::new(&name, 0, 0, schema, None);
        fingerprint.size = fp.size;
        fingerprint.align = fp.align;
        Ok(Layout {
            kind,
            table_capacity: cap,
            table_offset: table_offset as usize,
            schema_offset: schema_offset as usize,
            object_offset: object_offset as usize,
            object_len: object_len as usize,
            total_len: total_len as usize,
            fingerprint,
            creator_pid: pid,
            created_unix_ms: ms,
        })
    }
}
