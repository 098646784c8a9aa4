//! Scheduling through the real binary: real concurrency, failure isolation.

mod common;

use common::{event_for, executed, Sandbox};

#[test]
fn independent_heavy_branches_overlap_in_time() {
    let sb = Sandbox::new();
    // Two independent chains of large matrix products (each takes a while).
    sb.write(
        "g.yaml",
        r#"flow: 1
nodes:
  a: { op: tensor.random, in: { shape: [700, 700], seed: 1 } }
  b: { op: tensor.random, in: { shape: [700, 700], seed: 2 } }
  left: { op: tensor.matmul, in: { a: $a, b: $b } }
  right: { op: tensor.matmul, in: { a: $b, b: $a } }
  left2: { op: tensor.matmul, in: { a: $left, b: $left } }
  right2: { op: tensor.matmul, in: { a: $right, b: $right } }
  save_left: { op: tensor.save, in: { tensor: $left2, path: out/l.safetensors } }
  save_right: { op: tensor.save, in: { tensor: $right2, path: out/r.safetensors } }
"#,
    );
    let (code, events) = sb.run_json("g.yaml", &["--jobs", "2"]);
    assert_eq!(code, 0);
    let t = |ev: &str, node: &str| event_for(&events, ev, node)["t_ms"].as_f64().unwrap();
    // Both branches' products were running at the same moment: each started
    // before the other finished.
    let overlap = |x: &str, y: &str| t("node_started", x) < t("node_finished", y) && t("node_started", y) < t("node_finished", x);
    assert!(
        overlap("left", "right") || overlap("left2", "right2"),
        "no overlap between the branches: {events:#?}"
    );
}

#[test]
fn a_failing_node_fails_only_its_descendants() {
    let sb = Sandbox::new();
    sb.write(
        "g.yaml",
        r#"flow: 1
nodes:
  missing: { op: file.read_text, in: { path: does-not-exist.txt } }
  shout: { op: text.join, in: { items: [$missing, "!"] } }
  write_bad: { op: file.write_text, in: { path: out/bad.txt, text: $shout } }
  fine: { op: text.join, in: { items: [all, good], sep: " " } }
  write_good: { op: file.write_text, in: { path: out/good.txt, text: $fine } }
"#,
    );
    let out = sb.flow(&["run", "g.yaml"]);
    let stdout = common::stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", common::stderr(&out));
    assert_eq!(std::fs::read_to_string(sb.path().join("out/good.txt")).unwrap(), "all good");
    assert!(!sb.path().join("out/bad.txt").exists());
    assert!(stdout.contains("missing     file.read_text   failed"), "{stdout}");
    assert!(stdout.contains("skipped"), "{stdout}");
    assert!(common::stderr(&out).contains("does-not-exist.txt"), "{}", common::stderr(&out));
    // The good branch is cached; the failed one runs again on the next try.
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 1);
    assert_eq!(executed(&events), ["missing"]);
}

#[test]
fn only_runs_what_a_node_needs() {
    let sb = Sandbox::new();
    sb.write(
        "g.yaml",
        "flow: 1\nnodes:\n  a: { op: text.join, in: { items: [a] } }\n  b: { op: text.join, in: { items: [$a, b] } }\n  c: { op: text.join, in: { items: [c] } }\n  out: { op: debug.print, in: { value: $c } }\n",
    );
    let (code, events) = sb.run_json("g.yaml", &["--only", "b"]);
    assert_eq!(code, 0);
    assert_eq!(executed(&events), ["a", "b"]);
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 0);
    assert_eq!(executed(&events), ["c", "out"]);
    let out = sb.flow(&["run", "g.yaml", "--only", "bb"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(common::stderr(&out).contains("did you mean `b`?"));
}
