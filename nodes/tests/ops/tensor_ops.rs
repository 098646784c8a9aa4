use std::collections::HashMap;
use std::fs;

use candle_core::{Device, Tensor};
use flow_engine::{Fingerprint, Value};

use crate::common::*;

fn shape(dims: &[i64]) -> Value {
    Value::list(dims.iter().map(|&d| d.into()).collect())
}

#[test]
fn random_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    // Reference values, also computed by an independent Python implementation
    // of SplitMix64 + Box-Muller.
    let out = run(
        "tensor.random",
        &[("shape", shape(&[2, 3])), ("seed", 42i64.into()), ("generator", "flow".into())],
        &ctx,
    )
    .unwrap();
    assert_eq!(dims(&out, "tensor"), [2, 3]);
    assert_eq!(
        values(&out, "tensor"),
        [
            0.8822489,
            1.3884733,
            -0.45084986,
            0.67071646,
            0.18835263,
            -0.20510402
        ]
    );
    let out = run(
        "tensor.random",
        &[
            ("shape", shape(&[4])),
            ("seed", 42i64.into()),
            ("dist", "uniform".into()),
            ("generator", "flow".into()),
        ],
        &ctx,
    )
    .unwrap();
    assert_eq!(
        values(&out, "tensor"),
        [0.74156487, 0.15991038, 0.2786011, 0.34419066]
    );
    let out = run(
        "tensor.random",
        &[
            ("shape", shape(&[2])),
            ("seed", (-1i64).into()),
            ("dist", "uniform".into()),
            ("generator", "flow".into()),
        ],
        &ctx,
    )
    .unwrap();
    assert_eq!(values(&out, "tensor"), [0.8939429, 0.9125972]);

    // A larger tensor starts with the values of a smaller one.
    let big = run(
        "tensor.random",
        &[("shape", shape(&[3, 5])), ("seed", 42i64.into()), ("generator", "flow".into())],
        &ctx,
    )
    .unwrap();
    assert_eq!(
        values(&big, "tensor")[..6],
        values(
            &run(
                "tensor.random",
                &[("shape", shape(&[6])), ("seed", 42i64.into()), ("generator", "flow".into())],
                &ctx
            )
            .unwrap(),
            "tensor"
        )
    );
}

#[test]
fn random_rejects_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let err = run_err(
        "tensor.random",
        &[
            ("shape", shape(&[2])),
            ("seed", 1i64.into()),
            ("dist", "gauss".into()),
        ],
        &ctx,
    );
    assert_eq!(err, "input `dist` is `gauss`; use `normal` or `uniform`");
    let err = run_err(
        "tensor.random",
        &[("shape", shape(&[2, -1])), ("seed", 1i64.into())],
        &ctx,
    );
    assert_eq!(
        err,
        "input `shape` should be a list of non-negative ints; item 1 is -1"
    );
    let err = run_err(
        "tensor.random",
        &[("shape", shape(&[1 << 40, 1 << 40])), ("seed", 1i64.into())],
        &ctx,
    );
    assert!(err.contains("too many elements"), "{err}");
}

#[test]
fn save_then_load_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let t = tensor(vec![1.0, -2.5, 3.25, 0.0, 5.0, 6.0], &[2, 3]);
    let out = run(
        "tensor.save",
        &[("tensor", t), ("path", "out/t.safetensors".into())],
        &ctx,
    )
    .unwrap();
    assert_eq!(
        out.get("path").unwrap().as_text(),
        Some("out/t.safetensors")
    );
    assert_eq!(entries(&dir.path().join("out")), ["t.safetensors"]);
    let written = ctx.take_effects().written;
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].staleness(dir.path()), None);

    let loaded = run("tensor.load", &[("path", "out/t.safetensors".into())], &ctx).unwrap();
    assert_eq!(dims(&loaded, "tensor"), [2, 3]);
    assert_eq!(values(&loaded, "tensor"), [1.0, -2.5, 3.25, 0.0, 5.0, 6.0]);
    let named = run(
        "tensor.load",
        &[
            ("path", "out/t.safetensors".into()),
            ("name", "tensor".into()),
        ],
        &ctx,
    )
    .unwrap();
    assert_eq!(values(&named, "tensor"), values(&loaded, "tensor"));

    fs::remove_file(dir.path().join("out/t.safetensors")).unwrap();
    assert!(written[0].staleness(dir.path()).is_some());
}

#[test]
fn load_chooses_by_name_and_lists_names() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let path = dir.path().join("two.safetensors");
    let tensors = HashMap::from([
        ("b", Tensor::new(&[2.0f32], &Device::Cpu).unwrap()),
        ("a", Tensor::new(&[1.0f32], &Device::Cpu).unwrap()),
    ]);
    candle_core::safetensors::save(&tensors, &path).unwrap();

    let err = run_err("tensor.load", &[("path", "two.safetensors".into())], &ctx);
    assert!(
        err.ends_with("holds 2 tensors; choose one with `name`: a, b"),
        "{err}"
    );
    let err = run_err(
        "tensor.load",
        &[("path", "two.safetensors".into()), ("name", "c".into())],
        &ctx,
    );
    assert!(
        err.ends_with("has no tensor named `c`; it holds: a, b"),
        "{err}"
    );
    let out = run(
        "tensor.load",
        &[("path", "two.safetensors".into()), ("name", "b".into())],
        &ctx,
    )
    .unwrap();
    assert_eq!(values(&out, "tensor"), [2.0]);

    fs::write(dir.path().join("junk.safetensors"), b"not a tensor file").unwrap();
    let err = run_err("tensor.load", &[("path", "junk.safetensors".into())], &ctx);
    assert!(
        err.contains("junk.safetensors` is not a valid safetensors file"),
        "{err}"
    );

    let load = op("tensor.load");
    let fp = load
        .fingerprint(
            &inputs("tensor.load", &[("path", "two.safetensors".into())]),
            dir.path(),
        )
        .unwrap();
    assert!(matches!(fp, Fingerprint::Content(_)));
}

#[test]
fn add_scale_and_matmul() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let a = tensor(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let row = tensor(vec![10.0, 20.0], &[2]);
    let sum = run("tensor.add", &[("a", a.clone()), ("b", row)], &ctx).unwrap();
    assert_eq!(values(&sum, "tensor"), [11.0, 22.0, 13.0, 24.0]);

    let scaled = run(
        "tensor.scale",
        &[("tensor", a.clone()), ("factor", 0.5.into())],
        &ctx,
    )
    .unwrap();
    assert_eq!(values(&scaled, "tensor"), [0.5, 1.0, 1.5, 2.0]);

    let b = tensor(vec![1.0, 0.0, 1.0, 0.0, 1.0, 1.0], &[2, 3]);
    let product = run("tensor.matmul", &[("a", a.clone()), ("b", b)], &ctx).unwrap();
    assert_eq!(dims(&product, "tensor"), [2, 3]);
    assert_eq!(values(&product, "tensor"), [1.0, 2.0, 3.0, 3.0, 4.0, 7.0]);

    let err = run_err(
        "tensor.matmul",
        &[("a", a.clone()), ("b", tensor(vec![1.0; 3], &[3, 1]))],
        &ctx,
    );
    assert_eq!(
        err,
        "cannot multiply shapes [2, 2] (`a`) and [3, 1] (`b`): the last dimension of `a` (2) must equal the next-to-last of `b` (3)"
    );
    let err = run_err(
        "tensor.add",
        &[("a", a), ("b", tensor(vec![1.0; 3], &[3]))],
        &ctx,
    );
    assert!(
        err.starts_with("cannot add tensors of shapes [2, 2] (`a`) and [3] (`b`)"),
        "{err}"
    );
}
