//! The diffusers `Downsample2D` and `Upsample2D` (convolution variants).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::{conv2d, Conv2d};

/// A stride-2 3x3 convolution (`conv`); with `padding` 0 the input is first
/// padded by one pixel on the right and bottom, as diffusers does.
#[derive(Clone, Debug)]
pub(crate) struct Downsample2D {
    conv: Conv2d,
    pad_right_bottom: bool,
}

impl Downsample2D {
    /// Loads `conv` from `channels` to `channels`.
    pub(crate) fn new(channels: usize, padding: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Downsample2D { conv: conv2d(channels, channels, 3, 2, padding, vb.pp("conv"))?, pad_right_bottom: padding == 0 })
    }

    /// Halves the resolution of `x: (N, C, H, W)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_right_bottom {
            self.conv.forward(&x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?)
        } else {
            self.conv.forward(x)
        }
    }
}

/// Nearest-neighbour upsampling followed by a 3x3 convolution (`conv`).
#[derive(Clone, Debug)]
pub(crate) struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    /// Loads `conv` from `channels` to `channels`.
    pub(crate) fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Upsample2D { conv: conv2d(channels, channels, 3, 1, 1, vb.pp("conv"))? })
    }

    /// Upsamples `x: (N, C, H, W)` to `size` (twice the resolution when `None`).
    pub(crate) fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        match size {
            Some((th, tw)) if (th, tw) != (2 * h, 2 * w) => self.conv.forward(&x.upsample_nearest2d(th, tw)?),
            _ => self.conv.forward_upsampled(x),
        }
    }
}
