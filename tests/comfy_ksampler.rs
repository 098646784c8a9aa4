//! `sd.sample` with ComfyUI's schedulers and samplers end to end through the
//! real binary on the tiny SD pipeline (tests/fixtures/tiny-sd): it runs, is
//! deterministic, follows the generator, cuts steps as KSamplerAdvanced,
//! refuses bad names where ComfyUI's are unsupported; and the averaged
//! guidance of combined conds.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{stderr, Sandbox};
use flow_nodes::sd::guidance::predict;
use flow_nodes::sd::StableDiffusion;

fn pipeline() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd/pipeline")
}

/// A txt2img graph on the tiny pipeline whose `sample` node takes `extra`
/// inputs (YAML flow-map entries) and whose latent is saved to `out/NAME`.
fn graph(extra: &str) -> String {
    format!(
        "flow: 1\nmodels:\n  sd: \"{}\"\nnodes:\n  \
         cond: {{ op: sd.encode_prompt, in: {{ model: $sd, prompt: \"a photo of a cat\", negative: \"blurry\" }} }}\n  \
         empty: {{ op: sd.empty_latent, in: {{ model: $sd, width: 16, height: 16 }} }}\n  \
         sample:\n    op: sd.sample\n    in: {{ model: $sd, cond: $cond, latent: $empty, steps: 6, cfg: 5.0, seed: 42, {extra} }}\n  \
         save: {{ op: tensor.save, in: {{ tensor: $sample, path: out/latent.safetensors }} }}\n",
        pipeline().display()
    )
}

/// Runs `yaml` (without the cache) and returns the saved latent.
fn run_latent(sb: &Sandbox, yaml: &str) -> Vec<f32> {
    sb.write("g.yaml", yaml);
    let out = sb.flow(&["run", "--no-cache", "g.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", common::stdout(&out), stderr(&out));
    let path = sb.path().join("out/latent.safetensors");
    let t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap().into_values().next().unwrap();
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn karras_dpmpp_2m_runs_deterministically_and_follows_the_generator() {
    let sb = Sandbox::new();
    let torch = run_latent(&sb, &graph("sampler: dpmpp_2m, scheduler: karras"));
    assert!(!torch.is_empty());
    assert!(torch.iter().all(|v| v.is_finite()));
    let again = run_latent(&sb, &graph("sampler: dpmpp_2m, scheduler: karras, generator: torch"));
    assert_eq!(torch, again, "same seed, same generator (torch is the default): same latent");
    let flow = run_latent(&sb, &graph("sampler: dpmpp_2m, scheduler: karras, generator: flow"));
    assert!(max_diff(&torch, &flow) > 1e-2, "the flow generator draws other noise");
    let diffusers = run_latent(&sb, &graph("sampler: dpmpp_2m"));
    assert!(max_diff(&torch, &diffusers) > 1e-4, "ComfyUI's karras schedule is not diffusers' default");
}

#[test]
fn ancestral_and_multistep_comfy_samplers_run() {
    let sb = Sandbox::new();
    for (sampler, scheduler) in
        [("euler_ancestral", "normal"), ("uni_pc", "exponential"), ("lms", "beta"), ("dpm_2", "simple")]
    {
        let latent = run_latent(&sb, &graph(&format!("sampler: {sampler}, scheduler: {scheduler}")));
        assert!(latent.iter().all(|v| v.is_finite()), "{sampler}/{scheduler}");
    }
}

/// KSamplerAdvanced: steps 0..3 with the leftover noise, then 3..6 without
/// new noise, equal one 6-step run (Euler is deterministic).
#[test]
fn advanced_start_and_end_steps_split_a_run_exactly() {
    let sb = Sandbox::new();
    let whole = run_latent(&sb, &graph("sampler: euler, scheduler: karras"));
    let split = graph("sampler: euler, scheduler: karras, end_step: 3, leftover_noise: true").replace(
        "  save:",
        "  second:\n    op: sd.sample\n    in: { model: $sd, cond: $cond, latent: $sample, steps: 6, cfg: 5.0, seed: 42, \
         sampler: euler, scheduler: karras, add_noise: false, start_step: 3 }\n  save:",
    );
    let split = split.replace("tensor: $sample, path", "tensor: $second, path");
    let two_passes = run_latent(&sb, &split);
    let d = max_diff(&whole, &two_passes);
    assert!(d < 1e-5, "two passes differ from one run by {d}");
    // Without the leftover noise the first pass ends fully denoised: not the same thing.
    let forced = split.replace("leftover_noise: true", "leftover_noise: false");
    assert!(max_diff(&whole, &run_latent(&sb, &forced)) > 1e-3);
}

#[test]
fn denoise_zero_returns_the_latent() {
    let sb = Sandbox::new();
    let latent = run_latent(&sb, &graph("sampler: euler, scheduler: normal, denoise: 0.0"));
    assert!(latent.iter().all(|v| *v == 0.0), "the empty latent comes back");
}

#[test]
fn bad_names_are_located_validation_errors() {
    let sb = Sandbox::new();
    sb.write("g.yaml", &graph("sampler: dpmpp_2m, scheduler: karas"));
    let out = sb.flow(&["validate", "g.yaml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("g.yaml:9:") && err.contains("karas") && err.contains("karras"), "{err}");
    sb.write("g.yaml", &graph("sampler: dpmpp_2m_sde, scheduler: karras"));
    let out = sb.flow(&["run", "g.yaml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("g.yaml:9:") && err.contains("dpmpp_2m_sde"), "{err}");
}

#[test]
fn sampler_names_from_links_fail_clearly_at_run_time() {
    let sb = Sandbox::new();
    let with_link = |sampler: &str, scheduler: &str| {
        graph(&format!("sampler: $name, scheduler: {scheduler}"))
            .replace("nodes:\n", &format!("nodes:\n  name: {{ op: text.join, in: {{ items: [\"{sampler}\"] }} }}\n"))
    };
    for (sampler, scheduler, want) in [
        // The engine checks a linked value against the port's choices.
        ("dpmpp_sde", "karras", "is not one of"),
        ("euler_a", "karras", "euler_ancestral"),
        ("lms", "diffusers", "needs a ComfyUI `scheduler`"),
    ] {
        sb.write("g.yaml", &with_link(sampler, scheduler));
        let out = sb.flow(&["run", "g.yaml"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{sampler}/{scheduler}: {err}");
        assert!(err.contains(sampler) && err.contains(want), "{sampler}/{scheduler}: {err}");
    }
}

#[test]
fn combined_conds_average_the_predictions() {
    let sd = StableDiffusion::load(&pipeline(), &Device::Cpu, DType::F32).unwrap();
    let a = sd.text_encoder.encode("a photo of a cat").unwrap();
    let b = sd.text_encoder.encode("a watercolor of a dog").unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 4, 2, 2), &Device::Cpu).unwrap();
    let one = |e: &Tensor| predict(&sd.unet, &x, 500.0, std::slice::from_ref(e), None).unwrap().0;
    let (both, none) = predict(&sd.unet, &x, 500.0, &[a.clone(), b.clone()], None).unwrap();
    assert!(none.is_none());
    let mean = ((one(&a) + one(&b)).unwrap() / 2.0).unwrap();
    let d = max_diff(&both.flatten_all().unwrap().to_vec1().unwrap(), &mean.flatten_all().unwrap().to_vec1().unwrap());
    assert!(d < 1e-5, "combined prediction differs from the mean by {d}");
    let single = one(&a).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(max_diff(&single, &mean.flatten_all().unwrap().to_vec1().unwrap()) > 1e-4, "the prompts differ");
}

#[test]
fn combine_cond_graph_runs_and_a_cond_combined_with_itself_is_unchanged() {
    let sb = Sandbox::new();
    let base = graph("sampler: euler, scheduler: normal");
    let plain = run_latent(&sb, &base);
    let combine = |other: &str| {
        base.replace(
            "  empty:",
            &format!(
                "  dog: {{ op: sd.encode_prompt, in: {{ model: $sd, prompt: \"{other}\", negative: \"blurry\" }} }}\n  \
                 both: {{ op: sd.combine_cond, in: {{ a: $cond, b: $dog }} }}\n  empty:"
            ),
        )
        .replace("cond: $cond, latent", "cond: $both, latent")
    };
    assert_eq!(run_latent(&sb, &combine("a photo of a cat")), plain);
    let mixed = run_latent(&sb, &combine("a watercolor of a dog"));
    assert!(max_diff(&mixed, &plain) > 1e-4);
}

/// The `prediction` input overrides what the model's config says: `epsilon`
/// on this eps model changes nothing, `v_prediction` reads the same UNet
/// output as a velocity (on both sampler families).
#[test]
fn the_prediction_input_overrides_the_models_parameterization() {
    let sb = Sandbox::new();
    for extra in ["sampler: euler, scheduler: karras", "sampler: euler"] {
        let auto = run_latent(&sb, &graph(extra));
        let eps = run_latent(&sb, &graph(&format!("{extra}, prediction: epsilon")));
        assert_eq!(auto, eps, "{extra}: the tiny pipeline is an epsilon model");
        let v = run_latent(&sb, &graph(&format!("{extra}, prediction: v_prediction")));
        assert!(v.iter().all(|x| x.is_finite()), "{extra}");
        assert!(max_diff(&auto, &v) > 1e-3, "{extra}: v-prediction reads the output differently");
    }
    sb.write("g.yaml", &graph("sampler: euler, prediction: v"));
    let out = sb.flow(&["validate", "g.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`v` is not one of auto, epsilon, v_prediction"), "{}", stderr(&out));
}
