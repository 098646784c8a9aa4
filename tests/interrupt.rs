//! Ctrl-C (SIGINT) and SIGTERM stop a run cleanly: exit 130, finished
//! results kept in the cache.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{executed, matmul_chain, Sandbox};

#[test]
fn sigint_stops_the_run_and_keeps_finished_results() {
    stops_cleanly_on("-INT");
}

#[test]
fn sigterm_stops_the_run_like_ctrl_c() {
    stops_cleanly_on("-TERM");
}

fn stops_cleanly_on(signal: &str) {
    let sb = Sandbox::new();
    sb.write("g.yaml", &matmul_chain(500, 12, "out/m.safetensors"));
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
            let kill = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
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
