//! Errors of ring operations, shared by the typed and the byte rings. Typed send
//! errors hand the value back; byte rings report with the reserve errors (the caller
//! still holds its slice).
//!
//! *Disconnected* means one thing everywhere: the call cannot complete because the peer
//! it needs has gone — its role was held once and is now vacant (its handle was
//! dropped, or its holder died and was reclaimed), or the process holding it is dead.
//! A receive reports it only after everything committed has been received; a send or
//! reservation only when the ring is full (what is sent into a ring without a consumer
//! waits there for the next one). Blocking calls notice a dead peer within one sleep
//! slice (10 ms); non-blocking calls at most every 5 ms (a kernel lock probe), and from
//! then on report it on every call.

use std::fmt;

/// Why [`Producer::try_send`](crate::Producer::try_send) did not send.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The ring is full; the value is handed back.
    Full(T),
    /// The ring is full and its consumer has gone; the value is handed back.
    Disconnected(T),
}

/// Why a blocking [`Producer::send`](crate::Producer::send) did not send: the consumer
/// has gone. The value is handed back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SendError<T>(pub T);

/// Why a blocking send with a timeout did not send.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SendTimeoutError<T> {
    /// The ring stayed full until the deadline; the value is handed back.
    Timeout(T),
    /// The consumer has gone; the value is handed back.
    Disconnected(T),
}

/// Why a non-blocking receive returned nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing committed yet.
    Empty,
    /// Nothing committed, and the producer has gone (see the module docs for when a
    /// non-blocking call notices a producer that died).
    Disconnected,
}

/// Why a blocking receive without a deadline returned nothing: everything committed
/// was received, and the producer has gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RecvError;

/// Why a blocking receive with a deadline returned nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// Nothing arrived before the deadline.
    Timeout,
    /// Everything committed was received, and the producer has gone.
    Disconnected,
}

/// Why a reservation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveError {
    /// No free slot.
    Full,
    /// No free slot, and the consumer has gone.
    Disconnected,
    /// The message is longer than the ring's slot (byte rings).
    TooLong {
        /// Bytes asked for.
        len: usize,
        /// Largest message the ring takes.
        max: usize,
    },
}

/// Why a waiting reservation ([`Producer::reserve_wait`](crate::Producer::reserve_wait),
/// [`Producer::reserve_timeout`](crate::Producer::reserve_timeout) and their byte-ring
/// twins) or a byte-ring send was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveTimeoutError {
    /// No slot came free before the deadline.
    Timeout,
    /// The ring is full and its consumer has gone.
    Disconnected,
    /// The message is longer than the ring's slot (byte rings).
    TooLong {
        /// Bytes asked for.
        len: usize,
        /// Largest message the ring takes.
        max: usize,
    },
}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl From<ReserveError> for ReserveTimeoutError {
    fn from(e: ReserveError) -> Self {
        match e {
            ReserveError::Full => ReserveTimeoutError::Timeout,
            ReserveError::Disconnected => ReserveTimeoutError::Disconnected,
            ReserveError::TooLong { len, max } => ReserveTimeoutError::TooLong { len, max },
        }
    }
}

impl From<RecvError> for RecvTimeoutError {
    fn from(_: RecvError) -> Self {
        RecvTimeoutError::Disconnected
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sending on a full ring whose consumer has gone")
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("receiving on an empty ring whose producer has gone")
    }
}

impl fmt::Display for ReserveTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReserveTimeoutError::Timeout => f.write_str("timed out waiting for a free slot"),
            ReserveTimeoutError::Disconnected => {
                f.write_str("no free slot and the consumer has gone")
            }
            ReserveTimeoutError::TooLong { len, max } => write!(
                f,
                "message of {len} bytes exceeds the ring's {max}-byte slots"
            ),
        }
    }
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v) | TrySendError::Disconnected(v) => v,
        }
    }
}

impl<T> SendTimeoutError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendTimeoutError::Timeout(v) | SendTimeoutError::Disconnected(v) => v,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "Full(..)",
            TrySendError::Disconnected(_) => "Disconnected(..)",
        })
    }
}

impl<T> fmt::Debug for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendTimeoutError::Timeout(_) => "Timeout(..)",
            SendTimeoutError::Disconnected(_) => "Disconnected(..)",
        })
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "sending on a full ring",
            TrySendError::Disconnected(_) => "sending on a full ring whose consumer has gone",
        })
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendTimeoutError::Timeout(_) => "timed out sending on a full ring",
            SendTimeoutError::Disconnected(_) => "sending on a full ring whose consumer has gone",
        })
    }
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TryRecvError::Empty => "receiving on an empty ring",
            TryRecvError::Disconnected => "receiving on an empty ring whose producer has gone",
        })
    }
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecvTimeoutError::Timeout => "timed out receiving on an empty ring",
            RecvTimeoutError::Disconnected => "receiving on an empty ring whose producer has gone",
        })
    }
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReserveError::Full => f.write_str("no free slot"),
            ReserveError::Disconnected => f.write_str("no free slot and the consumer has gone"),
            ReserveError::TooLong { len, max } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the ring's {max}-byte slots"
                )
            }
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}
impl<T> std::error::Error for SendError<T> {}
impl std::error::Error for RecvError {}
impl std::error::Error for ReserveTimeoutError {}
impl<T> std::error::Error for SendTimeoutError<T> {}
impl std::error::Error for TryRecvError {}
impl std::error::Error for RecvTimeoutError {}
impl std::error::Error for ReserveError {}
