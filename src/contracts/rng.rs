//! A small seedable RNG whose whole state can be saved in a checkpoint, so a resumed run
//! draws exactly the numbers an uninterrupted one would.

use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

/// xoshiro256++ (Blackman & Vigna), seeded through SplitMix64. Implements [`RngCore`], so every
/// `rand` distribution works with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainRng {
    s: [u64; 4],
}

impl TrainRng {
    /// The full state (for checkpoints).
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// Restore a state returned by [`state`](Self::state).
    pub fn from_state(s: [u64; 4]) -> Self {
        Self { s }
    }
}

impl RngCore for TrainRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

impl SeedableRng for TrainRng {
    type Seed = [u8; 8];

    fn from_seed(seed: [u8; 8]) -> Self {
        let mut x = u64::from_le_bytes(seed);
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self { s: [next(), next(), next(), next()] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn state_roundtrip_continues_the_stream() {
        let mut a = TrainRng::seed_from_u64(3);
        let _: f64 = a.random();
        let mut b = TrainRng::from_state(a.state());
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mean: f64 = (0..10000).map(|_| a.random::<f64>()).sum::<f64>() / 10000.0;
        assert!((mean - 0.5).abs() < 0.02);
    }
}
