//! The objects that live in segments: their in-segment layout, algorithms and
//! recovery routines. The one OS call made from here is the futex wake on the ring's
//! cold path (a sleeper exists); sleeping and liveness probes live in the handle layer.

pub(crate) mod broadcast;
pub(crate) mod mpmc;
#[cfg(not(loom))]
pub(crate) mod region;
pub(crate) mod ring;
pub(crate) mod role;

pub(crate) mod event;
pub(crate) mod mutex;
pub(crate) mod semaphore;

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
        Kind::Semaphore => {
            if let Some(view) = semaphore_view(mem) {
                let returned = semaphore::recover(&view, slot);
                if returned > 0 {
                    let wake = &view.header().wake;
                    // SYNC POINT: Release pairs with the sleeper's Acquire load of `seq`.
                    wake.seq.fetch_add(1, crate::atomics::Ordering::Release);
                    crate::sys::futex_wake(&wake.seq, returned);
                }
            }
        }
        Kind::Mutex => {
            if let Some(view) = mutex_view(mem)
                && mutex::recover(&view, slot)
            {
                crate::sys::futex_wake(view.word(), u32::MAX);
            }
        }
        Kind::Broadcast | Kind::ByteBroadcast => {
            if let Some(view) = broadcast_view(mem) {
                let (publisher, dropped) = view.recover(slot);
                let wait = &view.header().wait;
                if publisher {
                    // Subscribers asleep wake to find the publisher gone.
                    // SYNC POINT: Release pairs with the sleeper's Acquire load.
                    wait.data.fetch_add(1, crate::atomics::Ordering::Release);
                    crate::sys::futex_wake(&wait.data, u32::MAX);
                }
                if dropped > 0 {
                    // A lossless publisher waiting for the dead subscriber goes on.
                    // SYNC POINT: as above, for the publisher's sleep on `space`.
                    wait.space.fetch_add(1, crate::atomics::Ordering::Release);
                    crate::sys::futex_wake(&wait.space, u32::MAX);
                }
            }
        }
        Kind::Event => {}
        Kind::Unknown(_) => {}
    }
}

#[cfg(not(loom))]
pub(crate) fn semaphore_view(mem: ObjectMem) -> Option<semaphore::SemView> {
    // SAFETY: the segment layer hands us its mapped, 128-aligned object area.
    let params = unsafe { semaphore::read_params(mem.ptr, mem.len) }.ok()?;
    // SAFETY: validated just above against the area's length.
    Some(unsafe { semaphore::SemView::new(mem.ptr, params) })
}

#[cfg(not(loom))]
pub(crate) fn broadcast_view(mem: ObjectMem) -> Option<broadcast::BcastView> {
    // SAFETY: the segment layer hands us its mapped, 128-aligned object area.
    let geo = unsafe { broadcast::read_geometry(mem.ptr, mem.len) }.ok()?;
    // SAFETY: geometry validated against the area's length just above.
    Some(unsafe { broadcast::BcastView::new(mem.ptr, geo) })
}

#[cfg(not(loom))]
/// What `tally inspect` shows of a broadcast ring in `mem`; `None` for other kinds or
/// an invalid header.
pub(crate) fn broadcast_info(kind: u32, mem: ObjectMem) -> Option<crate::segment::BroadcastInfo> {
    match Kind::from_tag(kind) {
        Kind::Broadcast | Kind::ByteBroadcast => Some(broadcast_view(mem)?.describe()),
        _ => None,
    }
}

#[cfg(not(loom))]
pub(crate) fn mutex_view(mem: ObjectMem) -> Option<mutex::MutexView> {
    // SAFETY: as in `semaphore_view`.
    unsafe { mutex::check(mem.ptr, mem.len) }.ok()?;
    // SAFETY: validated just above.
    Some(unsafe { mutex::MutexView::new(mem.ptr) })
}

#[cfg(not(loom))]
pub(crate) fn event_view(mem: ObjectMem) -> Option<event::EventView> {
    // SAFETY: as in `semaphore_view`.
    let manual = unsafe { event::check(mem.ptr, mem.len) }.ok()?;
    // SAFETY: validated just above.
    Some(unsafe { event::EventView::new(mem.ptr, manual) })
}

#[cfg(not(loom))]
/// What `tally inspect` shows of a semaphore, mutex or event in `mem`; `None` for other
/// kinds or an invalid header.
pub(crate) fn sync_info(kind: u32, mem: ObjectMem) -> Option<crate::segment::SyncInfo> {
    use crate::atomics::Ordering;
    use crate::segment::{EventInfo, MutexInfo, SemaphoreInfo, SyncInfo};
    match Kind::from_tag(kind) {
        Kind::Semaphore => {
            let v = semaphore_view(mem)?;
            let st = v.state();
            let resource = v.params.flavor == semaphore::FLAVOR_RESOURCE;
            Some(SyncInfo::Semaphore(SemaphoreInfo {
                flavor: if resource { "resource" } else { "signal" },
                count: st.avail,
                max: v.params.max,
                permits: if resource {
                    (0..v.params.records)
                        .map(|s| (s, v.held(s)))
                        .filter(|&(_, n)| n > 0)
                        .collect()
                } else {
                    Vec::new()
                },
                pending: (st.pending != 0).then(|| {
                    (
                        st.pending - 1,
                        if st.release { "release" } else { "acquire" },
                    )
                }),
                sleepers: v.header().wake.sleepers.load(Ordering::Relaxed),
            }))
        }
        Kind::Mutex => {
            let v = mutex_view(mem)?;
            let st = v.state();
            let line = &v.header().lock;
            Some(SyncInfo::Mutex(MutexInfo {
                owner_slot: st.owner.checked_sub(1),
                abandoned: st.abandoned,
                abandonments: line.abandonments.load(Ordering::Relaxed),
                sleepers: line.sleepers.load(Ordering::Relaxed),
            }))
        }
        Kind::Event => {
            let v = event_view(mem)?;
            Some(SyncInfo::Event(EventInfo {
                manual_reset: v.manual,
                set: v.load() & event::SET != 0,
                sleepers: v.line().sleepers.load(Ordering::Relaxed),
            }))
        }
        _ => None,
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

/// The slot shape every ring kind shares: `capacity` rounded up to a power of two (at
/// most `max_capacity`), a `word`-byte header word at the start of each slot, the
/// payload after it aligned to `align`, and a stride that is a power of two up to a
/// cache line (a small slot never straddles a line: its word and payload travel in one
/// transfer) or a whole number of lines above. `None` for what cannot be laid out.
/// Returns `(capacity, payload_offset, stride)`.
pub(crate) fn slot_shape(
    capacity: usize,
    max_capacity: u64,
    word: usize,
    payload_size: usize,
    align: usize,
) -> Option<(u64, usize, usize)> {
    if capacity == 0 || capacity as u64 > max_capacity || !align.is_power_of_two() {
        return None;
    }
    let payload_offset = word.next_multiple_of(align);
    let stride = payload_offset
        .checked_add(payload_size)?
        .next_multiple_of(align.max(word));
    let stride = if stride <= 64 {
        stride.next_power_of_two()
    } else {
        stride.next_multiple_of(64)
    };
    if stride > u32::MAX as usize || payload_size > u32::MAX as usize {
        return None;
    }
    Some((capacity.next_power_of_two() as u64, payload_offset, stride))
}
