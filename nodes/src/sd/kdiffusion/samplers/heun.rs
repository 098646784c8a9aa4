//! `sample_heun` and `sample_heunpp2`.

use anyhow::Result;
use candle_core::Tensor;

use super::{combine, euler_step, to_d, Io};

/// Heun's method (Karras et al. 2022, algorithm 2, no churn); the step to
/// sigma 0 is an Euler step.
pub(super) fn heun(mut x: Tensor, sigmas: &[f64], io: &mut Io<'_>) -> Result<Tensor> {
    let n = sigmas.len() - 1;
    for i in 0..n {
        let (s, s_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = io.denoise(&x, s)?;
        let d = to_d(&x, s, &denoised)?;
        let dt = s_next - s;
        if s_next == 0.0 {
            x = euler_step(&x, &d, dt)?;
        } else {
            let x2 = euler_step(&x, &d, dt)?;
            let denoised2 = io.denoise(&x2, s_next)?;
            let d2 = to_d(&x2, s_next, &denoised2)?;
            let d_prime = ((d + d2)? / 2.0)?;
            x = euler_step(&x, &d_prime, dt)?;
        }
        io.step(i, n, &x)?;
    }
    Ok(x)
}

/// Heun++ (sd-webui-samplers-scheduler): a third evaluation two sigmas
/// ahead, derivatives weighted by sigma; Heun on the step before the last,
/// Euler on the last.
pub(super) fn heunpp2(mut x: Tensor, sigmas: &[f64], io: &mut Io<'_>) -> Result<Tensor> {
    let n = sigmas.len() - 1;
    let s_end = sigmas[n];
    for i in 0..n {
        let (s, s_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = io.denoise(&x, s)?;
        let d = to_d(&x, s, &denoised)?;
        let dt = s_next - s;
        if s_next == s_end {
            x = euler_step(&x, &d, dt)?;
        } else {
            let x2 = euler_step(&x, &d, dt)?;
            let denoised2 = io.denoise(&x2, s_next)?;
            let d2 = to_d(&x2, s_next, &denoised2)?;
            let s_next2 = sigmas[i + 2];
            let d_prime = if s_next2 == s_end {
                let w2 = s_next / (2.0 * sigmas[0]);
                combine(&[(1.0 - w2, &d), (w2, &d2)])?
            } else {
                let x3 = euler_step(&x2, &d2, s_next2 - s_next)?;
                let denoised3 = io.denoise(&x3, s_next2)?;
                let d3 = to_d(&x3, s_next2, &denoised3)?;
                let w = 3.0 * sigmas[0];
                let (w2, w3) = (s_next / w, s_next2 / w);
                combine(&[(1.0 - w2 - w3, &d), (w2, &d2), (w3, &d3)])?
            };
            x = euler_step(&x, &d_prime, dt)?;
        }
        io.step(i, n, &x)?;
    }
    Ok(x)
}
