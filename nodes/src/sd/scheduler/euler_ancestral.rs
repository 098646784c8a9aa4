//! `euler_a`: diffusers `EulerAncestralDiscreteScheduler` (k-diffusion
//! `sample_euler_ancestral`, eta 1).

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::config::{FinalSigmasType, PredictionType, SchedulerConfig};
use super::euler::{euler_x0, EulerSchedule};
use super::{draw_noise, NoiseFn, Scheduler};

/// Euler ancestral: an Euler step down to `sigma_down`, then fresh noise of
/// standard deviation `sigma_up`, drawn from the caller's source every step
/// (the last one included, where `sigma_up` is 0).
pub(super) struct EulerAncestral {
    schedule: EulerSchedule,
    prediction: PredictionType,
}

impl EulerAncestral {
    /// Euler ancestral for `steps` steps (final sigma always 0, as diffusers).
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        let prediction = cfg.prediction_type.unwrap_or(PredictionType::Epsilon);
        if prediction == PredictionType::Sample {
            bail!("sampler euler_a: prediction_type `sample` is not supported (diffusers neither)");
        }
        Ok(EulerAncestral {
            schedule: EulerSchedule::new(cfg, steps, FinalSigmasType::Zero)?,
            prediction,
        })
    }
}

impl Scheduler for EulerAncestral {
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
        noise: &mut NoiseFn,
    ) -> candle_core::Result<Tensor> {
        let (sigma, sigma_to) = self.schedule.sigma_pair(step_index)?;
        let x0 = euler_x0(self.prediction, model_output, sample, sigma)?;
        let sigma_up =
            (sigma_to * sigma_to * (sigma * sigma - sigma_to * sigma_to) / (sigma * sigma)).sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).max(0.0).sqrt();
        let derivative = ((sample - x0)? / sigma)?;
        let prev = (sample + (derivative * (sigma_down - sigma))?)?;
        prev + (draw_noise(noise, model_output)? * sigma_up)?
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
