//! `sample_euler` (also ComfyUI's `ddim`) and `sample_euler_ancestral`.

use anyhow::Result;
use candle_core::Tensor;

use super::{ancestral_step, euler_step, to_d, Io};

/// Euler steps along the Karras ODE (no churn).
pub(super) fn euler(mut x: Tensor, sigmas: &[f64], io: &mut Io<'_>) -> Result<Tensor> {
    let n = sigmas.len() - 1;
    for i in 0..n {
        let denoised = io.denoise(&x, sigmas[i])?;
        let d = to_d(&x, sigmas[i], &denoised)?;
        x = euler_step(&x, &d, sigmas[i + 1] - sigmas[i])?;
        io.step(i, n, &x)?;
    }
    Ok(x)
}

/// Euler steps down to `sigma_down`, then fresh noise up to the next sigma.
pub(super) fn euler_ancestral(mut x: Tensor, sigmas: &[f64], io: &mut Io<'_>) -> Result<Tensor> {
    let n = sigmas.len() - 1;
    for i in 0..n {
        let denoised = io.denoise(&x, sigmas[i])?;
        let (down, up) = ancestral_step(sigmas[i], sigmas[i + 1]);
        if down == 0.0 {
            x = denoised;
        } else {
            let d = to_d(&x, sigmas[i], &denoised)?;
            x = euler_step(&x, &d, down - sigmas[i])?;
            let noise = io.noise(sigmas[i], sigmas[i + 1])?;
            x = (x + (noise * up)?)?;
        }
        io.step(i, n, &x)?;
    }
    Ok(x)
}
