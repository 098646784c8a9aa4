//! 3x3 convolutions (stride 1, padding 1) on float32 CPU tensors as blocked
//! GEMMs: for a band of output rows, an im2col matrix `(9 C + 1, rows * W)`
//! (the last row all ones, so the bias is a column of the weight matrix) is
//! built directly from the NCHW input, zero padding and an optional 2x
//! nearest-neighbour upsampling included, and multiplied by the weights
//! `(C_out, 9 C + 1)` with candle's GEMM. The result rows are NCHW already.
//!
//! Images of at least [`WINOGRAD_MIN_PIXELS`] output pixels (the VAE, the
//! UNet's first levels) go through Winograd F(4x4, 3x3) instead
//! ([`crate::kernels::winograd`]), its kernel transformed from the same
//! matrix on each call (about 1% of the convolution's time; keeping it would
//! hold 4x the weights' memory). Smaller images keep the im2col GEMM, where
//! the 36 transformed kernels would be read for too few tiles.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::f32_data;
use crate::kernels::parallel::{parallel_for, SharedMut};
use crate::kernels::winograd::{Activation, Winograd3x3};

/// Output pixels from which a convolution runs as Winograd F(4x4, 3x3).
const WINOGRAD_MIN_PIXELS: usize = 32 * 32;

/// Upper bound of one im2col band in bytes (a few MB keeps it in the
/// allocator's reusable range and the GEMM's columns wide).
const BAND_BYTES: usize = 6 << 20;

/// The weights of a 3x3 convolution as the GEMM's left matrix
/// `(C_out, 9 C_in + 1)`: the flattened kernel, then the bias.
pub(crate) fn gemm_weight(weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (cout, cin, _, _) = weight.dims4()?;
    Tensor::cat(&[weight.reshape((cout, 9 * cin))?, bias.reshape((cout, 1))?], 1)?.contiguous()
}

/// Builds the im2col band of image `image`, output rows `r0..r0 + rows`.
struct Im2Col {
    image: usize,
    r0: usize,
    rows: usize,
    upsample: bool,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "sd-im2col-3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c, sh, sw) = layout.shape().dims4()?;
        if !layout.is_contiguous() {
            candle_core::bail!("im2col: the input must be contiguous");
        }
        let x = f32_data(storage, layout)?;
        let f = if self.upsample { 2 } else { 1 };
        let (h, w) = (sh * f, sw * f);
        let n = self.rows * w;
        let mut col = vec![0f32; (9 * c + 1) * n];
        col[9 * c * n..].fill(1.0);
        let out = SharedMut(col.as_mut_ptr());
        let image = &x[self.image * c * sh * sw..];
        parallel_for(c, || (), |_, ch| {
            let src = &image[ch * sh * sw..(ch + 1) * sh * sw];
            for k in 0..9 {
                let (ky, kx) = (k / 3, k % 3);
                // SAFETY: channel `ch` owns rows 9 ch .. 9 ch + 9 of `col`.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.ptr().add((ch * 9 + k) * n), n) };
                for y in 0..self.rows {
                    let iy = (self.r0 + y + ky) as isize - 1;
                    if iy < 0 || iy >= h as isize {
                        continue; // zero padding (the buffer starts zeroed)
                    }
                    let srow = &src[(iy as usize / f) * sw..(iy as usize / f + 1) * sw];
                    let drow = &mut dst[y * w..(y + 1) * w];
                    if f == 1 {
                        match kx {
                            0 => drow[1..].copy_from_slice(&srow[..w - 1]),
                            1 => drow.copy_from_slice(srow),
                            _ => drow[..w - 1].copy_from_slice(&srow[1..]),
                        }
                    } else {
                        for (xo, d) in drow.iter_mut().enumerate() {
                            let ix = xo as isize + kx as isize - 1;
                            if ix >= 0 && ix < w as isize {
                                *d = srow[ix as usize / 2];
                            }
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(col), Shape::from((9 * c + 1, n))))
    }
}

/// The 3x3 convolution of `x: (N, C, H, W)` (first upsampled 2x by nearest
/// neighbour when `upsample`) with `weight` from [`gemm_weight`].
pub(crate) fn conv3x3(x: &Tensor, weight: &Tensor, upsample: bool) -> Result<Tensor> {
    let x = x.contiguous()?;
    let (n, c, h, w) = x.dims4()?;
    let (h, w) = if upsample { (2 * h, 2 * w) } else { (h, w) };
    let cout = weight.dim(0)?;
    if h * w >= WINOGRAD_MIN_PIXELS {
        let (storage, layout) = weight.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else {
            candle_core::bail!("conv3x3: expected CPU weights");
        };
        let conv = Winograd3x3::from_gemm_matrix(&f32_data(storage, &layout)?[..cout * (9 * c + 1)], cout, c);
        return x.apply_op1_no_bwd(&conv.op(upsample, Activation::Identity));
    }
    let band = (BAND_BYTES / ((9 * c + 1) * w * 4)).clamp(1, h);
    let mut images = Vec::with_capacity(n);
    for image in 0..n {
        let mut bands = Vec::with_capacity(h.div_ceil(band));
        for r0 in (0..h).step_by(band) {
            let col = x.apply_op1_no_bwd(&Im2Col { image, r0, rows: band.min(h - r0), upsample })?;
            bands.push(weight.matmul(&col)?);
        }
        let out = if bands.len() == 1 { bands.remove(0) } else { Tensor::cat(&bands, 1)? };
        images.push(out.reshape((1, cout, h, w))?);
    }
    if images.len() == 1 {
        Ok(images.remove(0))
    } else {
        Tensor::cat(&images, 0)
    }
}
