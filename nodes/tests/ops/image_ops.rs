use std::collections::HashMap;
use std::fs;
use std::io::Cursor;
use std::path::Path;

use flow_engine::{Fingerprint, Provenance, Value};

use crate::common::*;

/// Every 8-bit value in a [1, c, h, w] image, as k / 255.
fn all_levels(c: usize, h: usize, w: usize) -> Vec<f32> {
    (0..c * h * w)
        .map(|i| ((i * 37 + 11) % 256) as f32 / 255.0)
        .collect()
}

/// The text chunks of a PNG file, tEXt and iTXt alike.
fn png_text(path: &Path) -> HashMap<String, String> {
    let decoder = png::Decoder::new(Cursor::new(fs::read(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    let mut text: HashMap<String, String> = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    for chunk in &info.utf8_text {
        text.insert(chunk.keyword.clone(), chunk.get_text().unwrap());
    }
    text
}

#[test]
fn png_round_trip_is_exact_for_8_bit_values() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    for (c, name) in [(1, "gray.png"), (3, "rgb.png"), (4, "rgba.png")] {
        let data = all_levels(c, 16, 17);
        let out = run(
            "image.save",
            &[
                ("image", image(data.clone(), (1, c, 16, 17))),
                ("path", name.into()),
            ],
            &ctx,
        )
        .unwrap();
        assert_eq!(out.get("path").unwrap().as_text(), Some(name));
        let loaded = run("image.load", &[("path", name.into())], &ctx).unwrap();
        assert_eq!(dims(&loaded, "image"), [1, c, 16, 17]);
        assert_eq!(values(&loaded, "image"), data, "{name}");
    }
    assert_eq!(entries(dir.path()), ["gray.png", "rgb.png", "rgba.png"]);
}

#[test]
fn save_rounds_and_clamps() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let data = vec![-0.5, 0.0, 0.5 / 255.0, 0.49 / 255.0, 1.0, 7.0];
    run(
        "image.save",
        &[
            ("image", image(data, (1, 1, 2, 3))),
            ("path", "q.png".into()),
        ],
        &ctx,
    )
    .unwrap();
    let loaded = run("image.load", &[("path", "q.png".into())], &ctx).unwrap();
    assert_eq!(
        values(&loaded, "image"),
        [0.0, 0.0, 1.0 / 255.0, 0.0, 1.0, 1.0]
    );
}

#[test]
fn saved_png_carries_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let provenance = Provenance {
        graph_hash: "0123abcd".into(),
        graph_name: "demo".into(),
        params: serde_json::json!({ "prompt": "a café at night", "seed": 7 }),
        ..Provenance::default()
    };
    let ctx = ctx_with(dir.path(), flow_engine::events::null_sink(), provenance);
    run(
        "image.save",
        &[
            ("image", image(vec![0.5; 12], (1, 3, 2, 2))),
            ("path", "p.png".into()),
        ],
        &ctx,
    )
    .unwrap();
    let text = png_text(&dir.path().join("p.png"));
    assert_eq!(text["flow:graph_hash"], "0123abcd");
    assert_eq!(text["flow:graph_name"], "demo");
    let params: serde_json::Value = serde_json::from_str(&text["flow:params"]).unwrap();
    assert_eq!(
        params,
        serde_json::json!({ "prompt": "a café at night", "seed": 7 })
    );
    assert_eq!(text["flow:version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        text["parameters"],
        format!(
            "a café at night\nSeed: 7, Size: 2x2, Graph: demo, Graph hash: 0123abcd, Version: flow {}",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn non_latin1_text_goes_to_itxt() {
    let dir = tempfile::tempdir().unwrap();
    let provenance = Provenance {
        params: serde_json::json!({ "prompt": "灯台" }),
        ..Provenance::default()
    };
    let ctx = ctx_with(dir.path(), flow_engine::events::null_sink(), provenance);
    run(
        "image.save",
        &[
            ("image", image(vec![0.0; 4], (1, 1, 2, 2))),
            ("path", "u.png".into()),
        ],
        &ctx,
    )
    .unwrap();
    let text = png_text(&dir.path().join("u.png"));
    assert!(
        text["parameters"].starts_with("灯台\n"),
        "{}",
        text["parameters"]
    );
    assert_eq!(text["flow:params"], r#"{"prompt":"灯台"}"#);
}

#[test]
fn batches_are_saved_as_numbered_files() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let data: Vec<f32> = (0..8).map(|i| i as f32 / 255.0).collect();
    let out = run(
        "image.save",
        &[
            ("image", image(data, (2, 1, 2, 2))),
            ("path", "out/b.png".into()),
        ],
        &ctx,
    )
    .unwrap();
    assert_eq!(out.get("path").unwrap().as_text(), Some("out/b-{i}.png"));
    let paths: Vec<String> = match out.get("paths").unwrap() {
        Value::List(items) => items
            .iter()
            .map(|v| v.as_text().unwrap().to_string())
            .collect(),
        other => panic!("paths is {other:?}"),
    };
    assert_eq!(paths, ["out/b-0.png", "out/b-1.png"]);
    assert_eq!(entries(&dir.path().join("out")), ["b-0.png", "b-1.png"]);
    let second = run("image.load", &[("path", "out/b-1.png".into())], &ctx).unwrap();
    assert_eq!(
        values(&second, "image"),
        [4.0 / 255.0, 5.0 / 255.0, 6.0 / 255.0, 7.0 / 255.0]
    );

    let written = ctx.take_effects().written;
    let names: Vec<&str> = written.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(names, ["out/b-0.png", "out/b-1.png"]);
    assert!(written.iter().all(|w| w.staleness(dir.path()).is_none()));
    fs::remove_file(dir.path().join("out/b-1.png")).unwrap();
    assert!(written[1].staleness(dir.path()).is_some());
}

#[test]
fn save_and_load_report_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let err = run_err(
        "image.save",
        &[
            ("image", image(vec![0.0; 8], (1, 2, 2, 2))),
            ("path", "x.png".into()),
        ],
        &ctx,
    );
    assert_eq!(
        err,
        "input `image` has 2 channels (shape [1, 2, 2, 2]); images have 1, 3 or 4"
    );
    let flat = Value::tensor(
        flow_engine::ValueType::Image,
        candle_core::Tensor::zeros((2, 2), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap(),
    );
    let err = run_err(
        "image.save",
        &[("image", flat), ("path", "x.png".into())],
        &ctx,
    );
    assert_eq!(
        err,
        "input `image` should be an image [N, C, H, W], got a tensor of shape [2, 2]"
    );

    fs::write(dir.path().join("bad.png"), b"GIF89a").unwrap();
    let err = run_err("image.load", &[("path", "bad.png".into())], &ctx);
    assert!(
        err.starts_with("cannot decode `") && err.contains("bad.png` as PNG"),
        "{err}"
    );
    let fp = op("image.load")
        .fingerprint(
            &inputs("image.load", &[("path", "bad.png".into())]),
            dir.path(),
        )
        .unwrap();
    assert!(matches!(fp, Fingerprint::Content(_)));
}

#[test]
fn nearest_2x_repeats_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let img = image(vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6], (1, 1, 2, 3));
    let out = run(
        "image.resize",
        &[
            ("image", img),
            ("scale", 2.0.into()),
            ("filter", "nearest".into()),
        ],
        &ctx,
    )
    .unwrap();
    assert_eq!(dims(&out, "image"), [1, 1, 4, 6]);
    let row0 = [0.1, 0.1, 0.2, 0.2, 0.3, 0.3];
    let row1 = [0.4, 0.4, 0.5, 0.5, 0.6, 0.6];
    assert_eq!(values(&out, "image"), [row0, row0, row1, row1].concat());
}

#[test]
fn lanczos_keeps_a_constant_image_constant() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let img = image(vec![0.3; 3 * 9 * 7], (1, 3, 9, 7));
    for (port, value) in [("scale", Value::from(2.5)), ("width", Value::from(3i64))] {
        let out = run(
            "image.resize",
            &[("image", img.clone()), (port, value)],
            &ctx,
        )
        .unwrap();
        assert!(
            values(&out, "image")
                .iter()
                .all(|&x| (x - 0.3).abs() < 1e-6),
            "{port}"
        );
    }
}

#[test]
fn bilinear_matches_hand_computed_values() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    // A 2x2 image to 4x4: each axis maps [a, b] to [a, (3a+b)/4, (a+3b)/4, b].
    let img = image(vec![0.0, 1.0, 1.0, 0.0], (1, 1, 2, 2));
    let out = run(
        "image.resize",
        &[
            ("image", img),
            ("width", 4i64.into()),
            ("height", 4i64.into()),
            ("filter", "bilinear".into()),
        ],
        &ctx,
    )
    .unwrap();
    #[rustfmt::skip]
    let want = [
        0.0,   0.25,   0.75,   1.0,
        0.25,  0.375,  0.625,  0.75,
        0.75,  0.625,  0.375,  0.25,
        1.0,   0.75,   0.25,   0.0,
    ];
    assert_eq!(values(&out, "image"), want);
}

#[test]
fn resize_keeps_aspect_and_reports_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let img = image(vec![0.5; 2 * 4 * 40 * 30], (2, 4, 40, 30));
    let out = run(
        "image.resize",
        &[
            ("image", img.clone()),
            ("width", 15i64.into()),
            ("filter", "bicubic".into()),
        ],
        &ctx,
    )
    .unwrap();
    assert_eq!(dims(&out, "image"), [2, 4, 20, 15]);

    let err = run_err(
        "image.resize",
        &[
            ("image", img.clone()),
            ("scale", 2.0.into()),
            ("filter", "cubic".into()),
        ],
        &ctx,
    );
    assert_eq!(
        err,
        "input `filter` is `cubic`; use one of lanczos, bicubic, bilinear, nearest, nearest-exact, torch-bilinear, torch-bicubic, area"
    );
    let err = run_err(
        "image.resize",
        &[
            ("image", img),
            ("scale", 2.0.into()),
            ("height", 3i64.into()),
        ],
        &ctx,
    );
    assert_eq!(
        err,
        "give either `scale` or `width`/`height`, not both (got scale 2, width -, height 3)"
    );
}
