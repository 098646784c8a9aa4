//! 2-D convolution tuned for the CPU.
//!
//! candle's CPU `conv2d` (tiled im2col) spends about as long building its
//! patch matrix (scalar loops, NCHW -> NHWC copies, strided writes) as in the
//! matrix product itself. Here the output is computed in bands of rows: the
//! padded input rows of a band are cut out, the patch matrix is assembled from
//! `k*k` shifted views of them with row copies, laid out
//! `[(ky, kx, c_in), pixels]` so that one matrix product writes NCHW output
//! directly, and bias and activation are applied while the band is in cache.
//! Only the output is allocated at full size. For Real-ESRGAN's 64-channel
//! 3x3 layers a convolution takes about half the time of candle's, with the
//! sums taken in the same order (same values). 3x3 convolutions with
//! padding 1 (all of Real-ESRGAN's) go through Winograd F(4x4, 3x3) instead
//! ([`crate::kernels::winograd`]), 2.6x faster again. Other devices and
//! strided convolutions use candle's `conv2d`.

use std::sync::Arc;

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::prelu::Prelu;
use crate::kernels::winograd::{Activation, Winograd3x3};

/// Output pixels per band (at least; whole rows): small enough that the patch
/// matrix of a band (`9 * 64` rows x 512 pixels, 1.2 MB) stays in the L2
/// cache, large enough for an efficient matrix product.
const BAND_PIXELS: usize = 512;

/// A convolution with zero padding, optional bias, one group.
#[derive(Clone, Debug)]
pub struct Conv {
    /// `[c_out, c_in, k, k]`.
    weight: Tensor,
    /// `weight` as `[c_out, k * k * c_in]`, ordered `(ky, kx, c_in)`.
    matrix: Tensor,
    /// `[c_out]`.
    bias: Option<Tensor>,
    /// The kernel in the Winograd domain, for 3x3 convolutions with stride
    /// 1, padding 1 and no dilation (the CPU path).
    winograd: Option<Arc<Winograd3x3>>,
    kernel: usize,
    padding: usize,
    stride: usize,
    dilation: usize,
}

impl Conv {
    /// A convolution with square kernel `weight` (`[c_out, c_in, k, k]`) and
    /// `bias` (`[c_out]`).
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        padding: usize,
        stride: usize,
        dilation: usize,
    ) -> Result<Conv> {
        let (c_out, c_in, kh, kw) = weight.dims4()?;
        ensure!(kh == kw, "only square kernels are supported, got {kh}x{kw}");
        ensure!(
            stride >= 1 && dilation >= 1,
            "stride and dilation must be at least 1"
        );
        if let Some(b) = &bias {
            ensure!(
                b.dims() == [c_out],
                "bias has shape {:?}, expected [{c_out}]",
                b.dims()
            );
        }
        let matrix = weight
            .permute((0, 2, 3, 1))?
            .reshape((c_out, kh * kw * c_in))?
            .contiguous()?;
        let winograd = if (kh, padding, stride, dilation) == (3, 1, 1, 1) {
            let host = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
            let bias = bias.as_ref().map(host).transpose()?;
            Some(Arc::new(Winograd3x3::new(
                &host(&weight)?,
                bias.as_deref(),
                c_out,
                c_in,
            )))
        } else {
            None
        };
        Ok(Conv {
            weight,
            matrix,
            bias,
            winograd,
            kernel: kh,
            padding,
            stride,
            dilation,
        })
    }

    /// The kernel, `[c_out, c_in, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[c_out]`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// How far the kernel reaches from its centre, in input pixels.
    pub fn reach(&self) -> usize {
        self.dilation * (self.kernel - 1) / 2
    }

    /// The stride.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Applies the convolution to `xs`, `[N, C, H, W]`, then `act` if given.
    pub fn forward(&self, xs: &Tensor, act: Option<&Prelu>) -> Result<Tensor> {
        if let (Some(winograd), Device::Cpu, DType::F32) = (&self.winograd, xs.device(), xs.dtype())
        {
            let act = act.map_or(Activation::Identity, |a| Activation::Prelu(a.host()));
            return Ok(xs
                .contiguous()?
                .apply_op1_no_bwd(&winograd.op(false, act))?);
        }
        if matches!(xs.device(), Device::Cpu) && self.stride == 1 {
            return self.forward_cpu(xs, act);
        }
        let out = xs.conv2d(&self.weight, self.padding, self.stride, self.dilation, 1)?;
        let out = self.add_bias(out)?;
        match act {
            Some(act) => act.forward(&out),
            None => Ok(out),
        }
    }

    fn add_bias(&self, out: Tensor) -> Result<Tensor> {
        Ok(match &self.bias {
            Some(b) => out.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?,
            None => out,
        })
    }

    /// Band by band: only the output is allocated at full size; padding, the
    /// patch matrix, bias and activation work on cache-sized pieces.
    fn forward_cpu(&self, xs: &Tensor, act: Option<&Prelu>) -> Result<Tensor> {
        let (n, c, h, w) = xs.dims4()?;
        let (_, c_in, _, _) = self.weight.dims4()?;
        ensure!(
            c == c_in,
            "convolution expects {c_in} input channels, got {c}"
        );
        let (pad, span) = (self.padding, self.dilation * (self.kernel - 1));
        let (oh, ow) = (
            (h + 2 * pad).saturating_sub(span),
            (w + 2 * pad).saturating_sub(span),
        );
        ensure!(oh > 0 && ow > 0, "input {h}x{w} is smaller than the kernel");
        let band_rows = BAND_PIXELS.div_ceil(ow);
        let starts: Vec<usize> = (0..oh).step_by(band_rows).collect();
        let mut images = Vec::with_capacity(n);
        for i in 0..n {
            let image = xs.narrow(0, i, 1)?;
            // Bands are independent: with more than one thread they run in
            // parallel (each matrix product is too small to split well).
            let bands = starts
                .par_iter()
                .map(|&y0| self.band(&image, y0, band_rows.min(oh - y0), ow, act))
                .collect::<Result<Vec<_>>>()?;
            images.push(Tensor::cat(&bands, 2)?);
        }
        Ok(Tensor::cat(&images, 0)?)
    }

    /// Output rows `y0 .. y0 + rows` (all `ow` columns) of one image
    /// (`[1, C, H, W]`), bias and activation applied.
    fn band(
        &self,
        image: &Tensor,
        y0: usize,
        rows: usize,
        ow: usize,
        act: Option<&Prelu>,
    ) -> Result<Tensor> {
        let (_, _, h, _) = image.dims4()?;
        let c_out = self.matrix.dim(0)?;
        let (pad, span) = (self.padding, self.dilation * (self.kernel - 1));
        // Input rows y0 - pad .. y0 - pad + rows + span, zeros outside the image.
        let start = y0 as isize - pad as isize;
        let end = start + (rows + span) as isize;
        let (top, bottom) = (start.clamp(0, h as isize), end.clamp(0, h as isize));
        // Contiguous first: candle concatenates strided views element by element.
        let input = image
            .narrow(2, top as usize, (bottom - top) as usize)?
            .contiguous()?
            .pad_with_zeros(2, (top - start) as usize, (end - bottom) as usize)?
            .pad_with_zeros(3, pad, pad)?;
        let mut shifted = Vec::with_capacity(self.kernel * self.kernel);
        for ky in 0..self.kernel {
            let band = input.narrow(2, ky * self.dilation, rows)?;
            for kx in 0..self.kernel {
                shifted.push(band.narrow(3, kx * self.dilation, ow)?);
            }
        }
        let patches = Tensor::cat(&shifted, 1)?.reshape((self.matrix.dim(1)?, rows * ow))?;
        let out = self
            .matrix
            .matmul(&patches)?
            .reshape((1, c_out, rows, ow))?;
        let out = self.add_bias(out)?;
        match act {
            Some(act) => act.forward(&out),
            None => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_candle_conv2d() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 5, 37, 45), &dev).unwrap();
        for (k, padding, dilation) in [(3, 1, 1), (1, 0, 1), (3, 0, 2), (5, 2, 1), (1, 2, 1)] {
            let w = Tensor::randn(0f32, 1.0, (7, 5, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, 7, &dev).unwrap();
            let conv = Conv::new(w.clone(), Some(b.clone()), padding, 1, dilation).unwrap();
            let want = x
                .conv2d(&w, padding, 1, dilation, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, 7, 1, 1)).unwrap())
                .unwrap();
            let got = conv.forward(&x, None).unwrap();
            assert_eq!(got.dims(), want.dims());
            // Relative to the largest output: 3x3 convolutions go through
            // Winograd, whose rounding grows with the sums' magnitude.
            let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
            let diff = crate::upscale::max_abs_diff(&got, &want);
            assert!(diff < 1e-5 * scale, "k {k} pad {padding} dil {dilation}: {diff} (largest {scale})");
            assert_eq!(conv.bias().unwrap().dims(), [7]);
        }
    }

    #[test]
    fn strided_convolutions_use_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 2, 9, 9), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (3, 2, 3, 3), &dev).unwrap();
        let conv = Conv::new(w.clone(), None, 1, 2, 1).unwrap();
        let got = conv.forward(&x, None).unwrap();
        assert_eq!(got.dims(), [1, 3, 5, 5]);
        assert_eq!(
            crate::upscale::max_abs_diff(&got, &x.conv2d(&w, 1, 2, 1, 1).unwrap()),
            0.0
        );
    }
}
