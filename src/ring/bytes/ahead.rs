//! Reading ahead of what is released, for byte rings: what a bridge needs to keep
//! messages in the ring until the far side has them (see `UntypedConsumer`).

use std::time::Duration;

use super::{ByteConsumer, ByteProducer, read_len};
use crate::objects::ring::endpoint::ConsumerCursor;
use crate::ring::RecvTimeoutError;
use crate::wait::deadline_after;

impl ByteConsumer {
    /// The ring position of the next message to read: how many messages the ring's
    /// consumers have released so far. It survives a consumer's restart.
    pub fn position(&self) -> u64 {
        self.cursor.head
    }

    /// The committed message `i` places after the next one to read (`0`: the next
    /// one), in place and without releasing anything; `None` if it is not committed
    /// (yet), or `i` is not below the capacity.
    pub fn peek_at(&self, i: u64) -> Option<&[u8]> {
        let view = &self.cursor.view;
        if i >= view.geo.capacity {
            return None;
        }
        let pos = self.cursor.head.wrapping_add(i);
        // Positions head..=pos are committed in order (one producer, which never
        // commits past a slot we have not released, as i < capacity).
        if !view.is_committed(pos) {
            return None;
        }
        // SAFETY: committed (Acquire in is_committed) and not released.
        let len = unsafe { read_len(view, pos) };
        // SAFETY: the message's bytes follow its length prefix inside the slot (the
        // length is clamped to the slot); committed and unreleased, so the producer
        // does not write them; the borrow of `self` keeps `release_n` away.
        Some(unsafe { std::slice::from_raw_parts(view.payload(pos).add(super::LEN_PREFIX), len) })
    }

    /// Waits at most `timeout` until the message `i` places after the next one is
    /// committed (see [`peek_at`](Self::peek_at)).
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`], or [`RecvTimeoutError::Disconnected`] once the
    /// producer has gone and it was never committed. `i` not below the capacity is a
    /// `Timeout` at once.
    pub fn wait_at(&mut self, i: u64, timeout: Duration) -> Result<(), RecvTimeoutError> {
        if i >= self.cursor.view.geo.capacity {
            return Err(RecvTimeoutError::Timeout);
        }
        let at = ConsumerCursor {
            view: self.cursor.view,
            head: self.cursor.head.wrapping_add(i),
        };
        self.shared
            .await_data(&at, self.spin, deadline_after(timeout), &mut self.probe)
    }

    /// Frees the next `n` messages for the producer, or as many of them as are
    /// committed. Returns how many it freed.
    pub fn release_n(&mut self, n: u64) -> u64 {
        let n = self.cursor.available(n.min(self.cursor.view.geo.capacity));
        if n > 0 {
            self.cursor.release(n);
        }
        n
    }
}

impl ByteProducer {
    /// The ring position the next committed message will have.
    pub fn position(&self) -> u64 {
        self.cursor.tail
    }
}
