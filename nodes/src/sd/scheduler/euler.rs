//! `euler`: diffusers `EulerDiscreteScheduler` (Karras et al. 2022, algorithm
//! 2 without churn, as the SD pipelines call it). Its ancestral variant is
//! built in `euler_ancestral.rs`.

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::config::{
    FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig, TimestepSpacing,
    TimestepType,
};
use super::euler_ancestral::ancestral_sigmas;
use super::schedule::{check_steps, spaced_timesteps, SigmaTable, TrainSchedule};
use super::{at, draw_noise, NoiseFn, Scheduler};

/// The timesteps and sigmas shared by the two Euler samplers.
pub(super) struct EulerSchedule {
    /// float32-valued timesteps, descending, and their sigmas (interpolated
    /// linearly in t).
    table: SigmaTable,
    /// `max(sigmas)` for "linspace" / "trailing", else `sqrt(max^2 + 1)`.
    init_noise_sigma: f64,
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
        let table = SigmaTable::new(timesteps, &schedule.sigma_alphas_cumprod(), final_kind);
        // float32, as diffusers computes it from its float32 sigmas.
        let max = table.sigmas.iter().copied().fold(0.0, f64::max) as f32;
        let init_noise_sigma = f64::from(match spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
        });
        Ok(EulerSchedule {
            table,
            init_noise_sigma,
        })
    }
}

/// The predicted clean sample of the Euler samplers, which work on the
/// unscaled `x = x0 + sigma * eps`.
fn euler_x0(
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

/// Euler discrete, or Euler ancestral (see [`Euler::ancestral`]).
pub(super) struct Euler {
    pub(super) schedule: EulerSchedule,
    pub(super) prediction: PredictionType,
    /// Euler ancestral: step down to `sigma_down`, then add fresh noise of
    /// standard deviation `sigma_up`.
    pub(super) ancestral: bool,
}

impl Euler {
    /// Euler for `steps` steps, honouring `final_sigmas_type`.
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        cfg.reject_alternative_sigmas("euler")?;
        if cfg.interpolation_type == Some(InterpolationType::LogLinear) {
            bail!("sampler euler: `interpolation_type: log_linear` is not supported (only linear)");
        }
        let prediction = cfg.prediction();
        if cfg.timestep_type == Some(TimestepType::Continuous)
            && prediction == PredictionType::VPrediction
        {
            bail!("sampler euler: `timestep_type: continuous` with v_prediction is not supported");
        }
        let final_kind = cfg.final_sigmas_type.unwrap_or(FinalSigmasType::Zero);
        Ok(Euler {
            schedule: EulerSchedule::new(cfg, steps, final_kind)?,
            prediction,
            ancestral: false,
        })
    }
}

impl Scheduler for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.schedule.table.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.schedule.table.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        self.schedule.init_noise_sigma
    }

    /// `sample / sqrt(sigma^2 + 1)` at step `step_index`.
    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> candle_core::Result<Tensor> {
        let sigma = at(&self.schedule.table.sigmas, step_index)?;
        sample / (sigma * sigma + 1.0).sqrt()
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: &mut NoiseFn,
    ) -> candle_core::Result<Tensor> {
        let (sigma, sigma_next) = self.schedule.table.sigma_pair(step_index)?;
        let x0 = euler_x0(self.prediction, model_output, sample, sigma)?;
        let derivative = ((sample - x0)? / sigma)?;
        if !self.ancestral {
            return sample + (derivative * (sigma_next - sigma))?;
        }
        let (sigma_down, sigma_up) = ancestral_sigmas(sigma, sigma_next);
        let prev = (sample + (derivative * (sigma_down - sigma))?)?;
        prev + (draw_noise(noise, model_output)? * sigma_up)?
    }

    /// `original + sigma * noise` at step `step_index`.
    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor> {
        let sigma = self.schedule.table.sigma(step_index)?;
        original + (noise * sigma)?
    }
}
