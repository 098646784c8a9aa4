//! Group norm with the affine map and an optional SiLU fused, for
//! contiguous float32 CPU tensors `(N, C, ...)`: one pass for the mean, one
//! for the variance, one that writes the output.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

#[cfg(target_arch = "x86_64")]
use crate::kernels::simd::Avx2;
use crate::kernels::simd::{silu, Isa, Scalar, Simd};
use super::f32_data;
use crate::kernels::parallel::{parallel_for, SharedMut};

/// The candle op; holds the affine parameters.
#[derive(Clone, Debug)]
pub(crate) struct FusedGroupNorm {
    pub(crate) groups: usize,
    pub(crate) eps: f64,
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) silu: bool,
    /// The instruction set to run with.
    pub(crate) isa: Isa,
}

struct Job<'a> {
    op: &'a FusedGroupNorm,
    x: &'a [f32],
    out: SharedMut,
    channels: usize,
    spatial: usize,
}

/// `sum(x)` (`mean` None) or `sum((x - mean)^2)`, vectorised, with f32
/// partial sums flushed to f64 every 4096 values.
#[inline(always)]
unsafe fn reduce<S: Simd>(x: &[f32], mean: Option<f32>) -> f64 {
    let lanes = S::LANES;
    let full = x.len() / lanes * lanes;
    let p = x.as_ptr();
    let m = S::splat(mean.unwrap_or(0.0));
    let mut total = 0f64;
    for chunk in (0..full).step_by(4096) {
        let mut acc = S::zero();
        let mut j = chunk;
        let end = (chunk + 4096).min(full);
        if mean.is_some() {
            while j < end {
                let dv = S::sub(S::load(p.add(j)), m);
                acc = S::fma(dv, dv, acc);
                j += lanes;
            }
        } else {
            while j < end {
                acc = S::add(acc, S::load(p.add(j)));
                j += lanes;
            }
        }
        total += S::reduce_add(acc) as f64;
    }
    let tail = x[full..].iter().map(|&v| match mean {
        Some(m) => ((v - m) as f64).powi(2),
        None => v as f64,
    });
    total + tail.sum::<f64>()
}

#[inline(always)]
unsafe fn group<S: Simd>(job: &Job, item: usize) {
    let op = job.op;
    let cg = job.channels / op.groups;
    let (n, g) = (item / op.groups, item % op.groups);
    let len = cg * job.spatial;
    let start = (n * job.channels + g * cg) * job.spatial;
    let x = &job.x[start..start + len];
    let mean = (reduce::<S>(x, None) / len as f64) as f32;
    let var = reduce::<S>(x, Some(mean)) / len as f64;
    let rstd = (1.0 / (var + op.eps).sqrt()) as f32;
    let lanes = S::LANES;
    let full = job.spatial / lanes * lanes;
    for c in 0..cg {
        let ch = g * cg + c;
        let scale = op.weight[ch] * rstd;
        let shift = op.bias[ch] - mean * scale;
        let (sv, hv) = (S::splat(scale), S::splat(shift));
        let src = x.as_ptr().add(c * job.spatial);
        let dst = job.out.0.add(start + c * job.spatial);
        let mut j = 0;
        while j < full {
            let y = S::fma(S::load(src.add(j)), sv, hv);
            S::store(dst.add(j), if op.silu { silu::<S>(y) } else { y });
            j += lanes;
        }
        for j in full..job.spatial {
            let y = *src.add(j) * scale + shift;
            *dst.add(j) = if op.silu { y / (1.0 + (-y).exp()) } else { y };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_avx2(job: &Job, item: usize) {
    group::<Avx2>(job, item)
}

unsafe fn group_scalar(job: &Job, item: usize) {
    group::<Scalar>(job, item)
}

impl CustomOp1 for FusedGroupNorm {
    fn name(&self) -> &'static str {
        "sd-fused-group-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        if !layout.is_contiguous() {
            candle_core::bail!("fused group norm: the input must be contiguous");
        }
        let dims = layout.shape().dims();
        let (n, channels) = (dims[0], dims[1]);
        let spatial: usize = dims[2..].iter().product();
        let x = f32_data(storage, layout)?;
        let mut out = vec![0f32; n * channels * spatial];
        let job = Job { op: self, x, out: SharedMut(out.as_mut_ptr()), channels, spatial };
        let kernel: unsafe fn(&Job, usize) = match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => group_avx2,
            Isa::Scalar => group_scalar,
        };
        // SAFETY: every (sample, group) writes its own contiguous range of
        // `out`, which outlives the parallel section; the kernel matches the CPU.
        parallel_for(n * self.groups, || (), |_, i| unsafe { kernel(&job, i) });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Applies `op` when `x` is a contiguous float32 CPU tensor; `None` otherwise.
pub(crate) fn try_fused(x: &Tensor, op: &FusedGroupNorm) -> Result<Option<Tensor>> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && x.is_contiguous() && x.rank() >= 3 {
        Ok(Some(x.apply_op1_no_bwd(op)?))
    } else {
        Ok(None)
    }
}
