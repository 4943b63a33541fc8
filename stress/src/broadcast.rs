//! `--subscribers S`: a publisher and S subscribers on a lossless broadcast ring
//! (issue 9), not built in this version of tally.
//!
//! Where it plugs in once the broadcast API exists (one module):
//!
//! - roles `Publisher` and `Subscriber` in [`crate::worker::Role`], with worker bodies
//!   here, written like `worker::queue`: the publisher sends the same sequenced,
//!   checksummed messages as a producer ([`crate::wire::encode`]) and stores its
//!   committed count after each commit; each subscriber appends a
//!   [`crate::wire::Record`] per message to its own log before it releases the message;
//! - the runner creates and holds the ring beside the others and spawns the seats;
//! - the check differs from a queue's: every subscriber must receive *every* committed
//!   message (from the point it joined), so run [`crate::check::check_queue`] once per
//!   subscriber seat (its successive processes' logs together), not once for all of
//!   them.

/// Whether this build has the broadcast ring.
pub const AVAILABLE: bool = false;

/// Refuses `--subscribers` while the broadcast ring is absent.
///
/// # Errors
/// A usage message when `subscribers > 0`.
pub fn check(subscribers: u32) -> Result<(), String> {
    if subscribers > 0 && !AVAILABLE {
        return Err(format!(
            "--subscribers {subscribers}: the broadcast ring (issue 9) is not built in this version of tally yet; run without --subscribers"
        ));
    }
    Ok(())
}
