//! A small seeded random number generator whose output is the same on every
//! machine and every device: SplitMix64 for the bits, 24-bit uniforms and
//! Box-Muller normals. `tensor.random` uses it; other ops that need seeded
//! noise can too.
//!
//! Box-Muller computes `ln`, `cos` and `sin` in f64 and rounds the result to
//! f32; platform math libraries agree on these within an ulp of f64, which the
//! rounding to f32 absorbs (a mismatch needs a value within 2^-29 of an f32
//! rounding boundary).

use std::f64::consts::TAU;

use candle_core::{Device, Tensor};

/// The SplitMix64 generator (Steele, Lea and Flood, 2014).
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator for `seed`; every seed, 0 included, gives a good stream.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `[0, 1)` with 24 random bits (exact in f32).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// A uniform value in `[0, 1)` with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Fills `out` with uniform values in `[0, 1)`, one draw each.
    pub fn fill_uniform(&mut self, out: &mut [f32]) {
        for x in out {
            *x = self.next_f32();
        }
    }

    /// Fills `out` with standard normal values. Values come in pairs from two
    /// draws (Box-Muller: cosine, then sine); an odd length drops the last sine,
    /// so filling in chunks of even length gives the same values as one fill.
    pub fn fill_normal(&mut self, out: &mut [f32]) {
        for pair in out.chunks_mut(2) {
            // 1 - u lies in (0, 1], so the logarithm is finite.
            let radius = (-2.0 * (1.0 - self.next_f64()).ln()).sqrt();
            let angle = TAU * self.next_f64();
            pair[0] = (radius * angle.cos()) as f32;
            if let Some(second) = pair.get_mut(1) {
                *second = (radius * angle.sin()) as f32;
            }
        }
    }
}

/// A CPU float32 tensor of normal values with standard deviation `std`,
/// drawn from a stream seeded by `name` (its FNV-1a hash): the same tensor
/// for the same name on every machine, whatever order tensors are made in.
/// The tiny test models are made of these.
pub fn named_normal(name: &str, shape: &[usize], std: f32) -> candle_core::Result<Tensor> {
    let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325, |h: u64, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let mut values = vec![0f32; shape.iter().product()];
    SplitMix64::new(seed).fill_normal(&mut values);
    values.iter_mut().for_each(|v| *v *= std);
    Tensor::from_vec(values, shape, &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_stream() {
        // First outputs of the reference C implementation for seed 1234567.
        let mut rng = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423
            ]
        );
    }

    #[test]
    fn chunked_normal_fill_equals_one_fill() {
        let mut whole = vec![0.0; 10];
        SplitMix64::new(9).fill_normal(&mut whole);
        let mut rng = SplitMix64::new(9);
        let mut parts = vec![0.0; 10];
        let (a, b) = parts.split_at_mut(4);
        rng.fill_normal(a);
        rng.fill_normal(b);
        assert_eq!(whole, parts);
    }

    #[test]
    fn moments_look_right() {
        let n = 200_000;
        let mut rng = SplitMix64::new(42);
        let mut normal = vec![0.0f32; n];
        rng.fill_normal(&mut normal);
        let mean = normal.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = normal
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");

        let mut uniform = vec![0.0f32; n];
        rng.fill_uniform(&mut uniform);
        assert!(uniform.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = uniform.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }
}
