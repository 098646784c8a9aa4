//! Single-file Stable Diffusion checkpoints in the original (LDM) layout, as
//! ComfyUI, AUTOMATIC1111 and model sites ship them: `.safetensors`
//! (memory-mapped; float16, bfloat16, float32, mixed) or PyTorch `.ckpt`
//! read without running any pickled code.
//!
//! Nothing but tensors is in such a file. The family comes from the text
//! encoder's names (`cond_stage_model.transformer.*`: OpenAI CLIP, SD 1.x;
//! `cond_stage_model.model.*`: OpenCLIP, SD 2.x), the architecture from the
//! tensor shapes (as ComfyUI's `model_detection.py`), and the rest from the
//! family's conventions:
//!
//! | | SD 1.x | SD 2.x |
//! |---|---|---|
//! | UNet heads | 8 per transformer | channels / 64 |
//! | text encoder | quick_gelu, last layer, heads = width / 64 | exact GELU, penultimate layer + final norm, heads = width / 64 |
//! | padding | `<|endoftext|>` | `!` |
//! | prediction | epsilon | sidecar `NAME.yaml`, else ComfyUI's rule (below) |
//!
//! Both: the standard CLIP tokenizer (77 tokens), VAE scaling 0.18215 and
//! 32-group norms, and the scheduler config of diffusers' SD pipelines:
//! DDIM, scaled_linear betas 0.00085..0.012 over 1000 steps, leading
//! spacing, steps_offset 1, no clipping, set_alpha_to_one false.
//!
//! SD 2.x prediction without a sidecar follows ComfyUI (`SD20.model_type`):
//! v-prediction when the UNet takes 4 latent channels and the population
//! standard deviation of the last output block's first transformer
//! `norm1.bias` exceeds 0.09 (true of the 768-v models, not of the 512
//! base), epsilon otherwise.
//!
//! Each component is built by the ordinary model constructors through a
//! `VarBuilder` whose backend renames on the fly ([`backend`]), so weights
//! are read once, tensor by tensor, from the mapped file.

pub mod backend;
mod clip;
mod describe;
mod sidecar;
mod unet;
mod vae;
pub mod weights;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

use self::backend::{RenameTable, Renamed};
pub use self::describe::{describe, CheckpointInfo};
use self::unet::{HeadRule, UNetLayout};
use self::vae::VaeLayout;
use self::weights::Weights;
use super::clip::ClipTextModel;
use super::config::{ClipTextConfig, UNetConfig, VaeConfig};
use super::pipeline::TextEncoder;
use super::scheduler::SchedulerConfig;
use super::tokenizer::ClipTokenizer;
use super::unet::UNet2DConditionModel;
use super::vae::AutoencoderKl;

const UNET_PREFIX: &str = "model.diffusion_model.";
const VAE_PREFIX: &str = "first_stage_model.";
const CLIP_PREFIX: &str = "cond_stage_model.transformer.";
const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";

/// The Stable Diffusion generation a checkpoint belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// SD 1.x: OpenAI CLIP ViT-L/14 text encoder.
    Sd1,
    /// SD 2.x: OpenCLIP ViT-H/14 text encoder.
    Sd2,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Sd1 => "SD 1.x",
            Family::Sd2 => "SD 2.x",
        })
    }
}

/// Where the prediction type came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PredictionSource {
    /// `parameterization` in the A1111-style sidecar file.
    Sidecar(PathBuf),
    /// The family's convention (for SD 2.x, ComfyUI's weight statistic).
    FamilyDefault,
}

/// A single-file checkpoint opened and understood: the components'
/// configs and renamings, no weights loaded yet.
#[derive(Debug)]
pub struct Checkpoint {
    weights: Arc<Weights>,
    family: Family,
    unet: UNetLayout,
    clip: (ClipTextConfig, RenameTable),
    vae: VaeLayout,
    v_prediction: bool,
    prediction_source: PredictionSource,
}

/// A short list of the file's first tensor names, for errors.
fn sample_names(w: &Weights) -> String {
    let names: Vec<&str> = w.index().keys().take(3).map(String::as_str).collect();
    if names.is_empty() {
        "no tensors".into()
    } else {
        format!("tensors such as `{}`", names.join("`, `"))
    }
}

/// Refuses the files that are not SD 1.x/2.x checkpoints, saying what they are.
fn check_kind(w: &Weights) -> Result<Family> {
    let path = w.path().display();
    let any = |p: &str| w.index().keys().any(|k| k.starts_with(p));
    let any_contains = |p: &str| w.index().keys().any(|k| k.contains(p));
    const SUPPORTED: &str = "flow reads SD 1.x and SD 2.x checkpoints in the original layout \
                             (model.diffusion_model.*, first_stage_model.*, cond_stage_model.*) or diffusers folders";
    if any("conditioner.embedders.") {
        bail!("`{path}` is an SDXL-style checkpoint (`conditioner.embedders.*`); {SUPPORTED}");
    }
    if any("lora_unet_")
        || any("lora_te")
        || any_contains(".lora_down.")
        || any_contains(".lora_A.")
        || any_contains(".lora_up.")
    {
        bail!("`{path}` is a LoRA, not a checkpoint: it only holds weight deltas for a model; {SUPPORTED}");
    }
    let has_unet = any(UNET_PREFIX);
    if !has_unet && (any("encoder.") || any("decoder.") || any(VAE_PREFIX)) && !any("cond_stage_model.") {
        bail!("`{path}` is a VAE on its own, not a checkpoint; give it to the `vae` input of sd.vae_decode / sd.vae_encode");
    }
    if !has_unet {
        bail!(
            "`{path}` is not a Stable Diffusion checkpoint: no `{UNET_PREFIX}*` tensors ({}); {SUPPORTED}",
            sample_names(w)
        );
    }
    if any(&format!("{UNET_PREFIX}joint_blocks."))
        || any(&format!("{UNET_PREFIX}double_blocks."))
        || !any(&format!("{UNET_PREFIX}input_blocks."))
    {
        bail!("`{path}` holds a diffusion model that is not an SD 1.x/2.x UNet; {SUPPORTED}");
    }
    if !any(VAE_PREFIX) {
        bail!("`{path}` has a UNet but no VAE (`{VAE_PREFIX}*`): a UNet-only file; {SUPPORTED}");
    }
    if any(OPEN_CLIP_PREFIX) {
        Ok(Family::Sd2)
    } else if any(CLIP_PREFIX) {
        Ok(Family::Sd1)
    } else {
        bail!("`{path}` has a UNet but no text encoder (`cond_stage_model.*`); {SUPPORTED}")
    }
}

/// ComfyUI's SD 2.x v-prediction test (see the module docs).
fn sd2_looks_v(w: &Weights, unet: &UNetLayout) -> Result<bool> {
    if unet.config.in_channels != 4 {
        return Ok(false);
    }
    let last = (0..)
        .take_while(|k| w.index().keys().any(|n| n.starts_with(&format!("{UNET_PREFIX}output_blocks.{k}."))))
        .count();
    let name = format!("{UNET_PREFIX}output_blocks.{}.1.transformer_blocks.0.norm1.bias", last.saturating_sub(1));
    if w.meta(&name).is_none() {
        return Ok(false);
    }
    let bias = w.load(&name, &Device::Cpu)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let mean = bias.iter().sum::<f64>() / bias.len() as f64;
    let var = bias.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / bias.len() as f64;
    Ok(var.sqrt() > 0.09)
}

impl Checkpoint {
    /// Opens the checkpoint at `path` and infers every component; a file
    /// that is not an SD 1.x/2.x checkpoint is refused with what it is.
    pub fn open(path: &Path) -> Result<Self> {
        let weights = Arc::new(Weights::open(path)?);
        let family = check_kind(&weights)?;
        let context = || format!("checkpoint `{}`", path.display());
        let heads = match family {
            Family::Sd1 => HeadRule::Count(8),
            Family::Sd2 => HeadRule::Width(64),
        };
        let mut unet = unet::infer(&weights, UNET_PREFIX, heads).with_context(context)?;
        let clip = match family {
            Family::Sd1 => clip::infer_clip(&weights, CLIP_PREFIX),
            Family::Sd2 => clip::infer_open_clip(&weights, OPEN_CLIP_PREFIX),
        }
        .with_context(context)?;
        let vae = vae::infer(&weights, VAE_PREFIX).with_context(context)?;
        let (v_prediction, prediction_source) = match (family, sidecar::v_prediction(path)?) {
            (_, Some(v)) => (v, PredictionSource::Sidecar(sidecar::sidecar_path(path))),
            (Family::Sd1, None) => (false, PredictionSource::FamilyDefault),
            (Family::Sd2, None) => (sd2_looks_v(&weights, &unet)?, PredictionSource::FamilyDefault),
        };
        unet.config.upcast_attention = family == Family::Sd2;
        unet.config.sample_size = if v_prediction { 96 } else { 64 };
        Ok(Checkpoint { weights, family, unet, clip, vae, v_prediction, prediction_source })
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The opened file.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Whether the UNet predicts v (else epsilon), and why.
    pub fn prediction(&self) -> (bool, &PredictionSource) {
        (self.v_prediction, &self.prediction_source)
    }

    /// The inferred UNet config.
    pub fn unet_config(&self) -> &UNetConfig {
        &self.unet.config
    }

    /// The inferred text encoder config.
    pub fn clip_config(&self) -> &ClipTextConfig {
        &self.clip.0
    }

    /// The inferred VAE config.
    pub fn vae_config(&self) -> &VaeConfig {
        &self.vae.config
    }

    /// The scheduler config of the family (see the module docs).
    pub fn scheduler_config(&self) -> Result<SchedulerConfig> {
        scheduler_config(self.v_prediction)
    }

    /// Bytes of the UNet, text encoder and VAE tensors loaded as `dtype`.
    pub fn component_bytes(&self, dtype: DType) -> [u64; 3] {
        [&self.unet.table, &self.clip.1, &self.vae.table].map(|table| table_bytes(&self.weights, table, dtype))
    }

    /// The tokenizer and text encoder, computing in `dtype`.
    pub fn text_encoder(&self, device: &Device, dtype: DType) -> Result<TextEncoder> {
        let pad = match self.family {
            Family::Sd1 => "<|endoftext|>",
            Family::Sd2 => "!",
        };
        let config = &self.clip.0;
        let tokenizer = ClipTokenizer::standard(pad, config.max_position_embeddings)?;
        let vb = Renamed::var_builder(self.weights.clone(), self.clip.1.clone(), dtype, device);
        let model = ClipTextModel::new(config, vb).with_context(|| self.component_error("text encoder"))?;
        Ok(TextEncoder { tokenizer, model })
    }

    /// The UNet, computing in `dtype`.
    pub fn unet(&self, device: &Device, dtype: DType) -> Result<UNet2DConditionModel> {
        let vb = Renamed::var_builder(self.weights.clone(), self.unet.table.clone(), dtype, device);
        UNet2DConditionModel::new(&self.unet.config, vb).with_context(|| self.component_error("UNet"))
    }

    /// The VAE, computing in `dtype`.
    pub fn vae(&self, device: &Device, dtype: DType) -> Result<AutoencoderKl> {
        build_vae(&self.weights, &self.vae, device, dtype)
    }

    fn component_error(&self, what: &str) -> String {
        format!("cannot build the {what} of `{}` from its tensors", self.weights.path().display())
    }
}

/// Bytes of the tensors a rename table reads, loaded as `dtype` (a fused
/// tensor split into parts counts once).
fn table_bytes(w: &Weights, table: &RenameTable, dtype: DType) -> u64 {
    let mut names: Vec<&str> = table.values().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.iter().filter_map(|n| w.meta(n)).map(|m| m.bytes_as(dtype)).sum()
}

fn build_vae(weights: &Arc<Weights>, layout: &VaeLayout, device: &Device, dtype: DType) -> Result<AutoencoderKl> {
    let vb = Renamed::var_builder(weights.clone(), layout.table.clone(), dtype, device);
    AutoencoderKl::new(&layout.config, vb)
        .with_context(|| format!("cannot build the VAE of `{}` from its tensors", weights.path().display()))
}

/// The scheduler config single-file models get (see the module docs).
pub fn scheduler_config(v_prediction: bool) -> Result<SchedulerConfig> {
    SchedulerConfig::from_value(serde_json::json!({
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": false,
        "set_alpha_to_one": false,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "prediction_type": if v_prediction { "v_prediction" } else { "epsilon" },
    }))
}

/// A VAE file on its own (ComfyUI's `models/vae/`): original names with or
/// without `first_stage_model.`, or diffusers names.
#[derive(Debug)]
pub struct StandaloneVae {
    weights: Arc<Weights>,
    layout: VaeLayout,
}

impl StandaloneVae {
    /// Opens the VAE file at `path` (a whole checkpoint works too: its VAE
    /// is used).
    pub fn open(path: &Path) -> Result<Self> {
        let weights = Arc::new(Weights::open(path)?);
        let prefix = if weights.index().keys().any(|k| k.starts_with(VAE_PREFIX)) { VAE_PREFIX } else { "" };
        if !weights.index().keys().any(|k| k.starts_with(&format!("{prefix}decoder."))) {
            bail!(
                "`{}` is not a VAE: no `decoder.*` tensors ({}); a VAE file has `encoder.*`, `decoder.*`, \
                 `quant_conv.*` and `post_quant_conv.*`",
                path.display(),
                sample_names(&weights)
            );
        }
        let layout = vae::infer(&weights, prefix).with_context(|| format!("VAE `{}`", path.display()))?;
        Ok(StandaloneVae { weights, layout })
    }

    /// The inferred config.
    pub fn config(&self) -> &VaeConfig {
        &self.layout.config
    }

    /// Bytes of the VAE's tensors loaded as `dtype`.
    pub fn bytes(&self, dtype: DType) -> u64 {
        table_bytes(&self.weights, &self.layout.table, dtype)
    }

    /// The VAE, computing in `dtype`.
    pub fn load(&self, device: &Device, dtype: DType) -> Result<AutoencoderKl> {
        build_vae(&self.weights, &self.layout, device, dtype)
    }
}
