//! Errors of ring operations. Send errors hand the value back.

use std::fmt;

/// Why [`Producer::try_send`](crate::Producer::try_send) did not send.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The ring is full; the value is handed back.
    Full(T),
    /// The ring is full and its consumer has gone; the value is handed back.
    Disconnected(T),
}

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
    /// Nothing committed, and the producer role is vacant: dropped, or died and
    /// reclaimed by a sweep. A non-blocking call makes no system call, so a producer
    /// that died unnoticed reads as `Empty` until a sweep runs (a blocking receive,
    /// [`Consumer::is_disconnected`](crate::Consumer::is_disconnected), an open, a claim
    /// or `tally sweep`).
    Disconnected,
}

/// Why a blocking receive returned nothing.
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
            SendTimeoutError::Disconnected(_) => "sending on a ring whose consumer has gone",
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
impl<T> std::error::Error for SendTimeoutError<T> {}
impl std::error::Error for TryRecvError {}
impl std::error::Error for RecvTimeoutError {}
impl std::error::Error for ReserveError {}
