//! Single-file Stable Diffusion checkpoints (the original layout), loaded
//! from the file alone, against diffusers: tests/fixtures/tiny-sd15-single
//! (SD 1.x, float16; see its README) and the extra checkpoints of
//! tests/fixtures/sd-single-shapes (other shapes and dtypes, an SD 2.x-style
//! one with a v sidecar; made by its make_fixtures.py). Tolerance:
//! `|got - want| <= 1e-4 + 1e-3 |want|`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use flow_nodes::sd::single_file::Checkpoint;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd15-single")
}

fn checkpoint_path() -> PathBuf {
    fixture().join("tiny-sd15-s1.safetensors")
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn expected(name: &str) -> HashMap<String, Tensor> {
    load(&fixture().join("expected").join(name))
}

/// Asserts `|got - want| <= 1e-4 + 1e-3 * |want|` everywhere and prints the
/// max abs difference.
fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let g = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let w = want.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut max = 0f32;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let d = (a - b).abs();
        max = max.max(d);
        assert!(d <= 1e-4 + 1e-3 * b.abs(), "{what}[{i}]: got {a}, want {b} (diff {d})");
    }
    eprintln!("{what}: max abs diff {max:.2e}");
}

#[test]
fn clip_from_the_file_alone_matches_transformers() {
    let want = expected("clip.safetensors");
    let ckpt = Checkpoint::open(&checkpoint_path()).unwrap();
    let te = ckpt.text_encoder(&Device::Cpu, DType::F32).unwrap();
    let prompts = ["a watercolor of a fox in the snow", "blurry"];
    let ids = Tensor::cat(&prompts.map(|p| te.token_ids(p).unwrap()), 0).unwrap();
    let want_ids = want["input_ids"].to_dtype(DType::I64).unwrap().to_vec2::<i64>().unwrap();
    assert_eq!(ids.to_dtype(DType::I64).unwrap().to_vec2::<i64>().unwrap(), want_ids, "token ids");
    let hidden = te.model.forward(&ids).unwrap();
    assert_close("clip last_hidden_state", &hidden, &want["last_hidden_state"]);
    assert_close("clip pooler_output", &te.model.pooled(&hidden, &ids).unwrap(), &want["pooler_output"]);
}

#[test]
fn unet_step_from_the_file_alone_matches_diffusers() {
    let want = expected("unet_step.safetensors");
    let unet = Checkpoint::open(&checkpoint_path()).unwrap().unet(&Device::Cpu, DType::F32).unwrap();
    let t = want["timestep"].to_vec1::<f32>().unwrap()[0] as f64;
    let got = unet.forward(&want["sample"], t, &want["encoder_hidden_states"]).unwrap();
    assert_close("unet noise_pred", &got, &want["noise_pred"]);
    let traj = expected("trajectory_ddim.safetensors");
    let clip = expected("clip.safetensors");
    let context = Tensor::cat(&[clip["last_hidden_state"].i(1..2).unwrap(), clip["last_hidden_state"].i(0..1).unwrap()], 0).unwrap();
    let t0 = traj["unet_t"].to_vec1::<f32>().unwrap()[0] as f64;
    let got = unet.forward(&traj["unet_in"].i(0).unwrap(), t0, &context).unwrap();
    assert_close("unet [uncond, cond] first step", &got, &traj["unet_out"].i(0).unwrap());
}

#[test]
fn vae_from_the_file_alone_matches_diffusers() {
    let want = expected("vae.safetensors");
    let vae = Checkpoint::open(&checkpoint_path()).unwrap().vae(&Device::Cpu, DType::F32).unwrap();
    assert_eq!(vae.scale_factor(), 8);
    assert_close("vae decoded", &vae.decode(&want["latent"]).unwrap(), &want["decoded"]);
    let dist = vae.encode(&want["image"]).unwrap();
    assert_close("vae latent_mean", &dist.mean, &want["latent_mean"]);
    assert_close("vae latent_std", &dist.std, &want["latent_std"]);
}

