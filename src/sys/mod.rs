//! Every call into the operating system, and nothing else.
//!
//! The layers above ask for mechanisms (create a file exclusively, take a
//! kernel-released lock on one byte, sleep on a word); the policy of when and why lives
//! in `segment` and the objects. Linux is the first target; another OS gets a sibling
//! module with the same functions.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("tally supports Linux only for now; see docs/ARCHITECTURE.md (sys layer)");
