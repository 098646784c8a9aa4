//! Loading a diffusers Stable Diffusion 1.x/2.x directory
//! (`model_index.json`, `text_encoder/`, `tokenizer/`, `unet/`, `vae/`,
//! `scheduler/`), component by component.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::clip::ClipTextModel;
use super::config::{read_json, ClipTextConfig, UNetConfig, VaeConfig};
use super::tokenizer::ClipTokenizer;
use super::unet::UNet2DConditionModel;
use super::vae::AutoencoderKl;

/// The safetensors files of a component folder: `{stem}.safetensors`, else
/// `{stem}.fp16.safetensors`, else the shards listed by
/// `{stem}.safetensors.index.json` (or its fp16 variant).
pub fn weight_files(dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    for variant in ["", ".fp16"] {
        let file = dir.join(format!("{stem}{variant}.safetensors"));
        if file.is_file() {
            return Ok(vec![file]);
        }
    }
    for variant in ["", ".fp16"] {
        let index = dir.join(format!("{stem}{variant}.safetensors.index.json"));
        if index.is_file() {
            let json: serde_json::Value = read_json(&index)?;
            let map = json.get("weight_map").and_then(|m| m.as_object()).with_context(|| {
                format!("`{}` has no weight_map", index.display())
            })?;
            let mut files: Vec<PathBuf> = map.values().filter_map(|v| v.as_str()).map(|f| dir.join(f)).collect();
            files.sort();
            files.dedup();
            return Ok(files);
        }
    }
    bail!("no `{stem}.safetensors` (or fp16 / sharded variant) in `{}`", dir.display())
}

/// Memory-maps the weights of a component folder, converting to `dtype`.
fn var_builder(dir: &Path, stem: &str, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    let files = weight_files(dir, stem)?;
    // SAFETY: the files are memory-mapped read-only; like every safetensors
    // loader, this assumes they are not modified while the model loads.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
    Ok(vb)
}

/// The prompt encoder: tokenizer plus CLIP text model.
#[derive(Clone, Debug)]
pub struct TextEncoder {
    /// The tokenizer of `tokenizer/`.
    pub tokenizer: ClipTokenizer,
    /// The model of `text_encoder/`.
    pub model: ClipTextModel,
}

impl TextEncoder {
    /// Loads `tokenizer/` and `text_encoder/` of the SD directory `dir`;
    /// weights with and without the `text_model.` prefix are accepted.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let te_dir = dir.join("text_encoder");
        let config: ClipTextConfig = read_json(&te_dir.join("config.json"))?;
        let tokenizer = ClipTokenizer::load(&dir.join("tokenizer"), config.max_position_embeddings)?;
        let vb = var_builder(&te_dir, "model", dtype, device)?;
        let vb = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") { vb.pp("text_model") } else { vb };
        let model = ClipTextModel::new(&config, vb).with_context(|| format!("cannot load `{}`", te_dir.display()))?;
        Ok(TextEncoder { tokenizer, model })
    }

    /// A warning when `prompt` is longer than the text encoder reads.
    pub fn cut_off_warning(&self, what: &str, prompt: &str) -> Result<Option<String>> {
        Ok(self.tokenizer.cut_off(prompt)?.map(|(cut, tokens)| {
            let fit = self.tokenizer.max_len() - 2;
            format!("warning: the {what} is {tokens} tokens and CLIP reads {fit}: this end was cut off: \"{cut}\"")
        }))
    }

    /// The padded token ids of `prompt`, `(1, max_len)` u32.
    pub fn token_ids(&self, prompt: &str) -> Result<Tensor> {
        let ids = self.tokenizer.encode(prompt)?;
        Ok(Tensor::from_vec(ids, (1, self.tokenizer.max_len()), self.model.device())?)
    }

    /// The prompt embedding `(1, max_len, hidden)` (float32), as the SD
    /// pipelines compute `prompt_embeds` (an empty negative prompt is
    /// encoded the same way, not zeroed).
    pub fn encode(&self, prompt: &str) -> Result<Tensor> {
        self.encode_skip(prompt, 1)
    }

    /// [`TextEncoder::encode`] from an earlier layer: `clip_skip` 2 takes
    /// the penultimate layer's output (then the final layer norm).
    pub fn encode_skip(&self, prompt: &str, clip_skip: usize) -> Result<Tensor> {
        Ok(self.model.forward_skip(&self.token_ids(prompt)?, clip_skip)?.to_dtype(DType::F32)?)
    }
}

/// Loads `unet/` of the SD directory `dir`.
pub fn load_unet(dir: &Path, device: &Device, dtype: DType) -> Result<UNet2DConditionModel> {
    let unet_dir = dir.join("unet");
    let config: UNetConfig = read_json(&unet_dir.join("config.json"))?;
    let vb = var_builder(&unet_dir, "diffusion_pytorch_model", dtype, device)?;
    UNet2DConditionModel::new(&config, vb).with_context(|| format!("cannot load `{}`", unet_dir.display()))
}

/// Loads `vae/` of the SD directory `dir`.
pub fn load_vae(dir: &Path, device: &Device, dtype: DType) -> Result<AutoencoderKl> {
    load_vae_folder(&dir.join("vae"), device, dtype)
}

/// Loads a diffusers VAE folder (`config.json` and
/// `diffusion_pytorch_model.safetensors`).
pub fn load_vae_folder(vae_dir: &Path, device: &Device, dtype: DType) -> Result<AutoencoderKl> {
    let config: VaeConfig = read_json(&vae_dir.join("config.json"))?;
    let vb = var_builder(vae_dir, "diffusion_pytorch_model", dtype, device)?;
    AutoencoderKl::new(&config, vb).with_context(|| format!("cannot load `{}`", vae_dir.display()))
}

/// Reads `scheduler/scheduler_config.json` of the SD directory `dir`.
pub fn load_scheduler_config(dir: &Path) -> Result<serde_json::Value> {
    read_json(&dir.join("scheduler").join("scheduler_config.json"))
}

/// A whole SD pipeline, every component loaded.
#[derive(Clone, Debug)]
pub struct StableDiffusion {
    /// Tokenizer and CLIP text model.
    pub text_encoder: TextEncoder,
    /// The UNet.
    pub unet: UNet2DConditionModel,
    /// The VAE.
    pub vae: AutoencoderKl,
    /// The raw scheduler config, for the samplers.
    pub scheduler_config: serde_json::Value,
}

impl StableDiffusion {
    /// Loads every component of the SD directory `dir`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        if !dir.join("model_index.json").is_file() {
            bail!("`{}` is not a diffusers directory (no model_index.json)", dir.display());
        }
        Ok(StableDiffusion {
            text_encoder: TextEncoder::load(dir, device, dtype)?,
            unet: load_unet(dir, device, dtype)?,
            vae: load_vae(dir, device, dtype)?,
            scheduler_config: load_scheduler_config(dir)?,
        })
    }
}
