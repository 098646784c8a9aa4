//! GEGLU for contiguous float32 CPU tensors: `h[..., :I] * gelu(h[..., I:])`
//! in one pass, with the exact-form (erf) GELU.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

#[cfg(target_arch = "x86_64")]
use crate::kernels::simd::Avx2;
use crate::kernels::simd::{gelu_erf, isa, Isa, Scalar, Simd};
use super::f32_data;
use crate::kernels::parallel::{parallel_for, SharedMut};

/// Rows per work item.
const ROWS: usize = 16;

/// The candle op.
pub(crate) struct FusedGeglu {
    /// The instruction set to run with.
    pub(crate) isa: Isa,
}

struct Job<'a> {
    h: &'a [f32],
    out: SharedMut,
    rows: usize,
    inner: usize,
}

#[inline(always)]
unsafe fn rows<S: Simd>(job: &Job, item: usize) {
    let lanes = S::LANES;
    let full = job.inner / lanes * lanes;
    for r in item * ROWS..((item + 1) * ROWS).min(job.rows) {
        let a = job.h.as_ptr().add(r * 2 * job.inner);
        let g = a.add(job.inner);
        let o = job.out.0.add(r * job.inner);
        let mut j = 0;
        while j < full {
            S::store(o.add(j), S::mul(S::load(a.add(j)), gelu_erf::<S>(S::load(g.add(j)))));
            j += lanes;
        }
        for j in full..job.inner {
            *o.add(j) = *a.add(j) * gelu_erf::<Scalar>(*g.add(j));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(job: &Job, item: usize) {
    rows::<Avx2>(job, item)
}

unsafe fn rows_scalar(job: &Job, item: usize) {
    rows::<Scalar>(job, item)
}

impl CustomOp1 for FusedGeglu {
    fn name(&self) -> &'static str {
        "sd-fused-geglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        if !layout.is_contiguous() {
            candle_core::bail!("fused geglu: the input must be contiguous");
        }
        let mut dims = layout.shape().dims().to_vec();
        let last = dims.pop().unwrap_or(0);
        let inner = last / 2;
        let rows: usize = dims.iter().product();
        let mut out = vec![0f32; rows * inner];
        let job = Job { h: f32_data(storage, layout)?, out: SharedMut(out.as_mut_ptr()), rows, inner };
        let kernel: unsafe fn(&Job, usize) = match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => rows_avx2,
            Isa::Scalar => rows_scalar,
        };
        // SAFETY: work items write disjoint rows of `out`, which outlives the
        // parallel section; the kernel matches the CPU.
        parallel_for(rows.div_ceil(ROWS), || (), |_, i| unsafe { kernel(&job, i) });
        dims.push(inner);
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// GEGLU of `h: (..., 2I)` when it is a contiguous float32 CPU tensor;
/// `None` otherwise.
pub(crate) fn try_fused(h: &Tensor) -> Result<Option<Tensor>> {
    if h.device().is_cpu() && h.dtype() == candle_core::DType::F32 && h.is_contiguous() && h.dim(candle_core::D::Minus1)? % 2 == 0 {
        Ok(Some(h.apply_op1_no_bwd(&FusedGeglu { isa: isa() })?))
    } else {
        Ok(None)
    }
}
