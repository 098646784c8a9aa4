//! The three transforms of Winograd's F(4x4, 3x3) with interpolation points
//! 0, ±1, ±2 and infinity: `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` for a 6x6 input
//! patch `d`, a 3x3 kernel `g` and a 4x4 output `Y`.
//!
//! The input and output transforms work on vectors holding the same element
//! of `LANES` neighbouring tiles of one row ([`TileLanes`]), so they run
//! with full SIMD width on NCHW data; the kernel transform runs in f64.

use crate::kernels::simd::{Scalar, Simd};

/// `G x` for three values `x`, with `G` (6x3) the kernel transform:
/// rows `[1/4, 0, 0]`, `[-1/6, -1/6, -1/6]`, `[-1/6, 1/6, -1/6]`,
/// `[1/24, 1/12, 1/6]`, `[1/24, -1/12, 1/6]`, `[0, 0, 1]`.
#[inline(always)]
fn kernel_1d([a, b, c]: [f64; 3]) -> [f64; 6] {
    let (sixth, twelfth, twentyfourth) = (1.0 / 6.0, 1.0 / 12.0, 1.0 / 24.0);
    let (even, odd) = ((a + c) * sixth, b * sixth);
    let (even24, odd12) = (a * twentyfourth + c * sixth, b * twelfth);
    [a * 0.25, -(even + odd), odd - even, even24 + odd12, even24 - odd12, c]
}

/// `G g Gᵀ` of one 3x3 kernel (row-major), as 36 values (row-major 6x6),
/// computed in f64.
pub(super) fn kernel(g: &[f32]) -> [f32; 36] {
    let g = |i: usize| f64::from(g[i]);
    let columns = [0, 1, 2].map(|j| kernel_1d([g(j), g(3 + j), g(6 + j)])); // G g, by column
    let mut out = [0f32; 36];
    for i in 0..6 {
        let row = kernel_1d([columns[0][i], columns[1][i], columns[2][i]]);
        for (j, v) in row.into_iter().enumerate() {
            out[i * 6 + j] = v as f32;
        }
    }
    out
}

/// Vectors of `LANES` tiles: element `k` (of 4) of every tile.
pub(super) trait TileLanes: Simd {
    /// Splits `4 * LANES` consecutive values (four per tile) into four
    /// vectors, one per position within a tile, tiles in this type's lane
    /// order.
    ///
    /// # Safety
    /// The instruction set of the implementation, `p` valid for `4 * LANES`
    /// reads.
    unsafe fn load4(p: *const f32) -> [Self::V; 4];
    /// The inverse of [`TileLanes::load4`].
    ///
    /// # Safety
    /// As `load4`, for writes.
    unsafe fn store4(p: *mut f32, v: [Self::V; 4]);
}

impl TileLanes for Scalar {
    #[inline(always)]
    unsafe fn load4(p: *const f32) -> [f32; 4] {
        [*p, *p.add(1), *p.add(2), *p.add(3)]
    }
    #[inline(always)]
    unsafe fn store4(p: *mut f32, v: [f32; 4]) {
        for (k, x) in v.into_iter().enumerate() {
            *p.add(k) = x;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::TileLanes;
    use crate::kernels::simd::Avx2;

    /// A 4x4 transpose within each 128-bit half: rows `a..d` of four
    /// values become columns. Its own inverse.
    #[inline(always)]
    unsafe fn transpose(a: __m256, b: __m256, c: __m256, d: __m256) -> [__m256; 4] {
        let (t0, t1) = (_mm256_unpacklo_ps(a, b), _mm256_unpacklo_ps(c, d));
        let (t2, t3) = (_mm256_unpackhi_ps(a, b), _mm256_unpackhi_ps(c, d));
        [
            _mm256_shuffle_ps::<0x44>(t0, t1),
            _mm256_shuffle_ps::<0xEE>(t0, t1),
            _mm256_shuffle_ps::<0x44>(t2, t3),
            _mm256_shuffle_ps::<0xEE>(t2, t3),
        ]
    }

    /// Lane order: tiles 0, 2, 4, 6, 1, 3, 5, 7.
    impl TileLanes for Avx2 {
        #[inline(always)]
        unsafe fn load4(p: *const f32) -> [__m256; 4] {
            transpose(
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            )
        }
        #[inline(always)]
        unsafe fn store4(p: *mut f32, v: [__m256; 4]) {
            let [a, b, c, d] = transpose(v[0], v[1], v[2], v[3]);
            _mm256_storeu_ps(p, a);
            _mm256_storeu_ps(p.add(8), b);
            _mm256_storeu_ps(p.add(16), c);
            _mm256_storeu_ps(p.add(24), d);
        }
    }
}

/// `Bᵀ d` for six values `d`.
#[inline(always)]
pub(super) unsafe fn input_1d<S: Simd>(d: [S::V; 6]) -> [S::V; 6] {
    let (two, four) = (S::splat(2.0), S::splat(4.0));
    let d4_minus_d2 = S::sub(d[4], d[2]);
    let d3_minus_d1 = S::sub(d[3], d[1]);
    [
        S::fma(four, S::sub(d[0], d[2]), d4_minus_d2),
        S::fma(S::splat(-4.0), S::add(d[1], d[2]), S::add(d[3], d[4])),
        S::fma(four, S::sub(d[1], d[2]), S::sub(d[4], d[3])),
        S::fma(two, d3_minus_d1, d4_minus_d2),
        S::fma(S::splat(-2.0), d3_minus_d1, d4_minus_d2),
        S::fma(four, S::sub(d[1], d[3]), S::sub(d[5], d[3])),
    ]
}

/// `Aᵀ m` for six values `m`.
#[inline(always)]
pub(super) unsafe fn output_1d<S: Simd>(m: [S::V; 6]) -> [S::V; 4] {
    let (p12, m12) = (S::add(m[1], m[2]), S::sub(m[1], m[2]));
    let (p34, m34) = (S::add(m[3], m[4]), S::sub(m[3], m[4]));
    [
        S::add(S::add(m[0], p12), p34),
        S::fma(S::splat(2.0), m34, m12),
        S::fma(S::splat(4.0), p34, p12),
        S::add(S::fma(S::splat(8.0), m34, m12), m[5]),
    ]
}

/// `Bᵀ d B` of the 6x6 patch of `LANES` tiles whose rows start at
/// `rows[r]` (the tiles' first columns, four apart): the 36 values, row-major.
#[inline(always)]
pub(super) unsafe fn input_tile<S: TileLanes>(rows: [*const f32; 6]) -> [S::V; 36] {
    let mut h = [[S::zero(); 6]; 6];
    for (r, &p) in rows.iter().enumerate() {
        let [a, b, c, d] = S::load4(p);
        let [e, f, _, _] = S::load4(p.add(4));
        h[r] = input_1d::<S>([a, b, c, d, e, f]);
    }
    let mut v = [S::zero(); 36];
    for j in 0..6 {
        let col = input_1d::<S>([h[0][j], h[1][j], h[2][j], h[3][j], h[4][j], h[5][j]]);
        for (i, x) in col.into_iter().enumerate() {
            v[i * 6 + j] = x;
        }
    }
    v
}

/// `Aᵀ m A` of the 36 products `m` (row-major) of `LANES` tiles: the 4x4
/// outputs, `[row][column]`.
#[inline(always)]
pub(super) unsafe fn output_tile<S: Simd>(m: &[S::V; 36]) -> [[S::V; 4]; 4] {
    let mut a = [[S::zero(); 4]; 6];
    for (r, row) in a.iter_mut().enumerate() {
        *row = output_1d::<S>([
            m[r * 6],
            m[r * 6 + 1],
            m[r * 6 + 2],
            m[r * 6 + 3],
            m[r * 6 + 4],
            m[r * 6 + 5],
        ]);
    }
    let mut y = [[S::zero(); 4]; 4];
    for k in 0..4 {
        let col = output_1d::<S>([a[0][k], a[1][k], a[2][k], a[3][k], a[4][k], a[5][k]]);
        for (r, x) in col.into_iter().enumerate() {
            y[r][k] = x;
        }
    }
    y
}
