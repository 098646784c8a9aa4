//! `ddim`: diffusers `DDIMScheduler` (Song et al. 2020), eta 0 or above.

use anyhow::Result;
use candle_core::Tensor;

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule::{check_steps, spaced_timesteps, TrainSchedule};
use super::{at, axpby, draw_noise, NoiseFn, Scheduler};

/// DDIM with the config's spacing (default "leading"), `set_alpha_to_one`
/// (default true) and `clip_sample` (default true, range 1).
pub(super) struct Ddim {
    alphas_cumprod: Vec<f64>,
    /// `alphas_cumprod` "before" training step 0.
    final_alpha_cumprod: f64,
    timesteps: Vec<f64>,
    /// `num_train_timesteps // steps`: DDIM steps from t to t - this, whatever
    /// the spacing (so not always to the next entry of `timesteps`).
    step_ratio: usize,
    prediction: PredictionType,
    clip_range: Option<f64>,
    eta: f64,
}

impl Ddim {
    /// DDIM for `steps` steps; `eta` scales the per-step noise.
    pub fn new(cfg: &SchedulerConfig, steps: usize, eta: f64) -> Result<Self> {
        cfg.reject_thresholding("ddim")?;
        anyhow::ensure!(eta >= 0.0, "ddim eta must be >= 0, got {eta}");
        let schedule = TrainSchedule::new(cfg)?;
        let n_train = schedule.num_train_timesteps();
        check_steps(steps, n_train)?;
        let spacing = cfg.timestep_spacing.unwrap_or(TimestepSpacing::Leading);
        let timesteps = spaced_timesteps(spacing, n_train, steps, cfg.steps_offset.unwrap_or(0))
            .into_iter()
            .map(f64::round_ties_even)
            .collect();
        let ac = schedule.alphas_cumprod;
        Ok(Ddim {
            final_alpha_cumprod: if cfg.set_alpha_to_one.unwrap_or(true) {
                1.0
            } else {
                ac[0]
            },
            alphas_cumprod: ac,
            timesteps,
            step_ratio: n_train / steps,
            prediction: cfg.prediction(),
            clip_range: cfg
                .clip_sample
                .unwrap_or(true)
                .then(|| cfg.clip_sample_range.unwrap_or(1.0)),
            eta,
        })
    }

    /// `alphas_cumprod` at timestep `t` (a negative one is "before step 0").
    fn alpha_cumprod(&self, t: i64) -> candle_core::Result<f64> {
        if t < 0 {
            return Ok(self.final_alpha_cumprod);
        }
        self.alphas_cumprod.get(t as usize).copied().ok_or_else(|| {
            candle_core::Error::Msg(format!("timestep {t} beyond the training schedule"))
        })
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        None
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: &mut NoiseFn,
    ) -> candle_core::Result<Tensor> {
        let t = at(&self.timesteps, step_index)? as i64;
        let alpha_t = self.alpha_cumprod(t)?;
        let alpha_prev = self.alpha_cumprod(t - self.step_ratio as i64)?;
        let beta_t = 1.0 - alpha_t;
        let (x0, eps) = match self.prediction {
            PredictionType::Epsilon => {
                let x0 = ((sample - (model_output * beta_t.sqrt())?)? / alpha_t.sqrt())?;
                (x0, model_output.clone())
            }
            PredictionType::Sample => {
                let eps = ((sample - (model_output * alpha_t.sqrt())?)? / beta_t.sqrt())?;
                (model_output.clone(), eps)
            }
            PredictionType::VPrediction => (
                axpby(alpha_t.sqrt(), sample, -beta_t.sqrt(), model_output)?,
                axpby(alpha_t.sqrt(), model_output, beta_t.sqrt(), sample)?,
            ),
        };
        let x0 = match self.clip_range {
            Some(r) => x0.clamp(-r, r)?,
            None => x0,
        };
        let variance = (1.0 - alpha_prev) / beta_t * (1.0 - alpha_t / alpha_prev);
        let std_dev = self.eta * variance.sqrt();
        let direction = (1.0 - alpha_prev - std_dev * std_dev).sqrt();
        let prev = axpby(alpha_prev.sqrt(), &x0, direction, &eps)?;
        if self.eta > 0.0 {
            prev + (draw_noise(noise, model_output)? * std_dev)?
        } else {
            Ok(prev)
        }
    }

    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor> {
        let alpha = self.alpha_cumprod(at(&self.timesteps, step_index)? as i64)?;
        axpby(alpha.sqrt(), original, (1.0 - alpha).sqrt(), noise)
    }
}
