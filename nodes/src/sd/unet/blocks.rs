//! The UNet's down, mid and up blocks (`CrossAttnDownBlock2D`,
//! `DownBlock2D`, `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`,
//! `UpBlock2D`).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::transformer::{Transformer2D, TransformerConfig};
use crate::sd::layers::{Downsample2D, ResnetBlock2D, ResnetConfig, Upsample2D};

/// A down block: ResNets, each followed by a transformer when the block has
/// cross-attention, then an optional stride-2 downsampler.
#[derive(Clone, Debug)]
pub(super) struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    downsampler: Option<Downsample2D>,
}

/// The shape of a down or up block.
#[derive(Clone, Copy, Debug)]
pub(super) struct BlockShape {
    pub(super) in_ch: usize,
    pub(super) out_ch: usize,
    pub(super) layers: usize,
    pub(super) resample: bool,
}

impl DownBlock {
    pub(super) fn new(
        shape: BlockShape,
        resnet: ResnetConfig,
        attn: Option<TransformerConfig>,
        downsample_padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(shape.layers);
        let mut attentions = Vec::new();
        for i in 0..shape.layers {
            let in_ch = if i == 0 { shape.in_ch } else { shape.out_ch };
            resnets.push(ResnetBlock2D::new(in_ch, shape.out_ch, resnet, vb.pp(format!("resnets.{i}")))?);
            if let Some(cfg) = attn {
                attentions.push(Transformer2D::new(shape.out_ch, cfg, vb.pp(format!("attentions.{i}")))?);
            }
        }
        let downsampler = if shape.resample {
            Some(Downsample2D::new(shape.out_ch, downsample_padding, vb.pp("downsamplers.0"))?)
        } else {
            None
        };
        Ok(DownBlock { resnets, attentions, downsampler })
    }

    /// Runs the block; pushes every intermediate output (the skip
    /// connections) to `skips` and returns the last one.
    pub(super) fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor, skips: &mut Vec<Tensor>) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(&x, Some(temb))?;
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(&x, context)?;
            }
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(&x)?;
            skips.push(x.clone());
        }
        Ok(x)
    }
}

/// The mid block: ResNet, then (transformer, ResNet) pairs.
#[derive(Clone, Debug)]
pub(super) struct MidBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
}

impl MidBlock {
    pub(super) fn new(channels: usize, resnet: ResnetConfig, attn: TransformerConfig, vb: VarBuilder) -> Result<Self> {
        Ok(MidBlock {
            resnets: (0..2)
                .map(|i| ResnetBlock2D::new(channels, channels, resnet, vb.pp(format!("resnets.{i}"))))
                .collect::<Result<_>>()?,
            attentions: vec![Transformer2D::new(channels, attn, vb.pp("attentions.0"))?],
        })
    }

    pub(super) fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let mut x = self.resnets[0].forward(x, Some(temb))?;
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = resnet.forward(&attn.forward(&x, context)?, Some(temb))?;
        }
        Ok(x)
    }
}

/// An up block: ResNets over the input concatenated with a skip
/// connection, each followed by a transformer when the block has
/// cross-attention, then an optional upsampler.
#[derive(Clone, Debug)]
pub(super) struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// `shape.in_ch` is the width of the matching down block's input,
    /// `prev_ch` the width of the previous up block's output.
    pub(super) fn new(
        shape: BlockShape,
        prev_ch: usize,
        resnet: ResnetConfig,
        attn: Option<TransformerConfig>,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(shape.layers);
        let mut attentions = Vec::new();
        for i in 0..shape.layers {
            let skip_ch = if i == shape.layers - 1 { shape.in_ch } else { shape.out_ch };
            let in_ch = if i == 0 { prev_ch } else { shape.out_ch };
            resnets.push(ResnetBlock2D::new(in_ch + skip_ch, shape.out_ch, resnet, vb.pp(format!("resnets.{i}")))?);
            if let Some(cfg) = attn {
                attentions.push(Transformer2D::new(shape.out_ch, cfg, vb.pp(format!("attentions.{i}")))?);
            }
        }
        let upsampler = if shape.resample { Some(Upsample2D::new(shape.out_ch, vb.pp("upsamplers.0"))?) } else { None };
        Ok(UpBlock { resnets, attentions, upsampler })
    }

    /// Number of skip connections the block consumes.
    pub(super) fn skips_needed(&self) -> usize {
        self.resnets.len()
    }

    /// Runs the block, popping its skip connections from the end of `skips`;
    /// the upsampler targets `up_size` when given (odd latent sizes).
    pub(super) fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
        up_size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().ok_or_else(|| candle_core::Error::Msg("UNet: missing skip connection".into()))?;
            x = resnet.forward(&Tensor::cat(&[&x, &skip], 1)?, Some(temb))?;
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(&x, context)?;
            }
        }
        match &self.upsampler {
            Some(up) => up.forward(&x, up_size),
            None => Ok(x),
        }
    }
}
