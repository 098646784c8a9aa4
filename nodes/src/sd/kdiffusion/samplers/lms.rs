//! `sample_lms`: linear multistep (Adams-Bashforth in sigma), order 4, with
//! the coefficients integrated exactly.

use std::collections::VecDeque;

use anyhow::Result;
use candle_core::Tensor;

use super::{combine, to_d, Io};

const ORDER: usize = 4;

/// The LMS coefficient of the derivative `j` steps back at step `i`: the
/// integral over `[t[i], t[i+1]]` of the Lagrange basis polynomial of
/// `t[i - j]` on the nodes `t[i], ..., t[i - order + 1]`.
pub(super) fn lms_coeff(order: usize, t: &[f64], i: usize, j: usize) -> f64 {
    // The polynomial in u = tau - t[i], coefficients from the constant term up.
    let mut poly = vec![1.0];
    for k in (0..order).filter(|k| *k != j) {
        let denom = t[i - j] - t[i - k];
        let root = t[i - k] - t[i];
        // Multiply by (u - root) / denom.
        let mut next = vec![0.0; poly.len() + 1];
        for (p, c) in poly.iter().enumerate() {
            next[p + 1] += c / denom;
            next[p] -= c * root / denom;
        }
        poly = next;
    }
    let h = t[i + 1] - t[i];
    poly.iter().enumerate().map(|(p, c)| c * h.powi(p as i32 + 1) / (p + 1) as f64).sum()
}

/// Linear multistep on the last 4 derivatives; the step to sigma 0 lands
/// on the denoised prediction.
pub(super) fn lms(mut x: Tensor, sigmas: &[f64], io: &mut Io<'_>) -> Result<Tensor> {
    let n = sigmas.len() - 1;
    let mut ds: VecDeque<Tensor> = VecDeque::with_capacity(ORDER + 1);
    for i in 0..n {
        let denoised = io.denoise(&x, sigmas[i])?;
        ds.push_back(to_d(&x, sigmas[i], &denoised)?);
        if ds.len() > ORDER {
            ds.pop_front();
        }
        if sigmas[i + 1] == 0.0 {
            x = denoised;
        } else {
            let order = (i + 1).min(ORDER);
            let coeffs: Vec<f64> = (0..order).map(|j| lms_coeff(order, sigmas, i, j)).collect();
            let mut terms: Vec<(f64, &Tensor)> = vec![(1.0, &x)];
            terms.extend(coeffs.iter().copied().zip(ds.iter().rev()));
            x = combine(&terms)?;
        }
        io.step(i, n, &x)?;
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lms_coefficients_integrate_lagrange_polynomials() {
        let t = [10.0, 6.0, 3.5, 2.0, 1.0];
        // Order 1: the whole step.
        assert!((lms_coeff(1, &t, 0, 0) - (-4.0)).abs() < 1e-12);
        // The basis polynomials sum to 1, so the coefficients sum to the step.
        for order in 1..=4 {
            let i = 3;
            let sum: f64 = (0..order).map(|j| lms_coeff(order, &t, i, j)).sum();
            assert!((sum - (t[i + 1] - t[i])).abs() < 1e-12, "order {order}: {sum}");
        }
        // Order 2 (Adams-Bashforth with variable steps), by hand:
        // l0(tau) = (tau - t0) / (t1 - t0), integrated over [t1, t2].
        let (t0, t1, t2) = (t[0], t[1], t[2]);
        let want = ((t2 - t0).powi(2) - (t1 - t0).powi(2)) / (2.0 * (t1 - t0));
        assert!((lms_coeff(2, &t, 1, 0) - want).abs() < 1e-12);
    }
}
