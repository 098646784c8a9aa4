//! What the multistep samplers (DPM-Solver++ 2M, UniPC) share: their
//! timesteps and sigmas, the data prediction on the variance-preserving
//! process, and the bookkeeping that starts a fresh run (and history).

use anyhow::Result;
use candle_core::Tensor;

use super::config::{FinalSigmasType, PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule::{check_steps, multistep_timesteps, SigmaTable, TrainSchedule};
use super::{alpha_sigma, axpby};

/// The schedule and run state of a multistep sampler.
pub(super) struct Multistep {
    /// Integer timesteps, descending, and their sigmas.
    pub table: SigmaTable,
    /// The config's `final_sigmas_type` (default zero).
    pub final_kind: FinalSigmasType,
    prediction: PredictionType,
    /// The index of the previous step taken.
    last_step: Option<usize>,
}

impl Multistep {
    /// The schedule for `steps` steps (default spacing "linspace").
    /// `last_timestep` gets the `alphas_cumprod` of the sigmas and returns
    /// the number of training timesteps the spacing covers (all of them but
    /// for DPM-Solver's `lambda_min_clipped`).
    pub fn new(
        cfg: &SchedulerConfig,
        steps: usize,
        last_timestep: impl FnOnce(&[f64]) -> Result<usize>,
    ) -> Result<Self> {
        let schedule = TrainSchedule::new(cfg)?;
        let n_train = schedule.num_train_timesteps();
        check_steps(steps, n_train)?;
        let ac = schedule.sigma_alphas_cumprod();
        let spacing = cfg.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let timesteps = multistep_timesteps(
            spacing,
            n_train,
            last_timestep(&ac)?,
            steps,
            cfg.steps_offset.unwrap_or(0),
        );
        let final_kind = cfg.final_sigmas_type.unwrap_or(FinalSigmasType::Zero);
        Ok(Multistep {
            table: SigmaTable::new(timesteps, &ac, final_kind),
            final_kind,
            prediction: cfg.prediction(),
            last_step: None,
        })
    }

    /// Starts step `i`: its sigma (an error when `i` is not a step), and
    /// whether `i` does not follow the previous step, i.e. a new run starts
    /// and the caller must clear its history.
    pub fn start_step(&mut self, i: usize) -> candle_core::Result<(f64, bool)> {
        let sigma = self.table.sigma(i)?;
        let fresh = self.last_step.is_none_or(|last| last + 1 != i);
        self.last_step = Some(i);
        Ok((sigma, fresh))
    }

    /// The predicted clean sample from a model output at noise level `sigma`,
    /// on `x_t = alpha_t x0 + sigma_t eps`.
    pub fn data_prediction(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        sigma: f64,
    ) -> candle_core::Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(sigma);
        match self.prediction {
            PredictionType::Epsilon => (sample - (model_output * sigma_t)?)? / alpha_t,
            PredictionType::Sample => Ok(model_output.clone()),
            PredictionType::VPrediction => axpby(alpha_t, sample, -sigma_t, model_output),
        }
    }

    /// img2img: `alpha_t * original + sigma_t * noise` at step `i`.
    pub fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        i: usize,
    ) -> candle_core::Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.table.sigma(i)?);
        axpby(alpha_t, original, sigma_t, noise)
    }
}
