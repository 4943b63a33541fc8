//! Atomics and cells used by the lock-free algorithms, switchable to loom.
//!
//! Under `--cfg loom` the object algorithms run on the heap backend against loom's
//! model-checked types; otherwise these are the std types, whose layout is fixed and
//! can therefore live in shared memory.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
