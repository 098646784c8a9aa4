//! The names ComfyUI's combo inputs take: the ones flow runs, and the
//! ComfyUI names flow knows but does not run yet (with the reason, for the
//! `value_not_in_list` error).

use crate::sd::kdiffusion::{SAMPLER_NAMES, SCHEDULER_NAMES};

/// KSampler `sampler_name` values flow runs (ComfyUI's k-diffusion semantics).
pub const SAMPLERS: &[&str] = &SAMPLER_NAMES;

/// KSampler `scheduler` values (every ComfyUI sigma schedule).
pub const SCHEDULERS: &[&str] = &SCHEDULER_NAMES;

/// LatentUpscale(By) `upscale_method` values flow runs.
pub const LATENT_UPSCALE_METHODS: &[&str] = &["nearest-exact", "bilinear", "area", "bicubic"];

/// ImageScale(By) `upscale_method` values flow runs.
pub const IMAGE_UPSCALE_METHODS: &[&str] = &["nearest-exact", "bilinear", "area", "bicubic", "lanczos"];

/// ComfyUI upscale methods flow does not run yet, and why.
pub fn unsupported_upscale_method(name: &str) -> Option<&'static str> {
    (name == "bislerp")
        .then_some("ComfyUI's bislerp (slerp between neighbouring latent vectors) is not implemented in flow yet")
}
