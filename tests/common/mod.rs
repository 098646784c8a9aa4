//! Helpers for the end-to-end tests: run the real `flow` binary in a
//! temporary folder with its own cache, and read its `--json` events.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;

/// Where tests keep downloaded models, shared by every test of a run:
/// `$FLOW_TEST_MODELS_DIR`, else `target/test-models`.
pub fn test_models_dir() -> PathBuf {
    std::env::var_os("FLOW_TEST_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-models"))
}

/// A temporary project folder with its own cache folder.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.path().join("cache")
    }

    /// Writes a file relative to the sandbox.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Runs `flow ARGS` in the sandbox with its cache folder.
    pub fn flow(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_flow"))
            .args(args)
            .current_dir(self.path())
            .env("FLOW_CACHE_DIR", self.cache_dir())
            .env("FLOW_MODEL_CACHE", test_models_dir())
            .env_remove("FLOW_MEMORY_BUDGET")
            .env_remove("FLOW_MODELS_DIR")
            .output()
            .expect("run flow")
    }

    /// `flow run --json GRAPH EXTRA...`: exit code and events.
    pub fn run_json(&self, graph: &str, extra: &[&str]) -> (i32, Vec<Json>) {
        let mut args = vec!["run", "--json", graph];
        args.extend_from_slice(extra);
        let out = self.flow(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let events = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}\nstderr: {}", String::from_utf8_lossy(&out.stderr))))
            .collect();
        (out.status.code().unwrap_or(-1), events)
    }
}

/// Ids of nodes that executed (node_started events).
pub fn executed(events: &[Json]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "node_started")
        .map(|e| e["node"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// The first event of kind `event` for `node`.
pub fn event_for<'a>(events: &'a [Json], event: &str, node: &str) -> &'a Json {
    events
        .iter()
        .find(|e| e["event"] == event && e["node"] == node)
        .unwrap_or_else(|| panic!("no {event} for {node} in {events:#?}"))
}

/// Text of a finished process's stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Text of a finished process's stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A graph that takes a while: a `size`×`size` random matrix multiplied
/// `len` times by itself scaled by 1/sqrt(size), so that the values stay
/// finite (nodes `m0` … `m{len}`, the seed a param `seed`), saved to `path`.
pub fn matmul_chain(size: usize, len: usize, path: &str) -> String {
    let mut yaml = format!(
        "flow: 1\nparams: {{ seed: 1 }}\nnodes:\n  m0: {{ op: tensor.random, in: {{ shape: [{size}, {size}], seed: $seed }} }}\n  \
         w: {{ op: tensor.scale, in: {{ tensor: $m0, factor: {} }} }}\n",
        1.0 / (size as f64).sqrt()
    );
    for i in 1..=len {
        yaml.push_str(&format!("  m{i}: {{ op: tensor.matmul, in: {{ a: $m{}, b: $w }} }}\n", i - 1));
    }
    yaml.push_str(&format!("  save: {{ op: tensor.save, in: {{ tensor: $m{len}, path: {path} }} }}\n"));
    yaml
}
