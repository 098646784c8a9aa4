//! The diffusers / transformers `config.json` files of a Stable Diffusion
//! 1.x/2.x directory, with the library defaults for every field left out.
//!
//! Only the fields that change the SD 1.x/2.x architectures are modelled;
//! [`UNetConfig::validate`] rejects the UNet variants that this
//! implementation does not build (class or addition embeddings, dual cross
//! attention, ...), so an unsupported model fails at load time instead of
//! giving wrong numbers.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Reads and parses a JSON config file; the error names the file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("cannot parse `{}`", path.display()))
}

/// A config value given either once for all blocks or once per block.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// The same value for every block.
    One(T),
    /// One value per block, in down-block order.
    Many(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value for each of `n` blocks; `field` names the config field in errors.
    pub fn per_block(&self, n: usize, field: &str) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); n]),
            PerBlock::Many(vs) if vs.len() == n => Ok(vs.clone()),
            PerBlock::Many(vs) => bail!("`{field}` lists {} values for {n} blocks", vs.len()),
        }
    }
}

/// `text_encoder/config.json`: a transformers `CLIPTextModel`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClipTextConfig {
    /// Vocabulary size (rows of the token embedding).
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Width of the MLP between `fc1` and `fc2`.
    pub intermediate_size: usize,
    /// Output width of the (unused by SD) text projection.
    pub projection_dim: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads per layer.
    pub num_attention_heads: usize,
    /// Number of learned positions, the longest token sequence.
    pub max_position_embeddings: usize,
    /// MLP activation: `quick_gelu` (SD 1.x) or `gelu` (exact erf, SD 2.x).
    pub hidden_act: String,
    /// Epsilon of every layer norm.
    pub layer_norm_eps: f64,
    /// Padding token id recorded by the model (the tokenizer's choice wins).
    pub pad_token_id: u32,
    /// Begin-of-text token id.
    pub bos_token_id: u32,
    /// End-of-text token id; the pooled output is taken at its first
    /// occurrence (at the largest id for the legacy value 2).
    pub eos_token_id: u32,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
            bos_token_id: 49406,
            eos_token_id: 49407,
        }
    }
}

/// `unet/config.json`: a diffusers `UNet2DConditionModel`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct UNetConfig {
    /// Default latent height and width.
    pub sample_size: usize,
    /// Latent channels in (9 for inpainting models).
    pub in_channels: usize,
    /// Latent channels out.
    pub out_channels: usize,
    /// Maps the input from [0, 1] to [-1, 1] first.
    pub center_input_sample: bool,
    /// Timestep embedding as [cos, sin] instead of [sin, cos].
    pub flip_sin_to_cos: bool,
    /// `downscale_freq_shift` of the sinusoidal timestep embedding.
    pub freq_shift: f64,
    /// `CrossAttnDownBlock2D` or `DownBlock2D`, one per resolution.
    pub down_block_types: Vec<String>,
    /// `UNetMidBlock2DCrossAttn` (or null for no mid block).
    pub mid_block_type: Option<String>,
    /// `CrossAttnUpBlock2D` or `UpBlock2D`, one per resolution.
    pub up_block_types: Vec<String>,
    /// Whether the first attention of each transformer block attends to the
    /// text instead of to itself.
    pub only_cross_attention: PerBlock<bool>,
    /// Channels of each resolution.
    pub block_out_channels: Vec<usize>,
    /// ResNet layers per down block (up blocks have one more).
    pub layers_per_block: PerBlock<usize>,
    /// Padding of the strided downsampling convolutions.
    pub downsample_padding: usize,
    /// Output scale of the mid block's ResNets.
    pub mid_block_scale_factor: f64,
    /// Activation of the ResNets, the time embedding and the output.
    pub act_fn: String,
    /// Groups of every group norm.
    pub norm_num_groups: usize,
    /// Epsilon of the ResNet and output group norms.
    pub norm_eps: f64,
    /// Width of the text embeddings attended to.
    pub cross_attention_dim: PerBlock<usize>,
    /// Transformer blocks per attention layer.
    pub transformer_layers_per_block: PerBlock<usize>,
    /// Legacy diffusers name: for SD 1.x/2.x configs this is the NUMBER OF
    /// HEADS (the head width is channels / heads), used when
    /// `num_attention_heads` is null.
    pub attention_head_dim: PerBlock<usize>,
    /// Number of attention heads; overrides `attention_head_dim` when given.
    pub num_attention_heads: Option<PerBlock<usize>>,
    /// Project into and out of the transformers with linear layers (SD 2.x)
    /// instead of 1x1 convolutions (SD 1.x).
    pub use_linear_projection: bool,
    /// Softmax in float32 (only matters for half precision).
    pub upcast_attention: bool,
    /// Width of the time embedding; 4 x `block_out_channels[0]` when null.
    pub time_embedding_dim: Option<usize>,
    /// Activation applied once to the time embedding before the blocks.
    pub time_embedding_act_fn: Option<String>,
    /// Activation after the second time-embedding linear layer.
    pub timestep_post_act: Option<String>,
    /// Kernel size of `conv_in`.
    pub conv_in_kernel: usize,
    /// Kernel size of `conv_out`.
    pub conv_out_kernel: usize,
    /// Output scale of the down and up blocks' ResNets.
    pub resnet_out_scale_factor: f64,
    /// Must be `default` (time embedding added, not scale-shift).
    pub resnet_time_scale_shift: String,
    /// Must be false.
    pub resnet_skip_time_act: bool,
    /// Must be `positional`.
    pub time_embedding_type: String,
    /// Must be false.
    pub dual_cross_attention: bool,
    /// Must be null (class-conditioned UNets are not supported).
    pub class_embed_type: Option<String>,
    /// Must be null.
    pub num_class_embeds: Option<usize>,
    /// Must be null (SDXL-style added embeddings are not supported).
    pub addition_embed_type: Option<String>,
    /// Must be null.
    pub encoder_hid_dim: Option<usize>,
    /// Must be null.
    pub time_cond_proj_dim: Option<usize>,
    /// Must be `default`.
    pub attention_type: String,
    /// Must be null.
    pub cross_attention_norm: Option<String>,
}

impl Default for UNetConfig {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        UNetConfig {
            sample_size: 64,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: s(&["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: s(&["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]),
            only_cross_attention: PerBlock::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: "silu".into(),
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::One(1280),
            transformer_layers_per_block: PerBlock::One(1),
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            use_linear_projection: false,
            upcast_attention: false,
            time_embedding_dim: None,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            resnet_out_scale_factor: 1.0,
            resnet_time_scale_shift: "default".into(),
            resnet_skip_time_act: false,
            time_embedding_type: "positional".into(),
            dual_cross_attention: false,
            class_embed_type: None,
            num_class_embeds: None,
            addition_embed_type: None,
            encoder_hid_dim: None,
            time_cond_proj_dim: None,
            attention_type: "default".into(),
            cross_attention_norm: None,
        }
    }
}

impl UNetConfig {
    /// Rejects the UNet variants this implementation does not build.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            bail!(
                "UNet config: {} block_out_channels, {} down blocks, {} up blocks",
                n,
                self.down_block_types.len(),
                self.up_block_types.len()
            );
        }
        let unsupported = [
            ("resnet_time_scale_shift", self.resnet_time_scale_shift != "default"),
            ("resnet_skip_time_act", self.resnet_skip_time_act),
            ("time_embedding_type", self.time_embedding_type != "positional"),
            ("dual_cross_attention", self.dual_cross_attention),
            ("class_embed_type", self.class_embed_type.is_some()),
            ("num_class_embeds", self.num_class_embeds.is_some()),
            ("addition_embed_type", self.addition_embed_type.is_some()),
            ("encoder_hid_dim", self.encoder_hid_dim.is_some()),
            ("time_cond_proj_dim", self.time_cond_proj_dim.is_some()),
            ("attention_type", self.attention_type != "default"),
            ("cross_attention_norm", self.cross_attention_norm.is_some()),
        ];
        if let Some((field, _)) = unsupported.iter().find(|(_, bad)| *bad) {
            bail!("UNet config: `{field}` has a value this SD 1.x/2.x UNet does not support");
        }
        Ok(())
    }

    /// Attention heads per down block (`num_attention_heads`, else the legacy
    /// `attention_head_dim`).
    pub fn heads(&self) -> Result<Vec<usize>> {
        let n = self.block_out_channels.len();
        match &self.num_attention_heads {
            Some(h) => h.per_block(n, "num_attention_heads"),
            None => self.attention_head_dim.per_block(n, "attention_head_dim"),
        }
    }

    /// Width of the time embedding.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim.unwrap_or(4 * self.block_out_channels[0])
    }
}

/// `vae/config.json`: a diffusers `AutoencoderKL`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct VaeConfig {
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// `DownEncoderBlock2D`, one per resolution.
    pub down_block_types: Vec<String>,
    /// `UpDecoderBlock2D`, one per resolution.
    pub up_block_types: Vec<String>,
    /// Channels of each resolution.
    pub block_out_channels: Vec<usize>,
    /// ResNet layers per encoder block (decoder blocks have one more).
    pub layers_per_block: usize,
    /// Activation of the ResNets and outputs.
    pub act_fn: String,
    /// Channels of the latent.
    pub latent_channels: usize,
    /// Groups of every group norm.
    pub norm_num_groups: usize,
    /// Default image size.
    pub sample_size: usize,
    /// Latents are `scaling_factor * z` for the UNet; decoding divides by it.
    pub scaling_factor: f64,
    /// 1x1 convolution after the encoder.
    pub use_quant_conv: bool,
    /// 1x1 convolution before the decoder.
    pub use_post_quant_conv: bool,
    /// Self-attention in the mid blocks.
    pub mid_block_add_attention: bool,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 32,
            scaling_factor: 0.18215,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl VaeConfig {
    /// Image pixels per latent pixel: `2^(len(block_out_channels) - 1)`
    /// (8 for real SD checkpoints, 2 for the tiny test model).
    pub fn scale_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// Rejects block types this implementation does not build.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            bail!("VAE config: block lists of different lengths");
        }
        if let Some(t) = self.down_block_types.iter().find(|t| *t != "DownEncoderBlock2D") {
            bail!("VAE config: unsupported down block `{t}`");
        }
        if let Some(t) = self.up_block_types.iter().find(|t| *t != "UpDecoderBlock2D") {
            bail!("VAE config: unsupported up block `{t}`");
        }
        Ok(())
    }
}
