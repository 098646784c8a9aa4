//! Activations quantized to 8 bits per value the way llama.cpp's CPU
//! backend does it, so that a dot product with quantized weights gives what
//! llama.cpp gives:
//! * [`Q8Block`] (ggml's `Q8_0`/`Q8_1`, for the 32-value formats): `d` is
//!   `max|x| / 127` rounded to f16, values `round_even(x * 127 / max|x|)`,
//!   and `s = d * sum(q)` (f16) for the formats with a minimum;
//! * [`Q8KBlock`] (`Q8_K`, for the k-quants): 256 values scaled by the
//!   signed value of largest magnitude, `d` in f32, and sums of each 16.

use half::f16;

/// 32 activations in 8 bits.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(8))]
pub struct Q8Block {
    /// The scale (an f16 value).
    pub d: f32,
    /// `d * sum(qs)` (an f16 value).
    pub s: f32,
    /// The quantized values.
    pub qs: [i8; 32],
}

impl Default for Q8Block {
    fn default() -> Self {
        Q8Block { d: 0.0, s: 0.0, qs: [0; 32] }
    }
}

/// 256 activations in 8 bits.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(8))]
pub struct Q8KBlock {
    /// The scale.
    pub d: f32,
    /// The quantized values.
    pub qs: [i8; 256],
    /// Sums of each 16 consecutive values.
    pub bsums: [i16; 16],
}

impl Default for Q8KBlock {
    fn default() -> Self {
        Q8KBlock { d: 0.0, qs: [0; 256], bsums: [0; 16] }
    }
}

fn to_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// `x` rounded to the nearest integer, ties to even, for `|x| < 2^22`
/// (the 8-bit range here): adding and removing 1.5 * 2^23 leaves no
/// fraction bits, and the default rounding mode rounds ties to even. Inline,
/// unlike `f32::round_ties_even`, which calls the C library without SSE4.1.
#[inline(always)]
fn round_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// Quantizes `x` (a multiple of 32 long) into `out` (`x.len() / 32` blocks).
pub fn quantize_q8(x: &[f32], out: &mut [Q8Block]) {
    for (xs, y) in x.chunks_exact(32).zip(out.iter_mut()) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in y.qs.iter_mut().zip(xs) {
            *q = round_even(v * id) as i8;
            sum += i32::from(*q);
        }
        y.d = to_f16(d);
        y.s = to_f16(d * sum as f32);
    }
}

/// Quantizes `x` (a multiple of 256 long) into `out` (`x.len() / 256` blocks).
pub fn quantize_q8k(x: &[f32], out: &mut [Q8KBlock]) {
    for (xs, y) in x.chunks_exact(256).zip(out.iter_mut()) {
        let max = xs.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        if max == 0.0 {
            *y = Q8KBlock::default();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in y.qs.iter_mut().zip(xs) {
            *q = (round_even(iscale * v) as i32).min(127) as i8;
        }
        for (s, q) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
            *s = q.iter().map(|&v| i16::from(v)).sum();
        }
        y.d = 1.0 / iscale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        for x in [-127.5f32, -2.5, -0.5, 0.49, 0.5, 1.5, 2.5, 3.7, 126.5, 127.0] {
            assert_eq!(round_even(x), x.round_ties_even(), "{x}");
        }
    }

    #[test]
    fn q8_blocks_hold_the_values_within_half_a_step() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.37).collect();
        let mut b = [Q8Block::default(); 2];
        quantize_q8(&x, &mut b);
        for (xs, blk) in x.chunks(32).zip(&b) {
            for (v, q) in xs.iter().zip(blk.qs) {
                assert!((v - blk.d * f32::from(q)).abs() <= blk.d * 0.51 + 1e-3, "{v} vs {q}");
            }
            let sum: i32 = blk.qs.iter().map(|&q| i32::from(q)).sum();
            assert!((blk.s - blk.d * sum as f32).abs() <= 1e-2 * blk.s.abs().max(1.0));
        }
        let mut z = [Q8Block::default()];
        quantize_q8(&[0.0; 32], &mut z);
        assert_eq!(z[0], Q8Block::default());
    }

    #[test]
    fn q8k_blocks_use_the_signed_extreme_and_sum_by_sixteen() {
        let x: Vec<f32> = (0..256).map(|i| (i as f32 - 200.0) * 0.01).collect();
        let mut b = [Q8KBlock::default()];
        quantize_q8k(&x, &mut b);
        assert_eq!(b[0].qs[0], -127, "the extreme maps to -127");
        assert!((b[0].d * f32::from(b[0].qs[0]) + 2.0).abs() < 1e-6);
        for (i, s) in b[0].bsums.iter().enumerate() {
            assert_eq!(*s, b[0].qs[16 * i..16 * i + 16].iter().map(|&q| i16::from(q)).sum::<i16>());
        }
    }
}
