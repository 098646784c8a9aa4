//! The diffusers `UNet2DConditionModel` of SD 1.x/2.x: noisy latent,
//! timestep and text embeddings in, the model output (epsilon or v) out.

mod blocks;
mod embeddings;
mod transformer;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use self::blocks::{BlockShape, DownBlock, MidBlock, UpBlock};
use self::embeddings::{sinusoidal, TimestepEmbedding};
use self::transformer::TransformerConfig;
use super::config::UNetConfig;
use super::layers::{conv2d, Activation, Conv2d, GroupNorm, ResnetConfig};

/// The conditional UNet.
#[derive(Clone, Debug)]
pub struct UNet2DConditionModel {
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    time_embedding_act: Option<Activation>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Activation,
    config: UNetConfig,
    dtype: DType,
}

fn is_cross_attn(block_type: &str, down: bool) -> Result<bool> {
    match (block_type, down) {
        ("CrossAttnDownBlock2D", true) | ("CrossAttnUpBlock2D", false) => Ok(true),
        ("DownBlock2D", true) | ("UpBlock2D", false) => Ok(false),
        (other, _) => bail!("UNet config: unsupported block type `{other}`"),
    }
}

impl UNet2DConditionModel {
    /// Builds the UNet described by `config` from `vb` (the weights of
    /// `unet/diffusion_pytorch_model.safetensors`).
    pub fn new(config: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let heads = config.heads()?;
        let layers = config.layers_per_block.per_block(n, "layers_per_block")?;
        let cross_dim = config.cross_attention_dim.per_block(n, "cross_attention_dim")?;
        let depth = config.transformer_layers_per_block.per_block(n, "transformer_layers_per_block")?;
        let only_cross = config.only_cross_attention.per_block(n, "only_cross_attention")?;
        for (c, h) in ch.iter().zip(&heads) {
            if *h == 0 || c % h != 0 {
                bail!("UNet config: {c} channels cannot be split into {h} attention heads");
            }
        }
        let act = Activation::parse(&config.act_fn)?;
        let time_dim = config.time_embed_dim();
        let resnet = |scale: f64| ResnetConfig {
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            temb_channels: Some(time_dim),
            act,
            output_scale_factor: scale,
        };
        let attn = |i: usize| TransformerConfig {
            heads: heads[i],
            depth: depth[i],
            context_dim: cross_dim[i],
            groups: config.norm_num_groups,
            use_linear_projection: config.use_linear_projection,
            only_cross_attention: only_cross[i],
        };
        let post_act = config.timestep_post_act.as_deref().map(Activation::parse).transpose()?;
        let time_embedding = TimestepEmbedding::new(ch[0], time_dim, act, post_act, vb.pp("time_embedding"))?;
        let time_embedding_act = config.time_embedding_act_fn.as_deref().map(Activation::parse).transpose()?;
        let (k_in, k_out) = (config.conv_in_kernel, config.conv_out_kernel);
        let conv_in = conv2d(config.in_channels, ch[0], k_in, 1, (k_in - 1) / 2, vb.pp("conv_in"))?;

        let mut down_blocks = Vec::with_capacity(n);
        for (i, block_type) in config.down_block_types.iter().enumerate() {
            let shape = BlockShape { in_ch: ch[i.saturating_sub(1)], out_ch: ch[i], layers: layers[i], resample: i + 1 < n };
            let cross = is_cross_attn(block_type, true)?.then(|| attn(i));
            let vb = vb.pp(format!("down_blocks.{i}"));
            down_blocks.push(DownBlock::new(shape, resnet(config.resnet_out_scale_factor), cross, config.downsample_padding, vb)?);
        }
        let mid_block = match config.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => {
                Some(MidBlock::new(ch[n - 1], resnet(config.mid_block_scale_factor), attn(n - 1), vb.pp("mid_block"))?)
            }
            None => None,
            Some(other) => bail!("UNet config: unsupported mid block `{other}`"),
        };
        let mut up_blocks = Vec::with_capacity(n);
        let mut prev_ch = ch[n - 1];
        for (i, block_type) in config.up_block_types.iter().enumerate() {
            let r = n - 1 - i; // the matching down block
            let shape = BlockShape { in_ch: ch[r.saturating_sub(1)], out_ch: ch[r], layers: layers[r] + 1, resample: i + 1 < n };
            let cross = is_cross_attn(block_type, false)?.then(|| attn(r));
            let vb = vb.pp(format!("up_blocks.{i}"));
            up_blocks.push(UpBlock::new(shape, prev_ch, resnet(config.resnet_out_scale_factor), cross, vb)?);
            prev_ch = ch[r];
        }
        Ok(UNet2DConditionModel {
            conv_in,
            time_embedding,
            time_embedding_act,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(config.norm_num_groups, ch[0], config.norm_eps, vb.pp("conv_norm_out"))?,
            conv_out: conv2d(ch[0], config.out_channels, k_out, 1, (k_out - 1) / 2, vb.pp("conv_out"))?,
            act,
            config: config.clone(),
            dtype: vb.dtype(),
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The model output for `sample: (N, C, H, W)` at `timestep` (the same
    /// for the whole batch) attending to `encoder_hidden_states: (N, L, D)`.
    /// Inputs are cast to the weights' dtype; the output has that dtype.
    pub fn forward(&self, sample: &Tensor, timestep: f64, encoder_hidden_states: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = sample.dims4()?;
        let device = sample.device();
        let mut x = sample.to_dtype(self.dtype)?;
        if self.config.center_input_sample {
            x = x.affine(2.0, -1.0)?;
        }
        let context = encoder_hidden_states.to_dtype(self.dtype)?;
        let ch0 = self.config.block_out_channels[0];
        let t = sinusoidal(timestep, ch0, self.config.flip_sin_to_cos, self.config.freq_shift, device)?;
        let mut temb = self.time_embedding.forward(&t.to_dtype(self.dtype)?)?;
        if let Some(act) = self.time_embedding_act {
            temb = act.forward(&temb)?;
        }
        // Every ResNet applies the same activation to the embedding first.
        let temb = self.act.forward(&temb)?;

        x = self.conv_in.forward(&x)?;
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            x = block.forward(&x, &temb, &context, &mut skips)?;
        }
        if let Some(mid) = &self.mid_block {
            x = mid.forward(&x, &temb, &context)?;
        }
        // Sizes that are not multiples of 2^downsamplings upsample to the
        // size of the next skip connection, as diffusers does.
        let factor = 1 << (self.down_blocks.len() - 1);
        let exact = h % factor == 0 && w % factor == 0;
        for (i, block) in self.up_blocks.iter().enumerate() {
            let remaining = skips.len() - block.skips_needed();
            let up_size = if exact || i + 1 == self.up_blocks.len() {
                None
            } else {
                let (_, _, sh, sw) = skips[remaining - 1].dims4()?;
                Some((sh, sw))
            };
            x = block.forward(&x, &temb, &context, &mut skips, up_size)?;
        }
        let x = self.conv_norm_out.forward(&x, Some(self.act))?;
        Ok(self.conv_out.forward(&x)?)
    }
}
