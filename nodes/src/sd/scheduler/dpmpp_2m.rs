//! `dpmpp_2m`: diffusers `DPMSolverMultistepScheduler` with
//! `algorithm_type="dpmsolver++"` and `solver_order=2` (Lu et al. 2022),
//! whatever the config says for those two.

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::config::{FinalSigmasType, PredictionType, SchedulerConfig, TimestepSpacing};
use super::schedule::{check_steps, inference_sigmas, multistep_timesteps, TrainSchedule};
use super::{alpha_sigma, at, axpby, data_prediction, lambda, NoiseFn, Scheduler, StepCounter};

/// DPM-Solver++ 2M: the first step of a run is first order, the others
/// second order (multistep on the previous data prediction), and the final
/// step first order again when `lower_order_final` applies.
pub(super) struct DpmPp2m {
    timesteps: Vec<f64>,
    /// One sigma per timestep, then the final one.
    sigmas: Vec<f64>,
    prediction: PredictionType,
    /// Second-order update of the "heun" solver type instead of "midpoint".
    heun: bool,
    /// Whether the last step is first order (diffusers' `lower_order_final`
    /// condition for the last step, fixed by the config and step count).
    first_order_final: bool,
    /// The data prediction of the previous step of the current run.
    previous: Option<Tensor>,
    counter: StepCounter,
}

impl DpmPp2m {
    /// DPM-Solver++ 2M for `steps` steps (default spacing "linspace").
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        cfg.reject_thresholding("dpmpp_2m")?;
        cfg.reject_alternative_sigmas("dpmpp_2m")?;
        if let Some(v) = cfg.variance_type.as_deref() {
            bail!("sampler dpmpp_2m: `variance_type: {v}` (learned variance) is not supported");
        }
        let heun = match cfg.solver_type.as_deref().unwrap_or("midpoint") {
            "heun" => true,
            "midpoint" | "logrho" | "bh1" | "bh2" => false,
            other => bail!("sampler dpmpp_2m: unknown solver_type {other:?} (midpoint or heun)"),
        };
        let schedule = TrainSchedule::new(cfg)?;
        let n_train = schedule.num_train_timesteps();
        check_steps(steps, n_train)?;
        let ac = schedule.sigma_alphas_cumprod();
        // diffusers: searchsorted(flip(lambda_t), lambda_min_clipped) cuts the
        // noisiest training timesteps (matters for the cosine schedule only).
        let lambda_min = cfg.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY);
        let clipped = ac
            .iter()
            .rev()
            .take_while(|a| a.sqrt().ln() - (1.0 - **a).sqrt().ln() < lambda_min)
            .count();
        let last_timestep = n_train - clipped;
        if last_timestep == 0 {
            bail!("sampler dpmpp_2m: lambda_min_clipped {lambda_min} removes every timestep");
        }
        let spacing = cfg.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let timesteps = multistep_timesteps(
            spacing,
            n_train,
            last_timestep,
            steps,
            cfg.steps_offset.unwrap_or(0),
        );
        let final_kind = cfg.final_sigmas_type.unwrap_or(FinalSigmasType::Zero);
        let sigmas = inference_sigmas(&timesteps, &ac, final_kind);
        let n = timesteps.len();
        let first_order_final = cfg.euler_at_final.unwrap_or(false)
            || (cfg.lower_order_final.unwrap_or(true) && n < 15)
            || final_kind == FinalSigmasType::Zero;
        Ok(DpmPp2m {
            timesteps,
            sigmas,
            prediction: cfg.prediction_type.unwrap_or(PredictionType::Epsilon),
            heun,
            first_order_final,
            previous: None,
            counter: StepCounter::default(),
        })
    }
}

impl Scheduler for DpmPp2m {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(
        &self,
        sample: &Tensor,
        _step_index: usize,
    ) -> candle_core::Result<Tensor> {
        Ok(sample.clone())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _noise: &mut NoiseFn,
    ) -> candle_core::Result<Tensor> {
        let n = self.timesteps.len();
        let sigma_s0 = at(&self.sigmas[..n], step_index)?;
        if self.counter.starts_run(step_index) {
            self.previous = None;
        }
        let sigma_t = self.sigmas[step_index + 1];
        let x0 = data_prediction(self.prediction, model_output, sample, sigma_s0)?;
        let (alpha_t, sigma_t_vp) = alpha_sigma(sigma_t);
        let (_, sigma_s0_vp) = alpha_sigma(sigma_s0);
        let h = lambda(sigma_t) - lambda(sigma_s0);
        // x_t = (sigma_t / sigma_s0) x - alpha_t (e^-h - 1) D0 + c1 D1
        let decay = alpha_t * ((-h).exp() - 1.0);
        let first = axpby(sigma_t_vp / sigma_s0_vp, sample, -decay, &x0)?;
        let last_step = step_index == n - 1;
        let prev = match self.previous.take() {
            Some(m1) if !(last_step && self.first_order_final) => {
                let sigma_s1 = self.sigmas[step_index - 1];
                let r0 = (lambda(sigma_s0) - lambda(sigma_s1)) / h;
                let c1 = if self.heun {
                    alpha_t * (((-h).exp() - 1.0) / h + 1.0)
                } else {
                    -0.5 * decay
                };
                (first + ((&x0 - &m1)? * (c1 / r0))?)?
            }
            _ => first,
        };
        self.previous = Some(x0);
        Ok(prev)
    }

    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(at(&self.sigmas[..self.timesteps.len()], step_index)?);
        axpby(alpha_t, original, sigma_t, noise)
    }
}
