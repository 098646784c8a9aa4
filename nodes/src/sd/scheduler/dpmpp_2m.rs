//! `dpmpp_2m`: diffusers `DPMSolverMultistepScheduler` with
//! `algorithm_type="dpmsolver++"` and `solver_order=2` (Lu et al. 2022),
//! whatever the config says for those two.

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::config::{FinalSigmasType, SchedulerConfig};
use super::multistep::Multistep;
use super::{alpha_sigma, axpby, lambda, NoiseFn, Scheduler};

/// DPM-Solver++ 2M: the first step of a run is first order, the others
/// second order (multistep on the previous data prediction), and the final
/// step first order again when `lower_order_final` applies.
pub(super) struct DpmPp2m {
    /// Timesteps, sigmas and run state.
    multistep: Multistep,
    /// Second-order update of the "heun" solver type instead of "midpoint".
    heun: bool,
    /// Whether the last step is first order (diffusers' `lower_order_final`
    /// condition for the last step, fixed by the config and step count).
    first_order_final: bool,
    /// The data prediction of the previous step of the current run.
    previous: Option<Tensor>,
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
        // diffusers: searchsorted(flip(lambda_t), lambda_min_clipped) cuts the
        // noisiest training timesteps (matters for the cosine schedule only).
        let lambda_min = cfg.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY);
        let multistep = Multistep::new(cfg, steps, |ac| {
            let clipped = ac
                .iter()
                .rev()
                .take_while(|a| a.sqrt().ln() - (1.0 - **a).sqrt().ln() < lambda_min)
                .count();
            let last_timestep = ac.len() - clipped;
            if last_timestep == 0 {
                bail!("sampler dpmpp_2m: lambda_min_clipped {lambda_min} removes every timestep");
            }
            Ok(last_timestep)
        })?;
        let n = multistep.table.timesteps.len();
        let first_order_final = cfg.euler_at_final.unwrap_or(false)
            || (cfg.lower_order_final.unwrap_or(true) && n < 15)
            || multistep.final_kind == FinalSigmasType::Zero;
        Ok(DpmPp2m {
            multistep,
            heun,
            first_order_final,
            previous: None,
        })
    }
}

impl Scheduler for DpmPp2m {
    fn timesteps(&self) -> &[f64] {
        &self.multistep.table.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.multistep.table.sigmas)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _noise: &mut NoiseFn,
    ) -> candle_core::Result<Tensor> {
        let (sigma_s0, fresh) = self.multistep.start_step(step_index)?;
        if fresh {
            self.previous = None;
        }
        let sigmas = &self.multistep.table.sigmas;
        let sigma_t = sigmas[step_index + 1];
        let x0 = self
            .multistep
            .data_prediction(model_output, sample, sigma_s0)?;
        let (alpha_t, sigma_t_vp) = alpha_sigma(sigma_t);
        let (_, sigma_s0_vp) = alpha_sigma(sigma_s0);
        let h = lambda(sigma_t) - lambda(sigma_s0);
        // x_t = (sigma_t / sigma_s0) x - alpha_t (e^-h - 1) D0 + c1 D1
        let decay = alpha_t * ((-h).exp() - 1.0);
        let first = axpby(sigma_t_vp / sigma_s0_vp, sample, -decay, &x0)?;
        let last_step = step_index == self.multistep.table.timesteps.len() - 1;
        let prev = match self.previous.take() {
            Some(m1) if !(last_step && self.first_order_final) => {
                let sigma_s1 = sigmas[step_index - 1];
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
        self.multistep.add_noise(original, noise, step_index)
    }
}
