//! Building blocks shared by the CLIP text encoder, the UNet and the VAE,
//! loaded under their diffusers / transformers weight names.

mod activation;
mod attention;
mod norm;
mod resnet;
mod sampling;

pub use activation::Activation;
pub(crate) use attention::{sdpa, Attention};
pub(crate) use norm::{layer_norm, GroupNorm};
pub(crate) use resnet::{ResnetBlock2D, ResnetConfig};
pub(crate) use sampling::{Downsample2D, Upsample2D};

use candle_core::Result;
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};

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
    let cfg = Conv2dConfig { padding, stride, dilation: 1, groups: 1, cudnn_fwd_algo: None };
    Ok(Conv2d::new(weight, Some(bias), cfg))
}
