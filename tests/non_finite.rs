//! NaN and infinities: rejected as graph inputs at validation, and fatal for
//! the node that produces them at run time (never an all-NaN output with
//! exit 0).

mod common;

use common::{event_for, stderr, Sandbox};

#[test]
fn non_finite_literals_and_params_are_located_errors() {
    let sb = Sandbox::new();
    sb.write(
        "g.yaml",
        "flow: 1\nparams: { factor: 1.0 }\nnodes:\n  t: { op: tensor.random, in: { shape: [2], seed: 1 } }\n  \
         s: { op: tensor.scale, in: { tensor: $t, factor: $factor } }\n  \
         save: { op: tensor.save, in: { tensor: $s, path: out/t.safetensors } }\n",
    );
    for value in [".nan", ".inf", "-.inf"] {
        let out = sb.flow(&["run", "g.yaml", "--set", &format!("factor={value}")]);
        assert_eq!(out.status.code(), Some(2), "{value}");
        let err = stderr(&out);
        assert!(err.contains("g.yaml:5:") && err.contains("expects a finite number"), "{err}");
    }
    assert!(!sb.path().join("out/t.safetensors").exists());
}

#[test]
fn a_node_producing_nan_fails_and_nothing_downstream_runs() {
    let sb = Sandbox::new();
    sb.write(
        "scripts/broken.rhai",
        "fn ports() { #{ inputs: #{}, outputs: #{ latent: \"latent\" } } }\n\
         fn run(i) { #{ latent: (tensor([1.0, 2.0]) / tensor([0.0, 0.0])) * 0.0 } }\n",
    );
    sb.write(
        "g.yaml",
        "flow: 1\nnodes:\n  l: { op: script.broken, in: {} }\n  save: { op: tensor.save, in: { tensor: $l, path: out/l.safetensors } }\n",
    );
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 1);
    let error = event_for(&events, "node_failed", "l")["error"].as_str().unwrap().to_string();
    assert_eq!(error, "op `script.broken` produced non-finite values (NaN) in output `latent`");
    event_for(&events, "node_skipped", "save");
    assert!(!sb.path().join("out/l.safetensors").exists());
    // Nothing was cached: the next run fails the same way.
    assert_eq!(sb.run_json("g.yaml", &[]).0, 1);
}
