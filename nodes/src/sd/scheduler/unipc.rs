//! `unipc`: diffusers `UniPCMultistepScheduler` (Zhao et al. 2023) with
//! `predict_x0=True`: a UniP predictor each step and a UniC corrector applied
//! to the sample at the start of every step but the first of a run.

use std::collections::VecDeque;

use anyhow::{bail, ensure, Result};
use candle_core::Tensor;

use super::config::SchedulerConfig;
use super::multistep::Multistep;
use super::{alpha_sigma, axpby, lambda, NoiseFn, Scheduler};

/// UniPC, order `solver_order` (default 2), B(h) of type bh2 (default) or bh1.
pub(super) struct UniPc {
    /// Timesteps, sigmas and run state.
    multistep: Multistep,
    order: usize,
    /// B(h) = h instead of e^h - 1.
    bh1: bool,
    lower_order_final: bool,
    /// Step indices whose corrector (applied at the next step) is skipped.
    disable_corrector: Vec<usize>,
    /// Data predictions of the current run, newest last, at most `order`.
    history: VecDeque<Tensor>,
    /// The sample the last predictor started from (the corrector's base).
    last_sample: Option<Tensor>,
    /// The order of the last predictor, which its corrector reuses.
    last_order: usize,
}

/// The scalar coefficients of one UniP / UniC update from noise level
/// `sigma_s0` to `sigma_t`.
struct Coefficients {
    /// `sigma_t / sigma_s0` (VP sigmas): the factor on the start sample.
    sample_factor: f64,
    /// `-alpha_t * (e^-h - 1)`: the factor on the newest data prediction.
    m0_factor: f64,
    /// `alpha_t * B(h)`: the factor subtracted on the higher-order terms.
    correction_factor: f64,
    /// `r_k = (lambda_{s_k} - lambda_s0) / h` for the older points, then 1.
    rks: Vec<f64>,
    /// The right-hand side `b` of the order conditions.
    b: Vec<f64>,
}

impl UniPc {
    /// UniPC for `steps` steps (default spacing "linspace").
    pub fn new(cfg: &SchedulerConfig, steps: usize) -> Result<Self> {
        cfg.reject_thresholding("unipc")?;
        cfg.reject_alternative_sigmas("unipc")?;
        if cfg.predict_x0 == Some(false) {
            bail!("sampler unipc: `predict_x0: false` is not supported");
        }
        let order = cfg.solver_order.unwrap_or(2);
        ensure!(
            (1..=3).contains(&order),
            "sampler unipc: solver_order must be 1, 2 or 3, got {order}"
        );
        let bh1 = match cfg.solver_type.as_deref().unwrap_or("bh2") {
            "bh1" => true,
            "bh2" | "midpoint" | "heun" | "logrho" => false,
            other => bail!("sampler unipc: unknown solver_type {other:?} (bh1 or bh2)"),
        };
        Ok(UniPc {
            multistep: Multistep::new(cfg, steps, |ac| Ok(ac.len()))?,
            order,
            bh1,
            lower_order_final: cfg.lower_order_final.unwrap_or(true),
            disable_corrector: cfg.disable_corrector.clone().unwrap_or_default(),
            history: VecDeque::new(),
            last_sample: None,
            last_order: 1,
        })
    }

    /// The coefficients from `sigma_s0` to `sigma_t` for an update of order
    /// `older.len() + 1`, `older` holding the sigmas of the older points,
    /// newest first (diffusers `multistep_uni_{p,c}_bh_update`, predict_x0).
    fn coefficients(&self, sigma_t: f64, sigma_s0: f64, older: &[f64]) -> Coefficients {
        let (alpha_t, sigma_t_vp) = alpha_sigma(sigma_t);
        let (_, sigma_s0_vp) = alpha_sigma(sigma_s0);
        let lambda_s0 = lambda(sigma_s0);
        let h = lambda(sigma_t) - lambda_s0;
        let mut rks: Vec<f64> = older.iter().map(|&s| (lambda(s) - lambda_s0) / h).collect();
        rks.push(1.0);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = if self.bh1 { hh } else { hh.exp_m1() };
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let mut b = Vec::with_capacity(rks.len());
        for i in 1..=rks.len() {
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        Coefficients {
            sample_factor: sigma_t_vp / sigma_s0_vp,
            m0_factor: -alpha_t * h_phi_1,
            correction_factor: alpha_t * b_h,
            rks,
            b,
        }
    }

    /// The data prediction `k` steps before the newest one in the history.
    fn older_output(&self, k: usize) -> &Tensor {
        &self.history[self.history.len() - 1 - k]
    }

    /// `sum_k rho_k (m_k - m0) / r_k` over the older points.
    fn weighted_differences(
        &self,
        rhos: &[f64],
        rks: &[f64],
    ) -> candle_core::Result<Option<Tensor>> {
        let m0 = self.older_output(0);
        let mut acc: Option<Tensor> = None;
        for (k, (rho, rk)) in rhos.iter().zip(rks).enumerate() {
            let term = ((self.older_output(k + 1) - m0)? * (rho / rk))?;
            acc = Some(match acc {
                Some(a) => (a + term)?,
                None => term,
            });
        }
        Ok(acc)
    }

    /// UniP: the sample at step `i + 1` from `sample` at step `i`, of `order`,
    /// the history ending with the data prediction at step `i`.
    fn predict(&self, sample: &Tensor, i: usize, order: usize) -> candle_core::Result<Tensor> {
        let sigmas = &self.multistep.table.sigmas;
        let older: Vec<f64> = (1..order).map(|k| sigmas[i - k]).collect();
        let c = self.coefficients(sigmas[i + 1], sigmas[i], &older);
        let x_t = axpby(c.sample_factor, sample, c.m0_factor, self.older_output(0))?;
        let rhos = match order {
            1 => return Ok(x_t),
            // diffusers fixes rho to 0.5 at order 2 instead of solving.
            2 => vec![0.5],
            _ => solve(&vandermonde(&c.rks[..order - 1]), &c.b[..order - 1])?,
        };
        match self.weighted_differences(&rhos, &c.rks)? {
            Some(res) => x_t - (res * c.correction_factor)?,
            None => Ok(x_t),
        }
    }

    /// UniC: corrects `sample` at step `i` with the new data prediction
    /// `model_t` there; the history still ends with the prediction at step
    /// `i - 1` and `last_sample` is the sample at step `i - 1`.
    fn correct(
        &self,
        model_t: &Tensor,
        sample_prev: &Tensor,
        i: usize,
    ) -> candle_core::Result<Tensor> {
        let order = self.last_order;
        let sigmas = &self.multistep.table.sigmas;
        let older: Vec<f64> = (1..order).map(|k| sigmas[i - 1 - k]).collect();
        let c = self.coefficients(sigmas[i], sigmas[i - 1], &older);
        let m0 = self.older_output(0);
        let x_t = axpby(c.sample_factor, sample_prev, c.m0_factor, m0)?;
        let rhos = if order == 1 {
            vec![0.5]
        } else {
            solve(&vandermonde(&c.rks), &c.b)?
        };
        let (rho_t, rhos_older) = rhos.split_last().expect("at least one rho");
        let mut res = ((model_t - m0)? * *rho_t)?;
        if let Some(older_res) = self.weighted_differences(rhos_older, &c.rks)? {
            res = (older_res + res)?;
        }
        x_t - (res * c.correction_factor)?
    }
}

impl Scheduler for UniPc {
    fn timesteps(&self) -> &[f64] {
        &self.multistep.table.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.multistep.table.sigmas)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _noise: &mut NoiseFn,
    ) -> candle_core::Result<Tensor> {
        let n = self.multistep.table.timesteps.len();
        let (sigma, fresh) = self.multistep.start_step(step_index)?;
        if fresh {
            self.history.clear();
            self.last_sample = None;
        }
        let converted = self
            .multistep
            .data_prediction(model_output, sample, sigma)?;
        let sample = match &self.last_sample {
            Some(prev) if step_index > 0 && !self.disable_corrector.contains(&(step_index - 1)) => {
                self.correct(&converted, prev, step_index)?
            }
            _ => sample.clone(),
        };
        self.history.push_back(converted);
        if self.history.len() > self.order {
            self.history.pop_front();
        }
        // diffusers: min(solver_order, steps left) when lower_order_final,
        // and never above the number of predictions of this run.
        let order = if self.lower_order_final {
            self.order.min(n - step_index)
        } else {
            self.order
        };
        self.last_order = order.min(self.history.len());
        let prev = self.predict(&sample, step_index, self.last_order)?;
        self.last_sample = Some(sample);
        Ok(prev)
    }

    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor> {
        self.multistep.add_noise(original, noise, step_index)
    }
}

/// `R[k][j] = rks[j]^k`, the matrix of UniPC's order conditions.
fn vandermonde(rks: &[f64]) -> Vec<Vec<f64>> {
    (0..rks.len())
        .map(|k| rks.iter().map(|r| r.powi(k as i32)).collect())
        .collect()
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting (n <= 3).
fn solve(a: &[Vec<f64>], b: &[f64]) -> candle_core::Result<Vec<f64>> {
    let n = b.len();
    let mut m: Vec<Vec<f64>> = a
        .iter()
        .zip(b)
        .map(|(row, &bi)| row.iter().copied().chain([bi]).collect())
        .collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&x, &y| m[x][col].abs().total_cmp(&m[y][col].abs()))
            .unwrap_or(col);
        if m[pivot][col] == 0.0 || !m[pivot][col].is_finite() {
            return Err(candle_core::Error::Msg(
                "unipc: singular order-condition matrix".into(),
            ));
        }
        m.swap(col, pivot);
        let (upper, lower) = m.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for row in lower {
            let f = row[col] / pivot_row[col];
            for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| m[row][k] * x[k]).sum();
        x[row] = (m[row][n] - tail) / m[row][row];
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_unipc_solve_3x3() {
        let a = vec![
            vec![1.0, 1.0, 1.0],
            vec![-0.5, 2.0, 1.0],
            vec![0.25, 4.0, 1.0],
        ];
        let x = solve(&a, &[3.0, 2.5, 5.25]).unwrap();
        for (got, want) in x.iter().zip([1.0, 1.0, 1.0]) {
            assert!((got - want).abs() < 1e-12, "{x:?}");
        }
    }
}
