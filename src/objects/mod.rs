//! The objects that live in segments: their in-segment layout, algorithms and
//! recovery routines. Nothing here calls the OS; blocking goes through `sys` futexes
//! via the handle layer.

pub(crate) mod region;

use crate::segment::{Kind, ObjectMem};

/// The sweep's recovery routine for every object kind: undo what the dead holder in
/// `slot` left behind in the object area. Runs under the segment's admin lock.
pub(crate) fn recover_any(kind: u32, mem: ObjectMem, slot: u32) {
    match Kind::from_tag(kind) {
        Kind::Bytes => {}
        Kind::SpscRing => {
            let _ = (mem, slot);
        }
        Kind::Unknown(_) => {}
    }
}
