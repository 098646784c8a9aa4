//! `sample_deis` (deis_mode "tab", order 3): exponential-integrator
//! multistep coefficients tabulated by a Riemann sum of 10000 points over
//! each step, in the VP time of the EDM sigma range (0.002..80) as the
//! reference implementation maps it.

use std::collections::VecDeque;

use anyhow::Result;
use candle_core::Tensor;

use super::{combine, Io};

const MAX_ORDER: usize = 3;
/// Points of the numerical integration over one step.
const POINTS: usize = 10_000;

/// The VP-SDE parameters of the EDM range and the sigma -> t map.
struct VpTime {
    beta_min: f64,
    beta_d: f64,
}

impl VpTime {
    fn edm() -> Self {
        let (eps_s, sigma_min, sigma_max) = (1e-3f64, 0.002f64, 80.0f64);
        let beta_d =
            2.0 * ((sigma_min * sigma_min + 1.0).ln() / eps_s - (sigma_max * sigma_max + 1.0).ln()) / (eps_s - 1.0);
        let beta_min = (sigma_max * sigma_max + 1.0).ln() - 0.5 * beta_d;
        VpTime { beta_min, beta_d }
    }

    /// The VP time of a sigma.
    fn t(&self, sigma: f64) -> f64 {
        ((self.beta_min * self.beta_min + 2.0 * self.beta_d * (sigma * sigma + 1.0).ln()).sqrt() - self.beta_min)
            / self.beta_d
    }

    /// The integrand `-0.5 dlog(alpha)/dtau / sqrt(alpha (1 - alpha))`.
    fn integrand(&self, tau: f64) -> f64 {
        let (b0, b1) = (self.beta_min, self.beta_d + self.beta_min);
        let log_alpha = -0.5 * tau * tau * (b1 - b0) - tau * b0;
        let alpha = log_alpha.exp();
        let dlog_alpha = -tau * (b1 - b0) - b0;
        -0.5 * dlog_alpha / (alpha * (1.0 - alpha)).sqrt()
    }
}

/// The coefficients of step `i` of order `order` (>= 2) on the VP times `ts`.
fn step_coeffs(vp: &VpTime, ts: &[f64], i: usize, order: usize) -> Vec<f64> {
    let (t_cur, t_next) = (ts[i], ts[i + 1]);
    let prev: Vec<f64> = (0..order).map(|k| ts[i - k]).collect();
    let dtau = (t_next - t_cur) / POINTS as f64;
    let step = (t_next - t_cur) / (POINTS - 1) as f64;
    let mut sums = vec![0.0; order];
    for p in 0..POINTS {
        let tau = if p < POINTS / 2 { t_cur + step * p as f64 } else { t_next - step * (POINTS - 1 - p) as f64 };
        let w = vp.integrand(tau);
        for (j, sum) in sums.iter_mut().enumerate() {
            let poly: f64 = (0..order).filter(|k| *k != j).map(|k| (tau - prev[k]) / (prev[j] - prev[k])).product();
            *sum += w * poly;
        }
    }
    sums.into_iter().map(|s| s * dtau).collect()
}

/// DEIS (tAB, order 3); steps to sigma 0 are Euler steps.
pub(super) fn deis(mut x: Tensor, sigmas: &[f64], io: &mut Io<'_>) -> Result<Tensor> {
    let n = sigmas.len() - 1;
    let vp = VpTime::edm();
    let ts: Vec<f64> = sigmas.iter().map(|s| vp.t(*s)).collect();
    // The last MAX_ORDER - 1 derivatives, oldest first.
    let mut buffer: VecDeque<Tensor> = VecDeque::with_capacity(MAX_ORDER);
    for i in 0..n {
        let (t, t_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = io.denoise(&x, t)?;
        let d = ((&x - &denoised)? / t)?;
        let order = if t_next <= 0.0 { 1 } else { (i + 1).min(MAX_ORDER) };
        x = if order == 1 {
            combine(&[(1.0, &x), (t_next - t, &d)])?
        } else {
            let c = step_coeffs(&vp, &ts, i, order);
            let mut terms: Vec<(f64, &Tensor)> = vec![(1.0, &x), (c[0], &d)];
            terms.extend((1..order).map(|k| (c[k], &buffer[buffer.len() - k])));
            combine(&terms)?
        };
        if buffer.len() == MAX_ORDER - 1 {
            buffer.pop_front();
        }
        buffer.push_back(d);
        io.step(i, n, &x)?;
    }
    Ok(x)
}
