//! Tensor helpers for the numerics tests (included with
//! `#[path = "common/tensors.rs"] mod tensors;` by the tests that compare
//! against reference safetensors files).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::common::{stderr, stdout, Sandbox};

/// Every tensor of a safetensors file, on the CPU.
pub fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The one tensor of a safetensors file (as `tensor.save` writes them).
pub fn only_tensor(path: &Path) -> Tensor {
    load(path).into_values().next().expect("one tensor")
}

/// Asserts `|got - want| <= 1e-4 + 1e-3 * |want|` everywhere (the
/// references' tolerance); returns the max abs difference.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor) -> f32 {
    assert_within(what, got, want, 1.0)
}

/// Asserts `|got - want| <= slack * (1e-4 + 1e-3 * |want|)` everywhere,
/// prints and returns the max abs difference.
pub fn assert_within(what: &str, got: &Tensor, want: &Tensor, slack: f32) -> f32 {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let g = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let w = want.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut max = 0f32;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let d = (a - b).abs();
        max = max.max(d);
        assert!(d <= slack * (1e-4 + 1e-3 * b.abs()), "{what}[{i}]: got {a}, want {b} (diff {d})");
    }
    eprintln!("{what}: max abs diff {max:.2e}");
    max
}

/// A graph template with its `@KEY@` placeholders filled: paths from `vars`,
/// words from `words`; panics if one is left.
pub fn fill_template(mut yaml: String, vars: &[(&str, &Path)], words: &[(&str, &str)]) -> String {
    for (key, value) in vars {
        yaml = yaml.replace(&format!("@{key}@"), &value.display().to_string());
    }
    for (key, value) in words {
        yaml = yaml.replace(&format!("@{key}@"), value);
    }
    assert!(!yaml.contains("\"@"), "a placeholder is left in:\n{yaml}");
    yaml
}

/// Writes `yaml` as `g.yaml` in the sandbox and runs it; asserts success.
pub fn run_graph(sb: &Sandbox, yaml: &str) {
    sb.write("g.yaml", yaml);
    let out = sb.flow(&["run", "g.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), stderr(&out));
}
