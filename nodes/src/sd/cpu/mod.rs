//! Fused CPU kernels for the hot spots of the SD models, where chains of
//! candle ops would make several passes over memory or materialise large
//! intermediates: attention (never building the full score matrix), group
//! norm with its activation, GEGLU, and 3x3 convolutions as blocked GEMMs.
//!
//! Each kernel has a candle-op twin used on other devices and dtypes; the
//! dispatching functions in [`crate::sd::layers`] pick the kernel for
//! contiguous-enough float32 CPU tensors.

pub(crate) mod attention;
pub(crate) mod conv;
pub(crate) mod geglu;
pub(crate) mod group_norm;

use candle_core::{CpuStorage, Layout, Result};

/// The f32 data of a CPU storage, from the layout's start offset.
pub(crate) fn f32_data<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    match storage {
        CpuStorage::F32(v) => Ok(&v[layout.start_offset()..]),
        _ => candle_core::bail!("fused CPU kernel: expected f32 data"),
    }
}

#[cfg(test)]
mod tests {
    //! Every kernel on every instruction set of this CPU against the
    //! candle-op computation, on shapes that exercise all remainders.

    use candle_core::{Device, Tensor, D};

    use super::attention::FusedAttention;
    use super::geglu::FusedGeglu;
    use super::group_norm::FusedGroupNorm;
    use crate::kernels::simd::{isa, Isa};

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if matches!(isa(), Isa::Avx2 | Isa::Avx512) {
                v.push(Isa::Avx2);
            }
            if isa() == Isa::Avx512 {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut v = vec![0f32; shape.iter().product()];
        crate::tensor::rng::SplitMix64::new(seed).fill_normal(&mut v);
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn reference_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, causal: bool) -> Tensor {
        let (b, lq, hd) = q.dims3().unwrap();
        let lk = k.dim(1).unwrap();
        let d = hd / heads;
        let split = |t: &Tensor, l| t.reshape((b, l, heads, d)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let (q, k, v) = (split(q, lq), split(k, lk), split(v, lk));
        let mut s = q.matmul(&k.t().unwrap()).unwrap();
        if causal {
            let m: Vec<f32> =
                (0..lq).flat_map(|i| (0..lk).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
            s = s.broadcast_add(&Tensor::from_vec(m, (lq, lk), &Device::Cpu).unwrap()).unwrap();
        }
        let p = candle_nn::ops::softmax_last_dim(&s).unwrap();
        p.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((b, lq, hd)).unwrap()
    }

    #[test]
    fn sd_fused_attention_matches_candle_ops() {
        for isa in isas() {
            for &(b, lq, lk, heads, d, causal) in
                &[(2, 50, 77, 3, 40, false), (1, 97, 97, 1, 21, false), (1, 77, 77, 4, 8, true), (2, 5, 130, 2, 80, false)]
            {
                let q = randn(&[b, lq, heads * d], 1);
                // A strided view for k: the second half of a wider tensor.
                let wide = randn(&[b, lk, 2 * heads * d], 2);
                let k = wide.narrow(2, heads * d, heads * d).unwrap();
                let v = randn(&[b, lk, heads * d], 3);
                let got = q.apply_op3_no_bwd(&k, &v, &FusedAttention { heads, causal, isa }).unwrap();
                let want = reference_attention(&q, &k, &v, heads, causal);
                let diff = max_diff(&got, &want);
                assert!(diff < 2e-5, "{isa:?} {b}x{lq}x{lk} h{heads} d{d} causal {causal}: {diff}");
            }
        }
    }

    #[test]
    fn sd_fused_group_norm_and_geglu_match_candle_ops() {
        let x = randn(&[2, 12, 5, 7], 4).affine(3.0, 1.5).unwrap();
        let (weight, bias) = (randn(&[12], 5), randn(&[12], 6));
        let xs = x.reshape((2, 4, 105)).unwrap();
        let mean = xs.mean_keepdim(D::Minus1).unwrap();
        let xc = xs.broadcast_sub(&mean).unwrap();
        let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let normed = xc.broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap()).unwrap().reshape((2, 12, 5, 7)).unwrap();
        let affine = normed
            .broadcast_mul(&weight.reshape((1, 12, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&bias.reshape((1, 12, 1, 1)).unwrap())
            .unwrap();
        let h = randn(&[3, 5, 2 * 37], 7);
        let want_geglu = (h.narrow(2, 0, 37).unwrap() * h.narrow(2, 37, 37).unwrap().gelu_erf().unwrap()).unwrap();
        for isa in isas() {
            for silu in [false, true] {
                let op = FusedGroupNorm {
                    groups: 4,
                    eps: 1e-5,
                    weight: weight.to_vec1().unwrap(),
                    bias: bias.to_vec1().unwrap(),
                    silu,
                    isa,
                };
                let want = if silu { affine.silu().unwrap() } else { affine.clone() };
                let diff = max_diff(&x.apply_op1_no_bwd(&op).unwrap(), &want);
                assert!(diff < 1e-5, "group norm {isa:?} silu {silu}: {diff}");
            }
            let diff = max_diff(&h.apply_op1_no_bwd(&FusedGeglu { isa }).unwrap(), &want_geglu);
            assert!(diff < 1e-6, "geglu {isa:?}: {diff}");
        }
    }

    #[test]
    fn sd_gemm_conv3x3_matches_candle_conv() {
        for &(n, c, h, w, cout) in &[(2, 5, 7, 9, 3), (1, 3, 1, 1, 4), (1, 64, 40, 33, 8)] {
            let x = randn(&[n, c, h, w], 8);
            let weight = randn(&[cout, c, 3, 3], 9);
            let bias = randn(&[cout], 10);
            let gw = super::conv::gemm_weight(&weight, &bias).unwrap();
            let b4 = bias.reshape((1, cout, 1, 1)).unwrap();
            let want = x.conv2d(&weight, 1, 1, 1, 1).unwrap().broadcast_add(&b4).unwrap();
            // Relative to the largest output: the larger images go through
            // Winograd, whose rounding grows with the sums' magnitude.
            let bound = |want: &Tensor| 1e-5 * want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(10.0);
            let diff = max_diff(&super::conv::conv3x3(&x, &gw, false).unwrap(), &want);
            assert!(diff < bound(&want), "{n}x{c}x{h}x{w}: {diff}");
            let up = x.upsample_nearest2d(2 * h, 2 * w).unwrap();
            let want = up.conv2d(&weight, 1, 1, 1, 1).unwrap().broadcast_add(&b4).unwrap();
            let diff = max_diff(&super::conv::conv3x3(&x, &gw, true).unwrap(), &want);
            assert!(diff < bound(&want), "{n}x{c}x{h}x{w} upsampled: {diff}");
        }
    }
}
