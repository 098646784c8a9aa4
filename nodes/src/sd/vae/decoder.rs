//! The VAE decoder: latent `(N, latent_channels, h, w)` (unscaled) to the
//! image `(N, 3, h * f, w * f)` in about [-1, 1].

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::mid::VaeMidBlock;
use crate::sd::config::VaeConfig;
use crate::sd::layers::{conv2d, Activation, Conv2d, GroupNorm, ResnetBlock2D, ResnetConfig, Upsample2D};

/// One `UpDecoderBlock2D`.
#[derive(Clone, Debug)]
struct UpDecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

/// The diffusers `Decoder`.
#[derive(Clone, Debug)]
pub(super) struct Decoder {
    conv_in: Conv2d,
    mid: VaeMidBlock,
    blocks: Vec<UpDecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Activation,
}

impl Decoder {
    pub(super) fn new(cfg: &VaeConfig, resnet: ResnetConfig, vb: VarBuilder) -> Result<Self> {
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let n = rev.len();
        let mut blocks = Vec::with_capacity(n);
        let mut prev = rev[0];
        for (i, &out_ch) in rev.iter().enumerate() {
            let vb = vb.pp(format!("up_blocks.{i}"));
            let resnets = (0..cfg.layers_per_block + 1)
                .map(|j| ResnetBlock2D::new(if j == 0 { prev } else { out_ch }, out_ch, resnet, vb.pp(format!("resnets.{j}"))))
                .collect::<Result<Vec<_>>>()?;
            let upsampler = if i + 1 < n { Some(Upsample2D::new(out_ch, vb.pp("upsamplers.0"))?) } else { None };
            blocks.push(UpDecoderBlock { resnets, upsampler });
            prev = out_ch;
        }
        Ok(Decoder {
            conv_in: conv2d(cfg.latent_channels, rev[0], 3, 1, 1, vb.pp("conv_in"))?,
            mid: VaeMidBlock::new(rev[0], resnet, cfg.mid_block_add_attention, vb.pp("mid_block"))?,
            blocks,
            conv_norm_out: GroupNorm::new(resnet.groups, rev[n - 1], resnet.eps, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(rev[n - 1], cfg.out_channels, 3, 1, 1, vb.pp("conv_out"))?,
            act: resnet.act,
        })
    }

    pub(super) fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut x = self.mid.forward(&self.conv_in.forward(z)?)?;
        for block in &self.blocks {
            for resnet in &block.resnets {
                x = resnet.forward(&x, None)?;
            }
            if let Some(up) = &block.upsampler {
                x = up.forward(&x, None)?;
            }
        }
        self.conv_out.forward(&self.conv_norm_out.forward(&x, Some(self.act))?)
    }
}
