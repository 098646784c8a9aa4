//! Fused multi-head attention for float32 CPU tensors.
//!
//! For each (batch, head) the keys are packed transposed in tiles and the
//! values padded to whole vectors; then blocks of [`BLOCK`] query rows are
//! processed independently (in parallel): scores for the block against all
//! keys (in a per-thread buffer of `BLOCK x Lk`, never the whole `Lq x Lk`
//! matrix), a row softmax with a vectorised exp, and the weighted sum of the
//! values, normalised at the end. Queries, keys and values are read in their
//! `(B, L, H*D)` projection layout and the output is written in the same
//! layout, so no head transposes are needed around it.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

#[cfg(target_arch = "x86_64")]
use crate::kernels::simd::{Avx2, Avx512};
use crate::kernels::simd::{isa, Isa, Scalar, Simd};
use super::f32_data;
use crate::kernels::parallel::{parallel_for, SharedMut};

/// Query rows per work item (a multiple of every row tile below).
const BLOCK: usize = 48;

/// `(B, L, C)` tensor data with row strides, last dimension contiguous.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    batch_stride: usize,
    row_stride: usize,
}

impl View<'_> {
    #[inline(always)]
    fn row(&self, b: usize, l: usize) -> &[f32] {
        &self.data[b * self.batch_stride + l * self.row_stride..]
    }
}

/// Everything a work item needs.
struct Ctx<'a> {
    q: View<'a>,
    k: View<'a>,
    v: View<'a>,
    batch: usize,
    lq: usize,
    lk: usize,
    heads: usize,
    d: usize,
    causal: bool,
    /// Key tile width (2 vectors), padded key count, value vectors, padded head width.
    tile: usize,
    lkp: usize,
    nv: usize,
    dp: usize,
    kt: SharedMut,
    vp: SharedMut,
    out: SharedMut,
}

/// Per-thread scratch: packed query block, scores, output accumulators.
struct Scratch {
    qp: Vec<f32>,
    s: Vec<f32>,
    o: Vec<f32>,
    inv: Vec<f32>,
}

/// Scores of `MR` packed query rows against one key tile (2 vectors).
#[inline(always)]
unsafe fn score_tile<S: Simd, const MR: usize>(qp: *const f32, d: usize, kt: *const f32, s: *mut f32, s_stride: usize) {
    let mut acc = [[S::zero(); 2]; MR];
    for i in 0..d {
        let k0 = S::load(kt.add(i * 2 * S::LANES));
        let k1 = S::load(kt.add(i * 2 * S::LANES + S::LANES));
        for (r, a) in acc.iter_mut().enumerate() {
            let qv = S::splat(*qp.add(r * d + i));
            a[0] = S::fma(qv, k0, a[0]);
            a[1] = S::fma(qv, k1, a[1]);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        S::store(s.add(r * s_stride), a[0]);
        S::store(s.add(r * s_stride + S::LANES), a[1]);
    }
}

/// `o[r][0..NV vectors] = sum_j p[r][j] * v[j][0..NV vectors]` for `MR` rows.
#[inline(always)]
unsafe fn pv_tile<S: Simd, const MR: usize, const NV: usize>(
    p: *const f32,
    p_stride: usize,
    lk: usize,
    v: *const f32,
    v_stride: usize,
    o: *mut f32,
    o_stride: usize,
) {
    let mut acc = [[S::zero(); NV]; MR];
    for j in 0..lk {
        let mut vv = [S::zero(); NV];
        for (c, x) in vv.iter_mut().enumerate() {
            *x = S::load(v.add(j * v_stride + c * S::LANES));
        }
        for (r, a) in acc.iter_mut().enumerate() {
            let pr = S::splat(*p.add(r * p_stride + j));
            for c in 0..NV {
                a[c] = S::fma(pr, vv[c], a[c]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        for (c, x) in a.iter().enumerate() {
            S::store(o.add(r * o_stride + c * S::LANES), *x);
        }
    }
}

/// In place: `row[..limit] = exp(row - max)`, `row[limit..len] = 0`;
/// returns `1 / sum`.
#[inline(always)]
unsafe fn softmax_row<S: Simd>(row: *mut f32, limit: usize, len: usize) -> f32 {
    let lanes = S::LANES;
    let full = limit / lanes * lanes;
    let mut mv = S::splat(f32::NEG_INFINITY);
    for j in (0..full).step_by(lanes) {
        mv = S::max(mv, S::load(row.add(j)));
    }
    let mut m = S::reduce_max(mv);
    for j in full..limit {
        m = m.max(*row.add(j));
    }
    let ms = S::splat(m);
    let mut sv = S::zero();
    for j in (0..full).step_by(lanes) {
        let e = S::exp(S::sub(S::load(row.add(j)), ms));
        S::store(row.add(j), e);
        sv = S::add(sv, e);
    }
    let mut sum = S::reduce_add(sv);
    for j in full..limit {
        let e = (*row.add(j) - m).exp();
        *row.add(j) = e;
        sum += e;
    }
    for j in limit..len {
        *row.add(j) = 0.0;
    }
    1.0 / sum
}

/// Packs the keys (transposed, in tiles) and values (padded) of one
/// (batch, head).
#[inline(always)]
unsafe fn pack<S: Simd>(c: &Ctx, bh: usize) {
    let (b, h) = (bh / c.heads, bh % c.heads);
    let ntiles = c.lkp / c.tile;
    let kt = c.kt.0.add(bh * ntiles * c.d * c.tile);
    let vp = c.vp.0.add(bh * c.lk * c.dp);
    for j in 0..c.lk {
        let krow = &c.k.row(b, j)[h * c.d..h * c.d + c.d];
        let base = kt.add((j / c.tile) * c.d * c.tile + j % c.tile);
        for (i, x) in krow.iter().enumerate() {
            *base.add(i * c.tile) = *x;
        }
        let vrow = &c.v.row(b, j)[h * c.d..h * c.d + c.d];
        std::ptr::copy_nonoverlapping(vrow.as_ptr(), vp.add(j * c.dp), c.d);
    }
}

/// One block of query rows of one (batch, head).
#[inline(always)]
unsafe fn block<S: Simd, const MR_S: usize, const MR_PV: usize, const NVC: usize>(c: &Ctx, sc: &mut Scratch, item: usize) {
    let nblocks = c.lq.div_ceil(BLOCK);
    let (bh, blk) = (item / nblocks, item % nblocks);
    let (b, h) = (bh / c.heads, bh % c.heads);
    let r0 = blk * BLOCK;
    let rows = BLOCK.min(c.lq - r0);
    let d = c.d;
    for r in 0..BLOCK {
        let dst = &mut sc.qp[r * d..(r + 1) * d];
        if r < rows {
            dst.copy_from_slice(&c.q.row(b, r0 + r)[h * d..h * d + d]);
        } else {
            dst.fill(0.0);
        }
    }
    let ntiles = c.lkp / c.tile;
    let kt = c.kt.0.add(bh * ntiles * d * c.tile) as *const f32;
    let s = sc.s.as_mut_ptr();
    for t in 0..ntiles {
        for rg in (0..BLOCK).step_by(MR_S) {
            score_tile::<S, MR_S>(sc.qp.as_ptr().add(rg * d), d, kt.add(t * d * c.tile), s.add(rg * c.lkp + t * c.tile), c.lkp);
        }
    }
    for r in 0..rows {
        let limit = if c.causal { (r0 + r + 1).min(c.lk) } else { c.lk };
        sc.inv[r] = softmax_row::<S>(s.add(r * c.lkp), limit, c.lk);
    }
    let vp = c.vp.0.add(bh * c.lk * c.dp) as *const f32;
    let o = sc.o.as_mut_ptr();
    for c0 in (0..c.nv).step_by(NVC) {
        let nvc = NVC.min(c.nv - c0);
        for rg in (0..rows).step_by(MR_PV) {
            let lk = if c.causal { (r0 + rg + MR_PV).min(c.lk) } else { c.lk };
            let (p, v, o) = (s.add(rg * c.lkp) as *const f32, vp.add(c0 * S::LANES), o.add(rg * c.dp + c0 * S::LANES));
            match nvc {
                1 => pv_tile::<S, MR_PV, 1>(p, c.lkp, lk, v, c.dp, o, c.dp),
                2 => pv_tile::<S, MR_PV, 2>(p, c.lkp, lk, v, c.dp, o, c.dp),
                3 => pv_tile::<S, MR_PV, 3>(p, c.lkp, lk, v, c.dp, o, c.dp),
                _ => pv_tile::<S, MR_PV, 4>(p, c.lkp, lk, v, c.dp, o, c.dp),
            }
        }
    }
    let width = c.heads * d;
    for r in 0..rows {
        let dst = c.out.0.add((b * c.lq + r0 + r) * width + h * d);
        let inv = sc.inv[r];
        for i in 0..d {
            *dst.add(i) = sc.o[r * c.dp + i] * inv;
        }
    }
}

/// The per-ISA instantiations.
struct Kernels {
    lanes: usize,
    pack: unsafe fn(&Ctx, usize),
    block: unsafe fn(&Ctx, &mut Scratch, usize),
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_avx2(c: &Ctx, bh: usize) {
    pack::<Avx2>(c, bh)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(c: &Ctx, sc: &mut Scratch, item: usize) {
    block::<Avx2, 6, 6, 2>(c, sc, item)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn pack_avx512(c: &Ctx, bh: usize) {
    pack::<Avx512>(c, bh)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn block_avx512(c: &Ctx, sc: &mut Scratch, item: usize) {
    block::<Avx512, 6, 6, 2>(c, sc, item)
}

unsafe fn pack_scalar(c: &Ctx, bh: usize) {
    pack::<Scalar>(c, bh)
}

unsafe fn block_scalar(c: &Ctx, sc: &mut Scratch, item: usize) {
    block::<Scalar, 6, 6, 4>(c, sc, item)
}

fn kernels(isa: Isa) -> Kernels {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Kernels { lanes: 8, pack: pack_avx2, block: block_avx2 },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Kernels { lanes: 16, pack: pack_avx512, block: block_avx512 },
        Isa::Scalar => Kernels { lanes: 1, pack: pack_scalar, block: block_scalar },
    }
}

/// The candle op: `(q, k, v) -> softmax(q k^T) v` per head, `q` already
/// scaled.
pub(crate) struct FusedAttention {
    /// Number of heads (the last dimension is `heads * head_dim`).
    pub(crate) heads: usize,
    /// Mask keys after the query position (CLIP).
    pub(crate) causal: bool,
    /// The instruction set to run with.
    pub(crate) isa: Isa,
}

fn view<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<(View<'a>, (usize, usize, usize))> {
    let dims = layout.shape().dims3()?;
    let stride = layout.stride();
    if stride[2] != 1 {
        candle_core::bail!("fused attention: {what} must be contiguous in its last dimension");
    }
    Ok((View { data: f32_data(storage, layout)?, batch_stride: stride[0], row_stride: stride[1] }, dims))
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "sd-fused-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, (batch, lq, width)) = view(qs, ql, "q")?;
        let (k, (kb, lk, kw)) = view(ks, kl, "k")?;
        let (v, vdims) = view(vs, vl, "v")?;
        if kb != batch || kw != width || vdims != (kb, lk, kw) || width % self.heads != 0 || lk == 0 {
            candle_core::bail!("fused attention: incompatible shapes");
        }
        let kern = kernels(self.isa);
        let d = width / self.heads;
        let tile = 2 * kern.lanes;
        let lkp = lk.div_ceil(tile) * tile;
        let nv = d.div_ceil(kern.lanes);
        let dp = nv * kern.lanes;
        let bh = batch * self.heads;
        let mut kt = vec![0f32; bh * lkp * d];
        let mut vp = vec![0f32; bh * lk * dp];
        let mut out = vec![0f32; batch * lq * width];
        let ctx = Ctx {
            q,
            k,
            v,
            batch,
            lq,
            lk,
            heads: self.heads,
            d,
            causal: self.causal,
            tile,
            lkp,
            nv,
            dp,
            kt: SharedMut(kt.as_mut_ptr()),
            vp: SharedMut(vp.as_mut_ptr()),
            out: SharedMut(out.as_mut_ptr()),
        };
        // SAFETY: every (batch, head) packs its own ranges of kt / vp, every
        // work item writes its own rows and head columns of out; the buffers
        // outlive the parallel sections; the kernels match this CPU.
        parallel_for(bh, || (), |_, i| unsafe { (kern.pack)(&ctx, i) });
        let items = ctx.batch * self.heads * lq.div_ceil(BLOCK);
        let scratch = || Scratch {
            qp: vec![0.0; BLOCK * d],
            s: vec![0.0; BLOCK * lkp],
            o: vec![0.0; BLOCK * dp],
            inv: vec![0.0; BLOCK],
        };
        parallel_for(items, scratch, |sc, i| unsafe { (kern.block)(&ctx, sc, i) });
        Ok((CpuStorage::F32(out), Shape::from((batch, lq, width))))
    }
}

/// Fused attention on CPU float32 tensors `(B, L, H*D)` (last dimension
/// contiguous; `q` pre-scaled); `None` when the tensors do not qualify.
pub(crate) fn try_fused(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, causal: bool) -> Result<Option<Tensor>> {
    let ok = |t: &Tensor| t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.rank() == 3 && t.stride()[2] == 1;
    if !(ok(q) && ok(k) && ok(v)) {
        return Ok(None);
    }
    Ok(Some(q.apply_op3_no_bwd(k, v, &FusedAttention { heads, causal, isa: isa() })?))
}
