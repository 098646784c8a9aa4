//! Stable Diffusion end to end through the real binary, against diffusers:
//! the 4-step txt2img trajectories (DDIM, Euler, DPM++ 2M) from the stored
//! x_T fed as `noise`, and img2img with the stored VAE and noise draws.
//! Reference: tests/fixtures/tiny-sd (see its README for the settings).

mod common;
#[path = "common/tensors.rs"]
mod tensors;

use std::path::{Path, PathBuf};

use common::{stderr, Sandbox};
use tensors::{assert_close, fill_template, load, only_tensor, run_graph};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd")
}

/// The graph template `tests/fixtures/tiny-sd/graphs/NAME.yaml` (shared with
/// `cuda/gpu_check.py`) with its `@KEY@` placeholders filled.
fn fixture_graph(name: &str, vars: &[(&str, &Path)], words: &[(&str, &str)]) -> String {
    let path = fixtures().join(format!("graphs/{name}.yaml"));
    let yaml = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fill_template(yaml, vars, words)
}

fn txt2img_graph(sampler: &str, expected: &Path, precision: &str) -> String {
    let pipeline = fixtures().join("pipeline");
    fixture_graph(
        "trajectory",
        &[("PIPELINE", &pipeline), ("EXPECTED", expected)],
        &[("SAMPLER", sampler), ("PRECISION", precision)],
    )
}

#[test]
fn txt2img_trajectories_match_diffusers() {
    for (sampler, file) in [("ddim", "trajectory_ddim"), ("euler", "trajectory_euler"), ("dpmpp_2m", "trajectory_dpmpp2m")] {
        let expected_path = fixtures().join(format!("expected/{file}.safetensors"));
        let expected = load(&expected_path);
        let sb = Sandbox::new();
        run_graph(&sb, &txt2img_graph(sampler, &expected_path, "auto"));
        let latent = only_tensor(&sb.path().join("out/latent.safetensors"));
        assert_close(&format!("{sampler} final latent"), &latent, &expected["final_latent"]);
        let image = only_tensor(&sb.path().join("out/image.safetensors"));
        assert_close(&format!("{sampler} image"), &image, &expected["image"]);
        // The PNG matches diffusers' within one step per channel.
        let got = image_bytes(&sb.path().join("out/image.png"));
        let want = image_bytes(&fixtures().join(format!("expected/{file}.png")));
        assert_eq!(got.len(), want.len());
        assert!(got.iter().zip(&want).all(|(a, b)| a.abs_diff(*b) <= 1), "{sampler} png");
    }
}

fn image_bytes(path: &Path) -> Vec<u8> {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8().into_raw()
}

#[test]
fn img2img_matches_diffusers() {
    let expected_path = fixtures().join("expected/img2img_ddim.safetensors");
    let expected = load(&expected_path);
    let sb = Sandbox::new();
    let (pipeline, input) = (fixtures().join("pipeline"), fixtures().join("expected/input.png"));
    let yaml =
        fixture_graph("img2img", &[("PIPELINE", &pipeline), ("INPUT", &input), ("EXPECTED", &expected_path)], &[]);
    run_graph(&sb, &yaml);
    let init = only_tensor(&sb.path().join("out/init.safetensors"));
    assert_close("img2img init latents", &init, &expected["init_latents"]);
    let latent = only_tensor(&sb.path().join("out/latent.safetensors"));
    assert_close("img2img final latent", &latent, &expected["final_latent"]);
}

#[test]
fn hires_fix_reruns_only_the_upscale_when_its_settings_change() {
    let sb = Sandbox::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(sb.path().join("graphs")).unwrap();
    std::fs::copy(root.join("graphs/hires_fix.yaml"), sb.path().join("graphs/hires_fix.yaml")).unwrap();
    let (code, events) = sb.run_json("graphs/hires_fix.yaml", &["--set", "steps=4"]);
    assert_eq!(code, 0, "{events:#?}");
    assert_eq!(common::executed(&events).len(), 8);
    let (code, events) = sb.run_json("graphs/hires_fix.yaml", &["--set", "steps=4", "--set", "tile=32"]);
    assert_eq!(code, 0, "{events:#?}");
    assert_eq!(common::executed(&events), ["save", "upscaled"]);
    assert!(sb.path().join("graphs/out/hires-42.png").exists());
}

/// An SD 2.x-style model (`tiny:sd2`: exact-GELU text encoder, `!` padding,
/// heads per block, linear projections, v-prediction, trailing spacing) runs
/// through the txt2img graph with every sampler, unchanged.
#[test]
fn txt2img_runs_an_sd2_style_model_with_every_sampler() {
    let sb = Sandbox::new();
    let graph = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs/txt2img.yaml")).unwrap();
    sb.write("g.yaml", &graph.replace("sd: tiny:sd\n", "sd: tiny:sd2\n"));
    let mut pictures = Vec::new();
    for sampler in ["ddim", "euler", "euler_a", "dpmpp_2m", "unipc"] {
        let out = sb.flow(&["run", "g.yaml", "--set", &format!("sampler={sampler}"), "--set", "steps=4"]);
        assert_eq!(out.status.code(), Some(0), "{sampler}: {}", stderr(&out));
        let png = sb.path().join("out/txt2img-42.png");
        pictures.push(image_bytes(&png));
        std::fs::remove_file(png).unwrap();
    }
    assert!(pictures.iter().all(|p| p.len() == 64 * 64 * 3));
    assert!(pictures.windows(2).any(|w| w[0] != w[1]), "the samplers give different pictures");
}

/// `precision: f16` (what `auto` means on CUDA) runs the whole txt2img graph
/// and stays close to diffusers' float32 trajectory.
#[test]
fn txt2img_in_f16_stays_close_to_diffusers() {
    let expected_path = fixtures().join("expected/trajectory_ddim.safetensors");
    let expected = load(&expected_path);
    let sb = Sandbox::new();
    let graph = txt2img_graph("ddim", &expected_path, "f16");
    assert_eq!(graph.matches("precision: \"f16\"").count(), 2);
    run_graph(&sb, &graph);
    let got = only_tensor(&sb.path().join("out/latent.safetensors")).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = expected["final_latent"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale;
    eprintln!("f16 ddim final latent: max abs error {err:.2e} of the largest value");
    assert!(err < 1e-2, "{err}");
}
