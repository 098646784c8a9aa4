//! UniPC (`comfy/extra_samplers/uni_pc.py` as KSampler runs it): multistep,
//! data prediction, order `min(3, steps - 1)` lowered on the final steps, a
//! corrector after every step but the last, variants bh1 and bh2.
//!
//! UniPC works on the variance-preserving state `x / sqrt(1 + sigma^2)`; a
//! final sigma 0 is replaced by 0.001 (as ComfyUI does, in place) and the
//! result is scaled back by `1 / alpha(0.001)`.

use anyhow::{bail, Result};
use candle_core::Tensor;

use super::{combine, Io};

/// UniPC's B(h) choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variant {
    /// `B(h) = h`.
    Bh1,
    /// `B(h) = expm1(h)`.
    Bh2,
}

/// `log(alpha)` of the VP process at sigma `t`.
fn log_alpha(t: f64) -> f64 {
    0.5 * (1.0 / (t * t + 1.0)).ln()
}

fn alpha(t: f64) -> f64 {
    log_alpha(t).exp()
}

fn std_dev(t: f64) -> f64 {
    (1.0 - (2.0 * log_alpha(t)).exp()).sqrt()
}

fn lambda(t: f64) -> f64 {
    let la = log_alpha(t);
    la - 0.5 * (1.0 - (2.0 * la).exp()).ln()
}

/// The sampler state: the denoiser in the VP scaling and the history.
struct UniPc<'a, 'io> {
    io: &'a mut Io<'io>,
    variant: Variant,
    /// (sigma, data prediction) of the last `order` evaluations, oldest first.
    history: Vec<(f64, Tensor)>,
}

impl UniPc<'_, '_> {
    /// The data prediction at the VP state `x` and sigma `t`, through the
    /// noise prediction as ComfyUI's wrapper computes it.
    fn data_prediction(&mut self, x: &Tensor, t: f64) -> Result<Tensor> {
        let input = (x * (t * t + 1.0).sqrt())?;
        let denoised = self.io.denoise(&input, t)?;
        let eps = ((&input - &denoised)? / t)?;
        combine(&[(1.0 / alpha(t), x), (-std_dev(t) / alpha(t), &eps)])
    }

    /// One predictor(-corrector) update of the VP state `x` to sigma `t`
    /// with `order` history points; returns the new state and, when the
    /// corrector ran, the data prediction at it.
    fn update(&mut self, x: &Tensor, t: f64, order: usize, corrector: bool) -> Result<(Tensor, Option<Tensor>)> {
        let len = self.history.len();
        let (t0, m0) = self.history[len - 1].clone();
        let (lambda0, lambda_t) = (lambda(t0), lambda(t));
        let h = lambda_t - lambda0;
        let alpha_t = log_alpha(t).exp();
        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for i in 1..order {
            let (ti, mi) = &self.history[len - 1 - i];
            let rk = (lambda(*ti) - lambda0) / h;
            rks.push(rk);
            d1s.push(((mi - &m0)? / rk)?);
        }
        rks.push(1.0);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = match self.variant {
            Variant::Bh1 => hh,
            Variant::Bh2 => hh.exp_m1(),
        };
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            r.push(rks.iter().map(|rk| rk.powi(i as i32 - 1)).collect::<Vec<f64>>());
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        let x_t_base = combine(&[(std_dev(t) / std_dev(t0), x), (-alpha_t * h_phi_1, &m0)])?;
        let x_t = if d1s.is_empty() {
            x_t_base.clone()
        } else {
            let rhos_p = if order == 2 { vec![0.5] } else { solve(&sub_matrix(&r, order - 1), &b[..order - 1])? };
            let pred: Vec<(f64, &Tensor)> = rhos_p.iter().map(|c| -alpha_t * b_h * c).zip(&d1s).collect();
            let mut terms = vec![(1.0, &x_t_base)];
            terms.extend(pred);
            combine(&terms)?
        };
        if !corrector {
            return Ok((x_t, None));
        }
        let rhos_c = if order == 1 { vec![0.5] } else { solve(&r, &b)? };
        let model_t = self.data_prediction(&x_t, t)?;
        let d1_t = (&model_t - &m0)?;
        let mut terms = vec![(1.0, &x_t_base)];
        terms.extend(rhos_c[..order - 1].iter().map(|c| -alpha_t * b_h * c).zip(&d1s));
        terms.push((-alpha_t * b_h * rhos_c[order - 1], &d1_t));
        Ok((combine(&terms)?, Some(model_t)))
    }
}

/// The leading `k x k` block of a square matrix.
fn sub_matrix(m: &[Vec<f64>], k: usize) -> Vec<Vec<f64>> {
    m[..k].iter().map(|row| row[..k].to_vec()).collect()
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting.
fn solve(a: &[Vec<f64>], b: &[f64]) -> Result<Vec<f64>> {
    let n = b.len();
    let mut m: Vec<Vec<f64>> = a.iter().zip(b).map(|(row, bi)| row.iter().copied().chain([*bi]).collect()).collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|i, j| m[*i][col].abs().total_cmp(&m[*j][col].abs())).expect("non-empty range");
        if m[pivot][col] == 0.0 || !m[pivot][col].is_finite() {
            bail!("UniPC: singular coefficient system (repeated sigmas in the schedule?)");
        }
        m.swap(col, pivot);
        let (top, bottom) = m.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for row in bottom {
            let f = row[col] / pivot_row[col];
            for (dst, src) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *dst -= f * src;
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|c| m[row][c] * x[c]).sum();
        x[row] = (m[row][n] - s) / m[row][row];
    }
    Ok(x)
}

/// UniPC from the sigma-space state `x` along `sigmas`; every step reports
/// the state in sigma scaling.
pub(super) fn uni_pc(x: Tensor, sigmas: &[f64], io: &mut Io<'_>, variant: Variant) -> Result<Tensor> {
    let mut ts = sigmas.to_vec();
    let last = ts.len() - 1;
    if ts[last] == 0.0 {
        ts[last] = 0.001f32 as f64;
    }
    let steps = last;
    // min(3, len - 2) as in ComfyUI.
    let order = 3.min(steps - 1);
    let mut state = UniPc { io, variant, history: Vec::with_capacity(order.max(1)) };
    let mut x = (x / (1.0 + ts[0] * ts[0]).sqrt())?;
    let m0 = state.data_prediction(&x, ts[0])?;
    state.history.push((ts[0], m0));
    // A single step only evaluates the model (order 0 in ComfyUI).
    let updates = if steps < 2 { &ts[..0] } else { &ts[1..] };
    for (k, &t) in updates.iter().enumerate() {
        let step = k + 1;
        let (step_order, corrector) =
            if step < order { (step, true) } else { (order.min(steps + 1 - step), step != steps) };
        let (next, model) = state.update(&x, t, step_order, corrector)?;
        x = next;
        if state.history.len() == order && step >= order {
            state.history.remove(0);
        }
        // No prediction is needed after the last update.
        if step < steps {
            let model = match model {
                Some(m) => m,
                None => state.data_prediction(&x, t)?,
            };
            state.history.push((t, model));
        }
        state.io.step(step - 1, steps, &(&x / alpha(t))?)?;
    }
    let out = (x / alpha(ts[last]))?;
    if steps < 2 {
        // The single step did not move the state; report it all the same.
        state.io.step(0, steps, &out)?;
    }
    Ok(out)
}
