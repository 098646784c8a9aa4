//! The diffusers `scheduler_config.json`, as every SD 1.x / 2.x pipeline
//! ships it.
//!
//! Every field is optional: diffusers fills a missing key with the default of
//! the scheduler CLASS being built (`timestep_spacing` is "leading" for DDIM
//! but "linspace" for Euler, DPM-Solver and UniPC), so each sampler resolves
//! the defaults of the class it ports. Unknown keys are ignored, keys listed in
//! `_use_default_values` are dropped (as `from_config` does), and Python's
//! non-standard `-Infinity` / `Infinity` / `NaN` literals (diffusers writes
//! `"lambda_min_clipped": -Infinity`) are accepted.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer};

/// How the training betas are laid out over the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end, T)`.
    #[serde(rename = "linear")]
    Linear,
    /// `linspace(sqrt(beta_start), sqrt(beta_end), T)^2` (every SD 1.x / 2.x).
    #[serde(rename = "scaled_linear")]
    ScaledLinear,
    /// The Glide cosine schedule (`betas_for_alpha_bar`, max beta 0.999).
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PredictionType {
    /// The added noise (SD 1.x, SD 2.x base 512).
    #[serde(rename = "epsilon")]
    Epsilon,
    /// The velocity `sqrt(abar)*eps - sqrt(1-abar)*x0` (SD 2.x 768-v).
    #[serde(rename = "v_prediction")]
    VPrediction,
    /// The denoised sample itself.
    #[serde(rename = "sample")]
    Sample,
}

/// How the inference timesteps are picked among the training ones
/// (table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TimestepSpacing {
    /// `arange(0, N) * (T // N) + steps_offset`, descending.
    #[serde(rename = "leading")]
    Leading,
    /// `round(arange(T, 0, -T / N)) - 1`.
    #[serde(rename = "trailing")]
    Trailing,
    /// `linspace(0, T - 1, N)`, descending.
    #[serde(rename = "linspace")]
    Linspace,
}

/// The noise level after the last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum FinalSigmasType {
    /// Sigma 0: the last step lands on the clean sample.
    #[serde(rename = "zero")]
    Zero,
    /// The sigma of training timestep 0.
    #[serde(rename = "sigma_min")]
    SigmaMin,
}

/// How Euler interpolates sigmas between training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum InterpolationType {
    /// Linear in the timestep (the only one ported).
    #[serde(rename = "linear")]
    Linear,
    /// Log-linear (not ported: building Euler with it is an error).
    #[serde(rename = "log_linear")]
    LogLinear,
}

/// What Euler feeds the UNet as the timestep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TimestepType {
    /// The (possibly fractional) training timestep.
    #[serde(rename = "discrete")]
    Discrete,
    /// `0.25 * ln(sigma)` for v-prediction models (not ported).
    #[serde(rename = "continuous")]
    Continuous,
}

/// A diffusers scheduler config. `None` means "absent": each sampler then uses
/// the default of the diffusers class it ports.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// The diffusers class the config was saved from; picks the default sampler.
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    /// Training timesteps T (default 1000).
    pub num_train_timesteps: Option<usize>,
    /// First beta (default 0.0001).
    pub beta_start: Option<f64>,
    /// Last beta (default 0.02).
    pub beta_end: Option<f64>,
    /// Beta layout (default linear).
    pub beta_schedule: Option<BetaSchedule>,
    /// Explicit betas, overriding `beta_start` / `beta_end` / `beta_schedule`.
    pub trained_betas: Option<Vec<f64>>,
    /// Rescale the betas to zero terminal SNR (default false).
    pub rescale_betas_zero_snr: Option<bool>,
    /// What the model predicts (default epsilon).
    pub prediction_type: Option<PredictionType>,
    /// Timestep spacing (default leading for DDIM, linspace for the others).
    pub timestep_spacing: Option<TimestepSpacing>,
    /// Offset added to "leading" timesteps (default 0; SD uses 1).
    pub steps_offset: Option<usize>,
    /// DDIM: alpha_cumprod before the first training step is 1 (default true)
    /// instead of `alphas_cumprod[0]`.
    pub set_alpha_to_one: Option<bool>,
    /// DDIM: clamp the predicted x0 (default true; SD configs say false).
    pub clip_sample: Option<bool>,
    /// DDIM: the clamp range when `clip_sample` (default 1.0).
    pub clip_sample_range: Option<f64>,
    /// Dynamic thresholding (default false; not ported: true is an error).
    pub thresholding: Option<bool>,
    /// Euler / DPM-Solver / UniPC: the sigma after the last step (default zero).
    pub final_sigmas_type: Option<FinalSigmasType>,
    /// Euler: sigma interpolation (default linear).
    pub interpolation_type: Option<InterpolationType>,
    /// Euler: what the UNet receives as timestep (default discrete).
    pub timestep_type: Option<TimestepType>,
    /// Karras sigmas (not ported: true is an error for Euler, DPM-Solver, UniPC).
    pub use_karras_sigmas: Option<bool>,
    /// Exponential sigmas (not ported: true is an error).
    pub use_exponential_sigmas: Option<bool>,
    /// Beta-distribution sigmas (not ported: true is an error).
    pub use_beta_sigmas: Option<bool>,
    /// Uniform-logSNR lambdas (not ported: true is an error).
    pub use_lu_lambdas: Option<bool>,
    /// Flow-matching sigmas (not ported: true is an error).
    pub use_flow_sigmas: Option<bool>,
    /// UniPC order, 1 to 3 (default 2). `dpmpp_2m` always uses order 2 and
    /// the "dpmsolver++" algorithm, whatever the config says.
    pub solver_order: Option<usize>,
    /// DPM-Solver "midpoint" / "heun"; UniPC "bh1" / "bh2". A value of the other
    /// family maps as diffusers maps it (DPM: bh* -> midpoint; UniPC: midpoint,
    /// heun, logrho -> bh2).
    pub solver_type: Option<String>,
    /// Lower the order on the final steps when fewer than 15 (DPM) (default true).
    pub lower_order_final: Option<bool>,
    /// DPM-Solver: first-order final step (default false).
    pub euler_at_final: Option<bool>,
    /// DPM-Solver: clip lambda(t) below this (default -inf).
    #[serde(deserialize_with = "lenient_f64")]
    pub lambda_min_clipped: Option<f64>,
    /// DPM-Solver: "learned" / "learned_range" variance outputs (not ported).
    pub variance_type: Option<String>,
    /// UniPC: solve in x0 space (default true; false is not ported).
    pub predict_x0: Option<bool>,
    /// UniPC: step indices whose corrector is skipped (default none).
    pub disable_corrector: Option<Vec<usize>>,
}

impl SchedulerConfig {
    /// Parses the text of a `scheduler_config.json` (Python's `-Infinity`
    /// literals included, which plain `serde_json` rejects).
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(&quote_non_finite(text))
            .context("scheduler config is not valid JSON")?;
        Self::from_value(value)
    }

    /// Reads an already parsed config object.
    pub fn from_value(mut value: serde_json::Value) -> Result<Self> {
        if let Some(map) = value.as_object_mut() {
            let defaults = map.remove("_use_default_values");
            if let Some(serde_json::Value::Array(keys)) = defaults {
                for key in keys.iter().filter_map(|k| k.as_str()) {
                    map.remove(key);
                }
            }
        }
        serde_json::from_value(value).context("invalid scheduler config")
    }

    /// Reads and parses a `scheduler_config.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scheduler config {}", path.display()))?;
        Self::from_json_str(&text).with_context(|| format!("in {}", path.display()))
    }

    /// The sampler name matching `_class_name`, if this port has that class.
    pub fn default_sampler(&self) -> Option<&'static str> {
        match self.class_name.as_deref()? {
            "DDIMScheduler" => Some("ddim"),
            "EulerDiscreteScheduler" => Some("euler"),
            "EulerAncestralDiscreteScheduler" => Some("euler_a"),
            "DPMSolverMultistepScheduler" => Some("dpmpp_2m"),
            "UniPCMultistepScheduler" => Some("unipc"),
            _ => None,
        }
    }

    /// What the model predicts (`prediction_type`, default epsilon).
    pub(crate) fn prediction(&self) -> PredictionType {
        self.prediction_type.unwrap_or(PredictionType::Epsilon)
    }

    /// Errors when dynamic thresholding is on (DDIM, DPM-Solver, UniPC know it).
    pub(crate) fn reject_thresholding(&self, sampler: &str) -> Result<()> {
        if self.thresholding == Some(true) {
            bail!(
                "sampler {sampler}: `thresholding: true` is not supported (SD configs use false)"
            );
        }
        Ok(())
    }

    /// Errors when one of the alternative sigma schedules is switched on.
    pub(crate) fn reject_alternative_sigmas(&self, sampler: &str) -> Result<()> {
        let flags = [
            ("use_karras_sigmas", self.use_karras_sigmas),
            ("use_exponential_sigmas", self.use_exponential_sigmas),
            ("use_beta_sigmas", self.use_beta_sigmas),
            ("use_lu_lambdas", self.use_lu_lambdas),
            ("use_flow_sigmas", self.use_flow_sigmas),
        ];
        for (name, value) in flags {
            if value == Some(true) {
                bail!(
                    "sampler {sampler}: `{name}: true` is not supported; only the default \
                     (interpolated) sigma schedule is ported"
                );
            }
        }
        Ok(())
    }
}

/// Accepts a number, null, or one of the strings `quote_non_finite` makes.
fn lenient_f64<'de, D: Deserializer<'de>>(de: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Number(f64),
        Text(String),
    }
    match Option::<NumberOrText>::deserialize(de)? {
        None => Ok(None),
        Some(NumberOrText::Number(v)) => Ok(Some(v)),
        Some(NumberOrText::Text(s)) => s
            .parse::<f64>()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("expected a number, got {s:?}"))),
    }
}

/// Quotes Python's `NaN`, `Infinity` and `-Infinity` literals outside strings,
/// so that the text is standard JSON.
fn quote_non_finite(text: &str) -> String {
    const LITERALS: [&str; 3] = ["-Infinity", "Infinity", "NaN"];
    let mut out = String::with_capacity(text.len() + 8);
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while let Some(c) = text[i..].chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(lit) = LITERALS.iter().find(|l| text[i..].starts_with(**l)) {
            out.push('"');
            out.push_str(lit);
            out.push('"');
            i += lit.len();
            continue;
        }
        out.push(c);
        i += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_config_parses_python_literals_and_drops_defaults() {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
                "note": "NaN stays text", "solver_type": "heun", "unknown": [1, 2],
                "_use_default_values": ["solver_type"], "timestep_spacing": "leading"}"#,
        )
        .unwrap();
        assert_eq!(cfg.lambda_min_clipped, Some(f64::NEG_INFINITY));
        assert_eq!(cfg.solver_type, None);
        assert_eq!(cfg.timestep_spacing, Some(TimestepSpacing::Leading));
        assert_eq!(cfg.default_sampler(), Some("dpmpp_2m"));
    }

    #[test]
    fn scheduler_config_rejects_unknown_enum_values() {
        let err = SchedulerConfig::from_json_str(r#"{"beta_schedule": "sigmoid"}"#).unwrap_err();
        assert!(format!("{err:#}").contains("sigmoid"), "{err:#}");
    }
}
