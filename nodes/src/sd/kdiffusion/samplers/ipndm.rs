//! `sample_ipndm`: improved pseudo-numerical methods (Adams-Bashforth with
//! fixed coefficients on the last 4 derivatives).

use std::collections::VecDeque;

use anyhow::Result;
use candle_core::Tensor;

use super::{combine, Io};

const MAX_ORDER: usize = 4;

/// iPNDM; the step to sigma 0 lands on the denoised prediction.
pub(super) fn ipndm(mut x: Tensor, sigmas: &[f64], io: &mut Io<'_>) -> Result<Tensor> {
    let n = sigmas.len() - 1;
    // The last MAX_ORDER - 1 derivatives, oldest first.
    let mut buffer: VecDeque<Tensor> = VecDeque::with_capacity(MAX_ORDER);
    for i in 0..n {
        let (t, t_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = io.denoise(&x, t)?;
        let d = ((&x - &denoised)? / t)?;
        let dt = t_next - t;
        let order = (i + 1).min(MAX_ORDER);
        let back = |k: usize| &buffer[buffer.len() - k];
        let next = if t_next == 0.0 {
            denoised
        } else {
            match order {
                1 => combine(&[(1.0, &x), (dt, &d)])?,
                2 => combine(&[(1.0, &x), (dt * 1.5, &d), (-dt * 0.5, back(1))])?,
                3 => combine(&[
                    (1.0, &x),
                    (dt * 23.0 / 12.0, &d),
                    (-dt * 16.0 / 12.0, back(1)),
                    (dt * 5.0 / 12.0, back(2)),
                ])?,
                _ => combine(&[
                    (1.0, &x),
                    (dt * 55.0 / 24.0, &d),
                    (-dt * 59.0 / 24.0, back(1)),
                    (dt * 37.0 / 24.0, back(2)),
                    (-dt * 9.0 / 24.0, back(3)),
                ])?,
            }
        };
        if buffer.len() == MAX_ORDER - 1 {
            buffer.pop_front();
        }
        buffer.push_back(d);
        x = next;
        io.step(i, n, &x)?;
    }
    Ok(x)
}
