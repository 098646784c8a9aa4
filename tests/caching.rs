//! Cache behaviour through the real binary: counted executions across
//! processes, edits, renames, corrupt entries.

mod common;

use common::{executed, Sandbox};

const PIPELINE: &str = r#"flow: 1
params:
  seed: 1
nodes:
  noise:
    op: tensor.random
    in: { shape: [8, 8], seed: $seed }
  other:
    op: tensor.random
    in: { shape: [8, 8], seed: 99 }
  product:
    op: tensor.matmul
    in: { a: $noise, b: $other }
  scaled:
    op: tensor.scale
    in: { tensor: $product, factor: 0.5 }
  save:
    op: tensor.save
    in: { tensor: $scaled, path: out/result.safetensors }
"#;

#[test]
fn an_unchanged_graph_runs_nothing_in_a_new_process() {
    let sb = Sandbox::new();
    sb.write("g.yaml", PIPELINE);
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 0);
    assert_eq!(executed(&events), ["noise", "other", "product", "save", "scaled"]);
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 0);
    assert!(executed(&events).is_empty(), "{events:#?}");
    let finished = events.last().unwrap();
    assert_eq!(finished["event"], "run_finished");
    assert_eq!(finished["ran"], 0);
}

#[test]
fn a_changed_literal_reruns_exactly_that_node_and_its_descendants() {
    let sb = Sandbox::new();
    sb.write("g.yaml", PIPELINE);
    assert_eq!(sb.run_json("g.yaml", &[]).0, 0);
    sb.write("g.yaml", &PIPELINE.replace("factor: 0.5", "factor: 0.25"));
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 0);
    assert_eq!(executed(&events), ["save", "scaled"]);
    let started = common::event_for(&events, "node_started", "scaled");
    assert_eq!(started["reason"], "input `factor` changed");
    // A param override is a changed literal too.
    let (_, events) = sb.run_json("g.yaml", &["--set", "seed=2"]);
    assert_eq!(executed(&events), ["noise", "product", "save", "scaled"]);
}

#[test]
fn renaming_a_node_reruns_nothing() {
    let sb = Sandbox::new();
    sb.write("g.yaml", PIPELINE);
    assert_eq!(sb.run_json("g.yaml", &[]).0, 0);
    let renamed = PIPELINE.replace("  product:", "  matmul_result:").replace("$product", "$matmul_result");
    sb.write("g.yaml", &renamed);
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 0);
    assert!(executed(&events).is_empty(), "{events:#?}");
}

#[test]
fn a_deleted_output_file_is_written_again() {
    let sb = Sandbox::new();
    sb.write("g.yaml", PIPELINE);
    assert_eq!(sb.run_json("g.yaml", &[]).0, 0);
    std::fs::remove_file(sb.path().join("out/result.safetensors")).unwrap();
    let (_, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(executed(&events), ["save"]);
    assert!(sb.path().join("out/result.safetensors").exists());
}

#[test]
fn a_corrupt_cache_entry_is_recomputed_not_trusted() {
    let sb = Sandbox::new();
    sb.write("g.yaml", PIPELINE);
    assert_eq!(sb.run_json("g.yaml", &[]).0, 0);
    // Corrupt every entry on disk: flip a byte in the middle of each file.
    let mut corrupted = 0;
    for entry in walk(&sb.cache_dir().join("v1/objects")) {
        let mut bytes = std::fs::read(&entry).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&entry, bytes).unwrap();
        corrupted += 1;
    }
    assert!(corrupted >= 5, "expected one entry per node, found {corrupted}");
    // The output node needs re-checking first: delete its file so the chain is needed.
    std::fs::remove_file(sb.path().join("out/result.safetensors")).unwrap();
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 0, "{events:#?}");
    assert_eq!(executed(&events), ["noise", "other", "product", "save", "scaled"]);
    assert!(events.iter().any(|e| e["event"] == "warning" && e["message"].as_str().unwrap().contains("corrupt")));
    // The recomputed entries are sound again.
    std::fs::remove_file(sb.path().join("out/result.safetensors")).unwrap();
    let (_, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(executed(&events), ["save"]);
}

#[test]
fn no_cache_runs_everything_and_cache_false_runs_that_node() {
    let sb = Sandbox::new();
    sb.write("g.yaml", PIPELINE);
    assert_eq!(sb.run_json("g.yaml", &[]).0, 0);
    let (_, events) = sb.run_json("g.yaml", &["--no-cache"]);
    assert_eq!(executed(&events).len(), 5);
    sb.write("g.yaml", &PIPELINE.replace("op: tensor.save\n", "op: tensor.save\n    cache: false\n"));
    let (_, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(executed(&events), ["save"]);
}

#[test]
fn cache_stats_and_clear() {
    let sb = Sandbox::new();
    sb.write("g.yaml", PIPELINE);
    assert_eq!(sb.run_json("g.yaml", &[]).0, 0);
    let out = sb.flow(&["cache", "stats"]);
    assert!(common::stdout(&out).contains("entries: 5"), "{}", common::stdout(&out));
    let out = sb.flow(&["cache", "clear"]);
    assert!(common::stdout(&out).contains("removed 5 entries"), "{}", common::stdout(&out));
    let (_, events) = sb.run_json("g.yaml", &["--no-cache"]);
    assert_eq!(executed(&events).len(), 5);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
