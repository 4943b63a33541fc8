// The crate's front page is the README: the quick start, the guarantees and their
// limits. Its Rust examples run as doc tests. How the guarantees hold is in
// docs/ARCHITECTURE.md.
#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(clippy::missing_errors_doc)]

// The derive's output names `::tally`; this lets the library's own tests use it.
#[cfg(all(test, not(loom)))]
extern crate self as tally;

// Under `--cfg loom` only the lock-free core and the heap backend are built: the
// model checker runs the ring protocol without shared files or system calls.
#[cfg(not(loom))]
pub mod admin;
#[cfg(not(loom))]
mod broadcast;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
mod event;
#[cfg(not(loom))]
mod message;
#[cfg(not(loom))]
mod mpmc;
#[cfg(not(loom))]
mod mutex;
mod objects;
#[cfg(not(loom))]
mod ring;
#[cfg(not(loom))]
pub mod segment;
#[cfg(not(loom))]
mod semaphore;
#[cfg(loom)]
mod segment {
    pub(crate) mod heap;
}
pub(crate) mod atomics;
#[cfg(not(loom))]
mod sys;
#[cfg(not(loom))]
mod wait;

#[cfg(not(loom))]
pub use broadcast::{
    Broadcast, BroadcastRecvError, BroadcastRecvTimeoutError, BroadcastTryRecvError, ByteBroadcast,
    ByteBroadcastReadSlot, ByteBroadcastWriteSlot, BytePublisher, ByteSubscriber, Lagged, Policy,
    Publisher, ReadBatch as BroadcastReadBatch, ReadSlot as BroadcastReadSlot, Start, Subscriber,
    UntypedBroadcast, UntypedBroadcastReadSlot, UntypedBroadcastWriteSlot, UntypedPublisher,
    UntypedSubscriber, WriteBatch as BroadcastWriteBatch, WriteSlot as BroadcastWriteSlot,
};
#[cfg(not(loom))]
pub use error::{Error, Result};
#[cfg(not(loom))]
pub use event::{Event, EventWaitError, Reset};
#[cfg(not(loom))]
pub use message::{Field, Message, Schema};
#[cfg(not(loom))]
pub use mpmc::{
    MpmcByteConsumer, MpmcByteProducer, MpmcByteReadSlot, MpmcByteRing, MpmcByteWriteSlot,
    MpmcConsumer, MpmcProducer, MpmcReadSlot, MpmcRing, MpmcWriteSlot,
};
#[cfg(not(loom))]
pub use mutex::{LockError, Mutex, MutexGuard};
#[cfg(not(loom))]
pub use objects::region::Region;
#[cfg(not(loom))]
pub use ring::{
    ByteConsumer, ByteProducer, ByteReadBatch, ByteReadSlot, ByteRing, ByteWriteBatch,
    ByteWriteSlot, Consumer, PeerState, Producer, ReadBatch, ReadSlot, RecvError, RecvTimeoutError,
    ReserveError, ReserveTimeoutError, Ring, SendError, SendTimeoutError, TryRecvError,
    TrySendError, UntypedConsumer, UntypedProducer, UntypedReadSlot, UntypedRing, UntypedWriteSlot,
    WriteBatch, WriteSlot,
};
#[cfg(not(loom))]
pub use segment::{
    BroadcastInfo, ClaimInfo, EventInfo, HolderInfo, Kind, MutexInfo, Options, RingInfo, RoleInfo,
    SegmentInfo, SemaphoreInfo, SubscriberInfo, SweepOutcome, SyncInfo,
};
#[cfg(not(loom))]
pub use semaphore::{Flavor, Permit, Semaphore, SemaphorePostError, SemaphoreWaitError};
/// `#[derive(tally::Message)]`: see the [`Message`](trait@Message) trait.
#[cfg(all(feature = "derive", not(loom)))]
pub use tally_derive::Message;

#[cfg(not(loom))]
#[doc(hidden)]
pub mod __private {
    //! Hooks for tally's own tests. Not part of the API.
    pub use crate::segment::set_create_hook;

    /// Test hook: called with each step of a resource semaphore's acquire and release
    /// (1-3, 11-13) and of an event's set (21), by the process doing the operation.
    pub fn set_sync_step_hook(hook: fn(u32)) {
        crate::objects::semaphore::set_step_hook(hook);
    }
    pub use crate::sys::{
        block_termination_signals, default_sigpipe, futex_wait, futex_wake, monotonic_ns,
        pid_exists, pin_to_cpu, process_start_ticks, wait_termination_signal,
    };
}
