//! Building blocks shared by the CLIP text encoder, the UNet and the VAE,
//! loaded under their diffusers / transformers weight names.

mod activation;
mod attention;
mod norm;
mod resnet;
mod sampling;

pub use activation::Activation;
pub(crate) use attention::{sdpa, Attention};
pub(crate) use norm::{layer_norm, GroupNorm, LayerNorm};
pub(crate) use resnet::{ResnetBlock2D, ResnetConfig};
pub(crate) use sampling::{Downsample2D, Upsample2D};

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Conv2dConfig, Linear, VarBuilder};

use crate::sd::cpu::conv;

/// A linear layer `weight: (out, in)`, with or without `bias: (out,)`.
pub(crate) fn linear(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
    Ok(Linear::new(weight, bias))
}

/// A linear layer stored either as `(out, in)` or as a 1x1 convolution
/// `(out, in, 1, 1)` (`conv`), applied to channel-last inputs.
pub(crate) fn linear_or_1x1(in_dim: usize, out_dim: usize, conv: bool, vb: VarBuilder) -> Result<Linear> {
    if !conv {
        return linear(in_dim, out_dim, true, vb);
    }
    let weight = vb.get((out_dim, in_dim, 1, 1), "weight")?.reshape((out_dim, in_dim))?;
    Ok(Linear::new(weight, Some(vb.get(out_dim, "bias")?)))
}

/// A square convolution with bias.
#[derive(Clone, Debug)]
pub(crate) enum Conv2d {
    /// candle's convolution (other shapes, devices and dtypes).
    Candle(candle_nn::Conv2d),
    /// A 3x3, stride 1, padding 1 float32 CPU convolution run as blocked
    /// GEMMs; holds the `(C_out, 9 C_in + 1)` weight-and-bias matrix.
    Gemm3x3(Tensor),
}

impl Conv2d {
    /// Convolves `x: (N, C, H, W)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Conv2d::Candle(c) => c.forward(x),
            Conv2d::Gemm3x3(w) => conv::conv3x3(x, w, false),
        }
    }

    /// Convolves `x` upsampled 2x by nearest neighbour (without building the
    /// upsampled tensor when the GEMM path runs).
    pub(crate) fn forward_upsampled(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Conv2d::Candle(c) => {
                let (_, _, h, w) = x.dims4()?;
                c.forward(&x.upsample_nearest2d(2 * h, 2 * w)?)
            }
            Conv2d::Gemm3x3(w) => conv::conv3x3(x, w, true),
        }
    }
}

/// A square convolution with bias; `padding` on every side.
pub(crate) fn conv2d(
    in_ch: usize,
    out_ch: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let weight = vb.get((out_ch, in_ch, kernel, kernel), "weight")?;
    let bias = vb.get(out_ch, "bias")?;
    if (kernel, stride, padding) == (3, 1, 1) && weight.device().is_cpu() && weight.dtype() == DType::F32 {
        return Ok(Conv2d::Gemm3x3(conv::gemm_weight(&weight, &bias)?));
    }
    let cfg = Conv2dConfig { padding, stride, dilation: 1, groups: 1, cudnn_fwd_algo: None };
    Ok(Conv2d::Candle(candle_nn::Conv2d::new(weight, Some(bias), cfg)))
}
