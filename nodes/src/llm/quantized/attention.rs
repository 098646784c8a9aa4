//! Attention of a group of query heads (those sharing one key/value head)
//! over the f16 KV cache, computed as llama.cpp's CPU flash attention
//! computes it: queries rounded to f16, per key position a score, an
//! online softmax, and the weighted values summed into an f16 accumulator
//! (rescaled when a larger score comes), divided by the weights' sum at the
//! end.
//!
//! The model's greedy tokens hinge on near ties that one rounding more or
//! less tips, so the arithmetic is fixed: each score is a plain sequential
//! sum of products (no fused multiply-add, no reassociation), each
//! accumulator update a fused `v * w + acc` rounded to f16. The AVX2 + F16C
//! path (chosen at run time) vectorises only what is element-wise, so it
//! gives exactly the scalar path's values.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// The cached keys and values of one key/value head: position `j`'s row is
/// `k[j * stride..j * stride + head_dim]` (and the same in `v`).
pub(super) struct Cached<'a> {
    pub(super) k: &'a [f16],
    pub(super) v: &'a [f16],
    pub(super) stride: usize,
    pub(super) len: usize,
}

/// `out[h]` = attention of query `q[h]` (`group` heads of `head_dim`,
/// already rounded to f16) over `cache`; `acc` is scratch of the same size.
pub(super) fn attend(q: &[f32], cache: &Cached<'_>, head_dim: usize, scale: f32, out: &mut [f32], acc: &mut [f16]) {
    #[cfg(target_arch = "x86_64")]
    if head_dim % 8 == 0 && has_f16c() {
        // SAFETY: the features were detected.
        return unsafe { attend_f16c(q, cache, head_dim, scale, out, acc) };
    }
    attend_scalar(q, cache, head_dim, scale, out, acc);
}

#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    })
}

/// The reference: the same arithmetic one value at a time.
pub(super) fn attend_scalar(q: &[f32], cache: &Cached<'_>, hd: usize, scale: f32, out: &mut [f32], acc: &mut [f16]) {
    let group = q.len() / hd;
    acc.fill(f16::ZERO);
    let mut max = vec![f32::NEG_INFINITY; group];
    let mut sum = vec![0f32; group];
    let mut k = vec![0f32; hd];
    for j in 0..cache.len {
        let at = j * cache.stride;
        cache.k[at..at + hd].convert_to_f32_slice(&mut k);
        for h in 0..group {
            let score = sequential_dot(&q[h * hd..(h + 1) * hd], &k) * scale;
            let acc = &mut acc[h * hd..(h + 1) * hd];
            let (mut ms, mut vs) = (1.0f32, 1.0f32);
            if score > max[h] {
                ms = (max[h] - score).exp();
                max[h] = score;
                acc.iter_mut().for_each(|a| *a = f16::from_f32(a.to_f32() * ms));
            } else {
                vs = (score - max[h]).exp();
            }
            for (a, v) in acc.iter_mut().zip(&cache.v[at..at + hd]) {
                *a = f16::from_f32(v.to_f32().mul_add(vs, a.to_f32()));
            }
            sum[h] = sum[h] * ms + vs;
        }
    }
    for h in 0..group {
        let inv = if sum[h] == 0.0 { 0.0 } else { 1.0 / sum[h] };
        for (o, a) in out[h * hd..(h + 1) * hd].iter_mut().zip(&acc[h * hd..(h + 1) * hd]) {
            *o = a.to_f32() * inv;
        }
    }
}

/// AVX2 + F16C: 8 values at a time (`head_dim` a multiple of 8, at most
/// 256, and at most 16 query heads per group).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_f16c(q: &[f32], cache: &Cached<'_>, hd: usize, scale: f32, out: &mut [f32], acc: &mut [f16]) {
    use std::arch::x86_64::*;
    const ROUND: i32 = _MM_FROUND_TO_NEAREST_INT;
    let group = q.len() / hd;
    assert!(hd <= 256 && group <= 16 && acc.len() >= group * hd && out.len() >= group * hd);
    acc.fill(f16::ZERO);
    let mut max = [f32::NEG_INFINITY; 16];
    let mut sum = [0f32; 16];
    let accp = acc.as_mut_ptr() as *mut u16;
    for j in 0..cache.len {
        let at = j * cache.stride;
        let kp = cache.k[at..at + hd].as_ptr() as *const __m128i;
        let vp = cache.v[at..at + hd].as_ptr() as *const __m128i;
        let mut k = [0f32; 256];
        for i in 0..hd / 8 {
            _mm256_storeu_ps(k.as_mut_ptr().add(8 * i), _mm256_cvtph_ps(_mm_loadu_si128(kp.add(i))));
        }
        for h in 0..group {
            let score = sequential_dot(&q[h * hd..(h + 1) * hd], &k[..hd]) * scale;
            let ap = accp.add(h * hd) as *mut __m128i;
            let (mut ms, mut vs) = (1.0f32, 1.0f32);
            if score > max[h] {
                ms = (max[h] - score).exp();
                max[h] = score;
                let m = _mm256_set1_ps(ms);
                for i in 0..hd / 8 {
                    let a = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(ap.add(i))), m);
                    _mm_storeu_si128(ap.add(i), _mm256_cvtps_ph::<ROUND>(a));
                }
            } else {
                vs = (score - max[h]).exp();
            }
            let w = _mm256_set1_ps(vs);
            for i in 0..hd / 8 {
                let a = _mm256_cvtph_ps(_mm_loadu_si128(ap.add(i)));
                let v = _mm256_cvtph_ps(_mm_loadu_si128(vp.add(i)));
                _mm_storeu_si128(ap.add(i), _mm256_cvtps_ph::<ROUND>(_mm256_fmadd_ps(v, w, a)));
            }
            sum[h] = sum[h] * ms + vs;
        }
    }
    for h in 0..group {
        let inv = if sum[h] == 0.0 { 0.0 } else { 1.0 / sum[h] };
        for (o, a) in out[h * hd..(h + 1) * hd].iter_mut().zip(&acc[h * hd..(h + 1) * hd]) {
            *o = a.to_f32() * inv;
        }
    }
}

/// `a · b` summed in order, each product rounded before it is added.
#[inline(always)]
fn sequential_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in a.iter().zip(b) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simd_path_matches_the_scalar_one() {
        let (hd, group, len, stride) = (64, 3, 37, 192);
        let value = |i: usize| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 1.5;
        let k: Vec<f16> = (0..len * stride).map(|i| f16::from_f32(value(i))).collect();
        let v: Vec<f16> = (0..len * stride).map(|i| f16::from_f32(value(i + 13))).collect();
        let q: Vec<f32> = (0..group * hd).map(|i| f16::from_f32(value(i + 99)).to_f32()).collect();
        let cache = Cached { k: &k[64..], v: &v[64..], stride, len: len - 1 };
        let (mut a, mut b) = (vec![0f32; group * hd], vec![0f32; group * hd]);
        let mut acc = vec![f16::ZERO; group * hd];
        attend_scalar(&q, &cache, hd, 0.125, &mut a, &mut acc);
        attend(&q, &cache, hd, 0.125, &mut b, &mut acc);
        assert_eq!(a, b, "the same arithmetic, value for value");
        // A one-position cache returns that position's value.
        let one = Cached { k: &k, v: &v, stride, len: 1 };
        attend(&q, &one, hd, 0.125, &mut b, &mut acc);
        assert!((b[5] - v[5].to_f32()).abs() < 1e-3);
    }
}
