//! ComfyUI's k-diffusion samplers (`comfy/k_diffusion/sampling.py`,
//! `comfy/extra_samplers/uni_pc.py`), in sigma space.
//!
//! A sampler gets the start state `x` (already noise-scaled), the schedule
//! and an [`Io`]: the denoiser (`x`, `sigma`) -> denoised prediction, the
//! noise source of the ancestral / stochastic samplers (called with
//! `(sigma, sigma_next)` as ComfyUI's `noise_sampler`), and a callback after
//! every step (progress, cancellation). Tensors are float32 (any shape);
//! scalar coefficients are computed in float64.

mod deis;
mod dpm2;
mod dpmpp;
mod euler;
mod heun;
mod ipndm;
mod lms;
mod step;
mod uni_pc;

use anyhow::{bail, Result};
use candle_core::Tensor;

/// The denoiser: `(x, sigma)` -> the denoised (x0) prediction.
pub type Denoiser<'a> = dyn FnMut(&Tensor, f64) -> Result<Tensor> + 'a;

/// The noise source: `(sigma, sigma_next)` -> standard normal noise of the
/// state's shape (ComfyUI's `noise_sampler`).
pub type NoiseSampler<'a> = dyn FnMut(f64, f64) -> Result<Tensor> + 'a;

/// Called after every step with the step index, the number of steps, and
/// the state at the step's target sigma; an error stops the sampler.
pub type StepCallback<'a> = dyn FnMut(usize, usize, &Tensor) -> Result<()> + 'a;

/// What a sampler calls.
pub struct Io<'a> {
    /// The denoiser.
    pub denoise: &'a mut Denoiser<'a>,
    /// The noise source (only the stochastic samplers call it).
    pub noise: &'a mut NoiseSampler<'a>,
    /// The per-step callback.
    pub on_step: &'a mut StepCallback<'a>,
}

/// A ComfyUI sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    /// `sample_euler`.
    Euler,
    /// `sample_euler_ancestral` (eta 1).
    EulerAncestral,
    /// `sample_heun`.
    Heun,
    /// `sample_heunpp2` (up to 3 denoiser calls per step).
    Heunpp2,
    /// `sample_dpm_2` (gets the schedule without its penultimate sigma).
    Dpm2,
    /// `sample_dpm_2_ancestral` (idem).
    Dpm2Ancestral,
    /// `sample_lms`, order 4.
    Lms,
    /// `sample_dpmpp_2s_ancestral` (eta 1).
    Dpmpp2sAncestral,
    /// `sample_dpmpp_2m`.
    Dpmpp2m,
    /// `sample_ddpm`.
    Ddpm,
    /// `sample_lcm`.
    Lcm,
    /// `sample_ipndm`, order 4.
    Ipndm,
    /// `sample_deis`, order 3, tabulated coefficients.
    Deis,
    /// ComfyUI's `ddim`: Euler.
    Ddim,
    /// UniPC, variant bh1 (schedule without its penultimate sigma).
    UniPc,
    /// UniPC, variant bh2 (idem).
    UniPcBh2,
}

/// The sampler names flow runs, in ComfyUI's order.
pub const SAMPLER_NAMES: [&str; 16] = [
    "euler",
    "euler_ancestral",
    "heun",
    "heunpp2",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpmpp_2s_ancestral",
    "dpmpp_2m",
    "ddpm",
    "lcm",
    "ipndm",
    "deis",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
];

/// ComfyUI sampler names flow does not run, with the reason.
pub const UNSUPPORTED_SAMPLERS: [(&str, &str); 26] = [
    ("dpmpp_sde", SDE),
    ("dpmpp_sde_gpu", SDE),
    ("dpmpp_2m_sde", SDE),
    ("dpmpp_2m_sde_gpu", SDE),
    ("dpmpp_2m_sde_heun", SDE),
    ("dpmpp_2m_sde_heun_gpu", SDE),
    ("dpmpp_3m_sde", SDE),
    ("dpmpp_3m_sde_gpu", SDE),
    ("euler_cfg_pp", CFG_PP),
    ("euler_ancestral_cfg_pp", CFG_PP),
    ("dpmpp_2s_ancestral_cfg_pp", CFG_PP),
    ("dpmpp_2m_cfg_pp", CFG_PP),
    ("res_multistep_cfg_pp", CFG_PP),
    ("res_multistep_ancestral_cfg_pp", CFG_PP),
    ("gradient_estimation_cfg_pp", CFG_PP),
    ("dpm_fast", OTHER),
    ("dpm_adaptive", OTHER),
    ("ipndm_v", OTHER),
    ("res_multistep", OTHER),
    ("res_multistep_ancestral", OTHER),
    ("gradient_estimation", OTHER),
    ("er_sde", OTHER),
    ("seeds_2", OTHER),
    ("seeds_3", OTHER),
    ("sa_solver", OTHER),
    ("sa_solver_pece", OTHER),
];

const SDE: &str = "its noise comes from a Brownian tree (torchsde), which flow does not reproduce";
const CFG_PP: &str = "CFG++ samplers read the unguided prediction, which flow's guidance does not expose";
const OTHER: &str = "flow does not implement it yet";

impl Sampler {
    /// The sampler of a ComfyUI name; an unsupported ComfyUI sampler or an
    /// unknown name is an error naming the valid values.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "euler" => Sampler::Euler,
            "euler_ancestral" => Sampler::EulerAncestral,
            "heun" => Sampler::Heun,
            "heunpp2" => Sampler::Heunpp2,
            "dpm_2" => Sampler::Dpm2,
            "dpm_2_ancestral" => Sampler::Dpm2Ancestral,
            "lms" => Sampler::Lms,
            "dpmpp_2s_ancestral" => Sampler::Dpmpp2sAncestral,
            "dpmpp_2m" => Sampler::Dpmpp2m,
            "ddpm" => Sampler::Ddpm,
            "lcm" => Sampler::Lcm,
            "ipndm" => Sampler::Ipndm,
            "deis" => Sampler::Deis,
            "ddim" => Sampler::Ddim,
            "uni_pc" => Sampler::UniPc,
            "uni_pc_bh2" => Sampler::UniPcBh2,
            other => match unsupported_reason(other) {
                Some(why) => {
                    bail!("ComfyUI sampler `{other}` is not supported: {why}; supported: {}", SAMPLER_NAMES.join(", "))
                }
                None => bail!("unknown sampler `{other}`; valid: {}", SAMPLER_NAMES.join(", ")),
            },
        })
    }

    /// The ComfyUI name.
    pub fn name(self) -> &'static str {
        SAMPLER_NAMES[self as usize]
    }

    /// Whether KSampler computes this sampler's schedule for `steps + 1`
    /// and drops the penultimate sigma (`DISCARD_PENULTIMATE_SIGMA_SAMPLERS`).
    pub fn discards_penultimate_sigma(self) -> bool {
        matches!(self, Sampler::Dpm2 | Sampler::Dpm2Ancestral | Sampler::UniPc | Sampler::UniPcBh2)
    }

    /// Runs the sampler from `x` along `sigmas` (descending, usually ending
    /// with 0); returns the final state. Fewer than 2 sigmas: `x` unchanged.
    pub fn sample(self, x: Tensor, sigmas: &[f64], io: &mut Io<'_>) -> Result<Tensor> {
        if sigmas.len() < 2 {
            return Ok(x);
        }
        if let Some(s) = sigmas[..sigmas.len() - 1].iter().find(|s| !(**s > 0.0 && s.is_finite())) {
            bail!("sigma {s} in the schedule: every sigma but the last must be positive and finite");
        }
        match self {
            Sampler::Euler | Sampler::Ddim => euler::euler(x, sigmas, io),
            Sampler::EulerAncestral => euler::euler_ancestral(x, sigmas, io),
            Sampler::Heun => heun::heun(x, sigmas, io),
            Sampler::Heunpp2 => heun::heunpp2(x, sigmas, io),
            Sampler::Dpm2 => dpm2::dpm_2(x, sigmas, io),
            Sampler::Dpm2Ancestral => dpm2::dpm_2_ancestral(x, sigmas, io),
            Sampler::Lms => lms::lms(x, sigmas, io),
            Sampler::Dpmpp2sAncestral => dpmpp::dpmpp_2s_ancestral(x, sigmas, io),
            Sampler::Dpmpp2m => dpmpp::dpmpp_2m(x, sigmas, io),
            Sampler::Ddpm => step::ddpm(x, sigmas, io),
            Sampler::Lcm => step::lcm(x, sigmas, io),
            Sampler::Ipndm => ipndm::ipndm(x, sigmas, io),
            Sampler::Deis => deis::deis(x, sigmas, io),
            Sampler::UniPc => uni_pc::uni_pc(x, sigmas, io, uni_pc::Variant::Bh1),
            Sampler::UniPcBh2 => uni_pc::uni_pc(x, sigmas, io, uni_pc::Variant::Bh2),
        }
    }
}

/// Why a ComfyUI sampler is not supported (`None`: not a ComfyUI name we know).
pub fn unsupported_reason(name: &str) -> Option<&'static str> {
    UNSUPPORTED_SAMPLERS.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

impl Io<'_> {
    /// The denoised prediction at `(x, sigma)`.
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        (self.denoise)(x, sigma)
    }

    /// The next noise draw for the step `sigma -> sigma_next`.
    fn noise(&mut self, sigma: f64, sigma_next: f64) -> Result<Tensor> {
        (self.noise)(sigma, sigma_next)
    }

    /// Reports step `i` of `n` finished with state `x`.
    fn step(&mut self, i: usize, n: usize, x: &Tensor) -> Result<()> {
        (self.on_step)(i, n, x)
    }
}

/// The Karras ODE derivative `(x - denoised) / sigma`.
fn to_d(x: &Tensor, sigma: f64, denoised: &Tensor) -> Result<Tensor> {
    Ok(((x - denoised)? / sigma)?)
}

/// `x + d * dt`.
fn euler_step(x: &Tensor, d: &Tensor, dt: f64) -> Result<Tensor> {
    Ok((x + (d * dt)?)?)
}

/// `sum(c_k * t_k)`.
fn combine(terms: &[(f64, &Tensor)]) -> Result<Tensor> {
    let (c0, t0) = terms.first().ok_or_else(|| anyhow::anyhow!("no terms to combine"))?;
    let mut acc = (*t0 * *c0)?;
    for (c, t) in &terms[1..] {
        acc = (acc + (*t * *c)?)?;
    }
    Ok(acc)
}

/// `get_ancestral_step` with eta 1: the sigma to step down to and the noise
/// to add on the way from `from` to `to`.
fn ancestral_step(from: f64, to: f64) -> (f64, f64) {
    let up = to.min((to * to * (from * from - to * to) / (from * from)).sqrt());
    let down = (to * to - up * up).sqrt();
    (down, up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_names_round_trip_and_unsupported_ones_say_why() {
        for name in SAMPLER_NAMES {
            assert_eq!(Sampler::from_name(name).unwrap().name(), name);
        }
        let err = Sampler::from_name("dpmpp_2m_sde").unwrap_err().to_string();
        assert!(err.contains("Brownian tree") && err.contains("dpmpp_2m"), "{err}");
        let err = Sampler::from_name("eulr").unwrap_err().to_string();
        assert!(err.starts_with("unknown sampler `eulr`"), "{err}");
    }

    #[test]
    fn ancestral_step_splits_the_variance() {
        let (down, up) = ancestral_step(2.0, 1.0);
        assert!((down * down + up * up - 1.0).abs() < 1e-12);
        assert!((up - (3.0f64 / 4.0).sqrt()).abs() < 1e-12);
        assert_eq!(ancestral_step(3.0, 0.0), (0.0, 0.0));
    }
}
