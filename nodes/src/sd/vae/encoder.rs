//! The VAE encoder: image `(N, 3, H, W)` in [-1, 1] to the moments
//! `(N, 2 * latent_channels, H / f, W / f)`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::mid::VaeMidBlock;
use crate::sd::config::VaeConfig;
use crate::sd::layers::{conv2d, Activation, Conv2d, Downsample2D, GroupNorm, ResnetBlock2D, ResnetConfig};

/// One `DownEncoderBlock2D`.
#[derive(Clone, Debug)]
struct DownEncoderBlock {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
}

/// The diffusers `Encoder` (with `double_z`).
#[derive(Clone, Debug)]
pub(super) struct Encoder {
    conv_in: Conv2d,
    blocks: Vec<DownEncoderBlock>,
    mid: VaeMidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Activation,
}

impl Encoder {
    pub(super) fn new(cfg: &VaeConfig, resnet: ResnetConfig, vb: VarBuilder) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let mut blocks = Vec::with_capacity(n);
        for i in 0..n {
            let vb = vb.pp(format!("down_blocks.{i}"));
            let in_ch = if i == 0 { ch[0] } else { ch[i - 1] };
            let resnets = (0..cfg.layers_per_block)
                .map(|j| ResnetBlock2D::new(if j == 0 { in_ch } else { ch[i] }, ch[i], resnet, vb.pp(format!("resnets.{j}"))))
                .collect::<Result<Vec<_>>>()?;
            let downsampler = if i + 1 < n { Some(Downsample2D::new(ch[i], 0, vb.pp("downsamplers.0"))?) } else { None };
            blocks.push(DownEncoderBlock { resnets, downsampler });
        }
        Ok(Encoder {
            conv_in: conv2d(cfg.in_channels, ch[0], 3, 1, 1, vb.pp("conv_in"))?,
            blocks,
            mid: VaeMidBlock::new(ch[n - 1], resnet, cfg.mid_block_add_attention, vb.pp("mid_block"))?,
            conv_norm_out: GroupNorm::new(resnet.groups, ch[n - 1], resnet.eps, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(ch[n - 1], 2 * cfg.latent_channels, 3, 1, 1, vb.pp("conv_out"))?,
            act: resnet.act,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.conv_in.forward(x)?;
        for block in &self.blocks {
            for resnet in &block.resnets {
                x = resnet.forward(&x, None)?;
            }
            if let Some(down) = &block.downsampler {
                x = down.forward(&x)?;
            }
        }
        let x = self.mid.forward(&x)?;
        self.conv_out.forward(&self.conv_norm_out.forward(&x, Some(self.act))?)
    }
}
