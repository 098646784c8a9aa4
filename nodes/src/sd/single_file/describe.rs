//! [`describe`]: what a single-file checkpoint is, for `flow models`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::Result;

use super::{Checkpoint, Family, PredictionSource};

/// A summary of a checkpoint: family, architecture, dtype and prediction
/// type with where it came from. `Display` gives a few readable lines.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointInfo {
    /// SD 1.x or SD 2.x.
    pub family: Family,
    /// Stored dtypes with their tensor counts, most common first
    /// (`[("float16", 1131)]`; several for a mixed file).
    pub dtypes: Vec<(String, usize)>,
    /// Number of tensors in the file.
    pub tensors: usize,
    /// Number of parameters (elements) in the file.
    pub parameters: u64,
    /// UNet: channels per level.
    pub unet_channels: Vec<usize>,
    /// UNet: ResNets per down level.
    pub unet_res_blocks: Vec<usize>,
    /// UNet: transformer depth per level (0 = no attention).
    pub unet_attention: Vec<usize>,
    /// UNet: transformer depth of the mid block.
    pub unet_mid_depth: usize,
    /// UNet: latent channels in and out.
    pub unet_in_out: (usize, usize),
    /// Width of the text embeddings the UNet attends to.
    pub context_dim: usize,
    /// Linear (SD 2.x) rather than 1x1-convolution projections.
    pub linear_projections: bool,
    /// Text encoder: width, layers used, heads, MLP width, activation.
    pub text_encoder: (usize, usize, usize, usize, String),
    /// VAE: channels per level, ResNets per level, latent channels.
    pub vae: (Vec<usize>, usize, usize),
    /// `"v_prediction"` or `"epsilon"`.
    pub prediction: String,
    /// `"sidecar NAME.yaml"` or `"family default"`.
    pub prediction_source: String,
}

/// Opens the checkpoint at `path` (reading its header, not its weights) and
/// summarizes it; errors say why a file is not a supported checkpoint.
pub fn describe(path: &Path) -> Result<CheckpointInfo> {
    let ckpt = Checkpoint::open(path)?;
    let index = ckpt.weights().index();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for meta in index.values() {
        *counts.entry(dtype_name(meta.dtype).to_string()).or_default() += 1;
    }
    let mut dtypes: Vec<(String, usize)> = counts.into_iter().collect();
    dtypes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let (v, source) = ckpt.prediction();
    let unet = &ckpt.unet;
    let clip = ckpt.clip_config();
    let vae = ckpt.vae_config();
    Ok(CheckpointInfo {
        family: ckpt.family(),
        dtypes,
        tensors: index.len(),
        parameters: index.values().map(|m| m.shape.iter().product::<usize>() as u64).sum(),
        unet_channels: unet.levels.iter().map(|l| l.channels).collect(),
        unet_res_blocks: unet.levels.iter().map(|l| l.res_blocks).collect(),
        unet_attention: unet.levels.iter().map(|l| l.depth).collect(),
        unet_mid_depth: unet.mid_depth,
        unet_in_out: (unet.config.in_channels, unet.config.out_channels),
        context_dim: unet.context_dim,
        linear_projections: unet.config.use_linear_projection,
        text_encoder: (
            clip.hidden_size,
            clip.num_hidden_layers,
            clip.num_attention_heads,
            clip.intermediate_size,
            clip.hidden_act.clone(),
        ),
        vae: (vae.block_out_channels.clone(), vae.layers_per_block, vae.latent_channels),
        prediction: if v { "v_prediction" } else { "epsilon" }.into(),
        prediction_source: match source {
            PredictionSource::Sidecar(p) => {
                format!(
                    "sidecar {}",
                    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
                )
            }
            PredictionSource::FamilyDefault => "family default".into(),
        },
    })
}

fn dtype_name(dtype: candle_core::DType) -> &'static str {
    use candle_core::DType::*;
    match dtype {
        F16 => "float16",
        BF16 => "bfloat16",
        F32 => "float32",
        F64 => "float64",
        other => other.as_str(),
    }
}

fn list(v: &[usize]) -> String {
    v.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for CheckpointInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dtypes: Vec<String> = self.dtypes.iter().map(|(d, n)| format!("{d} ({n})")).collect();
        writeln!(
            f,
            "{} checkpoint, {} tensors, {:.1}M parameters, {}",
            self.family,
            self.tensors,
            self.parameters as f64 / 1e6,
            dtypes.join(" + ")
        )?;
        let (te_width, te_layers, te_heads, te_mlp, te_act) = &self.text_encoder;
        writeln!(
            f,
            "  UNet: channels [{}], res blocks [{}], attention depth [{}] (mid {}), context {}, {} projections, \
             {} -> {} latent channels",
            list(&self.unet_channels),
            list(&self.unet_res_blocks),
            list(&self.unet_attention),
            self.unet_mid_depth,
            self.context_dim,
            if self.linear_projections { "linear" } else { "1x1-conv" },
            self.unet_in_out.0,
            self.unet_in_out.1
        )?;
        writeln!(
            f,
            "  text encoder: width {te_width}, {te_layers} layers used, {te_heads} heads, MLP {te_mlp}, {te_act}"
        )?;
        writeln!(
            f,
            "  VAE: channels [{}], {} res blocks per level, {} latent channels",
            list(&self.vae.0),
            self.vae.1,
            self.vae.2
        )?;
        write!(f, "  prediction: {} ({})", self.prediction, self.prediction_source)
    }
}
