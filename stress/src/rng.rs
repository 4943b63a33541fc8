//! A small seeded generator (splitmix64): the same `--seed` gives the same kill
//! schedule and the same choices in every worker.

/// splitmix64: good enough for choosing victims and delays, and reproducible.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting at `seed`.
    #[cfg(test)]
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator for one purpose (`salt`) of one run (`seed`): independent streams.
    pub fn derive(seed: u64, salt: u64) -> Self {
        Rng(mix(seed ^ mix(salt.wrapping_add(0x5851_f42d_4c95_7f2d))))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// A value in `lo..=hi` (`lo` if `hi < lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// `true` with probability `n / d`.
    pub fn chance(&mut self, n: u64, d: u64) -> bool {
        d > 0 && self.next_u64() % d < n
    }
}

/// The splitmix64 finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let (mut a, mut b) = (Rng::derive(7, 1), Rng::derive(7, 1));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::derive(7, 1).next_u64(), Rng::derive(7, 2).next_u64());
    }

    #[test]
    fn range_stays_inside() {
        let mut r = Rng::new(3);
        for _ in 0..1000 {
            let v = r.range(50, 200);
            assert!((50..=200).contains(&v));
        }
        assert_eq!(r.range(9, 9), 9);
    }
}
