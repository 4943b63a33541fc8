//! Errors of broadcast subscribers. The publisher's errors are the ring's
//! ([`ReserveError`](crate::ReserveError), [`TrySendError`](crate::TrySendError), ...):
//! a broadcast publisher is never *disconnected* (what it commits with no subscriber
//! waits in the ring for late joiners), and a lossy one is never full.
//!
//! *Lagged* (lossy rings only) means the publisher overwrote messages this subscriber
//! had not read: it carries exactly how many positions the subscriber skipped, and the
//! subscriber continues from the oldest message still in the ring. A message that was
//! overwritten while it was read in place counts among them: it was never returned as
//! good.

use std::fmt;

/// A lossy subscriber fell behind: the publisher overwrote this many messages it had
/// not read (including one overwritten while it was being read). The subscriber has
/// moved on to the oldest message still in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lagged(pub u64);

/// Why a non-blocking broadcast receive returned no message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BroadcastTryRecvError {
    /// Nothing new committed yet.
    Empty,
    /// Lossy: this many messages were overwritten before this subscriber read them;
    /// the next call reads the oldest one still in the ring.
    Lagged(u64),
    /// Nothing new committed, and the publisher has gone.
    Disconnected,
}

/// Why a blocking broadcast receive without a deadline returned no message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BroadcastRecvError {
    /// Lossy: this many messages were overwritten before this subscriber read them.
    Lagged(u64),
    /// Everything committed was received, and the publisher has gone.
    Disconnected,
}

/// Why a blocking broadcast receive with a deadline returned no message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BroadcastRecvTimeoutError {
    /// Nothing arrived before the deadline.
    Timeout,
    /// Lossy: this many messages were overwritten before this subscriber read them.
    Lagged(u64),
    /// Everything committed was received, and the publisher has gone.
    Disconnected,
}

impl From<Lagged> for BroadcastTryRecvError {
    fn from(l: Lagged) -> Self {
        BroadcastTryRecvError::Lagged(l.0)
    }
}

impl From<Lagged> for BroadcastRecvError {
    fn from(l: Lagged) -> Self {
        BroadcastRecvError::Lagged(l.0)
    }
}

impl From<Lagged> for BroadcastRecvTimeoutError {
    fn from(l: Lagged) -> Self {
        BroadcastRecvTimeoutError::Lagged(l.0)
    }
}

impl fmt::Display for Lagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lagged: {} messages were overwritten unread", self.0)
    }
}

impl fmt::Display for BroadcastTryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BroadcastTryRecvError::Empty => f.write_str("no new message"),
            BroadcastTryRecvError::Lagged(n) => fmt::Display::fmt(&Lagged(*n), f),
            BroadcastTryRecvError::Disconnected => {
                f.write_str("no new message and the publisher has gone")
            }
        }
    }
}

impl fmt::Display for BroadcastRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BroadcastRecvError::Lagged(n) => fmt::Display::fmt(&Lagged(*n), f),
            BroadcastRecvError::Disconnected => {
                f.write_str("no new message and the publisher has gone")
            }
        }
    }
}

impl fmt::Display for BroadcastRecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BroadcastRecvTimeoutError::Timeout => f.write_str("timed out waiting for a message"),
            BroadcastRecvTimeoutError::Lagged(n) => fmt::Display::fmt(&Lagged(*n), f),
            BroadcastRecvTimeoutError::Disconnected => {
                f.write_str("no new message and the publisher has gone")
            }
        }
    }
}

impl std::error::Error for Lagged {}
impl std::error::Error for BroadcastTryRecvError {}
impl std::error::Error for BroadcastRecvError {}
impl std::error::Error for BroadcastRecvTimeoutError {}
