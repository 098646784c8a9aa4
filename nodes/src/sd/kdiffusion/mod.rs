//! ComfyUI's KSampler around the model: the discrete model sampling of SD
//! 1.x / 2.x checkpoints, the sigma schedules, and the k-diffusion samplers,
//! re-implemented from ComfyUI (commit a125cd8) and checked against values
//! its own code produced (tests/fixtures/comfy-samplers).
//!
//! The samplers take the denoiser as a function, so they run the same with
//! a UNet and classifier-free guidance (`sd.sample` with a ComfyUI
//! `scheduler`) or with a toy denoiser in tests:
//!
//! ```ignore
//! let ms = ModelSampling::sd1();
//! let sampler = Sampler::from_name("dpmpp_2m")?;
//! let sigmas = ksampler_sigmas(&ms, Scheduler::Karras, 20, 1.0, sampler.discards_penultimate_sigma());
//! let x = ms.noise_scaling(sigmas[0], &noise, &latent)?;
//! let sigmas: Vec<f64> = sigmas.iter().map(|s| *s as f64).collect();
//! let out = sampler.sample(x, &sigmas, &mut Io { denoise: &mut denoiser, noise: &mut noise_fn, on_step: &mut progress })?;
//! ```

mod beta_dist;
mod ksampler;
mod linspace;
mod model_sampling;
mod samplers;
mod schedules;

pub use ksampler::{ksample, run_sigmas, KSamplerSettings, ModelFn};
pub use model_sampling::{ModelSampling, Prediction};
pub use samplers::{
    unsupported_reason, Denoiser, Io, NoiseSampler, Sampler, StepCallback, SAMPLER_NAMES, UNSUPPORTED_SAMPLERS,
};
pub use schedules::{advanced_sigmas, ksampler_sigmas, Scheduler, SCHEDULER_NAMES};
