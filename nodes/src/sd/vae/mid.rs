//! The VAE's `UNetMidBlock2D`: ResNet, single-head self-attention over the
//! pixels (with its own group norm and residual), ResNet.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::sd::layers::{Attention, GroupNorm, ResnetBlock2D, ResnetConfig};

/// The diffusers `Attention` with `group_norm` and `residual_connection`.
#[derive(Clone, Debug)]
struct SpatialSelfAttention {
    group_norm: GroupNorm,
    attn: Attention,
}

impl SpatialSelfAttention {
    fn new(channels: usize, groups: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(SpatialSelfAttention {
            group_norm: GroupNorm::new(groups, channels, eps, vb.pp("group_norm"))?,
            attn: Attention::new(channels, channels, 1, channels, true, vb)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let tokens = self.group_norm.forward(x, None)?.reshape((n, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let out = self.attn.forward(&tokens, None)?.transpose(1, 2)?.reshape((n, c, h, w))?;
        out + x
    }
}

/// The mid block of the VAE encoder and decoder.
#[derive(Clone, Debug)]
pub(super) struct VaeMidBlock {
    resnet_in: ResnetBlock2D,
    attention: Option<SpatialSelfAttention>,
    resnet_out: ResnetBlock2D,
}

impl VaeMidBlock {
    pub(super) fn new(channels: usize, resnet: ResnetConfig, add_attention: bool, vb: VarBuilder) -> Result<Self> {
        let attention = if add_attention {
            Some(SpatialSelfAttention::new(channels, resnet.groups, resnet.eps, vb.pp("attentions.0"))?)
        } else {
            None
        };
        Ok(VaeMidBlock {
            resnet_in: ResnetBlock2D::new(channels, channels, resnet, vb.pp("resnets.0"))?,
            attention,
            resnet_out: ResnetBlock2D::new(channels, channels, resnet, vb.pp("resnets.1"))?,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.resnet_in.forward(x, None)?;
        if let Some(attn) = &self.attention {
            x = attn.forward(&x)?;
        }
        self.resnet_out.forward(&x, None)
    }
}
