//! `sd.sample`: the denoising loop — diffusers' schedulers and samplers, or
//! ComfyUI's KSampler (sigma schedules and k-diffusion samplers) — around
//! the UNet with classifier-free guidance, progress per step, cancellable
//! between steps.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

use super::{compute_dtype, model_input, precision_port, scheduler_config, unet, vae_config, SdCond};
use crate::sd::guidance::{guided_prediction, predict};
use crate::sd::kdiffusion::{self, KSamplerSettings, ModelSampling, Sampler, Scheduler, SAMPLER_NAMES, SCHEDULER_NAMES};
use crate::sd::scheduler::{self, img2img_start, PredictionType, SamplerOptions, SchedulerConfig};
use crate::sd::unet::UNet2DConditionModel;
use crate::tensor::generator::{generator_input, generator_port, Generator, GeneratorKind};

/// The samplers of the `diffusers` scheduler.
const DIFFUSERS_SAMPLERS: [&str; 6] = ["ddim", "euler", "euler_a", "dpmpp_2m", "unipc", "default"];

/// Every value the `sampler` input accepts: ComfyUI's (which include
/// `euler`, `ddim` and `dpmpp_2m`, also diffusers names) and the other
/// diffusers ones.
const SAMPLER_CHOICES: [&str; SAMPLER_NAMES.len() + 3] = concat(SAMPLER_NAMES, ["euler_a", "unipc", "default"]);

/// Every value the `scheduler` input accepts.
const SCHEDULER_CHOICES: [&str; SCHEDULER_NAMES.len() + 1] = concat(["diffusers"], SCHEDULER_NAMES);

/// `a` then `b`, at compile time.
const fn concat<const A: usize, const B: usize, const N: usize>(a: [&'static str; A], b: [&'static str; B]) -> [&'static str; N] {
    assert!(A + B == N);
    let mut out = [""; N];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    while i < N {
        out[i] = b[i - A];
        i += 1;
    }
    out
}

pub(super) struct Sample {
    spec: OpSpec,
}

impl Sample {
    pub(super) fn new() -> Self {
        Sample {
            spec: OpSpec {
                name: "sd.sample".into(),
                version: 2,
                doc: "Denoises a latent with the model's UNet and classifier-free guidance.\n\
                      \n\
                      `scheduler: diffusers` (the default) runs diffusers' samplers (ddim, euler, euler_a, \
                      dpmpp_2m, unipc, or `default` = the config's class) built from the model's scheduler \
                      config, exactly as diffusers does: with `denoise` = 1 (txt2img) sampling starts from the \
                      noise scaled by init_noise_sigma; with `denoise` < 1 (img2img, hires fix) the latent is \
                      noised to the matching timestep and only the last steps run. Guidance: uncond + cfg * \
                      (cond - uncond) on the noise predictions, only when cfg > 1.\n\
                      \n\
                      Any ComfyUI scheduler (normal, karras, exponential, sgm_uniform, simple, ddim_uniform, \
                      beta, linear_quadratic, kl_optimal) runs ComfyUI's KSampler instead, with ComfyUI's \
                      sampler names (euler, euler_ancestral, heun, heunpp2, dpm_2, dpm_2_ancestral, lms, \
                      dpmpp_2s_ancestral, dpmpp_2m, ddpm, lcm, ipndm, deis, ddim, uni_pc, uni_pc_bh2): sigmas \
                      from the model's training betas, `denoise` as ComfyUI computes it (the last `steps` of \
                      int(steps / denoise)), the start at noise * sqrt(1 + sigma0^2) + latent (noise * sigma0 + \
                      latent below full denoise), guidance uncond + (cond - uncond) * cfg on the denoised \
                      predictions (cfg = 1 skips the negative prompt), and KSamplerAdvanced's `add_noise`, \
                      `start_step`, `end_step`, `leftover_noise`. flow's latents are already scaled by the VAE \
                      factor (0.18215 for SD 1.x), so ComfyUI's scaling at KSampler's edges is implicit: the \
                      result equals ComfyUI's KSampler output times that factor. SDE samplers (dpmpp_sde, \
                      dpmpp_2m_sde, dpmpp_3m_sde: Brownian-tree noise) are not supported.\n\
                      \n\
                      Noise: `generator: torch` draws torch.manual_seed(seed); torch.randn(shape) on the CPU, \
                      the initial noise of diffusers (CPU generator) and of ComfyUI for the same seed; `noise` \
                      replaces it (for diffusers txt2img it is `latents=`). Per-step noise (euler_a, ddim with \
                      eta > 0) continues the same generator on the diffusers path; ComfyUI's ancestral samplers \
                      draw it from a fresh generator with the same seed, as ComfyUI does. Conds combined with \
                      sd.combine_cond have their predictions averaged per side before guidance."
                    .into(),
                inputs: vec![
                    PortSpec::new("model", ValueType::Model, "a Stable Diffusion 1.x/2.x model"),
                    PortSpec::new(
                        "cond",
                        ValueType::Cond,
                        "prompt conditioning from sd.encode_prompt or sd.combine_cond",
                    ),
                    PortSpec::new("latent", ValueType::Latent, "start latent: sd.empty_latent, or an encoded image"),
                    PortSpec::with_default(
                        "sampler",
                        ValueType::Text,
                        "euler",
                        "diffusers: ddim, euler, euler_a, dpmpp_2m, unipc, default; with a ComfyUI scheduler: ComfyUI's names",
                    )
                    .one_of(&SAMPLER_CHOICES),
                    PortSpec::with_default(
                        "scheduler",
                        ValueType::Text,
                        "diffusers",
                        "diffusers (the model's own scheduler) or a ComfyUI scheduler",
                    )
                    .one_of(&SCHEDULER_CHOICES),
                    PortSpec::with_default("steps", ValueType::Int, 20i64, "inference steps"),
                    PortSpec::with_default("cfg", ValueType::Float, 7.5, "classifier-free guidance scale (1 = none)"),
                    PortSpec::with_default("seed", ValueType::Int, 0i64, "seed of the noise"),
                    generator_port(),
                    PortSpec::with_default(
                        "denoise",
                        ValueType::Float,
                        1.0,
                        "strength: 1 = txt2img, below 1 = img2img",
                    ),
                    PortSpec::optional(
                        "noise",
                        ValueType::Tensor,
                        "noise replacing the seeded initial noise (diffusers' `latents=` for txt2img)",
                    ),
                    PortSpec::with_default(
                        "eta",
                        ValueType::Float,
                        0.0,
                        "DDIM eta (0 = deterministic; diffusers ddim only)",
                    ),
                    PortSpec::with_default(
                        "add_noise",
                        ValueType::Bool,
                        true,
                        "ComfyUI: start from noise (false = KSamplerAdvanced add_noise disable)",
                    ),
                    PortSpec::with_default(
                        "start_step",
                        ValueType::Int,
                        0i64,
                        "ComfyUI: first step to run (KSamplerAdvanced start_at_step)",
                    ),
                    PortSpec::with_default(
                        "end_step",
                        ValueType::Int,
                        10_000i64,
                        "ComfyUI: step to stop at (KSamplerAdvanced end_at_step)",
                    ),
                    PortSpec::with_default(
                        "leftover_noise",
                        ValueType::Bool,
                        false,
                        "ComfyUI: when stopping early, keep the remaining noise (return_with_leftover_noise)",
                    ),
                    PortSpec::with_default(
                        "prediction",
                        ValueType::Text,
                        "auto",
                        "what the UNet predicts: auto (the model's: its scheduler config, a checkpoint's sidecar \
                         or family default, see `flow models list`), epsilon or v_prediction",
                    )
                    .one_of(&PREDICTIONS),
                    precision_port(),
                ],
                outputs: vec![PortSpec::new("latent", ValueType::Latent, "the denoised latent")],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

/// The inputs both paths share.
struct Common<'a> {
    cond: &'a SdCond,
    latent: Tensor,
    steps: usize,
    cfg: f64,
    denoise: f64,
    seed: i64,
    generator: GeneratorKind,
    device: Device,
}

impl Common<'_> {
    /// The initial standard-normal noise: the `noise` input, else the
    /// generator's first draw.
    fn initial_noise(&self, inputs: &Inputs, generator: &mut Generator) -> Result<Tensor> {
        let shape = self.latent.dims();
        match inputs.opt_tensor("noise")? {
            Some(n) => {
                if n.dims() != shape {
                    bail!("input `noise` has shape {:?}; the latent has {:?}", n.dims(), shape);
                }
                Ok(n.to_device(&self.device)?.to_dtype(DType::F32)?)
            }
            None => Ok(generator.randn(shape, &self.device)?),
        }
    }
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
        if latent.rank() != 4 {
            bail!("input `latent` should be [N, C, h, w], got {:?}", latent.dims());
        }
        let steps = inputs.int("steps")?;
        if !(1..=10_000).contains(&steps) {
            bail!("input `steps` is {steps}; it must be between 1 and 10000");
        }
        let (cfg, denoise) = (inputs.float("cfg")?, inputs.float("denoise")?);
        if !(0.0..=1.0).contains(&denoise) {
            bail!("input `denoise` is {denoise}; it must be between 0 and 1");
        }
        if !cfg.is_finite() {
            bail!("input `cfg` is {cfg}; it must be a finite number");
        }
        let common = Common {
            cond,
            latent,
            steps: steps as usize,
            cfg,
            denoise,
            seed: inputs.int("seed")?,
            generator: generator_input(inputs)?,
            device: ctx.device().clone(),
        };
        let out = match inputs.text("scheduler")? {
            "diffusers" => run_diffusers(inputs, ctx, model, &common)?,
            name => run_comfy(inputs, ctx, model, &common, Scheduler::from_name(name)?)?,
        };
        Ok(Outputs::single("latent", Value::tensor(ValueType::Latent, out)))
    }
}

/// The UNet for the model in the precision asked, after the memory check.
fn load_unet(
    inputs: &Inputs,
    ctx: &OpContext,
    model: &flow_engine::models::ResolvedModel,
    shape: &[usize],
) -> Result<std::sync::Arc<UNet2DConditionModel>> {
    let unet = unet(ctx, model, compute_dtype(inputs, ctx)?)?;
    super::memory::check_unet(unet.config(), shape, vae_config(model)?.scale_factor())?;
    Ok(unet)
}

/// diffusers' schedulers and samplers, as the SD pipelines run them.
fn run_diffusers(
    inputs: &Inputs,
    ctx: &OpContext,
    model: &flow_engine::models::ResolvedModel,
    c: &Common,
) -> Result<Tensor> {
    let sampler = inputs.text("sampler")?;
    if !DIFFUSERS_SAMPLERS.contains(&sampler) {
        bail!(
            "sampler `{sampler}` is a ComfyUI sampler: it needs a ComfyUI `scheduler` ({}); with scheduler \
             `diffusers` the samplers are {}",
            SCHEDULER_CHOICES[1..].join(", "),
            DIFFUSERS_SAMPLERS.join(", ")
        );
    }
    let advanced = [
        ("add_noise", !inputs.bool("add_noise")?),
        ("start_step", inputs.int("start_step")? != 0),
        ("end_step", inputs.int("end_step")? != 10_000),
        ("leftover_noise", inputs.bool("leftover_noise")?),
    ];
    if let Some((name, _)) = advanced.iter().find(|(_, set)| *set) {
        bail!("input `{name}` is ComfyUI's KSamplerAdvanced control: it needs a ComfyUI `scheduler`, not `diffusers`");
    }
    let config = model_scheduler_config(inputs, model)?;
    let eta = inputs.float("eta")?;
    let mut sched = scheduler::build_with(sampler, &config, c.steps, &SamplerOptions { eta })?;
    let mut generator = Generator::new(c.generator, c.seed);
    let noise = c.initial_noise(inputs, &mut generator)?;
    let (start, mut x) = if c.denoise >= 1.0 {
        (0, (noise * sched.init_noise_sigma())?)
    } else {
        let start = img2img_start(sched.as_ref(), c.steps, c.denoise)?;
        if start >= sched.timesteps().len() {
            return Ok(c.latent.clone());
        }
        (start, sched.add_noise(&c.latent, &noise, start)?)
    };
    let unet = load_unet(inputs, ctx, model, c.latent.dims())?;
    let (positive, negative) = (c.cond.positive(), c.cond.negative());
    let device = c.device.clone();
    let mut step_noise = |shape: &[usize]| generator.randn(shape, &device);
    let total = sched.timesteps().len();
    for i in start..total {
        ctx.check_cancelled()?;
        let t = sched.timesteps()[i];
        let x_in = sched.scale_model_input(&x, i)?;
        let eps = guided_prediction(&unet, &x_in, t, &positive, &negative, c.cfg)?;
        x = sched.step(&eps, i, &x, &mut step_noise)?;
        ctx.progress((i + 1 - start) as u64, (total - start) as u64);
    }
    Ok(x)
}

/// Values of the `prediction` input.
const PREDICTIONS: [&str; 3] = ["auto", "epsilon", "v_prediction"];

/// The model's scheduler settings with the `prediction` input applied.
fn model_scheduler_config(inputs: &Inputs, model: &flow_engine::models::ResolvedModel) -> Result<SchedulerConfig> {
    let mut config = scheduler_config(model)?;
    match inputs.text("prediction")? {
        "auto" => {}
        "epsilon" => config.prediction_type = Some(PredictionType::Epsilon),
        "v_prediction" => config.prediction_type = Some(PredictionType::VPrediction),
        other => bail!("input `prediction` is `{other}`; use {}", PREDICTIONS.join(", ")),
    }
    Ok(config)
}

/// ComfyUI's KSampler / KSamplerAdvanced.
fn run_comfy(
    inputs: &Inputs,
    ctx: &OpContext,
    model: &flow_engine::models::ResolvedModel,
    c: &Common,
    scheduler: Scheduler,
) -> Result<Tensor> {
    let name = inputs.text("sampler")?;
    let sampler = match name {
        "euler_a" => bail!("sampler `euler_a` is diffusers' name; ComfyUI's sampler is `euler_ancestral`"),
        "unipc" => bail!("sampler `unipc` is diffusers' name; ComfyUI's samplers are `uni_pc` (bh1) and `uni_pc_bh2`"),
        "default" => bail!(
            "sampler `default` picks the diffusers scheduler class; with scheduler `{}` name a ComfyUI sampler: {}",
            scheduler.name(),
            kdiffusion::SAMPLER_NAMES.join(", ")
        ),
        other => Sampler::from_name(other)?,
    };
    if inputs.float("eta")? != 0.0 {
        bail!("input `eta` applies to the diffusers ddim sampler; ComfyUI's samplers take no eta");
    }
    let step_input = |port: &str| -> Result<usize> {
        let v = inputs.int(port)?;
        usize::try_from(v).map_err(|_| anyhow::anyhow!("input `{port}` is {v}; it must be 0 or more"))
    };
    let settings = KSamplerSettings {
        sampler,
        scheduler,
        steps: c.steps,
        denoise: c.denoise,
        cfg: c.cfg,
        start_step: step_input("start_step")?,
        end_step: step_input("end_step")?,
        force_full_denoise: !inputs.bool("leftover_noise")?,
    };
    let ms = ModelSampling::from_config(&model_scheduler_config(inputs, model)?)?;
    if kdiffusion::run_sigmas(&ms, &settings).is_none() {
        return Ok(c.latent.clone());
    }
    let noise = if inputs.bool("add_noise")? {
        c.initial_noise(inputs, &mut Generator::new(c.generator, c.seed))?
    } else {
        c.latent.zeros_like()?
    };
    let unet = load_unet(inputs, ctx, model, c.latent.dims())?;
    let (positive, negative) = (c.cond.positive(), c.cond.negative());
    let mut model_fn = |x: &Tensor, timestep: f64, with_negative: bool| {
        predict(&unet, x, timestep, &positive, with_negative.then_some(negative.as_slice()))
    };
    // ComfyUI's default_noise_sampler: a generator seeded with the seed,
    // whose successive draws are the per-step noise.
    let mut step_generator = Generator::new(c.generator, c.seed);
    let (shape, device) = (c.latent.dims().to_vec(), c.device.clone());
    let mut step_noise = |_: f64, _: f64| Ok(step_generator.randn(&shape, &device)?);
    let mut on_step = |i: usize, n: usize, _: &Tensor| {
        ctx.check_cancelled()?;
        ctx.progress(i as u64 + 1, n as u64);
        Ok(())
    };
    ctx.check_cancelled()?;
    kdiffusion::ksample(&ms, &settings, &c.latent, &noise, &mut model_fn, &mut step_noise, &mut on_step)
}
