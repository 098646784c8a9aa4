//! Ctrl-C stops a run cleanly: exit 130, finished results kept in the cache.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{executed, Sandbox};

#[test]
fn sigint_stops_the_run_and_keeps_finished_results() {
    let sb = Sandbox::new();
    let mut yaml = String::from("flow: 1\nnodes:\n  m0: { op: tensor.random, in: { shape: [500, 500], seed: 1 } }\n");
    for i in 1..=12 {
        yaml.push_str(&format!("  m{i}: {{ op: tensor.matmul, in: {{ a: $m{}, b: $m0 }} }}\n", i - 1));
    }
    yaml.push_str("  save: { op: tensor.save, in: { tensor: $m12, path: out/m.safetensors } }\n");
    sb.write("g.yaml", &yaml);
    let mut child = Command::new(env!("CARGO_BIN_EXE_flow"))
        .args(["run", "--json", "g.yaml"])
        .current_dir(sb.path())
        .env("FLOW_CACHE_DIR", sb.cache_dir())
        .env("FLOW_MODEL_CACHE", common::test_models_dir())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut finished_before = 0;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("\"node_finished\"") && line.contains("\"m1\"") {
            finished_before = 2;
            let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
            assert!(kill.success());
            break;
        }
    }
    assert_eq!(finished_before, 2, "the run ended before it could be interrupted");
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:#?}");
    let last: serde_json::Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["interrupted"], true);
    assert!(!sb.path().join("out/m.safetensors").exists(), "no half-done output");
    // What finished before the interrupt is served from the cache next time.
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 0);
    let ran = executed(&events);
    assert!(!ran.contains(&"m0".to_string()) && !ran.contains(&"m1".to_string()), "{ran:?}");
}
