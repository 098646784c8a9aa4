//! `sd.sample`: the denoising loop — scheduler, UNet with classifier-free
//! guidance, progress per step, cancellable between steps.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

use super::{compute_dtype, model_input, precision_port, unet, vae_config, SdCond};
use crate::sd::guided_eps;
use crate::sd::scheduler::{self, img2img_start, SamplerOptions, SchedulerConfig};
use crate::tensor::rng::SplitMix64;

pub(super) struct Sample {
    spec: OpSpec,
}

impl Sample {
    pub(super) fn new() -> Self {
        Sample {
            spec: OpSpec {
                name: "sd.sample".into(),
                version: 1,
                doc: "Denoises a latent with the model's UNet and a sampler built from the model's \
                      scheduler config. With `denoise` = 1 (txt2img) the input latent gives only the \
                      shape: sampling starts from noise scaled by the scheduler's init_noise_sigma. With \
                      `denoise` < 1 (img2img, hires fix) the latent is noised to the matching timestep and \
                      only the last steps run, as diffusers' img2img does. The noise comes from `seed` \
                      (the same on every machine) unless `noise` gives it. Guidance: the UNet runs on \
                      [negative, prompt] and mixes uncond + cfg * (cond - uncond)."
                    .into(),
                inputs: vec![
                    PortSpec::new("model", ValueType::Model, "a Stable Diffusion 1.x/2.x model"),
                    PortSpec::new("cond", ValueType::Cond, "prompt conditioning from sd.encode_prompt"),
                    PortSpec::new("latent", ValueType::Latent, "start latent: sd.empty_latent, or an encoded image"),
                    PortSpec::with_default("sampler", ValueType::Text, "euler", "ddim, euler, euler_a, dpmpp_2m, unipc or default"),
                    PortSpec::with_default("steps", ValueType::Int, 20i64, "inference steps"),
                    PortSpec::with_default("cfg", ValueType::Float, 7.5, "classifier-free guidance scale (1 = none)"),
                    PortSpec::with_default("seed", ValueType::Int, 0i64, "seed of the noise"),
                    PortSpec::with_default("denoise", ValueType::Float, 1.0, "strength: 1 = txt2img, below 1 = img2img"),
                    PortSpec::optional("noise", ValueType::Tensor, "noise replacing the seeded noise (diffusers' `latents=` for txt2img)"),
                    PortSpec::with_default("eta", ValueType::Float, 0.0, "DDIM eta (0 = deterministic)"),
                    precision_port(),
                ],
                outputs: vec![PortSpec::new("latent", ValueType::Latent, "the denoised latent")],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

/// Seeded standard-normal noise of `shape`, the same on every machine.
fn seeded_noise(rng: &mut SplitMix64, shape: &[usize], device: &candle_core::Device) -> candle_core::Result<Tensor> {
    let mut data = vec![0f32; shape.iter().product()];
    rng.fill_normal(&mut data);
    Tensor::from_vec(data, shape, device)
}

impl Op for Sample {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let model = model_input(inputs, "model")?;
        let cond = inputs
            .value("cond")?
            .as_object::<SdCond>()
            .context("input `cond` should be conditioning from sd.encode_prompt")?;
        let latent = inputs.tensor("latent")?.to_device(ctx.device())?.to_dtype(DType::F32)?;
        let steps = inputs.int("steps")?;
        if !(1..=10_000).contains(&steps) {
            bail!("input `steps` is {steps}; it must be between 1 and 10000");
        }
        let steps = steps as usize;
        let (cfg, denoise, eta) = (inputs.float("cfg")?, inputs.float("denoise")?, inputs.float("eta")?);
        if !(0.0..=1.0).contains(&denoise) {
            bail!("input `denoise` is {denoise}; it must be between 0 and 1");
        }
        let config_path = model.dir().join("scheduler").join("scheduler_config.json");
        let config = SchedulerConfig::from_file(&config_path)?;
        let sampler = inputs.text("sampler")?;
        let mut sched = scheduler::build_with(sampler, &config, steps, &SamplerOptions { eta })?;
        let mut rng = SplitMix64::new(inputs.int("seed")? as u64);
        let shape = latent.dims().to_vec();
        let noise = match inputs.opt_tensor("noise")? {
            Some(n) => {
                if n.dims() != shape.as_slice() {
                    bail!("input `noise` has shape {:?}; the latent has {:?}", n.dims(), shape);
                }
                n.to_device(ctx.device())?.to_dtype(DType::F32)?
            }
            None => seeded_noise(&mut rng, &shape, ctx.device())?,
        };
        let (start, mut x) = if denoise >= 1.0 {
            (0, (noise * sched.init_noise_sigma())?)
        } else {
            let start = img2img_start(sched.as_ref(), steps, denoise)?;
            if start >= sched.timesteps().len() {
                return Ok(Outputs::single("latent", Value::tensor(ValueType::Latent, latent)));
            }
            (start, sched.add_noise(&latent, &noise, start)?)
        };
        let unet = unet(ctx, model, compute_dtype(inputs, ctx)?)?;
        if shape.len() != 4 {
            bail!("input `latent` should be [N, C, h, w], got {shape:?}");
        }
        super::memory::check_unet(unet.config(), &shape, vae_config(model)?.scale_factor())?;
        let device = ctx.device().clone();
        let mut step_noise = |shape: &[usize]| seeded_noise(&mut rng, shape, &device);
        let total = sched.timesteps().len();
        for i in start..total {
            ctx.check_cancelled()?;
            let t = sched.timesteps()[i];
            let x_in = sched.scale_model_input(&x, i)?;
            let eps = guided_eps(&unet, &x_in, t, &cond.cond, &cond.uncond, cfg)?;
            x = sched.step(&eps, i, &x, &mut step_noise)?;
            ctx.progress((i + 1 - start) as u64, (total - start) as u64);
        }
        Ok(Outputs::single("latent", Value::tensor(ValueType::Latent, x)))
    }
}
