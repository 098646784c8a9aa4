//! `euler_a`: diffusers `EulerAncestralDiscreteScheduler` (k-diffusion
//! `sample_euler_ancestral`, eta 1), the ancestral variant of [`Euler`].

use anyhow::{bail, Result};

use super::config::{FinalSigmasType, PredictionType, SchedulerConfig};
use super::euler::{Euler, EulerSchedule};

impl Euler {
    /// Euler ancestral for `steps` steps (final sigma always 0, as diffusers):
    /// an Euler step down to `sigma_down`, then fresh noise of standard
    /// deviation `sigma_up`, drawn from the caller's source every step (the
    /// last one included, where `sigma_up` is 0).
    pub fn ancestral(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        let prediction = cfg.prediction();
        if prediction == PredictionType::Sample {
            bail!("sampler euler_a: prediction_type `sample` is not supported (diffusers neither)");
        }
        Ok(Euler {
            schedule: EulerSchedule::new(cfg, steps, FinalSigmasType::Zero)?,
            prediction,
            ancestral: true,
        })
    }
}

/// `(sigma_down, sigma_up)` of an ancestral step from `sigma` to `sigma_to`:
/// the noise level the deterministic part goes down to, and the standard
/// deviation of the fresh noise added after it.
pub(super) fn ancestral_sigmas(sigma: f64, sigma_to: f64) -> (f64, f64) {
    let sigma_up =
        (sigma_to * sigma_to * (sigma * sigma - sigma_to * sigma_to) / (sigma * sigma)).sqrt();
    let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).max(0.0).sqrt();
    (sigma_down, sigma_up)
}
