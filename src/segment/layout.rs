//! The in-segment header and holder table: what every tally segment starts with.
//!
//! ```text
//! offset 0          Header (256 bytes, one per segment)
//! table_offset      HolderRecord × table_capacity (32 bytes each)
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

/// `b"TALLYSEG"`: the first eight bytes of every segment.
pub const MAGIC: [u8; 8] = *b"TALLYSEG";
/// Bumped whenever the header, table or any object layout changes incompatibly.
pub const LAYOUT_VERSION: u32 = 1;
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Fingerprint {
    /// `size_of` the payload type (0 for raw bytes).
    pub size: u32,
    /// `align_of` the payload type (1 for raw bytes).
    pub align: u32,
    /// FNV-1a of the full type name.
    pub name_hash: u64,
    /// The type name, truncated, for error messages and `tally inspect`.
    pub name: [u8; TYPE_NAME_LEN],
}

impl Fingerprint {
    /// The fingerprint of `T`: its size, alignment and type name without module
    /// paths, so two programs that each define `struct Msg` with the same layout agree.
    pub fn of<T>() -> Self {
        Self::named(
            &short_type_name(std::any::type_name::<T>()),
            std::mem::size_of::<T>(),
            std::mem::align_of::<T>(),
        )
    }

    /// The fingerprint of untyped bytes.
    pub fn bytes() -> Self {
        Self::named("bytes", 0, 1)
    }

    fn named(name: &str, size: usize, align: usize) -> Self {
        let mut buf = [0u8; TYPE_NAME_LEN];
        let n = name.len().min(TYPE_NAME_LEN);
        buf[..n].copy_from_slice(&name.as_bytes()[..n]);
        Fingerprint {
            size: size as u32,
            align: align as u32,
            name_hash: crate::sys::fnv1a(name.as_bytes()),
            name: buf,
        }
    }

    /// The (possibly truncated) type name, lossily decoded.
    pub fn type_name(&self) -> String {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(TYPE_NAME_LEN);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

/// `a::b::Msg<c::D>` → `Msg<D>`: drops every module path from a type name.
fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut ident_start = 0;
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.truncate(ident_start);
            continue;
        }
        if !(c.is_alphanumeric() || c == '_') {
            out.push(c);
            ident_start = out.len();
            continue;
        }
        out.push(c);
    }
    out
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
    pub fingerprint: Fingerprint,
    pub creator_pid: u32,
    pub _pad0: u32,
    pub created_unix_ms: u64,
    // --- mutable, changed only under the admin lock -----------------------------------
    /// One of [`state`].
    pub state: AtomicU32,
    /// Non-zero while an admin-lock holder is mid-update; a successor that finds it set
    /// knows the previous holder died there and repairs the refcount from the table.
    pub admin_dirty: AtomicU32,
    /// Live holders, recomputed from the table by every sweep.
    pub refcount: AtomicU32,
    pub _pad1: u32,
    /// Number of dead holders reclaimed over the segment's life.
    pub reclaimed_total: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_LEN);

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

/// The validated, process-private copy of a segment's immutable header fields.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub kind: u32,
    pub table_capacity: u32,
    pub table_offset: usize,
    pub object_offset: usize,
    pub object_len: usize,
    pub total_len: usize,
    pub fingerprint: Fingerprint,
    pub creator_pid: u32,
    pub created_unix_ms: u64,
}

impl Layout {
    /// The layout of a new segment with `holders` slots and an object of `object_len`.
    pub fn new(
        kind: u32,
        holders: u32,
        object_len: usize,
        fingerprint: Fingerprint,
    ) -> Option<Self> {
        let table_offset = HEADER_LEN;
        let table_end = table_offset.checked_add((holders as usize).checked_mul(RECORD_LEN)?)?;
        let object_offset = table_end.checked_next_multiple_of(OBJECT_ALIGN)?;
        let total_len = object_offset.checked_add(object_len)?;
        if total_len as u64 > MAX_SEGMENT_LEN {
            return None;
        }
        Some(Layout {
            kind,
            table_capacity: holders,
            table_offset,
            object_offset,
            object_len,
            total_len,
            fingerprint,
            creator_pid: 0,
            created_unix_ms: 0,
        })
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
        let expected = Layout::new(kind, cap, 0, fp)
            .ok_or_else(|| LayoutError::Corrupt("holder table overflows".into()))?;
        if table_offset != expected.table_offset as u64
            || object_offset != expected.object_offset as u64
        {
            return Err(LayoutError::Corrupt(format!(
                "table at {table_offset} / object at {object_offset}, expected {} / {}",
                expected.table_offset, expected.object_offset
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
        Ok(Layout {
            kind,
            table_capacity: cap,
            table_offset: table_offset as usize,
            object_offset: object_offset as usize,
            object_len: object_len as usize,
            total_len: total_len as usize,
            fingerprint: fp,
            creator_pid: pid,
            created_unix_ms: ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::short_type_name;

    #[test]
    fn type_names_lose_their_module_paths() {
        assert_eq!(short_type_name("a::b::Msg"), "Msg");
        assert_eq!(
            short_type_name("a::Wrap<b::c::D, [u64; 2]>"),
            "Wrap<D, [u64; 2]>"
        );
        assert_eq!(short_type_name("u64"), "u64");
        assert_eq!(short_type_name("(x::A, y::B)"), "(A, B)");
    }
}
