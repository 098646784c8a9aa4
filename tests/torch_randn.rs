//! `tensor.random` with `generator: torch | flow` through `flow run`: the
//! default (torch) saves exactly torch's numbers (compared with the fixtures
//! of tests/fixtures/comfy-samplers, bit for bit), `flow` keeps the values of
//! earlier versions, and an unknown generator is a located validation error.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use common::{stderr, Sandbox};

/// A fixture tensor of tests/fixtures/comfy-samplers/`file`, flattened.
fn fixture(file: &str, name: &str) -> Vec<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/comfy-samplers").join(file);
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    tensors[name].flatten_all().unwrap().to_vec1().unwrap()
}

/// Runs a graph with one `tensor.random` node of `inputs` and returns the saved tensor.
fn random(sb: &Sandbox, inputs: &str) -> Vec<f32> {
    sb.write(
        "g.yaml",
        &format!(
            "flow: 1\nnodes:\n  t: {{ op: tensor.random, in: {{ {inputs} }} }}\n  \
             save: {{ op: tensor.save, in: {{ tensor: $t, path: out/t.safetensors, name: t }} }}\n"
        ),
    );
    let out = sb.flow(&["run", "g.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let saved = candle_core::safetensors::load(sb.path().join("out/t.safetensors"), &Device::Cpu).unwrap();
    let t: &Tensor = &saved["t"];
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn the_default_generator_draws_torch_randn() {
    let sb = Sandbox::new();
    let got = random(&sb, "shape: [1, 4, 8, 8], seed: 42");
    assert_eq!(bits(&got), bits(&fixture("torch_randn.safetensors", "randn/seed42/1x4x8x8")));
    // Fewer than 16 values take torch's scalar path; 17 redraws the tail.
    let got = random(&sb, "shape: [7], seed: 123456789, generator: torch");
    assert_eq!(bits(&got), bits(&fixture("torch_randn.safetensors", "randn/seed123456789/7")));
    let got = random(&sb, "shape: [17], seed: 9223372036854775807, generator: torch");
    assert_eq!(bits(&got), bits(&fixture("torch_randn.safetensors", "randn/seed9223372036854775807/17")));
}

#[test]
fn uniform_with_the_torch_generator_is_torch_rand() {
    let sb = Sandbox::new();
    let got = random(&sb, "shape: [2, 2, 3, 3, 5], seed: 14671, dist: uniform");
    assert_eq!(bits(&got), bits(&fixture("torch_randn_extra.safetensors", "rand/seed14671/2x2x3x3x5")));
    // A negative seed: torch takes its 64-bit two's complement.
    let got = random(&sb, "shape: [2], seed: -1375751024961172558, dist: uniform");
    assert_eq!(bits(&got), bits(&fixture("torch_randn_extra.safetensors", "rand/seed-1375751024961172558/2")));
}

#[test]
fn the_flow_generator_keeps_its_values() {
    let sb = Sandbox::new();
    let got = random(&sb, "shape: [2, 3], seed: 42, generator: flow");
    assert_eq!(got, [0.8822489, 1.3884733, -0.45084986, 0.67071646, 0.18835263, -0.20510402]);
}

#[test]
fn an_unknown_generator_is_a_located_error_naming_the_choices() {
    let sb = Sandbox::new();
    sb.write(
        "g.yaml",
        "flow: 1\nnodes:\n  t: { op: tensor.random, in: { shape: [2], seed: 1, generator: numpy } }\n  \
         save: { op: tensor.save, in: { tensor: $t, path: out/t.safetensors } }\n",
    );
    let out = sb.flow(&["validate", "g.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("g.yaml:3:") && err.contains("numpy") && err.contains("flow, torch"), "{err}");
    assert!(!sb.path().join("out").exists());
}
