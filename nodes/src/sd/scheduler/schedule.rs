//! Scalar helpers shared by the samplers: the training noise schedule (betas,
//! `alphas_cumprod`, sigmas) and the timestep spacings, computed in f64 with
//! the exact operation order of the numpy code diffusers runs (so that values
//! sitting on a rounding boundary round the same way).

use anyhow::{bail, ensure, Result};

use super::config::{BetaSchedule, FinalSigmasType, SchedulerConfig, TimestepSpacing};

/// The training noise schedule of a config: `alphas_cumprod[t]` for every
/// training timestep t.
pub(super) struct TrainSchedule {
    /// Cumulative products of `1 - beta`, one per training timestep.
    pub alphas_cumprod: Vec<f64>,
    /// Whether the betas were rescaled to zero terminal SNR.
    pub zero_terminal_snr: bool,
}

impl TrainSchedule {
    /// Builds the betas as diffusers does (defaults: 1000 steps, linear
    /// 0.0001..0.02) and accumulates them.
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        let n = cfg.num_train_timesteps.unwrap_or(1000);
        ensure!(n >= 2, "num_train_timesteps must be at least 2, got {n}");
        let start = cfg.beta_start.unwrap_or(0.0001);
        let end = cfg.beta_end.unwrap_or(0.02);
        let mut betas = match (&cfg.trained_betas, cfg.beta_schedule.unwrap_or(BetaSchedule::Linear)) {
            (Some(betas), _) => {
                ensure!(betas.len() == n, "trained_betas has {} values, expected {n}", betas.len());
                betas.clone()
            }
            (None, BetaSchedule::Linear) => linspace(start, end, n),
            (None, BetaSchedule::ScaledLinear) => {
                linspace(start.sqrt(), end.sqrt(), n).into_iter().map(|b| b * b).collect()
            }
            (None, BetaSchedule::SquaredcosCapV2) => cosine_betas(n),
        };
        let zero_terminal_snr = cfg.rescale_betas_zero_snr.unwrap_or(false);
        if zero_terminal_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        Ok(TrainSchedule { alphas_cumprod: cumprod_alphas(&betas), zero_terminal_snr })
    }

    /// Number of training timesteps.
    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// `alphas_cumprod` as the sigma-based samplers (Euler, DPM-Solver, UniPC)
    /// use it: with zero terminal SNR the last value becomes 2^-24 so that the
    /// first sigma is finite.
    pub fn sigma_alphas_cumprod(&self) -> Vec<f64> {
        let mut ac = self.alphas_cumprod.clone();
        if self.zero_terminal_snr {
            if let Some(last) = ac.last_mut() {
                *last = 2f64.powi(-24);
            }
        }
        ac
    }
}

/// `sqrt((1 - abar) / abar)` for each training timestep.
pub(super) fn train_sigmas(alphas_cumprod: &[f64]) -> Vec<f64> {
    alphas_cumprod.iter().map(|a| ((1.0 - a) / a).sqrt()).collect()
}

/// The sigma appended after the last inference sigma.
pub(super) fn final_sigma(kind: FinalSigmasType, alphas_cumprod: &[f64]) -> f64 {
    match kind {
        FinalSigmasType::Zero => 0.0,
        FinalSigmasType::SigmaMin => ((1.0 - alphas_cumprod[0]) / alphas_cumprod[0]).sqrt(),
    }
}

/// `np.interp(x, arange(len(fp)), fp)`.
pub(super) fn interp(x: f64, fp: &[f64]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0];
    }
    if x >= last as f64 {
        return fp[last];
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j];
    }
    let slope = fp[j + 1] - fp[j];
    slope * (x - j as f64) + fp[j]
}

/// Errors unless `1 <= steps <= num_train_timesteps`.
pub(super) fn check_steps(steps: usize, num_train_timesteps: usize) -> Result<()> {
    if steps == 0 || steps > num_train_timesteps {
        bail!("steps must be in 1..={num_train_timesteps}, got {steps}");
    }
    Ok(())
}

/// The inference timesteps of the single-step samplers (DDIM, Euler, Euler
/// ancestral), descending, before their final cast: "linspace" values are
/// left fractional (DDIM rounds them, Euler keeps them as float32).
pub(super) fn spaced_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    steps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => {
            let mut t = linspace(0.0, (num_train - 1) as f64, steps);
            t.reverse();
            t
        }
        TimestepSpacing::Leading => {
            let ratio = num_train / steps;
            (0..steps).rev().map(|i| (i * ratio + steps_offset) as f64).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / steps as f64;
            arange_down(num_train as f64, ratio).iter().map(|t| t.round_ties_even() - 1.0).collect()
        }
    }
}

/// The integer inference timesteps of the multistep samplers (DPM-Solver,
/// UniPC): N + 1 points with the last (t = 0) dropped. `last_timestep` is
/// `num_train` unless DPM-Solver's `lambda_min_clipped` cuts the schedule.
pub(super) fn multistep_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    last_timestep: usize,
    steps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => {
            let t = linspace(0.0, last_timestep as f64 - 1.0, steps + 1);
            t[1..].iter().rev().map(|t| t.round_ties_even()).collect()
        }
        TimestepSpacing::Leading => {
            let ratio = last_timestep / (steps + 1);
            (1..=steps).rev().map(|i| (i * ratio + steps_offset) as f64).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / steps as f64;
            arange_down(last_timestep as f64, ratio).iter().map(|t| t.round_ties_even() - 1.0).collect()
        }
    }
}

/// `np.linspace(start, stop, num)` (endpoint included), computed as numpy
/// does: `i * step + start`, with the last value set to `stop`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// `np.arange(start, 0, -step)` for float arguments, computed as numpy does:
/// length `ceil(-start / -step)`, then `start`, `next = start - step`, and
/// `start + i * (next - start)` from the third value on.
fn arange_down(start: f64, step: f64) -> Vec<f64> {
    let len = ((0.0 - start) / -step).ceil().max(0.0) as usize;
    let next = start + -step;
    let delta = next - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => next,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// diffusers `betas_for_alpha_bar` with the cosine transform and max beta 0.999.
fn cosine_betas(n: usize) -> Vec<f64> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
        })
        .collect()
}

/// Running product of `1 - beta`.
fn cumprod_alphas(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc
        })
        .collect()
}

/// diffusers `rescale_zero_terminal_snr` (arXiv 2305.08891, algorithm 1).
fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let sqrt_ac: Vec<f64> = cumprod_alphas(betas).iter().map(|a| a.sqrt()).collect();
    let (first, last) = (sqrt_ac[0], sqrt_ac[sqrt_ac.len() - 1]);
    let scale = first / (first - last);
    let abar: Vec<f64> = sqrt_ac.iter().map(|s| ((s - last) * scale).powi(2)).collect();
    std::iter::once(abar[0])
        .chain(abar.windows(2).map(|w| w[1] / w[0]))
        .map(|alpha| 1.0 - alpha)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_numpy_helpers() {
        assert_eq!(linspace(0.0, 999.0, 3), vec![0.0, 499.5, 999.0]);
        assert_eq!(arange_down(1000.0, 250.0), vec![1000.0, 750.0, 500.0, 250.0]);
        assert_eq!(arange_down(1000.0, 1000.0 / 3.0).len(), 3);
        assert_eq!(interp(1.5, &[1.0, 2.0, 4.0]), 3.0);
        assert_eq!(interp(2.0, &[1.0, 2.0, 4.0]), 4.0);
        // Zero terminal SNR: the last alpha_cumprod is exactly 0 and the first is kept.
        let cfg = SchedulerConfig { rescale_betas_zero_snr: Some(true), ..Default::default() };
        let s = TrainSchedule::new(&cfg).unwrap();
        let plain = TrainSchedule::new(&SchedulerConfig::default()).unwrap();
        assert!(s.alphas_cumprod[999].abs() < 1e-12);
        assert!((s.alphas_cumprod[0] - plain.alphas_cumprod[0]).abs() < 1e-12);
        assert_eq!(s.sigma_alphas_cumprod()[999], 2f64.powi(-24));
    }
}
