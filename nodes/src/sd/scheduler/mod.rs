//! Diffusion samplers ported from diffusers 0.42, built from a diffusers
//! `scheduler_config.json`.
//!
//! | name | diffusers class | model input scaled | noise per step |
//! |---|---|---|---|
//! | `ddim` | `DDIMScheduler` | no | only when eta > 0 |
//! | `euler` | `EulerDiscreteScheduler` | `x / sqrt(sigma^2 + 1)` | no |
//! | `euler_a` | `EulerAncestralDiscreteScheduler` | `x / sqrt(sigma^2 + 1)` | yes |
//! | `dpmpp_2m` | `DPMSolverMultistepScheduler` (dpmsolver++, order 2) | no | no |
//! | `unipc` | `UniPCMultistepScheduler` (bh2, order 2 unless the config says) | no | no |
//!
//! A txt2img loop, with `x` the initial noise (`randn`):
//!
//! ```ignore
//! let mut s = build("euler", &config, steps)?;
//! let mut x = (x * s.init_noise_sigma())?;
//! for i in 0..s.timesteps().len() {
//!     let input = s.scale_model_input(&x, i)?;
//!     let eps = unet(&input, s.timesteps()[i])?; // after classifier-free guidance
//!     x = s.step(&eps, i, &x, &mut noise)?;
//! }
//! ```
//!
//! img2img (diffusers `strength`, ComfyUI `denoise`) starts at
//! `i0 = img2img_start(&*s, steps, strength)?` from
//! `s.add_noise(&init_latents, &noise, i0)?` (no `init_noise_sigma` there) and
//! runs `i0..timesteps().len()`.
//!
//! Steps must be taken with consecutive indices; the multistep samplers keep
//! their history between calls and start a fresh run (first order again)
//! whenever `step` is called with an index that does not follow the previous
//! one, so one scheduler serves several runs. Scalars are f64, tensors are
//! expected in f32 (any shape).

mod config;
mod ddim;
mod dpmpp_2m;
mod euler;
mod euler_ancestral;
mod multistep;
mod schedule;
mod unipc;

use anyhow::{bail, Result};
use candle_core::Tensor;

pub use config::{
    BetaSchedule, FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig,
    TimestepSpacing, TimestepType,
};

/// The sampler names [`build`] accepts.
pub const SAMPLERS: [&str; 5] = ["ddim", "euler", "euler_a", "dpmpp_2m", "unipc"];

/// A source of standard normal noise of a given shape, called by the
/// stochastic samplers (`euler_a`, `ddim` with eta > 0) once per step.
pub type NoiseFn<'a> = dyn FnMut(&[usize]) -> candle_core::Result<Tensor> + 'a;

/// One configured sampler: the timesteps of a run and the update rule.
pub trait Scheduler: Send {
    /// The timesteps the UNet receives, one per step, descending. Integers
    /// except for Euler with "linspace" spacing (float32 values).
    fn timesteps(&self) -> &[f64];

    /// The noise levels, one per step plus the final one, for the
    /// sigma-based samplers (`None` for DDIM).
    fn sigmas(&self) -> Option<&[f64]>;

    /// What txt2img multiplies the initial standard normal noise by (1 for
    /// every sampler but the Euler ones).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// The UNet input for step `step_index` (identity except for the Euler samplers).
    fn scale_model_input(
        &self,
        sample: &Tensor,
        _step_index: usize,
    ) -> candle_core::Result<Tensor> {
        Ok(sample.clone())
    }

    /// One denoising step: from `sample` at `timesteps()[step_index]` and the
    /// (guided) model output there, the sample at the next noise level.
    /// `noise` is called only by the stochastic samplers.
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: &mut NoiseFn,
    ) -> candle_core::Result<Tensor>;

    /// img2img: `original` noised to the level of `timesteps()[step_index]`.
    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor>;

    /// diffusers' `scheduler.order`: timesteps per step (1 for every sampler
    /// here; 2 for Heun-style samplers).
    fn order(&self) -> usize {
        1
    }
}

/// Options a sampler may take beyond the config.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SamplerOptions {
    /// DDIM eta (0 = deterministic; 1 = DDPM-like). Ignored by the others.
    pub eta: f64,
}

/// Builds sampler `sampler` (one of [`SAMPLERS`]; `"default"` picks the one
/// matching the config's `_class_name`) for `steps` inference steps.
pub fn build(sampler: &str, config: &SchedulerConfig, steps: usize) -> Result<Box<dyn Scheduler>> {
    build_with(sampler, config, steps, &SamplerOptions::default())
}

/// [`build`] with [`SamplerOptions`].
pub fn build_with(
    sampler: &str,
    config: &SchedulerConfig,
    steps: usize,
    options: &SamplerOptions,
) -> Result<Box<dyn Scheduler>> {
    let name = match sampler {
        "default" => match config.default_sampler() {
            Some(name) => name,
            None => bail!(
                "scheduler class {:?} has no port; choose a sampler explicitly, one of {}",
                config.class_name.as_deref().unwrap_or("(none)"),
                SAMPLERS.join(", ")
            ),
        },
        other => other,
    };
    Ok(match name {
        "ddim" => Box::new(ddim::Ddim::new(config, steps, options.eta)?),
        "euler" => Box::new(euler::Euler::new(config, steps)?),
        "euler_a" => Box::new(euler::Euler::ancestral(config, steps)?),
        "dpmpp_2m" => Box::new(dpmpp_2m::DpmPp2m::new(config, steps)?),
        "unipc" => Box::new(unipc::UniPc::new(config, steps)?),
        other => bail!(
            "unknown sampler {other:?}; valid: {}, default",
            SAMPLERS.join(", ")
        ),
    })
}

/// diffusers img2img `get_timesteps`: the index of the first timestep run for
/// `strength` in [0, 1] (1 = all `steps`, 0.5 = the last half). Equals
/// `timesteps().len()` when `int(steps * strength)` is 0: nothing to run.
pub fn img2img_start(scheduler: &dyn Scheduler, steps: usize, strength: f64) -> Result<usize> {
    if !(0.0..=1.0).contains(&strength) {
        bail!("strength must be in [0, 1], got {strength}");
    }
    let init_timestep = ((steps as f64 * strength) as usize).min(steps);
    let t_start = steps - init_timestep;
    Ok((t_start * scheduler.order()).min(scheduler.timesteps().len()))
}

/// A [`NoiseFn`] for deterministic samplers: errors if it is ever called.
pub fn no_noise(shape: &[usize]) -> candle_core::Result<Tensor> {
    Err(candle_core::Error::Msg(format!(
        "this sampler needs noise (shape {shape:?}) but none was supplied"
    )))
}

/// `a * x + b * y`, in the dtype of the tensors.
fn axpby(a: f64, x: &Tensor, b: f64, y: &Tensor) -> candle_core::Result<Tensor> {
    (x * a)? + (y * b)?
}

/// The entry `i` of `values`, or an error naming the valid range.
fn at(values: &[f64], i: usize) -> candle_core::Result<f64> {
    values.get(i).copied().ok_or_else(|| {
        candle_core::Error::Msg(format!("step index {i} out of range 0..{}", values.len()))
    })
}

/// A noise draw of the shape, dtype and device of `like`.
fn draw_noise(noise: &mut NoiseFn, like: &Tensor) -> candle_core::Result<Tensor> {
    noise(like.dims())?
        .to_dtype(like.dtype())?
        .to_device(like.device())
}

/// `(alpha_t, sigma_t)` of the variance-preserving process at noise level
/// `sigma` (DPM-Solver, UniPC).
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// `lambda = ln(alpha_t) - ln(sigma_t)`, the half log-SNR at noise level `sigma`.
fn lambda(sigma: f64) -> f64 {
    let (alpha, sigma_t) = alpha_sigma(sigma);
    alpha.ln() - sigma_t.ln()
}
