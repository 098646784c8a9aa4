//! Error messages a user can act on: out-of-range numbers, missing models,
//! no backtraces in node errors, usage errors with exit 2, every error of a
//! file at once (cycles included).

mod common;

use common::{event_for, stderr, Sandbox};

#[test]
fn a_seed_beyond_the_int_range_says_so() {
    let sb = Sandbox::new();
    sb.write(
        "g.yaml",
        "flow: 1\nparams: { seed: 18446744073709551615 }\nnodes:\n  t: { op: tensor.random, in: { shape: [2], seed: $seed } }\n",
    );
    let out = sb.flow(&["run", "g.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("outside the range of a 64-bit int"), "{}", stderr(&out));
}

#[test]
fn a_missing_model_is_named_once_and_what_needs_it_is_skipped() {
    let sb = Sandbox::new();
    image::RgbImage::new(4, 4).save(sb.path().join("in.png")).unwrap();
    sb.write(
        "g.yaml",
        "flow: 1\nmodels: { up: ./nowhere/model.bin }\nnodes:\n  img: { op: image.load, in: { path: in.png } }\n  \
         big: { op: image.upscale, in: { model: $up, image: $img } }\n  save: { op: image.save, in: { image: $big, path: out/a.png } }\n",
    );
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 1);
    let error = event_for(&events, "node_failed", "big")["error"].as_str().unwrap().to_string();
    assert_eq!(error.matches("model `").count(), 1, "{error}");
    assert!(!error.contains("././"), "{error}");
    let skipped = event_for(&events, "node_skipped", "save");
    assert_eq!(skipped["cause"], "upstream `big` cannot run");
    assert!(!events.iter().any(|e| e["event"] == "node_failed" && e["node"] == "save"));
}

#[test]
fn node_errors_carry_no_backtrace() {
    let sb = Sandbox::new();
    sb.write(
        "scripts/bad.rhai",
        "fn ports() { #{ inputs: #{}, outputs: #{ t: \"tensor\" } } }\n\
         fn run(i) { #{ t: tensor([[1.0, 2.0]]).matmul(tensor([[1.0, 2.0, 3.0]])) } }\n",
    );
    sb.write("g.yaml", "flow: 1\nnodes:\n  b: { op: script.bad, in: {} }\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flow"))
        .args(["run", "--json", "g.yaml"])
        .current_dir(sb.path())
        .env("FLOW_CACHE_DIR", sb.cache_dir())
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failed: serde_json::Value =
        stdout.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|e| e["event"] == "node_failed").unwrap();
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("matmul") || error.contains("shape"), "{error}");
    assert!(error.lines().count() <= 3 && !error.contains("backtrace"), "{error}");
}

#[test]
fn a_cache_folder_that_is_a_file_is_a_usage_error() {
    let sb = Sandbox::new();
    sb.write("g.yaml", "flow: 1\nnodes:\n  t: { op: text.template, in: { template: hi } }\n");
    sb.write("not-a-folder", "x");
    let out = sb.flow(&["run", "g.yaml", "--cache-dir", "not-a-folder"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("cannot open the cache folder"), "{err}");
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
}

#[test]
fn a_cycle_is_reported_beside_other_errors() {
    let sb = Sandbox::new();
    sb.write(
        "g.yaml",
        "flow: 1\nnodes:\n  a: { op: text.join, in: { items: [$c] } }\n  b: { op: text.join, in: { items: [$a], sepp: x } }\n  \
         c: { op: text.join, in: { items: [$b] } }\n  d: { op: text.jion, in: { items: [x] } }\n",
    );
    let out = sb.flow(&["validate", "g.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("cycle: a -> b -> c -> a"), "{err}");
    assert!(err.contains("unknown op `text.jion`"), "{err}");
    assert!(err.contains("has no input `sepp`"), "{err}");
    assert!(err.contains("3 errors"), "{err}");
}

#[test]
fn a_huge_image_fails_its_node_instead_of_aborting() {
    let sb = Sandbox::new();
    let graph = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs/txt2img.yaml")).unwrap();
    sb.write("g.yaml", &graph);
    let (code, events) = sb.run_json("g.yaml", &["--set", "width=100000", "--set", "height=100000"]);
    assert_eq!(code, 1, "{events:#?}");
    let error = event_for(&events, "node_failed", "noise")["error"].as_str().unwrap().to_string();
    assert!(error.contains("100000x100000 pixels, over the limit"), "{error}");
    event_for(&events, "node_skipped", "save");
}
