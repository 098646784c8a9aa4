//! The exact (erf) GELU for contiguous float32 CPU tensors, in one
//! vectorisable pass: `erf` is XLA's rational approximation on `[-4, 4]`
//! (within a few ulp of the true function; beyond ±4 erf is ±1 in f32).
//! candle's own `gelu_erf` calls a scalar `erf` per element, which was an
//! eighth of MiniLM's run time. Other devices and dtypes use candle's op.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// `x * Φ(x)` with the exact-form GELU.
pub(crate) fn gelu_erf(xs: &Tensor) -> Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == candle_core::DType::F32 && xs.is_contiguous() {
        xs.apply_op1_no_bwd(&GeluErf)
    } else {
        xs.gelu_erf()
    }
}

/// The candle op behind [`gelu_erf`].
struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "rag-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("gelu: expected f32 data");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("gelu: the input must be contiguous");
        };
        let out: Vec<f32> = data[start..end].iter().map(|&x| gelu(x)).collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// `x * (1 + erf(x / √2)) / 2`.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf(x) as `x P(x²) / Q(x²)` on `[-4, 4]`, clamped outside (XLA's
/// `ErfImpl32`); branch-free so that loops over it vectorise.
#[inline(always)]
fn erf(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        -2.72614225801306e-10_f64 as f32,
        2.77068142495902e-08_f64 as f32,
        -2.10102402082508e-06_f64 as f32,
        -5.69250639462346e-05_f64 as f32,
        -7.34990630326855e-04_f64 as f32,
        -2.95459980854025e-03_f64 as f32,
        -1.60960333262415e-02_f64 as f32,
    ];
    const BETA: [f32; 5] = [
        -1.45660718464996e-05_f64 as f32,
        -2.13374055278905e-04_f64 as f32,
        -1.68282697438203e-03_f64 as f32,
        -7.37332916720468e-03_f64 as f32,
        -1.42647390514189e-02_f64 as f32,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    // Plain multiply-adds: `mul_add` is a library call without FMA enabled.
    let p = ALPHA.iter().skip(1).fold(ALPHA[0], |acc, &a| acc * x2 + a);
    let q = BETA.iter().skip(1).fold(BETA[0], |acc, &b| acc * x2 + b);
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 by its Taylor series (exact enough for |x| <= 4).
    fn erf_ref(x: f64) -> f64 {
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_is_within_f32_noise() {
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = i as f64 / 1000.0;
            let want = if x.abs() > 4.0 { erf_ref(4.0_f64.copysign(x)).signum() } else { erf_ref(x) };
            worst = worst.max((f64::from(erf(x as f32)) - want).abs());
        }
        assert!(worst < 1e-6, "max |erf error| {worst:e}");
    }

    #[test]
    fn the_op_matches_candles_gelu() {
        let xs: Vec<f32> = (-800..800).map(|i| i as f32 / 100.0).collect();
        let t = Tensor::new(xs.as_slice(), &candle_core::Device::Cpu).unwrap();
        let got: Vec<f32> = gelu_erf(&t).unwrap().to_vec1().unwrap();
        let want: Vec<f32> = t.gelu_erf().unwrap().to_vec1().unwrap();
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 2e-6, "max |gelu difference| {worst:e}");
        let strided = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &candle_core::Device::Cpu).unwrap().t().unwrap();
        assert_eq!(
            gelu_erf(&strided).unwrap().to_vec2::<f32>().unwrap(),
            strided.gelu_erf().unwrap().to_vec2::<f32>().unwrap()
        );
    }
}
