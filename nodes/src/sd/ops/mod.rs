//! The Stable Diffusion ops (`sd.encode_prompt`, `sd.vae_decode`,
//! `sd.vae_encode`, `sd.empty_latent`, `latent.upscale`), the conditioning
//! object they pass to `sd.sample`, and the loaders that keep the model
//! components resident in the engine's model pool.
//!
//! A model is a diffusers directory or a single-file checkpoint (see
//! `source`). Components are loaded separately (a VAE decode never loads
//! the UNet) on the node's device, keyed by the model's fingerprint and
//! dtype. The text encoder and UNet compute in the `precision` their op
//! asks for (`auto`: float16 on CUDA, float32 elsewhere); the VAE always
//! runs in float32, as diffusers upcasts it (SD VAEs overflow in float16).

mod combine_cond;
mod cond;
mod encode_prompt;
mod latent;
mod memory;
mod sample;
mod source;
mod vae;

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use candle_core::DType;
use flow_engine::models::{Residence, ResolvedModel};
use flow_engine::{Inputs, OpContext, PortSpec, Registry, ValueType};

pub use cond::SdCond;

use self::source::{source, Component, VaeSource};
use super::config::VaeConfig;
use super::pipeline::TextEncoder;
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
    reg.register(combine_cond::CombineCond::new());
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

/// The tokenizer and text encoder of an SD model in `dtype`, from the pool.
pub fn text_encoder(ctx: &OpContext, model: &ResolvedModel, dtype: DType) -> Result<Arc<TextEncoder>> {
    let src = source(model)?;
    let key = model.pool_key(ctx.device(), &format!("sd-text-encoder-{}", dtype.as_str()));
    let bytes = src.bytes(Component::TextEncoder, dtype);
    ctx.models().get_or_load(&key, Residence::of(ctx.device()), bytes, || src.text_encoder(ctx.device(), dtype))
}

/// The UNet of an SD model in `dtype`, from the pool.
pub fn unet(ctx: &OpContext, model: &ResolvedModel, dtype: DType) -> Result<Arc<UNet2DConditionModel>> {
    let src = source(model)?;
    let key = model.pool_key(ctx.device(), &format!("sd-unet-{}", dtype.as_str()));
    let bytes = src.bytes(Component::Unet, dtype);
    ctx.models().get_or_load(&key, Residence::of(ctx.device()), bytes, || src.unet(ctx.device(), dtype))
}

/// The scheduler configuration of an SD model (cheap: no weights are
/// loaded): a diffusers directory's `scheduler/scheduler_config.json`, or
/// the family's for a single-file checkpoint.
pub(super) fn scheduler_config(model: &ResolvedModel) -> Result<crate::sd::scheduler::SchedulerConfig> {
    source(model)?.scheduler_config()
}

/// The VAE configuration of an SD model (cheap: no weights are loaded).
fn vae_config(model: &ResolvedModel) -> Result<VaeConfig> {
    source(model)?.vae_config()
}

/// The VAE of an SD model, from the pool (float32).
pub fn vae(ctx: &OpContext, model: &ResolvedModel) -> Result<Arc<AutoencoderKl>> {
    let src = source(model)?;
    let key = model.pool_key(ctx.device(), "sd-vae-f32");
    let bytes = src.bytes(Component::Vae, DType::F32);
    ctx.models().get_or_load(&key, Residence::of(ctx.device()), bytes, || src.vae(ctx.device(), DType::F32))
}

/// A VAE given on its own (a VAE file, a diffusers `vae/` folder, or the
/// VAE of another model), from the pool (float32).
pub fn standalone_vae(ctx: &OpContext, model: &ResolvedModel) -> Result<Arc<AutoencoderKl>> {
    let src = VaeSource::of(model)?;
    let key = model.pool_key(ctx.device(), "sd-vae-f32");
    let bytes = src.bytes(DType::F32);
    ctx.models().get_or_load(&key, Residence::of(ctx.device()), bytes, || src.load(ctx.device(), DType::F32))
}
