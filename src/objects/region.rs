//! A raw byte region: the equivalent of a named file mapping.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::{Error, Result};
use crate::segment::{
    Fingerprint, Kind, ObjectMem, ObjectSpec, Options, Segment, SegmentInfo, SweepOutcome,
};

/// A named region of shared bytes, alive while any process holds a `Region` of it.
///
/// Readers and writers in different processes see each other's bytes; the region
/// itself provides no synchronisation beyond that, so use a ring, event or semaphore
/// to say when bytes are ready.
///
/// ```
/// # let name = format!("doc-region-{}", std::process::id());
/// let a = tally::Region::create(&name, 4096)?;
/// a.write(0, b"hello")?;
/// let b = tally::Region::open(&name)?;
/// let mut buf = [0u8; 5];
/// b.read(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// // Dropping the last handle unlinks the name.
/// # Ok::<(), tally::Error>(())
/// ```
pub struct Region {
    seg: Segment,
    mem: ObjectMem,
}

// SAFETY: the region hands out bytes only through atomic byte copies or a raw pointer
// whose use is the caller's responsibility; the segment handle is Send + Sync.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

fn spec(len: usize) -> ObjectSpec<'static> {
    ObjectSpec {
        kind: Kind::Bytes,
        fingerprint: Fingerprint::bytes(),
        object_len: len,
        init: Box::new(|_| {}),
        recover: crate::objects::recover_any,
    }
}

impl Region {
    /// Creates a region of `len` bytes, zeroed, with default [`Options`].
    ///
    /// # Errors
    /// [`Error::InvalidName`] or [`Error::InvalidArgument`] for a bad name or size;
    /// [`Error::AlreadyExists`] if a live object has the name; [`Error::NoSpace`] if
    /// `/dev/shm` cannot hold it; [`Error::PermissionDenied`] or [`Error::Io`] from the
    /// system.
    pub fn create(name: &str, len: usize) -> Result<Self> {
        Self::create_with(name, len, &Options::default())
    }

    /// Creates a region of `len` bytes with `opts`.
    ///
    /// # Errors
    /// [`Error::InvalidName`] or [`Error::InvalidArgument`] for a bad name or size;
    /// [`Error::AlreadyExists`] if a live object has the name; [`Error::NoSpace`] if
    /// `/dev/shm` cannot hold it; [`Error::PermissionDenied`] or [`Error::Io`] from the
    /// system.
    pub fn create_with(name: &str, len: usize, opts: &Options) -> Result<Self> {
        if len == 0 {
            return Err(Error::InvalidArgument(
                "a region needs at least one byte".into(),
            ));
        }
        Ok(Self::from_segment(Segment::create(name, &spec(len), opts)?))
    }

    /// Opens the live region `name`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no live object has the name; [`Error::KindMismatch`] or
    /// [`Error::LayoutMismatch`] if it holds another kind or payload;
    /// [`Error::VersionMismatch`] or [`Error::Corrupted`] for a segment this build
    /// cannot read; [`Error::TableFull`] if its holder table is full;
    /// [`Error::PermissionDenied`], [`Error::Timeout`] or [`Error::Io`] from the
    /// system.
    pub fn open(name: &str) -> Result<Self> {
        Self::open_with(name, &Options::default())
    }

    /// Opens the live region `name` with `opts`.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no live object has the name; [`Error::KindMismatch`] or
    /// [`Error::LayoutMismatch`] if it holds another kind or payload;
    /// [`Error::VersionMismatch`] or [`Error::Corrupted`] for a segment this build
    /// cannot read; [`Error::TableFull`] if its holder table is full;
    /// [`Error::PermissionDenied`], [`Error::Timeout`] or [`Error::Io`] from the
    /// system.
    pub fn open_with(name: &str, opts: &Options) -> Result<Self> {
        Ok(Self::from_segment(Segment::open(name, &spec(0), opts)?))
    }

    /// Opens `name`, or creates it with `len` bytes if no live region is there.
    /// Returns whether this call created it.
    ///
    /// # Errors
    /// As `create` and `open`; an existing region of another length is a
    /// [`Error::LayoutMismatch`].
    pub fn open_or_create(name: &str, len: usize, opts: &Options) -> Result<(Self, bool)> {
        if len == 0 {
            return Err(Error::InvalidArgument(
                "a region needs at least one byte".into(),
            ));
        }
        let (seg, created) = Segment::open_or_create(name, &spec(len), opts)?;
        Ok((Self::from_segment(seg), created))
    }

    fn from_segment(seg: Segment) -> Self {
        let mem = seg.object();
        Region { seg, mem }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.seg.name()
    }

    /// Length of the region in bytes.
    pub fn len(&self) -> usize {
        self.mem.len
    }

    /// Always `false`: regions have at least one byte.
    pub fn is_empty(&self) -> bool {
        self.mem.len == 0
    }

    fn check(&self, offset: usize, n: usize) -> Result<()> {
        match offset.checked_add(n) {
            Some(end) if end <= self.mem.len => Ok(()),
            _ => Err(Error::InvalidArgument(format!(
                "bytes {offset}..{offset}+{n} outside the {}-byte region",
                self.mem.len
            ))),
        }
    }

    /// The byte at `offset` as an atomic, so that copies racing with other threads or
    /// processes are defined behaviour (they may interleave, never tear a byte).
    fn byte(&self, offset: usize) -> &AtomicU8 {
        debug_assert!(offset < self.mem.len);
        // SAFETY: callers bounds-check `offset` against the mapped object length; a
        // byte of shared memory is always a valid, aligned AtomicU8.
        unsafe { &*(self.mem.ptr.add(offset) as *const AtomicU8) }
    }

    /// Copies `buf.len()` bytes at `offset` out of the region. Each byte is read with a
    /// relaxed atomic load: a concurrent writer can interleave with the copy, so
    /// synchronise (a ring, a semaphore) to read a consistent whole. For bulk speed
    /// under your own synchronisation, use [`as_ptr`](Region::as_ptr).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the range does not lie inside the region.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.byte(offset + i).load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// Copies `data` into the region at `offset`, byte by byte with relaxed atomic
    /// stores (see [`read`](Region::read)).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the range does not lie inside the region.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        for (i, &b) in data.iter().enumerate() {
            self.byte(offset + i).store(b, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The start of the region, 128-byte aligned, valid for `len()` bytes while `self`
    /// lives. Reads and writes through it race with other processes: synchronise them.
    pub fn as_ptr(&self) -> *mut u8 {
        self.mem.ptr
    }

    /// Reclaims dead holders now (open and create also do it).
    ///
    /// # Errors
    /// [`Error::Inherited`] in a forked child; [`Error::Timeout`] if the admin lock
    /// stays held longer than [`Options::timeout`](crate::Options::timeout).
    pub fn sweep(&self) -> Result<SweepOutcome> {
        self.seg.sweep()
    }

    /// Describes the segment: refcount, holders, sizes.
    pub fn info(&self) -> SegmentInfo {
        self.seg.info()
    }
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.seg.name())
            .field("len", &self.mem.len)
            .finish()
    }
}
