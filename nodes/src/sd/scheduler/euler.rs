//! `euler`: diffusers `EulerDiscreteScheduler` (Karras et al. 2022, algorithm
//! 2 without churn, as the SD pipelines call it).

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::config::{
    FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig, TimestepSpacing,
    TimestepType,
};
use super::schedule::{check_steps, inference_sigmas, spaced_timesteps, TrainSchedule};
use super::{at, NoiseFn, Scheduler};

/// The timesteps and sigmas shared by the two Euler samplers.
pub(super) struct EulerSchedule {
    /// float32-valued timesteps, descending.
    pub timesteps: Vec<f64>,
    /// One sigma per timestep (interpolated linearly in t), then the final one.
    pub sigmas: Vec<f64>,
    /// `max(sigmas)` for "linspace" / "trailing", else `sqrt(max^2 + 1)`.
    pub init_noise_sigma: f64,
}

impl EulerSchedule {
    /// The schedule for `steps` steps (default spacing "linspace").
    pub fn new(cfg: &SchedulerConfig, steps: usize, final_kind: FinalSigmasType) -> Result<Self> {
        let schedule = TrainSchedule::new(cfg)?;
        let n_train = schedule.num_train_timesteps();
        check_steps(steps, n_train)?;
        let spacing = cfg.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let timesteps: Vec<f64> =
            spaced_timesteps(spacing, n_train, steps, cfg.steps_offset.unwrap_or(0))
                .into_iter()
                .map(|t| t as f32 as f64)
                .collect();
        let sigmas = inference_sigmas(&timesteps, &schedule.sigma_alphas_cumprod(), final_kind);
        // float32, as diffusers computes it from its float32 sigmas.
        let max = sigmas.iter().copied().fold(0.0, f64::max) as f32;
        let init_noise_sigma = f64::from(match spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
        });
        Ok(EulerSchedule {
            timesteps,
            sigmas,
            init_noise_sigma,
        })
    }

    /// `sample / sqrt(sigma^2 + 1)` at step `i`.
    pub fn scale(&self, sample: &Tensor, i: usize) -> candle_core::Result<Tensor> {
        let sigma = at(&self.sigmas, i)?;
        sample / (sigma * sigma + 1.0).sqrt()
    }

    /// `original + sigma * noise` at step `i`.
    pub fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        i: usize,
    ) -> candle_core::Result<Tensor> {
        let sigma = at(&self.sigmas[..self.timesteps.len()], i)?;
        original + (noise * sigma)?
    }

    /// `(sigma_i, sigma_{i+1})`, or an error when `i` is not a step.
    pub fn sigma_pair(&self, i: usize) -> candle_core::Result<(f64, f64)> {
        Ok((
            at(&self.sigmas[..self.timesteps.len()], i)?,
            self.sigmas[i + 1],
        ))
    }
}

/// The predicted clean sample of the Euler samplers, which work on the
/// unscaled `x = x0 + sigma * eps`.
pub(super) fn euler_x0(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f64,
) -> candle_core::Result<Tensor> {
    match prediction {
        PredictionType::Epsilon => sample - (model_output * sigma)?,
        PredictionType::Sample => Ok(model_output.clone()),
        PredictionType::VPrediction => {
            let scale = sigma * sigma + 1.0;
            (model_output * (-sigma / scale.sqrt()))? + (sample / scale)?
        }
    }
}

/// Euler discrete.
pub(super) struct Euler {
    schedule: EulerSchedule,
    prediction: PredictionType,
}

impl Euler {
    /// Euler for `steps` steps, honouring `final_sigmas_type`.
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        cfg.reject_alternative_sigmas("euler")?;
        if cfg.interpolation_type == Some(InterpolationType::LogLinear) {
            bail!("sampler euler: `interpolation_type: log_linear` is not supported (only linear)");
        }
        let prediction = cfg.prediction_type.unwrap_or(PredictionType::Epsilon);
        if cfg.timestep_type == Some(TimestepType::Continuous)
            && prediction == PredictionType::VPrediction
        {
            bail!("sampler euler: `timestep_type: continuous` with v_prediction is not supported");
        }
        let final_kind = cfg.final_sigmas_type.unwrap_or(FinalSigmasType::Zero);
        Ok(Euler {
            schedule: EulerSchedule::new(cfg, steps, final_kind)?,
            prediction,
        })
    }
}

impl Scheduler for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.schedule.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.schedule.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        self.schedule.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> candle_core::Result<Tensor> {
        self.schedule.scale(sample, step_index)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _noise: &mut NoiseFn,
    ) -> candle_core::Result<Tensor> {
        let (sigma, sigma_next) = self.schedule.sigma_pair(step_index)?;
        let x0 = euler_x0(self.prediction, model_output, sample, sigma)?;
        let derivative = ((sample - x0)? / sigma)?;
        sample + (derivative * (sigma_next - sigma))?
    }

    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor> {
        self.schedule.add_noise(original, noise, step_index)
    }
}
