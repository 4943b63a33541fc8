//! Role words: which holder slot holds a role (a ring's producer or consumer), how
//! many times the role was claimed, and how its last holder left — in one 64-bit word,
//! so a claim, a release and a crash recovery are each a single CAS that nobody can
//! observe half done.
//!
//! ```text
//! bits  0..32  holder: holder slot + 1, or 0 (vacant)
//! bits 32..62  claims: how many times the role was claimed (0: never; wraps to 1)
//! bits 62..64  exit:   how the last holder left: 0 still held or never, 1 closed, 2 crashed
//! ```
//!
//! Every value a hostile peer can write decodes to some state; the handle layer then
//! checks the holder against the liveness table before believing it.

use crate::atomics::{AtomicU64, Ordering};

const HOLDER_MASK: u64 = 0xffff_ffff;
const CLAIMS_SHIFT: u32 = 32;
const CLAIMS_MASK: u64 = (1 << 30) - 1;
const EXIT_SHIFT: u32 = 62;

/// How the last holder of a role left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Held now, or never held.
    None,
    /// Released by its handle (drop).
    Closed,
    /// Vacated for a dead holder by a sweep or a claimant.
    Crashed,
}

/// A decoded role word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RoleState {
    /// Holder slot + 1, or 0.
    pub holder: u32,
    /// Claims so far (0: never claimed).
    pub claims: u32,
    pub exit: Exit,
}

impl RoleState {
    fn decode(w: u64) -> Self {
        RoleState {
            holder: (w & HOLDER_MASK) as u32,
            claims: ((w >> CLAIMS_SHIFT) & CLAIMS_MASK) as u32,
            exit: match w >> EXIT_SHIFT {
                1 => Exit::Closed,
                2 => Exit::Crashed,
                _ => Exit::None,
            },
        }
    }

    fn encode(self) -> u64 {
        let exit = match self.exit {
            Exit::None => 0,
            Exit::Closed => 1,
            Exit::Crashed => 2,
        };
        self.holder as u64
            | ((self.claims as u64 & CLAIMS_MASK) << CLAIMS_SHIFT)
            | (exit << EXIT_SHIFT)
    }

    /// The raw word (to remember a state cheaply).
    pub(crate) fn raw(self) -> u64 {
        self.encode()
    }

    /// Nobody holds the role.
    pub(crate) fn vacant(self) -> bool {
        self.holder == 0
    }

    /// The role was held once and nobody holds it now.
    pub(crate) fn vacated(self) -> bool {
        self.holder == 0 && self.claims > 0
    }

    /// The holder's slot in the holder table, if the role is held.
    pub(crate) fn holder_slot(self) -> Option<u32> {
        self.holder.checked_sub(1)
    }
}

/// One role of an object, in shared memory.
#[repr(transparent)]
pub(crate) struct RoleWord(AtomicU64);

impl RoleWord {
    pub(crate) fn new() -> Self {
        RoleWord(AtomicU64::new(0))
    }

    /// The current state.
    #[inline]
    pub(crate) fn load(&self) -> RoleState {
        // SYNC POINT: Acquire pairs with the Release CAS of `release`/`vacate_dead`, so
        // a reader that sees the role vacant sees what its holder left (tail, head).
        RoleState::decode(self.0.load(Ordering::Acquire))
    }

    /// Takes the role for holder slot `slot` if it is vacant; else returns who holds it.
    pub(crate) fn try_claim(&self, slot: u32) -> Result<(), RoleState> {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let st = RoleState::decode(cur);
            if !st.vacant() {
                return Err(st);
            }
            let claims = match st.claims.wrapping_add(1) as u64 & CLAIMS_MASK {
                0 => 1, // wraps past 2^30 claims to 1, never back to "never claimed"
                c => c as u32,
            };
            let next = RoleState {
                holder: slot + 1,
                claims,
                exit: Exit::None,
            };
            // SYNC POINT: Acquire pairs with the Release CAS that vacated the role
            // (`release` or `vacate_dead`), so we see the positions our predecessor left.
            match self.0.compare_exchange_weak(
                cur,
                next.encode(),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// Vacates the role if `slot` holds it, recording how it left.
    fn vacate(&self, slot_plus_one: u32, exit: Exit) -> bool {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let st = RoleState::decode(cur);
            if st.holder != slot_plus_one || slot_plus_one == 0 {
                return false;
            }
            let next = RoleState {
                holder: 0,
                claims: st.claims,
                exit,
            };
            // SYNC POINT: Release pairs with the Acquire of the next `try_claim` and of
            // `load`: what the holder wrote before leaving is visible to them.
            match self.0.compare_exchange_weak(
                cur,
                next.encode(),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// A holder's clean release. Only ever vacates the role from `slot`.
    pub(crate) fn release(&self, slot: u32) -> bool {
        self.vacate(slot + 1, Exit::Closed)
    }

    /// Vacates the role for a holder that is dead or not a live slot at all (`holder`
    /// as stored: slot + 1). A CAS: never takes the role from anyone else.
    pub(crate) fn vacate_dead(&self, holder: u32) -> bool {
        self.vacate(holder, Exit::Crashed)
    }

    /// Sets the raw word (tests and models only).
    #[cfg(loom)]
    pub(crate) fn set_holder_for_test(&self, slot: u32) {
        self.0.store(
            RoleState {
                holder: slot + 1,
                claims: 1,
                exit: Exit::None,
            }
            .encode(),
            Ordering::Relaxed,
        );
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn claim_release_crash_are_recorded() {
        let w = RoleWord::new();
        assert!(!w.load().vacated(), "never held is not vacated");
        w.try_claim(3).unwrap();
        assert_eq!(w.load().holder_slot(), Some(3));
        assert_eq!(w.try_claim(4).unwrap_err().holder_slot(), Some(3));
        assert!(!w.release(4), "only the holder releases");
        assert!(w.release(3));
        let st = w.load();
        assert!(st.vacated() && st.exit == Exit::Closed && st.claims == 1);
        w.try_claim(5).unwrap();
        assert!(w.vacate_dead(6));
        assert!(!w.vacate_dead(6));
        let st = w.load();
        assert!(st.vacated() && st.exit == Exit::Crashed && st.claims == 2);
    }

    #[test]
    fn any_word_decodes_and_claims_wrap_past_zero() {
        for raw in [0, u64::MAX, 1 << 63, 0x3fff_ffff_0000_0000] {
            let st = RoleState::decode(raw);
            assert_eq!(RoleState::decode(st.encode()), st);
        }
        let w = RoleWord(AtomicU64::new(CLAIMS_MASK << CLAIMS_SHIFT));
        w.try_claim(0).unwrap();
        assert_eq!(w.load().claims, 1, "wraps to 1, never to 'never claimed'");
    }
}
