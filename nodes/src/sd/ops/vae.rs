//! `sd.vae_decode` and `sd.vae_encode`: latents to images and back, with
//! the VAE scaling factor applied as the diffusers pipelines do.

use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::Tensor;
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

use super::{model_input, standalone_vae, vae};
use crate::sd::vae::AutoencoderKl;
use crate::tensor::rng::SplitMix64;

/// The `model` and `vae` ports: one of them is required.
fn model_ports() -> [PortSpec; 2] {
    [
        PortSpec::optional(
            "model",
            ValueType::Model,
            "a Stable Diffusion 1.x/2.x model (diffusers folder or single-file checkpoint) whose VAE is used",
        ),
        PortSpec::optional(
            "vae",
            ValueType::Model,
            "a VAE on its own, used instead of the model's: a VAE file (as in ComfyUI's models/vae), a \
             diffusers vae/ folder, or another model's VAE",
        ),
    ]
}

/// The VAE of the `vae` input, else of the `model` input.
fn chosen_vae(inputs: &Inputs, ctx: &OpContext) -> Result<Arc<AutoencoderKl>> {
    match (inputs.get("vae"), inputs.get("model")) {
        (Some(_), _) => standalone_vae(ctx, model_input(inputs, "vae")?),
        (None, Some(_)) => vae(ctx, model_input(inputs, "model")?),
        (None, None) => bail!("give `model` (an SD model, whose VAE is used) or `vae` (a VAE on its own)"),
    }
}

pub(super) struct VaeDecode {
    spec: OpSpec,
}

impl VaeDecode {
    pub(super) fn new() -> Self {
        VaeDecode {
            spec: OpSpec {
                name: "sd.vae_decode".into(),
                version: 2,
                doc: "Decodes latents into images: `clamp(vae.decode(latent / scaling_factor) / 2 + 0.5, 0, 1)`. \
                      The image is `vae_scale_factor` (8 for real SD models) times the latent size. The VAE \
                      is `vae`'s when given, else `model`'s."
                    .into(),
                inputs: [
                    model_ports().to_vec(),
                    vec![PortSpec::new("latent", ValueType::Latent, "latents [N, 4, h, w] as the UNet sees them (scaled)")],
                ]
                .concat(),
                outputs: vec![PortSpec::new("image", ValueType::Image, "images [N, 3, H, W] in [0, 1]")],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for VaeDecode {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let vae = chosen_vae(inputs, ctx)?;
        let latent = inputs.tensor("latent")?.to_device(ctx.device())?;
        let channels = vae.config().latent_channels;
        if latent.rank() != 4 || latent.dim(1)? != channels {
            bail!("input `latent` should be [N, {channels}, h, w], got {:?}", latent.dims());
        }
        let (n, _, h, w) = latent.dims4()?;
        let f = vae.scale_factor();
        super::memory::check_vae(vae.config(), n, w * f, h * f, "the decoded image")?;
        let image = vae.latent_to_image(&latent)?;
        Ok(Outputs::single("image", Value::tensor(ValueType::Image, image)))
    }
}

pub(super) struct VaeEncode {
    spec: OpSpec,
}

impl VaeEncode {
    pub(super) fn new() -> Self {
        VaeEncode {
            spec: OpSpec {
                name: "sd.vae_encode".into(),
                version: 2,
                doc: "Encodes images into latents scaled for the UNet (`scaling_factor * z`). Without `noise` or \
                      `seed` the latent is the mean of the encoder's distribution; with them it is a sample \
                      `mean + std * eps` as diffusers' img2img draws it (`noise` is that eps; `seed` draws it \
                      like `tensor.random`). Height and width must be multiples of the VAE scale factor. The \
                      VAE is `vae`'s when given, else `model`'s."
                    .into(),
                inputs: [
                    model_ports().to_vec(),
                    vec![
                        PortSpec::new("image", ValueType::Image, "images [N, 3, H, W] in [0, 1]"),
                        PortSpec::optional("noise", ValueType::Tensor, "standard normal eps [N, 4, h, w] to sample with"),
                        PortSpec::optional("seed", ValueType::Int, "draw eps from this seed (ignored when `noise` is given)"),
                    ],
                ]
                .concat(),
                outputs: vec![PortSpec::new("latent", ValueType::Latent, "latents [N, 4, H/f, W/f]")],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for VaeEncode {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let vae = chosen_vae(inputs, ctx)?;
        let image = inputs.tensor("image")?.to_device(ctx.device())?;
        let f = vae.scale_factor();
        let (in_ch, dims) = (vae.config().in_channels, image.dims().to_vec());
        if dims.len() != 4 || dims[1] != in_ch || dims[2] % f != 0 || dims[3] % f != 0 {
            bail!(
                "input `image` should be [N, {in_ch}, H, W] with H and W multiples of {f} (resize it first), got {dims:?}"
            );
        }
        super::memory::check_vae(vae.config(), dims[0], dims[3], dims[2], "the image to encode")?;
        let dist = vae.image_to_latent(&image)?;
        let latent = match (inputs.opt_tensor("noise")?, inputs.opt_int("seed")?) {
            (Some(eps), _) => {
                if eps.dims() != dist.mean.dims() {
                    bail!("input `noise` should be {:?}, got {:?}", dist.mean.dims(), eps.dims());
                }
                dist.sample(&eps.to_device(ctx.device())?)?
            }
            (None, Some(seed)) => {
                let mut eps = vec![0f32; dist.mean.elem_count()];
                SplitMix64::new(seed as u64).fill_normal(&mut eps);
                dist.sample(&Tensor::from_vec(eps, dist.mean.dims(), ctx.device())?)?
            }
            (None, None) => dist.mean,
        };
        Ok(Outputs::single("latent", Value::tensor(ValueType::Latent, latent)))
    }
}
