//! `generator: torch` against torch itself, bit for bit:
//! - tests/fixtures/comfy-samplers/torch_randn.safetensors (from
//!   ../shared/reference/comfy-samplers; see torch_randn_README.md there):
//!   every `randn/` tensor, the big ones pinned by sha256, one generator's
//!   successive draws, and ComfyUI's prepare_noise with a batch_index. Its
//!   `randn_default_capability/` tensors are torch's non-x86 path (the C
//!   library's logf/sinf/cosf), which flow does not reproduce: not tested.
//! - torch_randn_extra.safetensors (made by make_extra.py beside it with
//!   torch 2.15 on an AVX-512 PC): other seeds (negative, beyond 32 bits)
//!   and shapes (fewer than 16 values, counts that are not multiples of 16,
//!   5-D), `torch.rand`, and mixed sequences of draws from one generator.
//! - the random inputs of the SD fixtures (tests/fixtures/tiny-sd and
//!   tiny-sd15-single), whose seeds are in the files' metadata.
//!
//! Comparisons are of the f32 bit patterns: one bit off fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use flow_nodes::tensor::generator::{Generator, GeneratorKind};
use flow_nodes::tensor::torch_rng::TorchGenerator;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// A safetensors file's bytes.
fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every F32 tensor of a file, by name: (shape, values).
fn f32_tensors(bytes: &[u8]) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    SafeTensors::deserialize(bytes)
        .unwrap()
        .tensors()
        .into_iter()
        .filter(|(_, view)| view.dtype() == Dtype::F32)
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

/// The string metadata of a safetensors file.
fn metadata(bytes: &[u8]) -> HashMap<String, String> {
    let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
    meta.metadata().clone().unwrap_or_default()
}

/// Panics unless `got` and `want` have the same f32 bit patterns.
fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        let differ = (0..got.len())
            .filter(|&i| got[i].to_bits() != want[i].to_bits())
            .count();
        panic!(
            "{what}: {differ} of {} values differ, first at {i}: got {:e}, want {:e}",
            got.len(),
            got[i],
            want[i]
        );
    }
}

/// `torch.manual_seed(seed); torch.randn(shape)` through the public Generator.
fn randn(seed: u64, shape: &[usize]) -> Vec<f32> {
    let t = Generator::new(GeneratorKind::Torch, seed as i64)
        .randn(shape, &Device::Cpu)
        .unwrap();
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// `torch.manual_seed(seed); torch.rand(shape)` through the public Generator.
fn rand(seed: u64, shape: &[usize]) -> Vec<f32> {
    let t = Generator::new(GeneratorKind::Torch, seed as i64)
        .rand(shape, &Device::Cpu)
        .unwrap();
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// The shape written in a tensor name: `1x4x8x8`, `17`, `scalar`.
fn parse_shape(text: &str) -> Vec<usize> {
    if text == "scalar" {
        return Vec::new();
    }
    text.split('x')
        .map(|d| d.parse().unwrap_or_else(|_| panic!("bad shape `{text}`")))
        .collect()
}

/// The seed written in a tensor name (`seed42`, `seed-5`), as torch takes it.
fn parse_seed(text: &str) -> u64 {
    let digits = text
        .strip_prefix("seed")
        .unwrap_or_else(|| panic!("bad seed `{text}`"));
    match digits.parse::<u64>() {
        Ok(s) => s,
        Err(_) => digits
            .parse::<i64>()
            .unwrap_or_else(|_| panic!("bad seed `{text}`")) as u64,
    }
}

fn sha256_hex(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn every_randn_tensor_of_the_fixture_is_bit_exact() {
    let bytes = read(&fixtures().join("comfy-samplers/torch_randn.safetensors"));
    let tensors = f32_tensors(&bytes);
    let mut checked = 0;
    for (name, (shape, want)) in &tensors {
        let parts: Vec<&str> = name.split('/').collect();
        if parts[0] != "randn" {
            continue;
        }
        let seed = parse_seed(parts[1]);
        let full_shape = parse_shape(parts[2]);
        match parts.get(3) {
            None => {
                assert_eq!(shape, &full_shape, "{name}");
                assert_bits(name, &randn(seed, &full_shape), want);
            }
            Some(&"head64") => assert_bits(name, &randn(seed, &full_shape)[..64], want),
            Some(&"tail64") => {
                let all = randn(seed, &full_shape);
                assert_bits(name, &all[all.len() - 64..], want);
            }
            Some(other) => panic!("unexpected tensor {name} ({other})"),
        }
        checked += 1;
    }
    // 6 seeds x (7, 16, 17, 1x4x8x8) + seed 2^64-1 x 4, and the three big
    // shapes: in full for 2 seeds, head and tail for 4.
    assert_eq!(checked, 28 + 6 + 4 * 3 * 2, "tensors checked");
}

#[test]
fn every_sha256_of_the_fixture_matches() {
    let text = String::from_utf8(read(
        &fixtures().join("comfy-samplers/torch_randn_sha256.json"),
    ))
    .unwrap();
    let sums: HashMap<String, String> = serde_json::from_str(&text).unwrap();
    assert_eq!(sums.len(), 54, "sums in the file");
    for (name, want) in &sums {
        let parts: Vec<&str> = name.split('/').collect();
        let seed = parse_seed(parts[1]);
        let values = match parts[0] {
            "randn" | "prepare_noise" if parts.len() == 3 => randn(seed, &parse_shape(parts[2])),
            _ => panic!("unexpected sha256 entry {name}"),
        };
        assert_eq!(&sha256_hex(&values), want, "{name}");
    }
}

#[test]
fn successive_draws_of_one_generator_continue_its_stream() {
    let bytes = read(&fixtures().join("comfy-samplers/torch_randn.safetensors"));
    let tensors = f32_tensors(&bytes);
    let mut draws: Vec<(usize, String)> = tensors
        .keys()
        .filter_map(|name| name.strip_prefix("sequence/seed42/"))
        .map(|rest| {
            let (i, shape) = rest.split_once('_').unwrap();
            (i.parse().unwrap(), shape.to_string())
        })
        .collect();
    draws.sort();
    let shapes: Vec<&str> = draws.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(shapes, ["7", "16", "3", "1x4x8x8", "17", "1", "2"]);
    // Through the public Generator and through TorchGenerator: the same stream.
    let mut g = Generator::new(GeneratorKind::Torch, 42);
    let mut t = TorchGenerator::new(42);
    for (i, shape) in &draws {
        let name = format!("sequence/seed42/{i}_{shape}");
        let dims = parse_shape(shape);
        let got = g
            .randn(&dims, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_bits(&name, &got, &tensors[&name].1);
        assert_bits(
            &name,
            &t.randn_vec(dims.iter().product()),
            &tensors[&name].1,
        );
    }
}

#[test]
fn prepare_noise_with_a_batch_index_picks_from_one_draw() {
    // comfy.sample.prepare_noise(zeros(2,4,8,8), 42, noise_inds=[3, 1])
    // = randn(4, 4, 8, 8)[[3, 1]]
    let bytes = read(&fixtures().join("comfy-samplers/torch_randn.safetensors"));
    let tensors = f32_tensors(&bytes);
    let name = "prepare_noise/seed42/2x4x8x8/batch_index3,1";
    let all = randn(42, &[4, 4, 8, 8]);
    let per = 4 * 8 * 8;
    let got = [&all[3 * per..4 * per], &all[per..2 * per]].concat();
    assert_bits(name, &got, &tensors[name].1);
}

#[test]
fn other_seeds_and_shapes_match_torch() {
    let bytes = read(&fixtures().join("comfy-samplers/torch_randn_extra.safetensors"));
    let tensors = f32_tensors(&bytes);
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut sequences: HashMap<u64, Vec<(usize, &str, Vec<usize>, &String)>> = HashMap::new();
    for name in names {
        let (shape, want) = &tensors[name];
        let parts: Vec<&str> = name.split('/').collect();
        let seed = parse_seed(parts[1]);
        match parts[0] {
            "randn" => {
                assert_eq!(shape, &parse_shape(parts[2]), "{name}");
                assert_bits(name, &randn(seed, shape), want);
            }
            "rand" => assert_bits(name, &rand(seed, shape), want),
            "sequence" => {
                let mut fields = parts[2].splitn(3, '_');
                let i = fields.next().unwrap().parse().unwrap();
                let kind = fields.next().unwrap();
                sequences
                    .entry(seed)
                    .or_default()
                    .push((i, kind, shape.clone(), name));
            }
            other => panic!("unexpected tensor {name} ({other})"),
        }
    }
    assert_eq!(sequences.len(), 2);
    for (seed, mut draws) in sequences {
        draws.sort();
        assert_eq!(draws.len(), 10);
        let mut g = Generator::new(GeneratorKind::Torch, seed as i64);
        for (_, kind, shape, name) in draws {
            let t = match kind {
                "randn" => g.randn(&shape, &Device::Cpu),
                "rand" => g.rand(&shape, &Device::Cpu),
                other => panic!("unexpected draw {other}"),
            };
            let got = t.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_bits(name, &got, &tensors[name].1);
        }
    }
}

/// The seeds of an SD fixture folder (`seeds` metadata of its unet_step file).
fn sd_seeds(dir: &Path) -> HashMap<String, u64> {
    let meta = metadata(&read(&dir.join("unet_step.safetensors")));
    serde_json::from_str(&meta["seeds"]).unwrap()
}

/// The random inputs of one SD fixture folder, as torch drew them.
fn check_sd_fixture(dir: &Path) {
    let seeds = sd_seeds(dir);
    let unet = f32_tensors(&read(&dir.join("unet_step.safetensors")));
    let (shape, want) = &unet["sample"];
    assert_bits(
        "unet_step sample",
        &randn(seeds["unet_sample"], shape),
        want,
    );

    let vae = f32_tensors(&read(&dir.join("vae.safetensors")));
    let (shape, want) = &vae["latent"];
    assert_bits("vae latent", &randn(seeds["vae_latent"], shape), want);
    // torch.rand(...) * 2 - 1
    let (shape, want) = &vae["image"];
    let image: Vec<f32> = rand(seeds["vae_image"], shape)
        .iter()
        .map(|u| u * 2.0 - 1.0)
        .collect();
    assert_bits("vae image", &image, want);

    for sampler in ["ddim", "euler", "dpmpp2m"] {
        let bytes = read(&dir.join(format!("trajectory_{sampler}.safetensors")));
        let file_seeds: HashMap<String, u64> =
            serde_json::from_str(&metadata(&bytes)["seeds"]).unwrap();
        let (shape, want) = &f32_tensors(&bytes)["x_T_passed"];
        assert_bits(
            &format!("{sampler} x_T"),
            &randn(file_seeds["x_T"], shape),
            want,
        );
    }

    // img2img: the pipeline's generator draws the VAE sample's eps, then the noise.
    let bytes = read(&dir.join("img2img_ddim.safetensors"));
    let file_seeds: HashMap<String, u64> =
        serde_json::from_str(&metadata(&bytes)["seeds"]).unwrap();
    let tensors = f32_tensors(&bytes);
    let mut g = Generator::new(GeneratorKind::Torch, file_seeds["img2img_generator"] as i64);
    for name in ["vae_sample_eps", "noise"] {
        let (shape, want) = &tensors[name];
        let got = g
            .randn(shape, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_bits(&format!("img2img {name}"), &got, want);
    }
}

#[test]
fn the_random_inputs_of_the_tiny_sd_fixture_are_torch_draws() {
    let dir = fixtures().join("tiny-sd/expected");
    assert_eq!(sd_seeds(&dir)["x_T"], 4);
    check_sd_fixture(&dir);
}

#[test]
fn the_random_inputs_of_the_single_file_fixture_are_torch_draws() {
    let dir = fixtures().join("tiny-sd15-single/expected");
    assert_eq!(sd_seeds(&dir)["x_T"], 25);
    check_sd_fixture(&dir);
}
