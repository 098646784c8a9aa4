//! A temporary folder with a ComfyUI-layout models folder holding the tiny
//! single-file checkpoint, for the `flow serve` tests (included with
//! `#[path = "common/comfy_sandbox.rs"] mod comfy_sandbox;`).
#![allow(dead_code)]

use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A sandbox with `models/checkpoints/tiny-sd15-s1.safetensors`.
pub fn sandbox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("models/checkpoints");
    std::fs::create_dir_all(&ckpt).unwrap();
    std::fs::copy(
        root().join("tests/fixtures/tiny-sd15-single/tiny-sd15-s1.safetensors"),
        ckpt.join("tiny-sd15-s1.safetensors"),
    )
    .unwrap();
    dir
}
