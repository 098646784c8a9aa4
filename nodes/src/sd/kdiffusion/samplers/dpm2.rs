//! `sample_dpm_2` and `sample_dpm_2_ancestral`: DPM-Solver-2 steps with the
//! midpoint in log sigma.

use anyhow::Result;
use candle_core::Tensor;

use super::{ancestral_step, euler_step, to_d, Io};

/// The geometric midpoint of two sigmas (torch's `lerp` of the logs at 0.5).
fn log_midpoint(a: f64, b: f64) -> f64 {
    let (la, lb) = (a.ln(), b.ln());
    (lb - (lb - la) * 0.5).exp()
}

/// One DPM-Solver-2 step from `x` (derivative `d` at `sigma`) to `target`.
fn dpm2_step(x: &Tensor, d: &Tensor, sigma: f64, target: f64, io: &mut Io<'_>) -> Result<Tensor> {
    let mid = log_midpoint(sigma, target);
    let x2 = euler_step(x, d, mid - sigma)?;
    let denoised2 = io.denoise(&x2, mid)?;
    let d2 = to_d(&x2, mid, &denoised2)?;
    euler_step(x, &d2, target - sigma)
}

/// DPM-Solver-2 (no churn); the step to sigma 0 is an Euler step.
pub(super) fn dpm_2(mut x: Tensor, sigmas: &[f64], io: &mut Io<'_>) -> Result<Tensor> {
    let n = sigmas.len() - 1;
    for i in 0..n {
        let (s, s_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = io.denoise(&x, s)?;
        let d = to_d(&x, s, &denoised)?;
        x = if s_next == 0.0 { euler_step(&x, &d, s_next - s)? } else { dpm2_step(&x, &d, s, s_next, io)? };
        io.step(i, n, &x)?;
    }
    Ok(x)
}

/// DPM-Solver-2 down to `sigma_down`, then fresh noise (eta 1).
pub(super) fn dpm_2_ancestral(mut x: Tensor, sigmas: &[f64], io: &mut Io<'_>) -> Result<Tensor> {
    let n = sigmas.len() - 1;
    for i in 0..n {
        let (s, s_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = io.denoise(&x, s)?;
        let (down, up) = ancestral_step(s, s_next);
        let d = to_d(&x, s, &denoised)?;
        if down == 0.0 {
            x = euler_step(&x, &d, down - s)?;
        } else {
            x = dpm2_step(&x, &d, s, down, io)?;
            let noise = io.noise(s, s_next)?;
            x = (x + (noise * up)?)?;
        }
        io.step(i, n, &x)?;
    }
    Ok(x)
}
