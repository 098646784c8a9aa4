//! The Stable Diffusion ops (`sd.encode_prompt`, `sd.vae_decode`,
//! `sd.vae_encode`, `sd.empty_latent`, `latent.upscale`), the conditioning
//! object they pass to `sd.sample`, and the loaders that keep the model
//! components resident in the engine's model pool.
//!
//! Components are loaded separately (a VAE decode never loads the UNet) on
//! the node's device, keyed by the model's fingerprint and dtype. The text
//! encoder and UNet compute in the `precision` their op asks for (`auto`:
//! float16 on CUDA, float32 elsewhere); the VAE always runs in float32, as
//! diffusers upcasts it (SD VAEs overflow in float16).

mod cond;
mod encode_prompt;
mod latent;
mod memory;
mod sample;
mod vae;

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use candle_core::DType;
use flow_engine::models::{Residence, ResolvedModel};
use flow_engine::{Inputs, OpContext, PortSpec, Registry, ValueType};

pub use cond::SdCond;

use super::config::{read_json, VaeConfig};
use super::pipeline::{load_unet, load_vae, weight_files, TextEncoder};
use super::unet::UNet2DConditionModel;
use super::vae::AutoencoderKl;

/// Registers the ops and the decoder of cached [`SdCond`] values.
pub fn register(reg: &mut Registry) {
    reg.register(encode_prompt::EncodePrompt::new());
    reg.register(vae::VaeDecode::new());
    reg.register(vae::VaeEncode::new());
    reg.register(latent::EmptyLatent::new());
    reg.register(latent::LatentUpscale::new());
    reg.register(sample::Sample::new());
    reg.register_decoder(cond::TYPE_TAG, cond::decode);
}

/// The resolved model of a `model` input.
pub fn model_input<'a>(inputs: &'a Inputs, port: &str) -> Result<&'a ResolvedModel> {
    let v = inputs.value(port)?;
    v.as_object::<ResolvedModel>().ok_or_else(|| anyhow!("input `{port}` should be a model, got {}", v.value_type()))
}

/// The `precision` input shared by the ops that run the text encoder or UNet.
fn precision_port() -> PortSpec {
    PortSpec::with_default("precision", ValueType::Text, "auto", "auto (f16 on CUDA, f32 elsewhere), f32 or f16")
}

/// The dtype the `precision` input asks for on the node's device.
fn compute_dtype(inputs: &Inputs, ctx: &OpContext) -> Result<DType> {
    Ok(match inputs.text("precision")? {
        "auto" if ctx.device().is_cuda() => DType::F16,
        "auto" | "f32" => DType::F32,
        "f16" => DType::F16,
        other => bail!("input `precision` is `{other}`; use auto, f32 or f16"),
    })
}

/// Bytes the weights of a component folder take once loaded as `dtype`.
fn resident_bytes(dir: &Path, stem: &str, dtype: DType) -> u64 {
    f32_bytes(dir, stem) / 4 * dtype.size_in_bytes() as u64
}

/// Bytes the weights of a component folder take once loaded in float32.
fn f32_bytes(dir: &Path, stem: &str) -> u64 {
    weight_files(dir, stem)
        .map(|files| {
            files
                .iter()
                .map(|f| {
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    let half = f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(".fp16."));
                    if half { 2 * len } else { len }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The tokenizer and text encoder of an SD model in `dtype`, from the pool.
pub fn text_encoder(ctx: &OpContext, model: &ResolvedModel, dtype: DType) -> Result<Arc<TextEncoder>> {
    let dir = model.dir();
    let key = model.pool_key(ctx.device(), &format!("sd-text-encoder-{}", dtype.as_str()));
    let bytes = resident_bytes(&dir.join("text_encoder"), "model", dtype);
    ctx.models().get_or_load(&key, Residence::of(ctx.device()), bytes, || TextEncoder::load(dir, ctx.device(), dtype))
}

/// The UNet of an SD model in `dtype`, from the pool.
pub fn unet(ctx: &OpContext, model: &ResolvedModel, dtype: DType) -> Result<Arc<UNet2DConditionModel>> {
    let dir = model.dir();
    let key = model.pool_key(ctx.device(), &format!("sd-unet-{}", dtype.as_str()));
    let bytes = resident_bytes(&dir.join("unet"), "diffusion_pytorch_model", dtype);
    ctx.models().get_or_load(&key, Residence::of(ctx.device()), bytes, || load_unet(dir, ctx.device(), dtype))
}

/// The scheduler configuration of an SD model (cheap: no weights are
/// loaded): a diffusers directory's `scheduler/scheduler_config.json`.
pub(super) fn scheduler_config(model: &ResolvedModel) -> Result<crate::sd::scheduler::SchedulerConfig> {
    crate::sd::scheduler::SchedulerConfig::from_file(&model.dir().join("scheduler").join("scheduler_config.json"))
}

/// The VAE configuration of an SD model (cheap: no weights are loaded).
fn vae_config(model: &ResolvedModel) -> Result<VaeConfig> {
    read_json(&model.dir().join("vae").join("config.json"))
}

/// The VAE of an SD model, from the pool.
pub fn vae(ctx: &OpContext, model: &ResolvedModel) -> Result<Arc<AutoencoderKl>> {
    let dir = model.dir();
    let key = model.pool_key(ctx.device(), "sd-vae-f32");
    let bytes = f32_bytes(&dir.join("vae"), "diffusion_pytorch_model");
    ctx.models().get_or_load(&key, Residence::of(ctx.device()), bytes, || load_vae(dir, ctx.device(), DType::F32))
}
