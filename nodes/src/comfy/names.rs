//! The names ComfyUI's combo inputs take: the ones flow runs, and the
//! ComfyUI names flow knows but does not run yet (with the reason, for the
//! `value_not_in_list` error).

/// KSampler `sampler_name` values flow runs (ComfyUI's k-diffusion semantics).
pub const SAMPLERS: &[&str] = &[
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

/// KSampler `scheduler` values (every ComfyUI sigma schedule).
pub const SCHEDULERS: &[&str] = &[
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

/// LatentUpscale(By) `upscale_method` values flow runs.
pub const LATENT_UPSCALE_METHODS: &[&str] = &["nearest-exact", "bilinear", "area", "bicubic"];

/// ImageScale(By) `upscale_method` values flow runs.
pub const IMAGE_UPSCALE_METHODS: &[&str] = &["nearest-exact", "bilinear", "area", "bicubic", "lanczos"];

/// ComfyUI sampler names flow does not run yet, and why.
pub fn unsupported_sampler(name: &str) -> Option<&'static str> {
    const SDE: &[&str] = &[
        "dpmpp_sde",
        "dpmpp_sde_gpu",
        "dpmpp_2m_sde",
        "dpmpp_2m_sde_gpu",
        "dpmpp_2m_sde_heun",
        "dpmpp_2m_sde_heun_gpu",
        "dpmpp_3m_sde",
        "dpmpp_3m_sde_gpu",
        "er_sde",
        "sa_solver",
        "sa_solver_pece",
        "seeds_2",
        "seeds_3",
    ];
    const OTHER: &[&str] = &[
        "euler_cfg_pp",
        "euler_ancestral_cfg_pp",
        "dpm_fast",
        "dpm_adaptive",
        "dpmpp_2s_ancestral_cfg_pp",
        "dpmpp_2m_cfg_pp",
        "ipndm_v",
        "res_multistep",
        "res_multistep_cfg_pp",
        "res_multistep_ancestral",
        "res_multistep_ancestral_cfg_pp",
        "gradient_estimation",
        "gradient_estimation_cfg_pp",
    ];
    if SDE.contains(&name) {
        Some("an SDE sampler driven by a Brownian tree, which flow does not implement yet")
    } else if OTHER.contains(&name) {
        Some("a ComfyUI sampler flow does not implement yet")
    } else {
        None
    }
}

/// ComfyUI upscale methods flow does not run yet, and why.
pub fn unsupported_upscale_method(name: &str) -> Option<&'static str> {
    (name == "bislerp")
        .then_some("ComfyUI's bislerp (slerp between neighbouring latent vectors) is not implemented in flow yet")
}
