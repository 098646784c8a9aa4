//! The `tiny:sd` and `tiny:sd2` generators: complete diffusers directories
//! with the configs and the real CLIP tokenizer of
//! `tests/fixtures/tiny-sd/pipeline` (embedded at build time) and
//! deterministic seeded random weights, so a whole txt2img pipeline runs in
//! seconds on any CPU without downloads.
//!
//! `tiny:sd` is the SD 1.x layout of the fixture. `tiny:sd2` changes what SD
//! 2.x checkpoints change (see [`SD2_CHANGES`]): a text encoder with exact
//! GELU, `!` as the pad token, heads given per block, linear projections in
//! the transformer blocks, upcast attention, v-prediction and trailing
//! timestep spacing.
//!
//! Weights are created by building each component with a [`VarBuilder`]
//! whose backend invents every tensor it is asked for, so names and shapes
//! are exactly what the loaders expect (and what diffusers writes). Each
//! tensor gets its own SplitMix64 stream seeded from its name, so the output
//! does not depend on construction order:
//! * biases: zeros; norm weights (1-D `weight`): ones;
//! * token and position embeddings: normal(0, 0.02);
//! * other weights (linear, conv): normal with torch's default-init variance,
//!   `std = 1 / sqrt(3 * fan_in)`.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use super::clip::ClipTextModel;
use super::config::{ClipTextConfig, UNetConfig, VaeConfig};
use super::unet::UNet2DConditionModel;
use super::vae::AutoencoderKl;
use crate::tensor::rng::named_normal;

/// Version of the generator's output (the model store's folder name).
pub const TINY_SD_VERSION: u32 = 1;

/// Version of the `tiny:sd2` generator's output.
pub const TINY_SD2_VERSION: u32 = 1;

/// What `tiny:sd2` changes in the `tiny:sd` files: keys set per file.
pub const SD2_CHANGES: [(&str, &str); 5] = [
    ("text_encoder/config.json", r#"{"hidden_act": "gelu", "pad_token_id": 0}"#),
    ("tokenizer/special_tokens_map.json", r#"{"pad_token": "!"}"#),
    ("tokenizer/tokenizer_config.json", r#"{"pad_token": "!"}"#),
    ("unet/config.json", r#"{"attention_head_dim": [2, 4], "use_linear_projection": true, "upcast_attention": true}"#),
    ("scheduler/scheduler_config.json", r#"{"prediction_type": "v_prediction", "timestep_spacing": "trailing"}"#),
];

macro_rules! fixture {
    ($rel:literal) => {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tiny-sd/pipeline/", $rel)
    };
}

/// The small text files of the directory, copied from the fixture.
const TEXT_FILES: [(&str, &str); 7] = [
    ("model_index.json", include_str!(fixture!("model_index.json"))),
    ("scheduler/scheduler_config.json", include_str!(fixture!("scheduler/scheduler_config.json"))),
    ("text_encoder/config.json", include_str!(fixture!("text_encoder/config.json"))),
    ("tokenizer/special_tokens_map.json", include_str!(fixture!("tokenizer/special_tokens_map.json"))),
    ("tokenizer/tokenizer_config.json", include_str!(fixture!("tokenizer/tokenizer_config.json"))),
    ("unet/config.json", include_str!(fixture!("unet/config.json"))),
    ("vae/config.json", include_str!(fixture!("vae/config.json"))),
];

/// The real CLIP tokenizer (1.7 MB); vocab.json and merges.txt are derived
/// from it.
const TOKENIZER_JSON: &[u8] = include_bytes!(fixture!("tokenizer/tokenizer.json"));

/// A [`VarBuilder`] backend that makes up every requested tensor and keeps
/// it for saving.
struct RandomWeights<'a> {
    made: &'a Mutex<HashMap<String, Tensor>>,
}

fn random_tensor(name: &str, shape: &Shape) -> candle_core::Result<Tensor> {
    let dims = shape.dims();
    let std = if name.ends_with("embedding.weight") {
        0.02
    } else if name.ends_with("bias") {
        return Tensor::zeros(dims, DType::F32, &Device::Cpu);
    } else if dims.len() == 1 {
        return Tensor::ones(dims, DType::F32, &Device::Cpu);
    } else {
        let fan_in: usize = dims[1..].iter().product();
        1.0 / (3.0 * fan_in as f32).sqrt()
    };
    named_normal(name, dims, std)
}

impl SimpleBackend for RandomWeights<'_> {
    fn get(&self, shape: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let mut made = self.made.lock().map_err(|_| candle_core::Error::Msg("weights lock poisoned".into()))?;
        let t = match made.get(name) {
            Some(t) => t.clone(),
            None => {
                let t = random_tensor(name, &shape)?;
                made.insert(name.to_string(), t.clone());
                t
            }
        };
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!("tiny generator: `{name}` requested without a shape")))
    }

    fn contains_tensor(&self, _: &str) -> bool {
        false
    }
}

/// Builds a component with invented weights and saves them to `file`.
fn write_weights(file: &Path, build: impl FnOnce(VarBuilder) -> Result<()>) -> Result<()> {
    let made = Mutex::new(HashMap::new());
    build(VarBuilder::from_backend(Box::new(RandomWeights { made: &made }), DType::F32, Device::Cpu))?;
    let made = made.into_inner().map_err(|_| anyhow!("weights lock poisoned"))?;
    candle_core::safetensors::save(&made, file).with_context(|| format!("cannot write `{}`", file.display()))
}

/// vocab.json and merges.txt of a tokenizer.json BPE model.
fn vocab_and_merges(tokenizer_json: &[u8]) -> Result<(String, String)> {
    let json: serde_json::Value = serde_json::from_slice(tokenizer_json)?;
    let model = json.get("model").ok_or_else(|| anyhow!("tokenizer.json has no model"))?;
    let vocab = model.get("vocab").ok_or_else(|| anyhow!("tokenizer.json has no vocab"))?;
    let merges = model.get("merges").and_then(|m| m.as_array()).ok_or_else(|| anyhow!("tokenizer.json has no merges"))?;
    let mut text = String::from("#version: 0.2\n");
    for m in merges {
        match m {
            serde_json::Value::String(s) => text.push_str(s),
            serde_json::Value::Array(pair) => {
                let parts: Vec<&str> = pair.iter().filter_map(|p| p.as_str()).collect();
                text.push_str(&parts.join(" "));
            }
            _ => anyhow::bail!("tokenizer.json: unexpected merge entry"),
        }
        text.push('\n');
    }
    Ok((serde_json::to_string(vocab)?, text))
}

/// Writes the `tiny:sd` diffusers directory into `dir` (an existing, empty
/// folder): configs, tokenizer and seeded random weights. The output is the
/// same on every machine.
pub fn generate_tiny_sd(dir: &Path) -> Result<()> {
    generate(dir, &[])
}

/// Writes the `tiny:sd2` directory: `tiny:sd` with [`SD2_CHANGES`].
pub fn generate_tiny_sd2(dir: &Path) -> Result<()> {
    generate(dir, &SD2_CHANGES)
}

/// `text` with the top-level keys of the JSON object `changes` set.
fn changed_json(text: &str, changes: &str) -> Result<String> {
    let mut json: serde_json::Value = serde_json::from_str(text)?;
    let changes: serde_json::Map<String, serde_json::Value> = serde_json::from_str(changes)?;
    let object = json.as_object_mut().ok_or_else(|| anyhow!("a config file is not a JSON object"))?;
    object.extend(changes);
    Ok(serde_json::to_string_pretty(&json)?)
}

fn generate(dir: &Path, changes: &[(&str, &str)]) -> Result<()> {
    let write = |rel: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, bytes).with_context(|| format!("cannot write `{}`", path.display()))
    };
    let mut texts: HashMap<&str, String> = HashMap::new();
    for (rel, text) in TEXT_FILES {
        let text = match changes.iter().find(|(file, _)| *file == rel) {
            Some((_, change)) => changed_json(text, change)?,
            None => text.to_string(),
        };
        write(rel, text.as_bytes())?;
        texts.insert(rel, text);
    }
    write("tokenizer/tokenizer.json", TOKENIZER_JSON)?;
    let (vocab, merges) = vocab_and_merges(TOKENIZER_JSON)?;
    write("tokenizer/vocab.json", vocab.as_bytes())?;
    write("tokenizer/merges.txt", merges.as_bytes())?;

    let clip: ClipTextConfig = serde_json::from_str(&texts["text_encoder/config.json"])?;
    let unet: UNetConfig = serde_json::from_str(&texts["unet/config.json"])?;
    let vae: VaeConfig = serde_json::from_str(&texts["vae/config.json"])?;
    write_weights(&dir.join("text_encoder/model.safetensors"), |vb| {
        ClipTextModel::new(&clip, vb.pp("text_model")).map(drop)
    })?;
    write_weights(&dir.join("unet/diffusion_pytorch_model.safetensors"), |vb| {
        UNet2DConditionModel::new(&unet, vb).map(drop)
    })?;
    write_weights(&dir.join("vae/diffusion_pytorch_model.safetensors"), |vb| AutoencoderKl::new(&vae, vb).map(drop))
}
