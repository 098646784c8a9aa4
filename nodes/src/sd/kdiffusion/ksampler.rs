//! ComfyUI's KSampler / KSamplerAdvanced around a model (`common_ksampler`,
//! `KSampler.sample`, `CFGGuider`): the schedule cut by `denoise` and the
//! start / end steps, the noise scaling, and the denoiser built from the
//! model's raw outputs with ComfyUI's model input scaling, timestep and
//! classifier-free guidance on the denoised predictions.
//!
//! Latents are taken and returned in the model's scaled latent space
//! (flow's latents, like diffusers', are already multiplied by the VAE
//! scaling factor), so ComfyUI's `process_latent_in` / `process_latent_out`
//! at KSampler's edges are implicit.

use anyhow::Result;
use candle_core::Tensor;

use super::model_sampling::ModelSampling;
use super::samplers::{Io, NoiseSampler, Sampler, StepCallback};
use super::schedules::{advanced_sigmas, ksampler_sigmas, Scheduler};

/// What a KSampler(Advanced) node is set to.
#[derive(Debug, Clone, Copy)]
pub struct KSamplerSettings {
    /// The sampler.
    pub sampler: Sampler,
    /// The sigma schedule.
    pub scheduler: Scheduler,
    /// Steps (of the full schedule when `denoise` < 1: `int(steps / denoise)`).
    pub steps: usize,
    /// ComfyUI's denoise: 1 = from pure noise, below 1 = the last steps only.
    pub denoise: f64,
    /// Classifier-free guidance scale; 1 skips the negative prompt.
    pub cfg: f64,
    /// First step to run (KSamplerAdvanced `start_at_step`).
    pub start_step: usize,
    /// Step to stop at (KSamplerAdvanced `end_at_step`).
    pub end_step: usize,
    /// Force the last sigma to 0 when stopping early (KSamplerAdvanced
    /// with `return_with_leftover_noise` disabled).
    pub force_full_denoise: bool,
}

/// The raw model call: `(scaled input, timestep, run the negative side)` ->
/// (positive output, negative output when asked).
pub type ModelFn<'a> = dyn FnMut(&Tensor, f64, bool) -> Result<(Tensor, Option<Tensor>)> + 'a;

/// The sigmas a KSampler run with `settings` takes; `None` when no step is
/// left to run (the latent comes back unchanged).
pub fn run_sigmas(ms: &ModelSampling, settings: &KSamplerSettings) -> Option<Vec<f32>> {
    let sampler = settings.sampler;
    let sigmas =
        ksampler_sigmas(ms, settings.scheduler, settings.steps, settings.denoise, sampler.discards_penultimate_sigma());
    advanced_sigmas(&sigmas, settings.start_step, settings.end_step, settings.force_full_denoise)
}

/// Runs KSampler from `latent` with the initial standard-normal `noise`
/// (zeros when ComfyUI's noise is disabled); `step_noise` feeds the
/// ancestral samplers, `on_step` sees every step. Returns the latent.
pub fn ksample(
    ms: &ModelSampling,
    settings: &KSamplerSettings,
    latent: &Tensor,
    noise: &Tensor,
    model: &mut ModelFn<'_>,
    step_noise: &mut NoiseSampler<'_>,
    on_step: &mut StepCallback<'_>,
) -> Result<Tensor> {
    let Some(sigmas) = run_sigmas(ms, settings) else { return Ok(latent.clone()) };
    let x = ms.noise_scaling(sigmas[0], noise, latent)?;
    let sigmas: Vec<f64> = sigmas.iter().map(|s| *s as f64).collect();
    let cfg = settings.cfg;
    // math.isclose(cfg, 1.0): ComfyUI then runs the positive side alone.
    let with_negative = (cfg - 1.0).abs() > 1e-9 * cfg.abs().max(1.0);
    let mut denoise = |x: &Tensor, sigma: f64| -> Result<Tensor> {
        let input = (x * ModelSampling::input_scale(sigma))?;
        let timestep = ms.timestep(sigma as f32) as f64;
        let (cond, uncond) = model(&input, timestep, with_negative)?;
        let cond = ms.denoised(&cond, x, sigma)?;
        match uncond {
            Some(uncond) => {
                let uncond = ms.denoised(&uncond, x, sigma)?;
                Ok((&uncond + ((cond - &uncond)? * cfg)?)?)
            }
            None => Ok(cond),
        }
    };
    settings.sampler.sample(x, &sigmas, &mut Io { denoise: &mut denoise, noise: step_noise, on_step })
}
