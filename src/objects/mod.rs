//! The objects that live in segments: their in-segment layout, algorithms and
//! recovery routines. The one OS call made from here is the futex wake on the ring's
//! cold path (a sleeper exists); sleeping and liveness probes live in the handle layer.

pub(crate) mod mpmc;
#[cfg(not(loom))]
pub(crate) mod region;
pub(crate) mod ring;
pub(crate) mod role;

#[cfg(not(loom))]
use crate::segment::{Kind, ObjectMem};

#[cfg(not(loom))]
/// The sweep's recovery routine for every object kind: undo what the dead holder in
/// `slot` left behind in the object area. Runs under the segment's admin lock.
pub(crate) fn recover_any(kind: u32, mem: ObjectMem, slot: u32) {
    match Kind::from_tag(kind) {
        Kind::Bytes => {}
        Kind::SpscRing | Kind::ByteRing => {
            // SAFETY: the segment layer hands us its mapped, 128-aligned object area.
            if let Ok(geo) = unsafe { ring::read_geometry(mem.ptr, mem.len) } {
                // SAFETY: geometry validated against the area's length just above.
                let view = unsafe { ring::RingView::new(mem.ptr, geo) };
                ring::recover(&view, slot);
            }
        }
        Kind::MpmcRing | Kind::MpmcByteRing => {
            // SAFETY: the segment layer hands us its mapped, 128-aligned object area.
            if let Ok(geo) = unsafe { mpmc::read_geometry(mem.ptr, mem.len) } {
                // SAFETY: geometry validated against the area's length just above.
                let view = unsafe { mpmc::MpmcView::new(mem.ptr, geo) };
                view.recover(slot);
            }
        }
        Kind::Unknown(_) => {}
    }
}

#[cfg(not(loom))]
/// What `tally inspect` shows of the object in `mem`, for kinds that have more to show
/// than the segment header: rings. `None` for other kinds or an invalid ring header.
pub(crate) fn ring_info(kind: u32, mem: ObjectMem) -> Option<crate::segment::RingInfo> {
    match Kind::from_tag(kind) {
        Kind::SpscRing | Kind::ByteRing => {
            // SAFETY: the segment layer hands us its mapped, 128-aligned object area.
            let geo = unsafe { ring::read_geometry(mem.ptr, mem.len) }.ok()?;
            // SAFETY: geometry validated against the area's length just above.
            let view = unsafe { ring::RingView::new(mem.ptr, geo) };
            Some(ring::describe(&view))
        }
        Kind::MpmcRing | Kind::MpmcByteRing => {
            // SAFETY: as above.
            let geo = unsafe { mpmc::read_geometry(mem.ptr, mem.len) }.ok()?;
            // SAFETY: as above.
            let view = unsafe { mpmc::MpmcView::new(mem.ptr, geo) };
            Some(view.describe())
        }
        _ => None,
    }
}
