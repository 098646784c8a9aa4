//! The 32-bit Mersenne Twister MT19937 (Matsumoto and Nishimura, 1998), the
//! engine behind torch's CPU generator: its raw output equals
//! `std::mt19937(seed)` and numpy's `RandomState(seed)`.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// An MT19937 generator: 624 words of state and the index of the next one.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    next: usize,
}

impl Mt19937 {
    /// A generator seeded as `std::mt19937(seed)`: Knuth's initialisation
    /// multiplier 1812433253; the first draw regenerates the whole state.
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; N];
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, next: N }
    }

    /// The next 32 random bits (tempered).
    pub fn next_u32(&mut self) -> u32 {
        if self.next == N {
            self.regenerate();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// Twists the whole state once (the next 624 outputs).
    fn regenerate(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & UPPER_MASK) | (self.state[(i + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.next = 0;
    }
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_outputs() {
        // C++11 requires the 10000th output of a default-seeded (5489)
        // std::mt19937 to be 4123659995.
        let mut mt = Mt19937::new(5489);
        assert_eq!(mt.next_u32(), 3_499_211_612);
        let last = (1..10_000).map(|_| mt.next_u32()).last().unwrap();
        assert_eq!(last, 4_123_659_995);
        // numpy.random.RandomState(42)._bit_generator.random_raw(2)
        let mut mt = Mt19937::new(42);
        assert_eq!(
            [mt.next_u32(), mt.next_u32()],
            [1_608_637_542, 3_421_126_067]
        );
    }
}
