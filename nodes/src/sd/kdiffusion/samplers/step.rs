//! The samplers that take one step per call of the denoiser and renoise:
//! `sample_ddpm` (`generic_step_sampler` with `DDPMSampler_step`) and
//! `sample_lcm`.

use anyhow::Result;
use candle_core::Tensor;

use super::{combine, Io};

/// DDPM ancestral steps in the variance-preserving scaling.
pub(super) fn ddpm(mut x: Tensor, sigmas: &[f64], io: &mut Io<'_>) -> Result<Tensor> {
    let n = sigmas.len() - 1;
    for i in 0..n {
        let (s, s_prev) = (sigmas[i], sigmas[i + 1]);
        let denoised = io.denoise(&x, s)?;
        let eps = ((&x - &denoised)? / s)?;
        let x_vp = (&x / (1.0 + s * s).sqrt())?;
        let abar = 1.0 / (s * s + 1.0);
        let abar_prev = 1.0 / (s_prev * s_prev + 1.0);
        let alpha = abar / abar_prev;
        let k = (1.0 / alpha).sqrt();
        let mut mu = combine(&[(k, &x_vp), (-k * (1.0 - alpha) / (1.0 - abar).sqrt(), &eps)])?;
        if s_prev > 0.0 {
            let noise = io.noise(s, s_prev)?;
            let scale = ((1.0 - alpha) * (1.0 - abar_prev) / (1.0 - abar)).sqrt();
            mu = (mu + (noise * scale)?)?;
        }
        x = if s_prev != 0.0 { (mu * (1.0 + s_prev * s_prev).sqrt())? } else { mu };
        io.step(i, n, &x)?;
    }
    Ok(x)
}

/// LCM: jump to the denoised prediction, then noise it to the next sigma.
pub(super) fn lcm(mut x: Tensor, sigmas: &[f64], io: &mut Io<'_>) -> Result<Tensor> {
    let n = sigmas.len() - 1;
    for i in 0..n {
        let (s, s_next) = (sigmas[i], sigmas[i + 1]);
        x = io.denoise(&x, s)?;
        if s_next > 0.0 {
            let noise = io.noise(s, s_next)?;
            x = ((noise * s_next)? + x)?;
        }
        io.step(i, n, &x)?;
    }
    Ok(x)
}
