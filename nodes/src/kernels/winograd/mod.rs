//! 3x3 convolutions (stride 1, zero padding 1) on NCHW float32 CPU data by
//! Winograd's minimal filtering F(4x4, 3x3): each 4x4 block of output
//! (a tile) costs 36 multiplications per input/output channel pair instead
//! of 144, the 36 products of all tiles and channels being 36 matrix
//! products `[C_out, C_in] x [C_in, tiles]` (gemm's AVX-512/AVX2 kernels).
//!
//! The image is cut into bands of tile rows handed to the worker pool; a band
//! copies its input rows with the zero padding (and an optional 2x nearest
//! upsampling) into a scratch buffer, transforms them, multiplies, transforms
//! back with bias and activation applied, and writes the output rows, so
//! every buffer but the output stays small and is reused from band to band.
//! The transforms are vectorised across neighbouring tiles
//! ([`transform::TileLanes`]); the kernel is transformed once, in f64.
//!
//! The arithmetic differs from a direct convolution by rounding only: about
//! 1e-6 relative per layer (the tests bound it against a direct f64
//! convolution).

mod transform;

use std::cell::Cell;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};
use gemm::Parallelism;

use self::transform::{input_tile, output_tile, TileLanes};
use crate::kernels::parallel::{parallel_for, SharedMut};
#[cfg(target_arch = "x86_64")]
use crate::kernels::simd::Avx2;
use crate::kernels::simd::{isa, Isa, Scalar};

/// Tiles per band (at least one row of tiles): the transformed input and
/// products of a band, `36 * (C_in + C_out) * 128` floats, stay in the L2
/// cache for 64 channels.
const BAND_TILES: usize = 128;

/// Floats between the planes of the 36 transformed values, so that the 36
/// planes do not map to the same cache sets (their natural size is a power
/// of two).
const PLANE_SKEW: usize = 16;

/// A 3x3 convolution's kernel in the Winograd domain, with its bias.
#[derive(Clone, Debug)]
pub(crate) struct Winograd3x3 {
    c_in: usize,
    c_out: usize,
    /// `G g Gᵀ` of every kernel, `[36][C_out][C_in]`.
    u: Vec<f32>,
    /// `[C_out]` (zeros without a bias).
    bias: Vec<f32>,
}

/// What is applied to each output value after the bias.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Activation<'a> {
    /// Nothing.
    Identity,
    /// `x` where `x >= 0`, `slope[c] * x` elsewhere; one slope, or one per
    /// output channel.
    Prelu(&'a [f32]),
}

impl Winograd3x3 {
    /// From `weight`, `[C_out][C_in][3][3]` row-major, and an optional
    /// `[C_out]` bias.
    pub(crate) fn new(
        weight: &[f32],
        bias: Option<&[f32]>,
        c_out: usize,
        c_in: usize,
    ) -> Winograd3x3 {
        assert_eq!(
            weight.len(),
            c_out * c_in * 9,
            "weight is not [C_out, C_in, 3, 3]"
        );
        let bias = bias.map_or_else(|| vec![0.0; c_out], <[f32]>::to_vec);
        Winograd3x3::build(
            |co| &weight[co * 9 * c_in..(co + 1) * 9 * c_in],
            bias,
            c_out,
            c_in,
        )
    }

    /// From the `[C_out][9 C_in + 1]` matrix of an im2col convolution: each
    /// row the flattened kernels, then the bias.
    pub(crate) fn from_gemm_matrix(matrix: &[f32], c_out: usize, c_in: usize) -> Winograd3x3 {
        let row = 9 * c_in + 1;
        assert_eq!(
            matrix.len(),
            c_out * row,
            "matrix is not [C_out, 9 C_in + 1]"
        );
        let bias = matrix.chunks_exact(row).map(|r| r[9 * c_in]).collect();
        Winograd3x3::build(
            |co| &matrix[co * row..co * row + 9 * c_in],
            bias,
            c_out,
            c_in,
        )
    }

    /// Transforms the kernels of every output channel (`kernels(co)`,
    /// `[C_in][3][3]`), output channels in parallel.
    fn build<'a>(
        kernels: impl Fn(usize) -> &'a [f32] + Sync,
        bias: Vec<f32>,
        c_out: usize,
        c_in: usize,
    ) -> Winograd3x3 {
        assert_eq!(bias.len(), c_out, "bias is not [C_out]");
        let mut u = vec![0f32; 36 * c_out * c_in];
        let dst = SharedMut(u.as_mut_ptr());
        parallel_for(
            c_out,
            || (),
            |_, co| {
                for (ci, g) in kernels(co).chunks_exact(9).enumerate() {
                    for (p, x) in transform::kernel(g).into_iter().enumerate() {
                        // SAFETY: output channel `co` owns these elements.
                        unsafe { *dst.ptr().add((p * c_out + co) * c_in + ci) = x };
                    }
                }
            },
        );
        Winograd3x3 {
            c_in,
            c_out,
            u,
            bias,
        }
    }

    /// The candle op applying this convolution (after a 2x nearest
    /// upsampling of the input when `upsample`), then `act`.
    pub(crate) fn op<'a>(&'a self, upsample: bool, act: Activation<'a>) -> Conv3x3Op<'a> {
        Conv3x3Op {
            conv: self,
            upsample,
            act,
            isa: isa(),
        }
    }
}

/// [`Winograd3x3`] as a candle op on contiguous `[N, C_in, H, W]` float32
/// CPU tensors, giving `[N, C_out, H, W]` (`2H x 2W` when upsampling).
pub(crate) struct Conv3x3Op<'a> {
    conv: &'a Winograd3x3,
    upsample: bool,
    act: Activation<'a>,
    /// The instruction set of the transforms.
    pub(crate) isa: Isa,
}

/// The shape of one image's work.
struct Geometry {
    /// Source height and width (before upsampling).
    src: (usize, usize),
    /// Output height and width.
    h: usize,
    w: usize,
    /// Tiles per tile row, rounded up to whole vectors of tiles.
    row_tiles: usize,
    /// Tile rows per band.
    band_rows: usize,
    /// Tile rows in the image.
    tile_rows: usize,
    /// Length of a padded input row in the scratch buffer.
    stride: usize,
}

/// A worker's buffers, reused from band to band and, through a
/// thread-local spare, from one convolution to the next (no allocation or
/// page faults per layer).
struct Scratch {
    /// Padded input rows, `[C_in][4 band_rows + 2][stride]`.
    pad: Vec<f32>,
    /// Transformed input, `[36][C_in][tiles]`.
    v: Vec<f32>,
    /// Products, `[36][C_out][tiles]`.
    m: Vec<f32>,
}

thread_local! {
    /// The buffers of this thread's last [`Scratch`].
    static SPARE: Cell<[Vec<f32>; 3]> = Cell::default();
}

/// Largest scratch (in floats, all three buffers) kept for the next
/// convolution: 64 MiB; larger ones are freed.
const SPARE_MAX: usize = 16 << 20;

impl Scratch {
    /// Buffers of at least these lengths (contents unspecified).
    fn new(pad: usize, v: usize, m: usize) -> Scratch {
        let [mut a, mut b, mut c] = SPARE.take();
        for (buf, len) in [(&mut a, pad), (&mut b, v), (&mut c, m)] {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
        }
        Scratch { pad: a, v: b, m: c }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let bufs = [
            std::mem::take(&mut self.pad),
            std::mem::take(&mut self.v),
            std::mem::take(&mut self.m),
        ];
        if bufs.iter().map(Vec::len).sum::<usize>() <= SPARE_MAX {
            SPARE.set(bufs);
        }
    }
}

impl Conv3x3Op<'_> {
    fn geometry(&self, sh: usize, sw: usize, lanes: usize) -> Geometry {
        let f = if self.upsample { 2 } else { 1 };
        let (h, w) = (sh * f, sw * f);
        let row_tiles = w.div_ceil(4).div_ceil(lanes) * lanes;
        let tile_rows = h.div_ceil(4);
        let threads = crate::kernels::pool::Pool::global().threads();
        // Enough bands to keep every thread busy, each as large as fits.
        let band_rows = (BAND_TILES / row_tiles).clamp(1, tile_rows.div_ceil(2 * threads).max(1));
        Geometry {
            src: (sh, sw),
            h,
            w,
            row_tiles,
            band_rows,
            tile_rows,
            stride: 4 * row_tiles + 8,
        }
    }

    /// Output rows of band `b` of one image `x` (`[C_in][sh][sw]`) into `out`
    /// (`[C_out][h][w]`).
    ///
    /// # Safety
    /// `S`'s instruction set; `out` valid for the image's output, no other
    /// thread writing this band's rows.
    #[inline(always)]
    unsafe fn band<S: TileLanes>(
        &self,
        geo: &Geometry,
        x: &[f32],
        s: &mut Scratch,
        b: usize,
        out: SharedMut,
    ) {
        let (c_in, c_out, lanes) = (self.conv.c_in, self.conv.c_out, S::LANES);
        let (sh, sw) = geo.src;
        let (h, w, stride) = (geo.h, geo.w, geo.stride);
        let rows = geo.band_rows.min(geo.tile_rows - b * geo.band_rows);
        let in_rows = 4 * geo.band_rows + 2;
        let tiles = rows * geo.row_tiles;
        let (v_plane, m_plane) = (c_in * tiles + PLANE_SKEW, c_out * tiles + PLANE_SKEW);
        let top = (4 * b * geo.band_rows) as isize - 1;

        // The input rows with their zero padding.
        for c in 0..c_in {
            let plane = &x[c * sh * sw..(c + 1) * sh * sw];
            for r in 0..4 * rows + 2 {
                let dst = &mut s.pad[(c * in_rows + r) * stride..][..stride];
                let y = top + r as isize;
                if y < 0 || y >= h as isize {
                    dst.fill(0.0);
                    continue;
                }
                dst[0] = 0.0;
                if self.upsample {
                    let src = &plane[(y as usize / 2) * sw..][..sw];
                    for (pair, &v) in dst[1..1 + w].chunks_exact_mut(2).zip(src) {
                        pair.fill(v);
                    }
                } else {
                    dst[1..1 + w].copy_from_slice(&plane[y as usize * sw..][..sw]);
                }
                dst[1 + w..].fill(0.0);
            }
        }

        // Bᵀ d B of every tile and channel.
        let (pad, v) = (s.pad.as_ptr(), s.v.as_mut_ptr());
        for c in 0..c_in {
            for tr in 0..rows {
                for g in (0..geo.row_tiles).step_by(lanes) {
                    let first = pad.add((c * in_rows + 4 * tr) * stride + 4 * g);
                    let patch = input_tile::<S>(std::array::from_fn(|r| first.add(r * stride)));
                    let col = tr * geo.row_tiles + g;
                    for (p, value) in patch.into_iter().enumerate() {
                        S::store(v.add(p * v_plane + c * tiles + col), value);
                    }
                }
            }
        }

        // The 36 products [C_out, C_in] x [C_in, tiles].
        let (u, m) = (self.conv.u.as_ptr(), s.m.as_mut_ptr());
        for p in 0..36 {
            gemm::gemm(
                c_out,
                tiles,
                c_in,
                m.add(p * m_plane),
                1,
                tiles as isize,
                false,
                u.add(p * c_out * c_in),
                1,
                c_in as isize,
                v.add(p * v_plane),
                1,
                tiles as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
        }

        // Aᵀ m A, bias, activation, and the output rows.
        let m = s.m.as_ptr();
        let mut spill = [0f32; 64];
        for co in 0..c_out {
            let bias = S::splat(self.conv.bias[co]);
            let slope = match self.act {
                Activation::Identity => None,
                Activation::Prelu(slopes) => {
                    Some(S::splat(slopes[if slopes.len() == 1 { 0 } else { co }]))
                }
            };
            let plane = out.ptr().add(co * h * w);
            for tr in 0..rows {
                for g in (0..geo.row_tiles).step_by(lanes) {
                    let col = tr * geo.row_tiles + g;
                    let products =
                        std::array::from_fn(|p| S::load(m.add(p * m_plane + co * tiles + col)));
                    let mut y = output_tile::<S>(&products);
                    for value in y.iter_mut().flatten() {
                        *value = S::add(*value, bias);
                        if let Some(slope) = slope {
                            *value = S::select_neg(*value, S::mul(*value, slope), *value);
                        }
                    }
                    let x0 = 4 * g;
                    if x0 >= w {
                        continue;
                    }
                    for (r, row) in y.into_iter().enumerate() {
                        let yy = 4 * (b * geo.band_rows + tr) + r;
                        if yy >= h {
                            break;
                        }
                        let dst = plane.add(yy * w + x0);
                        if x0 + 4 * lanes <= w {
                            S::store4(dst, row);
                        } else {
                            S::store4(spill.as_mut_ptr(), row);
                            std::ptr::copy_nonoverlapping(spill.as_ptr(), dst, w - x0);
                        }
                    }
                }
            }
        }
    }

    /// One image with the instruction set `S`.
    /// # Safety
    /// `band` must match the CPU; `out` valid for `C_out * h * w` writes.
    unsafe fn image<S: TileLanes>(
        &self,
        x: &[f32],
        sh: usize,
        sw: usize,
        out: *mut f32,
        band: BandFn,
    ) {
        let geo = self.geometry(sh, sw, S::LANES);
        let in_rows = 4 * geo.band_rows + 2;
        let tiles = geo.band_rows * geo.row_tiles;
        let (c_in, c_out) = (self.conv.c_in, self.conv.c_out);
        let out = SharedMut(out);
        parallel_for(
            geo.tile_rows.div_ceil(geo.band_rows),
            || {
                Scratch::new(
                    c_in * in_rows * geo.stride,
                    36 * (c_in * tiles + PLANE_SKEW),
                    36 * (c_out * tiles + PLANE_SKEW),
                )
            },
            // SAFETY: `band` matches the detected instruction set; bands
            // write disjoint output rows of `out`, which outlives the loop.
            |scratch, b| unsafe { band(self, &geo, x, scratch, b, out) },
        );
    }
}

/// A band function for one instruction set.
type BandFn = unsafe fn(&Conv3x3Op<'_>, &Geometry, &[f32], &mut Scratch, usize, SharedMut);

unsafe fn band_scalar(
    op: &Conv3x3Op,
    geo: &Geometry,
    x: &[f32],
    s: &mut Scratch,
    b: usize,
    out: SharedMut,
) {
    op.band::<Scalar>(geo, x, s, b, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn band_avx2(
    op: &Conv3x3Op,
    geo: &Geometry,
    x: &[f32],
    s: &mut Scratch,
    b: usize,
    out: SharedMut,
) {
    op.band::<Avx2>(geo, x, s, b, out)
}

impl CustomOp1 for Conv3x3Op<'_> {
    fn name(&self) -> &'static str {
        "winograd-conv3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, sh, sw) = layout.shape().dims4()?;
        if c != self.conv.c_in {
            candle_core::bail!(
                "convolution expects {} input channels, got {c}",
                self.conv.c_in
            );
        }
        let (Some((start, end)), CpuStorage::F32(data)) = (layout.contiguous_offsets(), storage)
        else {
            candle_core::bail!("winograd conv3x3: expected a contiguous f32 input");
        };
        let x = &data[start..end];
        let f = if self.upsample { 2 } else { 1 };
        let (h, w) = (sh * f, sw * f);
        let per_out = self.conv.c_out * h * w;
        // Every output value is written exactly once by the bands: the
        // buffer is not zeroed first.
        let mut out = Vec::<f32>::with_capacity(n * per_out);
        // Rows narrower than one vector of tiles would mostly compute padding.
        let isa = if w.div_ceil(4) < 8 {
            Isa::Scalar
        } else {
            self.isa
        };
        for (i, image) in x.chunks_exact(c * sh * sw).enumerate() {
            // SAFETY: the band function matches `self.isa`, which the caller
            // got from detection; image `i`'s output lies within the capacity.
            unsafe {
                let dst = out.as_mut_ptr().add(i * per_out);
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 | Isa::Avx512 => self.image::<Avx2>(image, sh, sw, dst, band_avx2),
                    Isa::Scalar => self.image::<Scalar>(image, sh, sw, dst, band_scalar),
                }
            }
        }
        // SAFETY: all `n * per_out` values were written above.
        unsafe { out.set_len(n * per_out) };
        Ok((
            CpuStorage::F32(out),
            Shape::from((n, self.conv.c_out, h, w)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// A direct convolution in f64 (zero padding 1, optional 2x nearest
    /// upsampling first).
    fn direct(
        x: &[f32],
        (n, c, sh, sw): (usize, usize, usize, usize),
        w: &[f32],
        bias: &[f32],
        up: bool,
    ) -> Vec<f64> {
        let c_out = bias.len();
        let f = if up { 2 } else { 1 };
        let (h, wd) = (sh * f, sw * f);
        let mut out = vec![0f64; n * c_out * h * wd];
        for i in 0..n {
            for co in 0..c_out {
                for y in 0..h {
                    for xx in 0..wd {
                        let mut acc = f64::from(bias[co]);
                        for ci in 0..c {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (
                                        y as isize + ky as isize - 1,
                                        xx as isize + kx as isize - 1,
                                    );
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let v = x[((i * c + ci) * sh + iy as usize / f) * sw
                                        + ix as usize / f];
                                    acc += f64::from(v)
                                        * f64::from(w[((co * c + ci) * 3 + ky) * 3 + kx]);
                                }
                            }
                        }
                        out[((i * c_out + co) * h + y) * wd + xx] = acc;
                    }
                }
            }
        }
        out
    }

    /// The op's output values.
    fn apply(input: &Tensor, op: Conv3x3Op) -> Vec<f32> {
        input.apply_op1_no_bwd(&op).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar];
        if isa() != Isa::Scalar {
            v.push(isa());
        }
        v
    }

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut v = vec![0f32; len];
        crate::tensor::rng::SplitMix64::new(seed).fill_normal(&mut v);
        v
    }

    #[test]
    fn winograd_matches_a_direct_convolution_on_every_isa() {
        // Widths and heights around the tile (4) and vector (8 tiles) sizes.
        for &(n, c, c_out, sh, sw, up) in &[
            (1, 3, 5, 9, 13, false),
            (2, 8, 16, 4, 4, false),
            (1, 16, 7, 37, 70, false),
            (1, 5, 6, 1, 1, false),
            (1, 4, 9, 7, 11, true),
            (1, 64, 64, 12, 33, false),
        ] {
            let x = random(n * c * sh * sw, 1);
            let w = random(c_out * c * 9, 2);
            let bias = random(c_out, 3);
            let want = direct(&x, (n, c, sh, sw), &w, &bias, up);
            let conv = Winograd3x3::new(&w, Some(&bias), c_out, c);
            let input = Tensor::from_vec(x.clone(), (n, c, sh, sw), &Device::Cpu).unwrap();
            for isa in isas() {
                let got = apply(&input, Conv3x3Op { isa, ..conv.op(up, Activation::Identity) });
                assert_eq!(got.len(), want.len());
                let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
                let err = got
                    .iter()
                    .zip(&want)
                    .fold(0f64, |m, (g, w)| m.max((f64::from(*g) - w).abs()));
                assert!(
                    err <= 1e-5 * scale.max(1.0),
                    "{isa:?} {n}x{c}x{sh}x{sw}->{c_out} up {up}: error {err} (scale {scale})"
                );
            }
        }
    }

    #[test]
    fn winograd_applies_prelu_per_channel_and_shared() {
        let (c, c_out, sh, sw) = (3, 4, 10, 18);
        let x = random(c * sh * sw, 4);
        let w = random(c_out * c * 9, 5);
        let want = direct(&x, (1, c, sh, sw), &w, &[0.0; 4], false);
        let conv = Winograd3x3::new(&w, None, c_out, c);
        let input = Tensor::from_vec(x, (1, c, sh, sw), &Device::Cpu).unwrap();
        for slopes in [vec![0.25f32, -0.5, 1.5, 0.0], vec![0.1]] {
            for isa in isas() {
                let got = apply(&input, Conv3x3Op { isa, ..conv.op(false, Activation::Prelu(&slopes)) });
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let slope =
                        f64::from(slopes[if slopes.len() == 1 { 0 } else { i / (sh * sw) }]);
                    let w = if *w >= 0.0 { *w } else { w * slope };
                    assert!(
                        (f64::from(*g) - w).abs() < 1e-4,
                        "{isa:?} element {i}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
