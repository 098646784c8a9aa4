//! Graph-wide input defaults (`defaults:`): applied to every node whose op
//! has the input and that does not set it, keyed exactly as if written on
//! the node, and checked like any input (located errors, did-you-mean).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::{stderr, Sandbox};
use flow_engine::graph::{self, Graph, Override};
use flow_engine::run::{NoModels, PlanOptions};
use flow_engine::{Engine, EngineConfig};

fn load(yaml: &str, overrides: &[Override]) -> Result<Graph, String> {
    graph::from_bytes("g.yaml", Path::new("."), yaml.as_bytes(), overrides, &flow_nodes::registry())
        .map_err(|d| d.render())
}

/// Cache keys of every planned node, by node id.
fn keys(yaml: &str, overrides: &[Override]) -> BTreeMap<String, String> {
    let g = load(yaml, overrides).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::new(flow_nodes::registry(), Arc::new(NoModels), EngineConfig::default()).unwrap();
    let plan = engine.plan(&g, &PlanOptions::default());
    g.nodes
        .iter()
        .zip(&plan.nodes)
        .filter_map(|(n, p)| Some((n.id.clone(), p.as_ref()?.key?.to_hex())))
        .collect()
}

const WITH_DEFAULTS: &str = "flow: 1
params: { s: 7 }
defaults: { seed: $s, dist: uniform, sep: \" + \" }
nodes:
  a: { op: tensor.random, in: { shape: [2, 3] } }
  b: { op: tensor.random, in: { shape: [4], seed: 1 } }
  t: { op: text.join, in: { items: [x, y] } }
";

const WRITTEN_OUT: &str = "flow: 1
params: { s: 7 }
nodes:
  a: { op: tensor.random, in: { shape: [2, 3], seed: $s, dist: uniform } }
  b: { op: tensor.random, in: { shape: [4], seed: 1, dist: uniform } }
  t: { op: text.join, in: { items: [x, y], sep: \" + \" } }
";

#[test]
fn a_default_keys_a_node_as_writing_it_on_the_node_does() {
    let with = keys(WITH_DEFAULTS, &[]);
    assert_eq!(with.len(), 3, "{with:?}");
    assert_eq!(with, keys(WRITTEN_OUT, &[]));
    // A node's own value wins over the default: `b` keeps seed 1.
    let other_seed = keys(&WITH_DEFAULTS.replace("seed: $s, ", "seed: 5, "), &[]);
    assert_eq!(other_seed["b"], with["b"]);
    assert_ne!(other_seed["a"], with["a"], "`a` takes its seed from the default");
    // `--set` reaches defaults through their params.
    let set = keys(WITH_DEFAULTS, &[Override::parse("s=9").unwrap()]);
    assert_ne!(set["a"], with["a"]);
    assert_eq!(set["a"], keys(&WRITTEN_OUT.replace("seed: $s", "seed: 9"), &[])["a"]);
}

#[test]
fn defaults_fill_required_inputs_and_models() {
    let yaml = "flow: 1
models: { sd: tiny:sd }
defaults: { model: $sd, seed: 3 }
nodes:
  r: { op: tensor.random, in: { shape: [1] } }
  cond: { op: sd.encode_prompt, in: { prompt: a lighthouse } }
";
    let g = load(yaml, &[]).unwrap_or_else(|e| panic!("{e}"));
    let cond = &g.nodes[g.node_index("cond").unwrap()];
    assert!(matches!(&cond.inputs["model"], graph::Expr::Model { name, .. } if name == "sd"), "{:?}", cond.inputs);
    let r = &g.nodes[g.node_index("r").unwrap()];
    assert!(!r.inputs.contains_key("model"), "an op without the input gets nothing");
}

#[test]
fn a_null_default_changes_nothing() {
    let yaml = WRITTEN_OUT.replace("params: { s: 7 }", "params: { s: 7 }\ndefaults: { dist: null }");
    assert_eq!(keys(&yaml, &[]), keys(WRITTEN_OUT, &[]));
}

#[test]
fn mistakes_in_defaults_are_located_errors() {
    let sb = Sandbox::new();
    sb.write(
        "g.yaml",
        "flow: 1
params: { s: 7 }
defaults:
  sead: 1
  device: cpu
  seed: abc
  sep: $t
  items: $nowhere
nodes:
  r: { op: tensor.random, in: { shape: [2] } }
  t: { op: text.join, in: { items: [x] } }
",
    );
    let out = sb.flow(&["validate", "g.yaml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let expect = [
        ("g.yaml:4:3: error: default `sead`: no op in this graph has an input `sead`", Some("did you mean `seed`?")),
        ("g.yaml:5:3: error: default `device`: no op in this graph has an input `device`", Some("`device` is set per node")),
        (
            "g.yaml:6:9: error: default `seed` for input `seed` of `tensor.random`: expects int, got the literal text \"abc\"",
            None,
        ),
        ("g.yaml:7:8: error: default `sep` links node `t`: defaults cannot link node outputs", None),
        ("g.yaml:8:10: error: `$nowhere` refers to nothing", None),
    ];
    for (line, help) in expect {
        assert!(err.contains(line), "missing `{line}` in:\n{err}");
        if let Some(h) = help {
            assert!(err.contains(h), "missing help `{h}` in:\n{err}");
        }
    }
    // Each mistake once, and no node reported as missing what a default gives.
    assert!(err.contains("5 errors in g.yaml"), "{err}");
}

#[test]
fn a_misspelt_defaults_key_is_suggested() {
    let err = load("flow: 1\ndefault: { seed: 1 }\nnodes: {}\n", &[]).err().expect("an error");
    assert!(err.contains("unknown top-level key `default`") && err.contains("did you mean `defaults`?"), "{err}");
    let err = load("flow: 1\ndefaults: [seed]\nnodes: {}\n", &[]).err().expect("an error");
    assert!(err.contains("`defaults` must be a map"), "{err}");
}

#[test]
fn a_graph_wide_generator_reaches_every_op_that_draws_random_numbers() {
    let with = "flow: 1
defaults: { generator: flow }
nodes:
  a: { op: tensor.random, in: { shape: [2, 3], seed: 1 } }
  b: { op: tensor.random, in: { shape: [3], seed: 2, generator: torch } }
";
    let written = "flow: 1
nodes:
  a: { op: tensor.random, in: { shape: [2, 3], seed: 1, generator: flow } }
  b: { op: tensor.random, in: { shape: [3], seed: 2, generator: torch } }
";
    let keyed = keys(with, &[]);
    assert_eq!(keyed, keys(written, &[]));
    assert_ne!(keyed["a"], keys(&written.replace("generator: flow", "generator: torch"), &[])["a"]);
    let err = load(&with.replace("generator: flow", "generator: numpy"), &[]).err().expect("an error");
    assert!(
        err.contains("g.yaml:2:24: error: default `generator` for input `generator` of `tensor.random`: `numpy` is not one of flow, torch"),
        "{err}"
    );
}
