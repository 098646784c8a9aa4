//! ComfyUI's discrete model sampling (`ModelSamplingDiscrete` with `EPS` or
//! `V_PREDICTION`): the 1000 training sigmas of a model, the sigma <->
//! timestep maps, the UNet input scaling, the denoised prediction and the
//! initial noise scaling of KSampler.
//!
//! Values follow ComfyUI's dtypes: the sigma table is computed in float64 and
//! stored as float32 (`log_sigmas` = float32 of the float64 log), `sigma(t)`
//! and `timestep(sigma)` are evaluated in float32.

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::linspace::{torch_linspace_f32, torch_linspace_f64};
use crate::sd::scheduler::{BetaSchedule, PredictionType, SchedulerConfig};

/// What the model predicts, in ComfyUI's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The added noise (`EPS`): `denoised = x - out * sigma`.
    Eps,
    /// The velocity (`V_PREDICTION`):
    /// `denoised = x / (sigma^2 + 1) - out * sigma / sqrt(sigma^2 + 1)`.
    V,
}

/// A model's discrete noise schedule and parameterization.
#[derive(Debug, Clone)]
pub struct ModelSampling {
    sigmas: Vec<f32>,
    log_sigmas: Vec<f32>,
    prediction: Prediction,
}

impl ModelSampling {
    /// SD 1.x as ComfyUI builds it: `betas = linspace(sqrt(0.00085),
    /// sqrt(0.012), 1000)^2`, eps prediction.
    pub fn sd1() -> Self {
        Self::from_betas(&scaled_linear_betas(0.00085, 0.012, 1000), Prediction::Eps, false)
            .expect("the SD 1.x betas are valid")
    }

    /// The model sampling of a diffusers scheduler config: its training
    /// betas (`scaled_linear` is ComfyUI's `linear`; `linear`,
    /// `squaredcos_cap_v2` and `trained_betas` as diffusers defines them),
    /// `prediction_type` (epsilon or v_prediction) and
    /// `rescale_betas_zero_snr` (ComfyUI's zsnr).
    pub fn from_config(cfg: &SchedulerConfig) -> Result<Self> {
        let n = cfg.num_train_timesteps.unwrap_or(1000);
        if !(2..=100_000).contains(&n) {
            bail!("scheduler config: num_train_timesteps is {n}; it must be between 2 and 100000");
        }
        let (start, end) = (cfg.beta_start.unwrap_or(0.0001), cfg.beta_end.unwrap_or(0.02));
        let betas = match (&cfg.trained_betas, cfg.beta_schedule.unwrap_or(BetaSchedule::Linear)) {
            (Some(betas), _) => betas.clone(),
            (None, BetaSchedule::ScaledLinear) => scaled_linear_betas(start, end, n),
            (None, BetaSchedule::Linear) => torch_linspace_f64(start, end, n),
            (None, BetaSchedule::SquaredcosCapV2) => cosine_betas(n),
        };
        let prediction = match cfg.prediction_type.unwrap_or(PredictionType::Epsilon) {
            PredictionType::Epsilon => Prediction::Eps,
            PredictionType::VPrediction => Prediction::V,
            PredictionType::Sample => {
                bail!(
                    "prediction_type `sample` is not supported by the ComfyUI samplers (epsilon and v_prediction are)"
                )
            }
        };
        Self::from_betas(&betas, prediction, cfg.rescale_betas_zero_snr.unwrap_or(false))
    }

    /// The model sampling of explicit training betas; `zsnr` rescales the
    /// sigmas to zero terminal SNR as ComfyUI does.
    pub fn from_betas(betas: &[f64], prediction: Prediction, zsnr: bool) -> Result<Self> {
        if betas.len() < 2 {
            bail!("a noise schedule needs at least 2 training betas, got {}", betas.len());
        }
        if let Some(b) = betas.iter().find(|b| !(**b > 0.0 && **b < 1.0)) {
            bail!("training beta {b} is outside (0, 1)");
        }
        let mut cumprod = 1.0;
        let mut sigmas64: Vec<f64> = betas
            .iter()
            .map(|b| {
                cumprod *= 1.0 - b;
                ((1.0 - cumprod) / cumprod).sqrt()
            })
            .collect();
        if zsnr {
            sigmas64 = rescale_zero_terminal_snr(&sigmas64);
        }
        Ok(ModelSampling {
            sigmas: sigmas64.iter().map(|s| *s as f32).collect(),
            log_sigmas: sigmas64.iter().map(|s| s.ln() as f32).collect(),
            prediction,
        })
    }

    /// The training sigmas, ascending (float32, as ComfyUI stores them).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// `log` of the training sigmas (float32 of the float64 log).
    pub fn log_sigmas(&self) -> &[f32] {
        &self.log_sigmas
    }

    /// What the model predicts.
    pub fn prediction(&self) -> Prediction {
        self.prediction
    }

    /// The smallest training sigma (`sigmas[0]`).
    pub fn sigma_min(&self) -> f32 {
        self.sigmas[0]
    }

    /// The largest training sigma (`sigmas[T - 1]`).
    pub fn sigma_max(&self) -> f32 {
        self.sigmas[self.sigmas.len() - 1]
    }

    /// The training step whose log-sigma is nearest `log(sigma)` (the first
    /// on ties): the timestep ComfyUI feeds the UNet.
    pub fn timestep(&self, sigma: f32) -> usize {
        let log_sigma = sigma.ln();
        let mut best = (0, f32::INFINITY);
        for (i, ls) in self.log_sigmas.iter().enumerate() {
            let d = (log_sigma - ls).abs();
            if d < best.1 {
                best = (i, d);
            }
        }
        best.0
    }

    /// The sigma of a (fractional) timestep: log-linear interpolation of the
    /// table, `t` clamped to `[0, T - 1]`.
    pub fn sigma(&self, t: f32) -> f32 {
        let t = t.clamp(0.0, (self.sigmas.len() - 1) as f32);
        let (lo, hi) = (t.floor(), t.ceil());
        let w = t - lo;
        ((1.0 - w) * self.log_sigmas[lo as usize] + w * self.log_sigmas[hi as usize]).exp()
    }

    /// The float32 timesteps `linspace(timestep(sigma_max),
    /// timestep(sigma_min), n)` of the `normal` and `sgm_uniform` schedules.
    pub(super) fn timestep_linspace(&self, n: usize) -> Vec<f32> {
        let start = self.timestep(self.sigma_max()) as f64;
        let end = self.timestep(self.sigma_min()) as f64;
        torch_linspace_f32(start, end, n)
    }

    /// The factor of the UNet input: `x / sqrt(sigma^2 + 1)`.
    pub fn input_scale(sigma: f64) -> f64 {
        1.0 / (sigma * sigma + 1.0).sqrt()
    }

    /// The denoised prediction from the model output `out` at the sampler
    /// state `x` (not the scaled UNet input) and `sigma`.
    pub fn denoised(&self, out: &Tensor, x: &Tensor, sigma: f64) -> Result<Tensor> {
        Ok(match self.prediction {
            Prediction::Eps => (x - (out * sigma)?)?,
            Prediction::V => {
                let s2 = sigma * sigma + 1.0;
                ((x / s2)? - (out * (sigma / s2.sqrt()))?)?
            }
        })
    }

    /// KSampler's `max_denoise`: whether the schedule starts at (or above)
    /// the model's largest sigma.
    pub fn max_denoise(&self, first_sigma: f32) -> bool {
        let (max, s) = (self.sigma_max() as f64, first_sigma as f64);
        (max - s).abs() <= 1e-5 * max.abs().max(s.abs()) || s > max
    }

    /// The sampler's starting point: `noise * sqrt(1 + sigma0^2) + latent`
    /// for a full denoise, `noise * sigma0 + latent` otherwise.
    pub fn noise_scaling(&self, first_sigma: f32, noise: &Tensor, latent: &Tensor) -> Result<Tensor> {
        let s = first_sigma as f64;
        let scale = if self.max_denoise(first_sigma) { (1.0 + s * s).sqrt() } else { s };
        Ok(((noise * scale)? + latent)?)
    }
}

/// ComfyUI's `linear` beta schedule (diffusers' `scaled_linear`):
/// `linspace(sqrt(start), sqrt(end), n)^2` in float64.
fn scaled_linear_betas(start: f64, end: f64, n: usize) -> Vec<f64> {
    torch_linspace_f64(start.sqrt(), end.sqrt(), n).into_iter().map(|b| b * b).collect()
}

/// diffusers' `squaredcos_cap_v2` betas (Glide cosine schedule, beta <= 0.999).
fn cosine_betas(n: usize) -> Vec<f64> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
        })
        .collect()
}

/// ComfyUI's `rescale_zero_terminal_snr_sigmas`.
fn rescale_zero_terminal_snr(sigmas: &[f64]) -> Vec<f64> {
    let sqrt_abar: Vec<f64> = sigmas.iter().map(|s| (1.0 / (s * s + 1.0)).sqrt()).collect();
    let (first, last) = (sqrt_abar[0], sqrt_abar[sqrt_abar.len() - 1]);
    let n = sqrt_abar.len();
    sqrt_abar
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let a = (a - last) * (first / (first - last));
            let abar = if i == n - 1 { 4.897_345_189_085_343_5e-8 } else { a * a };
            ((1.0 - abar) / abar).sqrt()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn a_diffusers_sd_config_gives_comfyuis_sd1_sampling() {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "epsilon"}"#,
        )
        .unwrap();
        let ms = ModelSampling::from_config(&cfg).unwrap();
        assert_eq!(ms.sigmas(), ModelSampling::sd1().sigmas());
        assert_eq!(ms.prediction(), Prediction::Eps);
        let v =
            SchedulerConfig::from_json_str(r#"{"beta_schedule": "scaled_linear", "prediction_type": "v_prediction"}"#);
        assert_eq!(ModelSampling::from_config(&v.unwrap()).unwrap().prediction(), Prediction::V);
        let x0 = SchedulerConfig::from_json_str(r#"{"prediction_type": "sample"}"#).unwrap();
        assert!(ModelSampling::from_config(&x0).unwrap_err().to_string().contains("sample"));
    }

    #[test]
    fn denoised_follows_the_parameterization() {
        let dev = Device::Cpu;
        let (x, out) = (Tensor::new(&[2.0f32], &dev).unwrap(), Tensor::new(&[0.5f32], &dev).unwrap());
        let sigma = 3.0;
        let mut ms = ModelSampling::sd1();
        let eps: Vec<f32> = ms.denoised(&out, &x, sigma).unwrap().to_vec1().unwrap();
        assert!((eps[0] - (2.0 - 0.5 * 3.0)).abs() < 1e-6);
        ms.prediction = Prediction::V;
        let v: Vec<f32> = ms.denoised(&out, &x, sigma).unwrap().to_vec1().unwrap();
        let want = 2.0 / 10.0 - 0.5 * 3.0 / 10f64.sqrt();
        assert!((v[0] as f64 - want).abs() < 1e-6, "{v:?} vs {want}");
    }

    #[test]
    fn noise_scaling_depends_on_a_full_denoise() {
        let ms = ModelSampling::sd1();
        let dev = Device::Cpu;
        let (noise, latent) = (Tensor::new(&[1.0f32], &dev).unwrap(), Tensor::new(&[0.25f32], &dev).unwrap());
        let top = ms.sigma_max();
        let full: Vec<f32> = ms.noise_scaling(top, &noise, &latent).unwrap().to_vec1().unwrap();
        assert!((full[0] as f64 - ((1.0 + (top as f64).powi(2)).sqrt() + 0.25)).abs() < 1e-5);
        let part: Vec<f32> = ms.noise_scaling(2.0, &noise, &latent).unwrap().to_vec1().unwrap();
        assert_eq!(part[0], 2.25);
    }
}
