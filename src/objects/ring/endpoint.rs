//! Producer and consumer cursors over a [`RingView`]: the hot path, free of system
//! calls, locks, allocation and read-modify-write atomics. Blocking lives in the
//! handle layer; these return "would block" and let it decide.

use super::RingView;
use crate::atomics::Ordering;

/// The producer's private cursor.
pub(crate) struct ProducerCursor {
    pub view: RingView,
    /// Next position to write.
    pub tail: u64,
    /// Last head we loaded; the ring has room while `tail - cached_head < capacity`.
    pub cached_head: u64,
}

impl ProducerCursor {
    /// A cursor continuing where the ring's last producer stopped.
    pub(crate) fn resume(view: RingView) -> Self {
        // The claim CAS (Acquire) already ordered us after the predecessor's `park` and
        // role release; Acquire here is belt and braces for recovery's store.
        let tail = view.header().tail.load(Ordering::Acquire);
        let head = view.load_head();
        // Positions use wrapping arithmetic so that no value a corrupt peer writes can
        // overflow. A tail more than a ring away from head is corrupt: start at head.
        let tail = if tail.wrapping_sub(head) <= view.geo.capacity {
            tail
        } else {
            head
        };
        ProducerCursor {
            view,
            tail,
            cached_head: head,
        }
    }

    /// Free slots, reloading head only when the cached value shows fewer than `want`.
    #[inline]
    pub(crate) fn free(&mut self, want: u64) -> u64 {
        let cap = self.view.geo.capacity;
        let mut free = cap - self.tail.wrapping_sub(self.cached_head).min(cap);
        if free < want {
            let head = self.view.load_head();
            // A head that went backwards or past tail is corrupt: ignore it, so our
            // writes never reach slots the consumer has not released.
            if head.wrapping_sub(self.cached_head) <= self.tail.wrapping_sub(self.cached_head) {
                self.cached_head = head;
            }
            free = cap - self.tail.wrapping_sub(self.cached_head).min(cap);
        }
        free
    }

    /// Publishes `n` reserved positions starting at `tail`.
    #[inline]
    pub(crate) fn commit(&mut self, n: u64) {
        let first = self.tail;
        for i in 0..n {
            self.view.publish(first.wrapping_add(i));
        }
        self.tail = first.wrapping_add(n);
        if self
            .view
            .header()
            .wait
            .consumer_waiting
            .load(Ordering::Relaxed)
            != 0
        {
            self.wake_consumer(first);
        }
    }

    /// Records where this producer stopped, for a successor. Called when the role is
    /// released; after a crash the sweep recomputes it from the seq words instead.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn park(&self) {
        self.view.store_tail(self.tail);
    }

    #[cold]
    fn wake_consumer(&self, pos: u64) {
        #[cfg(not(loom))]
        crate::sys::futex_wake(self.view.seq(pos), u32::MAX);
        #[cfg(loom)]
        let _ = pos;
    }
}

/// The consumer's private cursor.
pub(crate) struct ConsumerCursor {
    pub view: RingView,
    /// Next position to read.
    pub head: u64,
}

impl ConsumerCursor {
    /// A cursor continuing where the ring's last consumer stopped.
    pub(crate) fn resume(view: RingView) -> Self {
        let head = view.load_head();
        ConsumerCursor { view, head }
    }

    /// How many positions from `head` on are committed, up to `max`.
    #[inline]
    pub(crate) fn available(&self, max: u64) -> u64 {
        let mut n = 0;
        while n < max && self.view.is_committed(self.head.wrapping_add(n)) {
            n += 1;
        }
        n
    }

    /// Frees `n` positions from `head` for the producer.
    #[inline]
    pub(crate) fn release(&mut self, n: u64) {
        self.head = self.head.wrapping_add(n);
        self.view.store_head(self.head);
        if self
            .view
            .header()
            .wait
            .producer_waiting
            .load(Ordering::Relaxed)
            != 0
        {
            self.wake_producer();
        }
    }

    #[cold]
    fn wake_producer(&self) {
        #[cfg(not(loom))]
        crate::sys::futex_wake(&self.view.header().head.released, u32::MAX);
    }
}
