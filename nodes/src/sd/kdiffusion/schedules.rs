//! ComfyUI's sigma schedules (`comfy/samplers.py` `SCHEDULER_HANDLERS`) and
//! how KSampler cuts them: `set_steps` with `denoise`, the dropped
//! penultimate sigma of some samplers, and KSamplerAdvanced's start / end
//! steps. Every schedule is float32 (as ComfyUI's tensors) and ends with 0
//! unless noted.

use anyhow::{bail, Result};

use super::beta_dist::beta_ppf;
use super::linspace::torch_linspace_f32;
use super::model_sampling::ModelSampling;

/// A ComfyUI scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// Timesteps evenly spaced in `[T - 1, 0]`, sigmas interpolated.
    Normal,
    /// Karras et al. (2022), rho = 7.
    Karras,
    /// Evenly spaced in log sigma.
    Exponential,
    /// `normal` without its last timestep (SGM's uniform spacing).
    SgmUniform,
    /// Every `T / steps`-th training sigma from the top.
    Simple,
    /// DDIM's uniform training steps `1, 1 + T / steps, ...` (can give more
    /// sigmas than steps).
    DdimUniform,
    /// Training steps at the Beta(0.6, 0.6) quantiles (repeats dropped).
    Beta,
    /// Mochi's linear then quadratic schedule.
    LinearQuadratic,
    /// The KL-optimal schedule (A1111 PR 15608).
    KlOptimal,
}

/// The scheduler names, in ComfyUI's order.
pub const SCHEDULER_NAMES: [&str; 9] = [
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
];

impl Scheduler {
    /// The scheduler of a ComfyUI name.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "normal" => Scheduler::Normal,
            "karras" => Scheduler::Karras,
            "exponential" => Scheduler::Exponential,
            "sgm_uniform" => Scheduler::SgmUniform,
            "simple" => Scheduler::Simple,
            "ddim_uniform" => Scheduler::DdimUniform,
            "beta" => Scheduler::Beta,
            "linear_quadratic" => Scheduler::LinearQuadratic,
            "kl_optimal" => Scheduler::KlOptimal,
            other => bail!("unknown scheduler `{other}`; valid: {}", SCHEDULER_NAMES.join(", ")),
        })
    }

    /// The ComfyUI name.
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::Normal => "normal",
            Scheduler::Karras => "karras",
            Scheduler::Exponential => "exponential",
            Scheduler::SgmUniform => "sgm_uniform",
            Scheduler::Simple => "simple",
            Scheduler::DdimUniform => "ddim_uniform",
            Scheduler::Beta => "beta",
            Scheduler::LinearQuadratic => "linear_quadratic",
            Scheduler::KlOptimal => "kl_optimal",
        }
    }

    /// The schedule for `steps` steps (ComfyUI's `calculate_sigmas`).
    pub fn sigmas(self, ms: &ModelSampling, steps: usize) -> Vec<f32> {
        let (smin, smax) = (ms.sigma_min() as f64, ms.sigma_max() as f64);
        match self {
            Scheduler::Normal => normal(ms, steps, false),
            Scheduler::SgmUniform => normal(ms, steps, true),
            Scheduler::Karras => karras(steps, smin, smax),
            Scheduler::Exponential => {
                let mut s: Vec<f32> =
                    torch_linspace_f32(smax.ln(), smin.ln(), steps).into_iter().map(f32::exp).collect();
                s.push(0.0);
                s
            }
            Scheduler::Simple => simple(ms, steps),
            Scheduler::DdimUniform => ddim_uniform(ms, steps),
            Scheduler::Beta => beta(ms, steps, 0.6, 0.6),
            Scheduler::LinearQuadratic => linear_quadratic(ms, steps, 0.025),
            Scheduler::KlOptimal => kl_optimal(steps, smin, smax),
        }
    }
}

fn normal(ms: &ModelSampling, steps: usize, sgm: bool) -> Vec<f32> {
    let timesteps = if sgm {
        let mut t = ms.timestep_linspace(steps + 1);
        t.pop();
        t
    } else {
        let end = ms.timestep(ms.sigma_min()) as f32;
        if (ms.sigma(end) as f64).abs() <= 1e-5 {
            // A schedule that reaches sigma 0 itself gets no extra zero.
            return ms.timestep_linspace(steps + 1).into_iter().map(|t| ms.sigma(t)).collect();
        }
        ms.timestep_linspace(steps)
    };
    let mut s: Vec<f32> = timesteps.into_iter().map(|t| ms.sigma(t)).collect();
    s.push(0.0);
    s
}

fn karras(steps: usize, smin: f64, smax: f64) -> Vec<f32> {
    let rho = 7.0f64;
    let (min_inv, max_inv) = (smin.powf(1.0 / rho), smax.powf(1.0 / rho));
    let (base, diff) = (max_inv as f32, (min_inv - max_inv) as f32);
    let mut s: Vec<f32> =
        torch_linspace_f32(0.0, 1.0, steps).into_iter().map(|r| (base + r * diff).powf(rho as f32)).collect();
    s.push(0.0);
    s
}

fn simple(ms: &ModelSampling, steps: usize) -> Vec<f32> {
    let n = ms.sigmas().len();
    let ss = n as f64 / steps as f64;
    let mut s: Vec<f32> = (0..steps).map(|x| ms.sigmas()[n - 1 - (x as f64 * ss) as usize]).collect();
    s.push(0.0);
    s
}

fn ddim_uniform(ms: &ModelSampling, steps: usize) -> Vec<f32> {
    let sigmas = ms.sigmas();
    let mut steps = steps;
    let mut s = Vec::new();
    if (sigmas[1] as f64).abs() <= 1e-5 {
        steps += 1;
    } else {
        s.push(0.0);
    }
    let ss = (sigmas.len() / steps).max(1);
    s.extend(sigmas.iter().skip(1).step_by(ss));
    s.reverse();
    s
}

fn beta(ms: &ModelSampling, steps: usize, alpha: f64, beta: f64) -> Vec<f32> {
    let total = (ms.sigmas().len() - 1) as f64;
    let mut s = Vec::new();
    let mut last = None;
    for i in 0..steps {
        let q = 1.0 - i as f64 * (1.0 / steps as f64);
        let t = (beta_ppf(q, alpha, beta) * total).round_ties_even();
        if last != Some(t) {
            s.push(ms.sigmas()[t as usize]);
        }
        last = Some(t);
    }
    s.push(0.0);
    s
}

fn linear_quadratic(ms: &ModelSampling, steps: usize, threshold: f64) -> Vec<f32> {
    let schedule: Vec<f64> = if steps == 1 {
        vec![1.0, 0.0]
    } else {
        let ls = steps / 2;
        let (lsf, n) = (ls as f64, steps as f64);
        let mut v: Vec<f64> = (0..ls).map(|i| i as f64 * threshold / lsf).collect();
        let diff = lsf - threshold * n;
        let qs = (steps - ls) as f64;
        let qc = diff / (lsf * qs * qs);
        let lc = threshold / lsf - 2.0 * diff / (qs * qs);
        let c = qc * lsf * lsf;
        v.extend((ls..steps).map(|i| qc * (i * i) as f64 + lc * i as f64 + c));
        v.push(1.0);
        v.into_iter().map(|x| 1.0 - x).collect()
    };
    schedule.into_iter().map(|x| x as f32 * ms.sigma_max()).collect()
}

fn kl_optimal(steps: usize, smin: f64, smax: f64) -> Vec<f32> {
    let (amin, amax) = (smin.atan() as f32, smax.atan() as f32);
    let denom = steps as f32 - 1.0;
    let mut s: Vec<f32> = (0..steps)
        .map(|i| {
            let a = i as f32 / denom;
            (a * amin + (1.0 - a) * amax).tan()
        })
        .collect();
    s.push(0.0);
    s
}

/// KSampler's schedule (`KSampler.set_steps`): `steps` steps of
/// `scheduler`, with the penultimate sigma dropped for the samplers that
/// ask for it (computed from `steps + 1`), and for `denoise` < 1 the last
/// `steps + 1` sigmas of the schedule for `int(steps / denoise)` steps.
/// `denoise` <= 0 gives an empty schedule (nothing to run).
pub fn ksampler_sigmas(
    ms: &ModelSampling,
    scheduler: Scheduler,
    steps: usize,
    denoise: f64,
    discard_penultimate: bool,
) -> Vec<f32> {
    let calculate = |steps: usize| {
        let mut s = scheduler.sigmas(ms, if discard_penultimate { steps + 1 } else { steps });
        if discard_penultimate && s.len() >= 2 {
            s.remove(s.len() - 2);
        }
        s
    };
    if denoise > 0.9999 {
        return calculate(steps);
    }
    if denoise <= 0.0 {
        return Vec::new();
    }
    let s = calculate((steps as f64 / denoise) as usize);
    s[s.len().saturating_sub(steps + 1)..].to_vec()
}

/// KSamplerAdvanced's cut of a schedule (`KSampler.sample` with
/// `start_step`, `last_step` and `force_full_denoise`): the sigmas up to
/// `end_step` (the last one set to 0 when `force_full_denoise`), then from
/// `start_step`. `None` when no step is left: the sampler returns its input
/// latent.
pub fn advanced_sigmas(
    sigmas: &[f32],
    start_step: usize,
    end_step: usize,
    force_full_denoise: bool,
) -> Option<Vec<f32>> {
    let mut s = sigmas.to_vec();
    if !s.is_empty() && end_step < s.len() - 1 {
        s.truncate(end_step + 1);
        if force_full_denoise {
            *s.last_mut().expect("at least one sigma") = 0.0;
        }
    }
    if s.is_empty() || start_step >= s.len() - 1 {
        return None;
    }
    Some(s.split_off(start_step))
}
