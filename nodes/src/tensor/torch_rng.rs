//! torch's CPU random numbers, bit for bit: `torch.manual_seed(s)` then
//! `torch.randn(shape)` / `torch.rand(shape)` in float32, as on an x86-64 PC
//! (the AVX2 kernel that ComfyUI, diffusers and A1111 run there).
//!
//! The algorithm, from aten (`MT19937RNGEngine.h`, `CPUGeneratorImpl.cpp`,
//! `DistributionsHelper.h`, `cpu/DistributionTemplates.h`, `avx_mathfun.h`):
//! - the engine is MT19937 seeded with the low 32 bits of the seed;
//! - a float uniform is `(random() & 0xffffff) * 2^-24`, a double uniform
//!   `(random64() & (2^53 - 1)) * 2^-53` with `random64() = hi << 32 | lo`;
//! - `randn` of 16 values or more (`normal_fill`) draws one float uniform per
//!   value, then turns every block of 16 into normals by Box-Muller (`u1` from
//!   the first 8, `u2` from the last 8) with the float32 polynomial `log` and
//!   `sincos` of `avx_mathfun.h`; when the count is not a multiple of 16 the
//!   last 16 values are drawn again from 16 new uniforms and transformed;
//! - `randn` of fewer than 16 values draws `normal_distribution<double>` one
//!   value at a time (two double uniforms give a pair; the second is cached in
//!   the generator and returned by the next scalar draw, across calls);
//! - `rand` draws one float uniform per value.
//!
//! The vector path's `log` and `sincos` are computed here in scalar f32 with
//! `mul_add` exactly where GCC fuses the intrinsics into FMAs, so the results
//! are the same on every machine. torch's non-AVX2 builds (e.g. aarch64, or
//! `ATEN_CPU_CAPABILITY=default`) use the C library's `logf`/`sinf`/`cosf`
//! instead and differ in the last bits; they are not reproduced. The scalar
//! path uses the f64 `log1p`, `sin` and `cos` of the platform, as torch does;
//! rounding the result to f32 absorbs their sub-ulp differences.

use std::f64::consts::TAU;

use anyhow::Result;

use super::mt19937::Mt19937;

/// Values per block of the vector path.
const BLOCK: usize = 16;

/// Values per chunk of [`TorchGenerator::fill_randn_checked`] (a multiple of
/// [`BLOCK`], so that chunks never split a block).
pub const CHUNK: usize = 1 << 20;

/// torch's CPU generator (`torch.Generator()` after `manual_seed`): an
/// MT19937 engine and the cached second value of the scalar normal path.
#[derive(Clone, Debug)]
pub struct TorchGenerator {
    engine: Mt19937,
    next_double_normal: Option<f64>,
}

impl TorchGenerator {
    /// The generator after `manual_seed(seed)`: only the low 32 bits count,
    /// so seeds `s` and `s + 2^32` give the same numbers, as in torch.
    pub fn new(seed: u64) -> Self {
        TorchGenerator {
            engine: Mt19937::new(seed as u32),
            next_double_normal: None,
        }
    }

    /// The next 32 random bits (`random()`).
    pub fn random(&mut self) -> u32 {
        self.engine.next_u32()
    }

    /// The next 64 random bits (`random64()`: the first draw is the high word).
    pub fn random64(&mut self) -> u64 {
        let hi = u64::from(self.random());
        let lo = u64::from(self.random());
        (hi << 32) | lo
    }

    /// A float32 uniform in `[0, 1)` with 24 random bits.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.random() & 0x00ff_ffff) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// A float64 uniform in `[0, 1)` with 53 random bits.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.random64() & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `torch.randn(n, generator=self)` in float32.
    pub fn randn_vec(&mut self, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; n];
        self.fill_randn(&mut out);
        out
    }

    /// `torch.rand(n, generator=self)` in float32.
    pub fn rand_vec(&mut self, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; n];
        self.fill_rand(&mut out);
        out
    }

    /// Fills `out` as `torch.randn(out.len(), generator=self)` does.
    pub fn fill_randn(&mut self, out: &mut [f32]) {
        self.fill_randn_checked(out, |_, _| Ok(()))
            .expect("the check never fails");
    }

    /// Fills `out` as `torch.rand(out.len(), generator=self)` does.
    pub fn fill_rand(&mut self, out: &mut [f32]) {
        for x in out {
            *x = self.uniform_f32();
        }
    }

    /// [`fill_randn`](Self::fill_randn) in chunks of [`CHUNK`] values:
    /// `check(done, total)` runs before each of the `total` chunk steps (the
    /// uniforms first, then their transformation; the same numbers as one
    /// fill), and an error from it stops the fill.
    pub fn fill_randn_checked(
        &mut self,
        out: &mut [f32],
        mut check: impl FnMut(u64, u64) -> Result<()>,
    ) -> Result<()> {
        let n = out.len();
        if n < BLOCK {
            for x in out {
                *x = self.scalar_normal() as f32;
            }
            return Ok(());
        }
        let chunks = n.div_ceil(CHUNK) as u64;
        for (i, chunk) in out.chunks_mut(CHUNK).enumerate() {
            check(i as u64, 2 * chunks)?;
            self.fill_rand(chunk);
        }
        for (i, chunk) in out.chunks_mut(CHUNK).enumerate() {
            check(chunks + i as u64, 2 * chunks)?;
            chunk.chunks_exact_mut(BLOCK).for_each(normal_block);
        }
        if n % BLOCK != 0 {
            let tail = &mut out[n - BLOCK..];
            self.fill_rand(tail);
            normal_block(tail);
        }
        Ok(())
    }

    /// One value of `normal_distribution<double>(0, 1)`, using and refilling
    /// the cached second value of a Box-Muller pair.
    fn scalar_normal(&mut self) -> f64 {
        let value = match self.next_double_normal.take() {
            Some(cached) => cached,
            None => {
                let u1 = self.uniform_f64();
                let u2 = self.uniform_f64();
                let radius = (-2.0 * (-u2).ln_1p()).sqrt();
                let theta = TAU * u1;
                self.next_double_normal = Some(radius * theta.sin());
                radius * theta.cos()
            }
        };
        // `val * std + mean`: turns a -0 into +0, as torch's transformation does.
        value * 1.0 + 0.0
    }
}

/// Box-Muller on one block of 16 uniforms, in place (`normal_fill_16_AVX2`):
/// lane `j` pairs `u1 = 1 - d[j]` with `u2 = d[j + 8]` and gives
/// `d[j] = r cos(theta)`, `d[j + 8] = r sin(theta)`.
fn normal_block(block: &mut [f32]) {
    let (first, second) = block.split_at_mut(BLOCK / 2);
    for (a, b) in first.iter_mut().zip(second.iter_mut()) {
        let u1 = 1.0 - *a;
        let u2 = *b;
        let radius = (-2.0f32 * log_ps(u1)).sqrt();
        let theta = f32::from_bits(0x40c9_0fdb) * u2;
        let (sin, cos) = sincos_ps(theta);
        // `fma(term, std, mean)` with std 1 and mean 0: exact, but -0 becomes +0.
        *a = (radius * cos).mul_add(1.0, 0.0);
        *b = (radius * sin).mul_add(1.0, 0.0);
    }
}

/// Natural logarithm of `x` in `(0, 1]`: `log256_ps` of `avx_mathfun.h`
/// (the Cephes polynomial) with GCC's FMA contractions.
fn log_ps(x: f32) -> f32 {
    let x = x.max(1.175_494_35e-38);
    let bits = x.to_bits();
    let mut e = ((bits >> 23) as i32 - 127) as f32 + 1.0;
    let mut x = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    if x < 0.707_106_781_186_547_524 {
        e -= 1.0;
        x = (x - 1.0) + x;
    } else {
        x -= 1.0;
    }
    let z = x * x;
    let mut y = 7.037_683_629_2e-2f32;
    for p in [
        -1.151_461_031_0e-1f32,
        1.167_699_874_0e-1,
        -1.242_014_084_6e-1,
        1.424_932_278_7e-1,
        -1.666_805_766_5e-1,
        2.000_071_476_5e-1,
        -2.499_999_399_3e-1,
        3.333_333_117_4e-1,
    ] {
        y = y.mul_add(x, p);
    }
    y *= x;
    y = y.mul_add(z, e * -2.121_944_40e-4);
    y = (-z).mul_add(0.5, y);
    x += y;
    e.mul_add(0.693_359_375, x)
}

/// `(sin x, cos x)`: `sincos256_ps` of `avx_mathfun.h` (Cephes range
/// reduction by pi/4 and minimax polynomials) with GCC's FMA contractions.
fn sincos_ps(x: f32) -> (f32, f32) {
    let sign_sin = x.to_bits() & 0x8000_0000;
    let x = x.abs();
    let mut j = (x * 1.273_239_544_735_16f32) as i32;
    j = (j + 1) & !1;
    let y = j as f32;
    let swap_sin = ((j & 4) as u32) << 29;
    let poly = j & 2 == 0;
    let sign_cos = ((!(j - 2) & 4) as u32) << 29;

    let x = y.mul_add(-0.785_156_25, x);
    let x = y.mul_add(-2.418_756_484_985_351_562_5e-4, x);
    let x = y.mul_add(-3.774_894_977_445_941_08e-8, x);
    let z = x * x;

    let mut c = 2.443_315_711_809_948e-5f32;
    c = c.mul_add(z, -1.388_731_625_493_765e-3);
    c = c.mul_add(z, 4.166_664_568_298_827e-2);
    c *= z;
    c = c.mul_add(z, -(z * 0.5));
    c += 1.0;

    let mut s = -1.951_529_589_1e-4f32;
    s = s.mul_add(z, 8.332_160_873_6e-3);
    s = s.mul_add(z, -1.666_665_461_1e-1);
    s *= z;
    s = s.mul_add(x, x);

    let (sin, cos) = if poly { (s, c) } else { (c, s) };
    (
        f32::from_bits(sin.to_bits() ^ sign_sin ^ swap_sin),
        f32::from_bits(cos.to_bits() ^ sign_cos),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_keep_their_low_32_bits() {
        let a = TorchGenerator::new(7).randn_vec(20);
        assert_eq!(a, TorchGenerator::new((1 << 32) + 7).randn_vec(20));
        assert_ne!(a, TorchGenerator::new(8).randn_vec(20));
    }

    #[test]
    fn the_tail_of_a_long_draw_is_redrawn() {
        // randn(17)[:16] != randn(16): the last 16 of 17 come from new uniforms,
        // while counts that are multiples of 16 extend each other.
        let sixteen = TorchGenerator::new(3).randn_vec(16);
        let seventeen = TorchGenerator::new(3).randn_vec(17);
        assert_eq!(sixteen[0], seventeen[0]);
        assert_ne!(sixteen[1..], seventeen[1..16]);
        assert_eq!(
            TorchGenerator::new(3).randn_vec(64)[..32],
            TorchGenerator::new(3).randn_vec(32)[..]
        );
    }

    #[test]
    fn chunked_fill_equals_one_fill_and_stops_on_error() {
        let n = 2 * CHUNK + 5;
        let mut checks = Vec::new();
        let mut chunked = vec![0.0; n];
        TorchGenerator::new(11)
            .fill_randn_checked(&mut chunked, |done, total| {
                checks.push((done, total));
                Ok(())
            })
            .unwrap();
        assert_eq!(checks, (0..6).map(|i| (i, 6)).collect::<Vec<_>>());
        let mut one = vec![0.0; n];
        let mut g = TorchGenerator::new(11);
        for x in one.iter_mut() {
            *x = g.uniform_f32();
        }
        one.chunks_exact_mut(BLOCK).for_each(normal_block);
        let tail = &mut one[n - BLOCK..];
        g.fill_rand(tail);
        normal_block(tail);
        assert!(chunked
            .iter()
            .zip(&one)
            .all(|(a, b)| a.to_bits() == b.to_bits()));

        let err = TorchGenerator::new(11)
            .fill_randn_checked(&mut chunked, |done, _| {
                if done == 1 {
                    anyhow::bail!("stop")
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "stop");
    }

    #[test]
    fn polynomial_log_and_sincos_are_close_to_exact() {
        for i in 1..=1000 {
            let x = i as f32 / 1000.0;
            assert!((log_ps(x) as f64 - (x as f64).ln()).abs() < 1e-6, "log {x}");
            let t = x * 6.283_185_5;
            let (s, c) = sincos_ps(t);
            assert!((s as f64 - (t as f64).sin()).abs() < 1e-6, "sin {t}");
            assert!((c as f64 - (t as f64).cos()).abs() < 1e-6, "cos {t}");
        }
    }
}
