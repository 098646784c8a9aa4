//! `sample_dpmpp_2m` and `sample_dpmpp_2s_ancestral`: DPM-Solver++ in
//! `t = -log(sigma)`.

use anyhow::Result;
use candle_core::Tensor;

use super::{ancestral_step, combine, euler_step, to_d, Io};

/// The first-order DPM-Solver++ update from `sigma` to `target` with the
/// prediction `denoised`: `(target / sigma) x - expm1(-h) denoised`.
fn update(x: &Tensor, denoised: &Tensor, sigma: f64, target: f64) -> Result<Tensor> {
    let h = sigma.ln() - target.ln();
    combine(&[(target / sigma, x), (-(-h).exp_m1(), denoised)])
}

/// DPM-Solver++(2M): second order from the previous prediction, first order
/// on the first step and on the step to sigma 0.
pub(super) fn dpmpp_2m(mut x: Tensor, sigmas: &[f64], io: &mut Io<'_>) -> Result<Tensor> {
    let n = sigmas.len() - 1;
    let mut old: Option<Tensor> = None;
    for i in 0..n {
        let (s, s_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = io.denoise(&x, s)?;
        x = match &old {
            Some(old) if s_next != 0.0 => {
                let h = s.ln() - s_next.ln();
                let h_last = sigmas[i - 1].ln() - s.ln();
                let r = h_last / h;
                let d = combine(&[(1.0 + 1.0 / (2.0 * r), &denoised), (-1.0 / (2.0 * r), old)])?;
                update(&x, &d, s, s_next)?
            }
            _ if s_next == 0.0 => denoised.clone(),
            _ => update(&x, &denoised, s, s_next)?,
        };
        old = Some(denoised);
        io.step(i, n, &x)?;
    }
    Ok(x)
}

/// DPM-Solver++(2S) down to `sigma_down` (midpoint in t), then fresh noise
/// (eta 1); the step to sigma 0 is an Euler step.
pub(super) fn dpmpp_2s_ancestral(mut x: Tensor, sigmas: &[f64], io: &mut Io<'_>) -> Result<Tensor> {
    let n = sigmas.len() - 1;
    for i in 0..n {
        let (s, s_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = io.denoise(&x, s)?;
        let (down, up) = ancestral_step(s, s_next);
        if down == 0.0 {
            let d = to_d(&x, s, &denoised)?;
            x = euler_step(&x, &d, down - s)?;
        } else {
            let (t, t_next) = (-s.ln(), -down.ln());
            let h = t_next - t;
            let s_mid = (-(t + 0.5 * h)).exp();
            let x2 = update(&x, &denoised, s, s_mid)?;
            let denoised2 = io.denoise(&x2, s_mid)?;
            x = update(&x, &denoised2, s, down)?;
        }
        if s_next > 0.0 {
            let noise = io.noise(s, s_next)?;
            x = (x + (noise * up)?)?;
        }
        io.step(i, n, &x)?;
    }
    Ok(x)
}
