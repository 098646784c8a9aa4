//! Scalar helpers shared by the samplers: the training noise schedule (betas,
//! `alphas_cumprod`, sigmas) and the timestep spacings.
//!
//! diffusers computes the schedule in float32 torch (betas, `1 - beta`, a
//! cumulative product accumulated in double, sigmas) and the spacings in
//! float64 numpy; both are mirrored operation by operation, so `alphas_cumprod`
//! and the sigmas come out bit-identical to diffusers' float32 values (a plain
//! f64 computation would differ by up to 1.3e-5 relative at small t) and
//! spacings round the same way on ties. Values are stored as f64.

use anyhow::{bail, ensure, Result};

use super::at;
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
        let mut betas: Vec<f32> = match (
            &cfg.trained_betas,
            cfg.beta_schedule.unwrap_or(BetaSchedule::Linear),
        ) {
            (Some(betas), _) => {
                ensure!(
                    betas.len() == n,
                    "trained_betas has {} values, expected {n}",
                    betas.len()
                );
                betas.iter().map(|&b| b as f32).collect()
            }
            (None, BetaSchedule::Linear) => torch_linspace_f32(start, end, n),
            (None, BetaSchedule::ScaledLinear) => torch_linspace_f32(start.sqrt(), end.sqrt(), n)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            (None, BetaSchedule::SquaredcosCapV2) => {
                cosine_betas(n).into_iter().map(|b| b as f32).collect()
            }
        };
        let zero_terminal_snr = cfg.rescale_betas_zero_snr.unwrap_or(false);
        if zero_terminal_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        Ok(TrainSchedule {
            alphas_cumprod: cumprod_f32(&alphas),
            zero_terminal_snr,
        })
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

/// The inference timesteps of a sigma-based sampler (Euler, DPM-Solver,
/// UniPC) and their noise levels.
pub(super) struct SigmaTable {
    /// The inference timesteps, descending.
    pub timesteps: Vec<f64>,
    /// One sigma per timestep, then the final one.
    pub sigmas: Vec<f64>,
}

impl SigmaTable {
    /// The sigmas at `timesteps`: `sqrt((1 - abar) / abar)` of the training
    /// schedule (float32), interpolated linearly at each timestep and rounded
    /// to float32, then the final sigma (`final_kind`).
    pub fn new(timesteps: Vec<f64>, alphas_cumprod: &[f64], final_kind: FinalSigmasType) -> Self {
        let sigma = |a: f64| {
            let a = a as f32;
            f64::from(((1.0 - a) / a).sqrt())
        };
        let train: Vec<f64> = alphas_cumprod.iter().map(|&a| sigma(a)).collect();
        let last = match final_kind {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => train[0],
        };
        let sigmas = timesteps
            .iter()
            .map(|&t| interp(t, &train) as f32 as f64)
            .chain([last])
            .collect();
        SigmaTable { timesteps, sigmas }
    }

    /// The sigma of step `i`, or an error when `i` is not a step.
    pub fn sigma(&self, i: usize) -> candle_core::Result<f64> {
        at(&self.sigmas[..self.timesteps.len()], i)
    }

    /// `(sigma_i, sigma_{i+1})`, or an error when `i` is not a step.
    pub fn sigma_pair(&self, i: usize) -> candle_core::Result<(f64, f64)> {
        Ok((self.sigma(i)?, self.sigmas[i + 1]))
    }
}

/// `np.interp(x, arange(len(fp)), fp)`.
fn interp(x: f64, fp: &[f64]) -> f64 {
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
            (0..steps)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / steps as f64;
            arange_down(num_train as f64, ratio)
                .iter()
                .map(|t| t.round_ties_even() - 1.0)
                .collect()
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
            (1..=steps)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train as f64 / steps as f64;
            arange_down(last_timestep as f64, ratio)
                .iter()
                .map(|t| t.round_ties_even() - 1.0)
                .collect()
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
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
        })
        .collect()
}

/// `torch.linspace(start, end, n, dtype=float32)` on the CPU: a float32
/// step, filled from both ends with fused multiply-adds (`start + i * step`
/// for the first half, `end - (n-1-i) * step` for the rest). Bit-identical to
/// torch for the SD schedule (checked against the fixture's alphas_cumprod).
fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    let step = (end - start) / (n - 1) as f32;
    (0..n)
        .map(|i| {
            if i < n / 2 {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// `torch.cumprod` of float32 values on the CPU: accumulated in double, each
/// output rounded to float32.
fn cumprod_f32(values: &[f32]) -> Vec<f64> {
    let mut acc = 1.0f64;
    values
        .iter()
        .map(|&v| {
            acc *= f64::from(v);
            f64::from(acc as f32)
        })
        .collect()
}

/// diffusers `rescale_zero_terminal_snr` (arXiv 2305.08891, algorithm 1),
/// in f64 from and to float32 betas.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let sqrt_ac: Vec<f64> = cumprod_f32(&alphas).iter().map(|a| a.sqrt()).collect();
    let (first, last) = (sqrt_ac[0], sqrt_ac[sqrt_ac.len() - 1]);
    let scale = first / (first - last);
    let abar: Vec<f64> = sqrt_ac
        .iter()
        .map(|s| ((s - last) * scale).powi(2))
        .collect();
    std::iter::once(abar[0])
        .chain(abar.windows(2).map(|w| w[1] / w[0]))
        .map(|alpha| (1.0 - alpha) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_alphas_cumprod_bit_identical_to_diffusers() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tiny-sd/expected/trajectory_ddim.safetensors");
        let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
        let want = tensors["alphas_cumprod"].to_vec1::<f32>().unwrap();
        let cfg = SchedulerConfig {
            beta_start: Some(0.00085),
            beta_end: Some(0.012),
            beta_schedule: Some(BetaSchedule::ScaledLinear),
            ..Default::default()
        };
        let got: Vec<f32> = TrainSchedule::new(&cfg)
            .unwrap()
            .alphas_cumprod
            .iter()
            .map(|&a| a as f32)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn scheduler_numpy_helpers() {
        assert_eq!(linspace(0.0, 999.0, 3), vec![0.0, 499.5, 999.0]);
        assert_eq!(
            arange_down(1000.0, 250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
        assert_eq!(arange_down(1000.0, 1000.0 / 3.0).len(), 3);
        assert_eq!(interp(1.5, &[1.0, 2.0, 4.0]), 3.0);
        assert_eq!(interp(2.0, &[1.0, 2.0, 4.0]), 4.0);
        // Zero terminal SNR: the last alpha_cumprod is exactly 0 and the first is kept.
        let cfg = SchedulerConfig {
            rescale_betas_zero_snr: Some(true),
            ..Default::default()
        };
        let s = TrainSchedule::new(&cfg).unwrap();
        let plain = TrainSchedule::new(&SchedulerConfig::default()).unwrap();
        assert!(s.alphas_cumprod[999].abs() < 1e-12);
        assert!((s.alphas_cumprod[0] - plain.alphas_cumprod[0]).abs() < 1e-12);
        assert_eq!(s.sigma_alphas_cumprod()[999], 2f64.powi(-24));
    }
}
