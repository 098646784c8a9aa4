//! A closed stdout or stderr (`flow run g.yaml | head -1`) never panics: the
//! run finishes its outputs and cache writes and exits with its own code.

mod common;

use std::process::{Command, Stdio};

use common::{executed, Sandbox};

const GRAPH: &str = r#"flow: 1
models:
  llm: tiny:llama
nodes:
  answer:
    op: llm.generate
    in: { model: $llm, prompt: "Tell me a story.", max_tokens: 24, temperature: 0 }
  show:
    op: debug.print
    in: { value: $answer }
  save:
    op: file.write_text
    in: { path: out/answer.txt, text: $answer }
"#;

/// Runs `flow ARGS` with stdout and/or stderr connected to pipes whose
/// reading end is closed before flow writes anything.
fn run_with_closed(sb: &Sandbox, args: &[&str], close_stdout: bool, close_stderr: bool) -> Option<i32> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flow"))
        .args(args)
        .current_dir(sb.path())
        .env("FLOW_CACHE_DIR", sb.cache_dir())
        .env("FLOW_MODEL_CACHE", common::test_models_dir())
        .stdout(if close_stdout { Stdio::piped() } else { Stdio::null() })
        .stderr(if close_stderr { Stdio::piped() } else { Stdio::null() })
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    child.wait().unwrap().code()
}

#[test]
fn a_closed_stdout_or_stderr_still_finishes_the_run() {
    for (stdout, stderr, json) in [(true, false, false), (false, true, false), (true, true, false), (true, true, true)] {
        let sb = Sandbox::new();
        sb.write("g.yaml", GRAPH);
        let mut args = vec!["run", "g.yaml", "--no-cache"];
        if json {
            args.push("--json");
        }
        assert_eq!(run_with_closed(&sb, &args, stdout, stderr), Some(0), "stdout closed {stdout}, stderr closed {stderr}");
        let answer = std::fs::read_to_string(sb.path().join("out/answer.txt")).unwrap();
        assert!(!answer.is_empty());
        // The results were cached too: nothing runs again.
        let (code, events) = sb.run_json("g.yaml", &[]);
        assert_eq!(code, 0);
        assert!(executed(&events).is_empty(), "{events:#?}");
    }
}

#[test]
fn a_closed_pipe_keeps_the_exit_code_of_a_failed_run() {
    let sb = Sandbox::new();
    sb.write("g.yaml", "flow: 1\nnodes:\n  t: { op: file.read_text, in: { path: missing.txt } }\n  show: { op: debug.print, in: { value: $t } }\n");
    assert_eq!(run_with_closed(&sb, &["run", "g.yaml"], true, true), Some(1));
    sb.write("bad.yaml", "flow: 1\nnodes:\n  t: { op: text.jion }\n");
    assert_eq!(run_with_closed(&sb, &["run", "bad.yaml"], true, true), Some(2));
    assert_eq!(run_with_closed(&sb, &["validate", "bad.yaml"], true, true), Some(2));
    assert_eq!(run_with_closed(&sb, &["ops"], true, true), Some(0));
}
