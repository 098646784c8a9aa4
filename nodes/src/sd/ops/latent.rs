//! `sd.empty_latent` and `latent.upscale`.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use flow_engine::limits::{check_image_size, check_memory};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

use super::{model_input, vae_config};

pub(super) struct EmptyLatent {
    spec: OpSpec,
}

impl EmptyLatent {
    pub(super) fn new() -> Self {
        EmptyLatent {
            spec: OpSpec {
                name: "sd.empty_latent".into(),
                version: 1,
                doc: "A zero latent for an image of the given size (txt2img starts from it; `sd.sample` adds the \
                      noise). The latent is the image size divided by the model's VAE scale factor \
                      (2^(VAE blocks - 1): 8 for real SD models), with the VAE's latent channels; without a \
                      model, 4 channels and a factor of 8."
                    .into(),
                inputs: vec![
                    PortSpec::optional("model", ValueType::Model, "the model the latent is for"),
                    PortSpec::with_default("width", ValueType::Int, 512i64, "image width in pixels, a multiple of the factor"),
                    PortSpec::with_default("height", ValueType::Int, 512i64, "image height in pixels, a multiple of the factor"),
                    PortSpec::with_default("batch", ValueType::Int, 1i64, "number of images"),
                ],
                outputs: vec![PortSpec::new("latent", ValueType::Latent, "zeros [batch, 4, height/f, width/f]")],
                output: false,
                cost: Cost::Light,
            },
        }
    }
}

impl Op for EmptyLatent {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let (channels, f) = match inputs.get("model") {
            Some(_) => {
                let cfg = vae_config(model_input(inputs, "model")?)?;
                (cfg.latent_channels, cfg.scale_factor())
            }
            None => (4, 8),
        };
        let (width, height, batch) = (inputs.int("width")?, inputs.int("height")?, inputs.int("batch")?);
        for (name, v) in [("width", width), ("height", height)] {
            if v <= 0 || v % f as i64 != 0 {
                bail!("input `{name}` is {v}; it must be a positive multiple of {f}");
            }
        }
        if !(1..=4096).contains(&batch) {
            bail!("input `batch` is {batch}; it must be between 1 and 4096");
        }
        check_image_size(width as u64, height as u64, "the image of this latent")?;
        let shape = (batch as usize, channels, height as usize / f, width as usize / f);
        check_memory((batch as u64) * (channels * (height as usize / f) * (width as usize / f)) as u64 * 4, "the latent")?;
        let latent = Tensor::zeros(shape, DType::F32, ctx.device())?;
        Ok(Outputs::single("latent", Value::tensor(ValueType::Latent, latent)))
    }
}

pub(super) struct LatentUpscale {
    spec: OpSpec,
}

impl LatentUpscale {
    pub(super) fn new() -> Self {
        LatentUpscale {
            spec: OpSpec {
                name: "latent.upscale".into(),
                version: 1,
                doc: "Resizes latents by a factor (hires-fix style: upscale, then `sd.sample` with denoise < 1). \
                      The new size is round(size * scale). Methods: `nearest` (torch `nearest`) and \
                      `bilinear` (torch `bilinear`, align_corners false)."
                    .into(),
                inputs: vec![
                    PortSpec::new("latent", ValueType::Latent, "latents [N, C, h, w]"),
                    PortSpec::with_default("scale", ValueType::Float, 2.0, "the factor, > 0"),
                    PortSpec::with_default("method", ValueType::Text, "nearest", "`nearest` or `bilinear`"),
                ],
                outputs: vec![PortSpec::new("latent", ValueType::Latent, "the resized latents")],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for LatentUpscale {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, _ctx: &OpContext) -> Result<Outputs> {
        let latent = inputs.tensor("latent")?;
        let scale = inputs.float("scale")?;
        let (_, _, h, w) = latent.dims4()?;
        if !(scale.is_finite() && scale > 0.0) {
            bail!("input `scale` is {scale}; it must be a positive number");
        }
        let size = |s: usize| ((s as f64 * scale).round() as usize).max(1);
        let (th, tw) = (size(h), size(w));
        // The SD convention: an image is 8 times its latent.
        check_image_size(tw as u64 * 8, th as u64 * 8, "the image of the upscaled latent")?;
        check_memory(latent.elem_count() as u64 / (h * w) as u64 * (th * tw) as u64 * 4, "the upscaled latent")?;
        let out = match inputs.opt_text("method")?.unwrap_or("nearest") {
            "nearest" => latent.upsample_nearest2d(th, tw)?,
            "bilinear" => latent.upsample_bilinear2d(th, tw, false)?,
            other => bail!("input `method` is `{other}`; use `nearest` or `bilinear`"),
        };
        Ok(Outputs::single("latent", Value::tensor(ValueType::Latent, out)))
    }
}
