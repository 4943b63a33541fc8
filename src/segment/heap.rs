//! The heap backend: object memory from the process's own allocator, with the same
//! alignment and zeroed start as a fresh segment, so object algorithms run under
//! loom (which cannot map shared files) exactly as they do in shared memory.

use std::alloc::{Layout, alloc_zeroed, dealloc};

/// A zeroed, 128-byte-aligned allocation standing in for a segment's object area.
pub(crate) struct HeapMem {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: HeapMem owns its allocation; what lives in it is synchronised by the
// algorithm under test, exactly as in shared memory.
unsafe impl Send for HeapMem {}
// SAFETY: as above.
unsafe impl Sync for HeapMem {}

impl HeapMem {
    /// Allocates `len` zeroed bytes aligned to 128.
    pub(crate) fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len.max(1), 128).expect("heap object size overflows");
        // SAFETY: the layout has non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory allocating {len} bytes");
        HeapMem { ptr, layout }
    }

    /// Start of the area.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for HeapMem {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}
