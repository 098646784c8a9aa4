//! x86-64 dot products of one weight row with 8-bit activations, for the
//! 32-value formats and the k-quants: AVX2 (`maddubs` + `madd`) and AVX-512
//! VNNI (`vpdpbusd` on 256-bit vectors). One generic kernel per format, instantiated inside
//! `#[target_feature]` functions that [`super::kernels`] picks at run time;
//! each is tested against [`super::scalar`].

use std::arch::x86_64::*;

use super::act::{Q8Block, Q8KBlock};
use super::formats::scale_min_k4;

/// Multiplies 32 unsigned bytes by 32 signed bytes and sums each group of
/// four products into 8 i32 lanes.
pub(super) trait MulSum {
    unsafe fn mul_sum_u8_i8(u: __m256i, s: __m256i) -> __m256i;
}

/// AVX2: `maddubs` (pairs into i16, no overflow for the values used here)
/// then `madd` with ones.
pub(super) struct Avx2;

impl MulSum for Avx2 {
    #[inline(always)]
    unsafe fn mul_sum_u8_i8(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }
}

/// AVX-512 VNNI: `vpdpbusd` does it in one instruction.
pub(super) struct Vnni;

impl MulSum for Vnni {
    #[inline(always)]
    unsafe fn mul_sum_u8_i8(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }
}

/// Signed times signed, by moving the sign of `x` onto `y`.
#[inline(always)]
unsafe fn mul_sum_i8_i8<M: MulSum>(x: __m256i, y: __m256i) -> __m256i {
    M::mul_sum_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// The 32 nibbles of 16 bytes, low nibbles first, as bytes.
#[inline(always)]
unsafe fn nibbles(qs: *const u8) -> __m256i {
    let tmp = _mm_loadu_si128(qs as *const __m128i);
    _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp), _mm256_set1_epi8(0x0F))
}

/// Byte `j` is 0xFF where bit `j` of the little-endian u32 at `p` is set.
#[inline(always)]
unsafe fn bits(p: *const u8) -> __m256i {
    let x = u32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)]) as i32;
    let shuffle = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x), shuffle);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

#[inline(always)]
unsafe fn half(p: *const u8) -> f32 {
    let bits = i32::from(u16::from_le_bytes([*p, *p.add(1)]));
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
}

#[inline(always)]
unsafe fn act_bytes(y: &Q8Block) -> __m256i {
    _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i)
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Sums `scale(block) * products(block)` over the blocks of a row, the
/// integer `products` of a block given as 8 lanes, into 8 float lanes, block
/// after block.
#[inline(always)]
unsafe fn blocks<const BB: usize>(
    row: &[u8],
    act: &[Q8Block],
    products: impl Fn(*const u8, &Q8Block) -> __m256i,
    extra: impl Fn(*const u8, &Q8Block) -> f32,
) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut scalar = 0f32;
    for (b, y) in row.chunks_exact(BB).zip(act) {
        let p = b.as_ptr();
        let d = _mm256_set1_ps(half(p) * y.d);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(products(p, y)), acc);
        scalar += extra(p, y);
    }
    hsum(acc) + scalar
}

/// The same over a packed row (see `formats::pack_row`) for `N` tokens'
/// activations at once: `QB` quantized bytes per block, after the blocks'
/// f16 scales (and, with `MINS`, their minimums, whose `m * s` terms are
/// summed block after block). A block's `weights` are unpacked once for all
/// tokens, and the scales of 8 blocks converted at once; each token's sum
/// is computed exactly as alone.
#[inline(always)]
unsafe fn packed_blocks<const QB: usize, const MINS: bool, const N: usize>(
    row: &[u8],
    acts: [&[Q8Block]; N],
    weights: impl Fn(*const u8) -> __m256i,
    products: impl Fn(__m256i, &Q8Block) -> __m256i,
) -> [f32; N] {
    let scales = if MINS { 2 } else { 1 };
    let nb = row.len() / (QB + 2 * scales);
    debug_assert!(acts.iter().all(|a| a.len() >= nb));
    let dp = row.as_ptr();
    let mp = dp.add(2 * nb);
    let qp = dp.add(2 * scales * nb);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut summs = [0f32; N];
    let (mut dv, mut mv) = ([0f32; 8], [0f32; 8]);
    let mut i = 0;
    while i < nb {
        let n = (nb - i).min(8);
        if n == 8 {
            _mm256_storeu_ps(dv.as_mut_ptr(), _mm256_cvtph_ps(_mm_loadu_si128(dp.add(2 * i) as *const __m128i)));
            if MINS {
                _mm256_storeu_ps(mv.as_mut_ptr(), _mm256_cvtph_ps(_mm_loadu_si128(mp.add(2 * i) as *const __m128i)));
            }
        } else {
            for k in 0..n {
                dv[k] = half(dp.add(2 * (i + k)));
                if MINS {
                    mv[k] = half(mp.add(2 * (i + k)));
                }
            }
        }
        for k in 0..n {
            let w = weights(qp.add(QB * (i + k)));
            for t in 0..N {
                let y = acts[t].get_unchecked(i + k);
                let d = _mm256_set1_ps(dv[k] * y.d);
                acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(products(w, y)), acc[t]);
                if MINS {
                    summs[t] += mv[k] * y.s;
                }
            }
        }
        i += n;
    }
    let mut out = [0f32; N];
    for t in 0..N {
        out[t] = hsum(acc[t]) + summs[t];
    }
    out
}

#[inline(always)]
unsafe fn q4_0<M: MulSum, const N: usize>(row: &[u8], acts: [&[Q8Block]; N]) -> [f32; N] {
    packed_blocks::<16, false, N>(
        row,
        acts,
        |q| _mm256_sub_epi8(nibbles(q), _mm256_set1_epi8(8)),
        |w, y| mul_sum_i8_i8::<M>(w, act_bytes(y)),
    )
}

#[inline(always)]
unsafe fn q4_1<M: MulSum, const N: usize>(row: &[u8], acts: [&[Q8Block]; N]) -> [f32; N] {
    packed_blocks::<16, true, N>(row, acts, |q| nibbles(q), |w, y| M::mul_sum_u8_i8(w, act_bytes(y)))
}

#[inline(always)]
unsafe fn q8_0<M: MulSum, const N: usize>(row: &[u8], acts: [&[Q8Block]; N]) -> [f32; N] {
    packed_blocks::<32, false, N>(
        row,
        acts,
        |q| _mm256_loadu_si256(q as *const __m256i),
        |w, y| mul_sum_i8_i8::<M>(w, act_bytes(y)),
    )
}

#[inline(always)]
unsafe fn q5_0<M: MulSum>(row: &[u8], act: &[Q8Block]) -> f32 {
    blocks::<22>(
        row,
        act,
        |p, y| {
            // q - 16 as a signed byte: the nibble, with 0xF0 where the fifth bit is clear.
            let high = _mm256_andnot_si256(bits(p.add(2)), _mm256_set1_epi8(0xF0u8 as i8));
            mul_sum_i8_i8::<M>(_mm256_or_si256(nibbles(p.add(6)), high), act_bytes(y))
        },
        |_, _| 0.0,
    )
}

#[inline(always)]
unsafe fn q5_1<M: MulSum>(row: &[u8], act: &[Q8Block]) -> f32 {
    blocks::<24>(
        row,
        act,
        |p, y| {
            let high = _mm256_and_si256(bits(p.add(4)), _mm256_set1_epi8(0x10));
            M::mul_sum_u8_i8(_mm256_or_si256(nibbles(p.add(8)), high), act_bytes(y))
        },
        |p, y| half(p.add(2)) * y.s,
    )
}

#[inline(always)]
unsafe fn load32(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// Bit `k` of every byte of `x`, as 0 or 1.
#[inline(always)]
unsafe fn bit(x: __m256i, k: i32) -> __m256i {
    _mm256_and_si256(_mm256_srl_epi16(x, _mm_cvtsi32_si128(k)), _mm256_set1_epi8(1))
}

/// Q4_K (`FIVE` false) or Q5_K (`FIVE` true) rows: per 256-value block, the
/// integer sums of each 32-value sub-block times its 6-bit scale, in 8 i32
/// lanes, then `d` and the minimums' term `dmin * sum(m * bsums)`.
#[inline(always)]
unsafe fn q45_k<M: MulSum, const FIVE: bool>(row: &[u8], act: &[Q8KBlock]) -> f32 {
    let bb = if FIVE { 176 } else { 144 };
    let mut acc = _mm256_setzero_ps();
    let mut mins_term = 0f32;
    let low = _mm256_set1_epi8(0x0F);
    for (b, y) in row.chunks_exact(bb).zip(act) {
        let p = b.as_ptr();
        let scales = &b[4..16];
        let (qh, qs) = if FIVE { (p.add(16), p.add(48)) } else { (p, p.add(16)) };
        let high = if FIVE { load32(qh) } else { _mm256_setzero_si256() };
        let mut sumi = _mm256_setzero_si256();
        let mut mins = 0i32;
        for g in 0..4 {
            let (sc0, m0) = scale_min_k4(2 * g, scales);
            let (sc1, m1) = scale_min_k4(2 * g + 1, scales);
            mins += i32::from(m0) * (i32::from(y.bsums[4 * g]) + i32::from(y.bsums[4 * g + 1]))
                + i32::from(m1) * (i32::from(y.bsums[4 * g + 2]) + i32::from(y.bsums[4 * g + 3]));
            let q = load32(qs.add(32 * g));
            let mut lo = _mm256_and_si256(q, low);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
            if FIVE {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(bit(high, 2 * g as i32), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(bit(high, 2 * g as i32 + 1), 4));
            }
            let a = y.qs.as_ptr().add(64 * g);
            let p0 = _mm256_mullo_epi32(M::mul_sum_u8_i8(lo, load32(a as *const u8)), _mm256_set1_epi32(i32::from(sc0)));
            let p1 = _mm256_mullo_epi32(M::mul_sum_u8_i8(hi, load32(a.add(32) as *const u8)), _mm256_set1_epi32(i32::from(sc1)));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half(p) * y.d), _mm256_cvtepi32_ps(sumi), acc);
        mins_term += half(p.add(2)) * y.d * mins as f32;
    }
    hsum(acc) - mins_term
}

/// Q6_K rows: 6-bit values (stored unsigned, minus 32), one signed 8-bit
/// scale per 16 values.
#[inline(always)]
unsafe fn q6_k<M: MulSum>(row: &[u8], act: &[Q8KBlock]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let (low, two) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3));
    let m32 = _mm256_set1_epi8(32);
    for (b, y) in row.chunks_exact(210).zip(act) {
        let p = b.as_ptr();
        let mut sumi = _mm256_setzero_si256();
        for half_block in 0..2 {
            let ql = p.add(64 * half_block);
            let qh = load32(p.add(128 + 32 * half_block));
            let sc = p.add(192 + 8 * half_block) as *const i8;
            let (ql0, ql1) = (load32(ql), load32(ql.add(32)));
            let bits = |k: i32| _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(k)), two);
            let values = [
                _mm256_or_si256(_mm256_and_si256(ql0, low), _mm256_slli_epi16(bits(0), 4)),
                _mm256_or_si256(_mm256_and_si256(ql1, low), _mm256_slli_epi16(bits(2), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low), _mm256_slli_epi16(bits(4), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low), _mm256_slli_epi16(bits(6), 4)),
            ];
            for (k, v) in values.into_iter().enumerate() {
                let a = load32(y.qs.as_ptr().add(128 * half_block + 32 * k) as *const u8);
                let dot = _mm256_sub_epi32(M::mul_sum_u8_i8(v, a), M::mul_sum_u8_i8(m32, a));
                // Lanes 0-3 hold values 0-15 of the 32, lanes 4-7 values 16-31.
                let (s0, s1) = (i32::from(*sc.add(2 * k)), i32::from(*sc.add(2 * k + 1)));
                sumi = _mm256_add_epi32(sumi, _mm256_mullo_epi32(dot, _mm256_setr_epi32(s0, s0, s0, s0, s1, s1, s1, s1)));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(half(p.add(208)) * y.d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc)
}

macro_rules! k_quants {
    ($features:literal, $m:ty, $q4:ident, $q5:ident, $q6:ident) => {
        /// Q4_K; see the generic kernel.
        ///
        /// # Safety
        /// The CPU must have the target features.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $q4(row: &[u8], act: &[Q8KBlock]) -> f32 {
            q45_k::<$m, false>(row, act)
        }

        /// Q5_K; see the generic kernel.
        ///
        /// # Safety
        /// The CPU must have the target features.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $q5(row: &[u8], act: &[Q8KBlock]) -> f32 {
            q45_k::<$m, true>(row, act)
        }

        /// Q6_K; see the generic kernel.
        ///
        /// # Safety
        /// The CPU must have the target features.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $q6(row: &[u8], act: &[Q8KBlock]) -> f32 {
            q6_k::<$m>(row, act)
        }
    };
}

k_quants!("avx2,fma,f16c", Avx2, q4_k_avx2, q5_k_avx2, q6_k_avx2);
k_quants!("avx2,fma,f16c,avx512f,avx512vl,avx512vnni", Vnni, q4_k_vnni, q5_k_vnni, q6_k_vnni);

macro_rules! plain {
    ($features:literal, $m:ty, $($name:ident => $kernel:ident),*) => {
        $(
            /// See the generic kernel of the same format.
            ///
            /// # Safety
            /// The CPU must have the target features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(row: &[u8], act: &[Q8Block]) -> f32 {
                $kernel::<$m>(row, act)
            }
        )*
    };
}

macro_rules! packed {
    ($features:literal, $m:ty, $($one:ident, $four:ident => $kernel:ident),*) => {
        $(
            /// See the generic kernel of the same format (one token).
            ///
            /// # Safety
            /// The CPU must have the target features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $one(row: &[u8], act: &[Q8Block]) -> f32 {
                $kernel::<$m, 1>(row, [act])[0]
            }

            /// See the generic kernel of the same format (four tokens).
            ///
            /// # Safety
            /// The CPU must have the target features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $four(row: &[u8], acts: [&[Q8Block]; 4]) -> [f32; 4] {
                $kernel::<$m, 4>(row, acts)
            }
        )*
    };
}

plain!("avx2,fma,f16c", Avx2, q5_0_avx2 => q5_0, q5_1_avx2 => q5_1);
plain!("avx2,fma,f16c,avx512f,avx512vl,avx512vnni", Vnni, q5_0_vnni => q5_0, q5_1_vnni => q5_1);
packed!("avx2,fma,f16c", Avx2, q4_0_avx2, q4_0_avx2_x4 => q4_0, q4_1_avx2, q4_1_avx2_x4 => q4_1, q8_0_avx2, q8_0_avx2_x4 => q8_0);
packed!(
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
    Vnni,
    q4_0_vnni,
    q4_0_vnni_x4 => q4_0,
    q4_1_vnni,
    q4_1_vnni_x4 => q4_1,
    q8_0_vnni,
    q8_0_vnni_x4 => q8_0
);
