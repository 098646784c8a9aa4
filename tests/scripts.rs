//! rhai script nodes through the real binary: the sandbox's limits, located
//! errors at validation and at run time, and caching by script content.

mod common;

use std::process::Command;

use common::{event_for, executed, Sandbox};
use serde_json::Value as Json;

/// A script with one `any` input `x` and one `any` output `y`, whose `run`
/// body is `body`.
fn echo(body: &str) -> String {
    format!("fn ports() {{ #{{ inputs: #{{ x: \"any\" }}, outputs: #{{ y: \"any\" }} }} }}\nfn run(i) {{\n{body}\n}}\n")
}

/// A graph running `scripts/NAME.rhai` on x = 1 and writing its result.
fn graph(name: &str) -> String {
    format!(
        "flow: 1\nnodes:\n  s:\n    op: script.{name}\n    in: {{ x: 1 }}\n  save:\n    op: file.write_text\n    in: {{ path: out/{name}.txt, text: \"${{s}}\" }}\n"
    )
}

/// Runs the graph of script `name` whose run body is `body`: exit code and
/// the error of node `s`.
fn failing(sb: &Sandbox, name: &str, body: &str) -> (i32, String) {
    sb.write(&format!("scripts/{name}.rhai"), &echo(body));
    sb.write(&format!("{name}.yaml"), &graph(name));
    let (code, events) = sb.run_json(&format!("{name}.yaml"), &[]);
    let failed = events.iter().find(|e| e["event"] == "node_failed" && e["node"] == "s");
    (code, failed.map(|e| e["error"].as_str().unwrap().to_string()).unwrap_or_default())
}

#[test]
fn an_endless_loop_is_stopped_by_the_operations_limit() {
    let sb = Sandbox::new();
    let (code, error) = failing(&sb, "spin", "let n = 0; loop { n += 1; }");
    assert_eq!(code, 1);
    assert!(error.starts_with("scripts/spin.rhai: too many operations"), "{error}");
}

#[test]
fn a_slow_script_is_stopped_by_the_deadline() {
    let sb = Sandbox::new();
    sb.write("scripts/slow.rhai", &echo("let n = 0; loop { n += 1; }"));
    sb.write("slow.yaml", &graph("slow"));
    let out = Command::new(env!("CARGO_BIN_EXE_flow"))
        .args(["run", "--json", "slow.yaml"])
        .current_dir(sb.path())
        .env("FLOW_CACHE_DIR", sb.cache_dir())
        .env("FLOW_SCRIPT_TIMEOUT", "0.3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = common::stdout(&out);
    let events: Vec<Json> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let error = event_for(&events, "node_failed", "s")["error"].as_str().unwrap().to_string();
    assert!(error.contains("scripts/slow.rhai: timed out after 0.3s") && error.contains("FLOW_SCRIPT_TIMEOUT"), "{error}");
    let ms = event_for(&events, "node_failed", "s")["ms"].as_f64().unwrap();
    assert!(ms < 10_000.0, "{ms}");
}

#[test]
fn endless_recursion_is_stopped() {
    let sb = Sandbox::new();
    let (code, error) = failing(&sb, "deep", "fn_deep(0)");
    assert_eq!(code, 1);
    assert!(error.contains("Function not found: fn_deep"), "{error}");
    sb.write("scripts/deep.rhai", &format!("fn down(n) {{ down(n + 1) }}\n{}", echo("down(0)")));
    let (code, events) = sb.run_json("deep.yaml", &[]);
    assert_eq!(code, 1);
    let error = event_for(&events, "node_failed", "s")["error"].as_str().unwrap();
    assert!(error.contains("scripts/deep.rhai") && error.contains("stack overflow: more than 64 nested function calls"), "{error}");
}

#[test]
fn eval_is_refused_at_validation() {
    let sb = Sandbox::new();
    sb.write("scripts/ev.rhai", &echo("eval(\"40 + 2\")"));
    sb.write("ev.yaml", &graph("ev"));
    let out = sb.flow(&["validate", "ev.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = common::stderr(&out);
    assert!(err.contains("ev.yaml:4:9: error: op `script.ev`: scripts/ev.rhai:3:1:") && err.contains("'eval' is disabled"), "{err}");
}

#[test]
fn imports_outside_the_script_folder_are_refused() {
    let sb = Sandbox::new();
    sb.write("outside.rhai", "fn secret() { 42 }");
    sb.write("scripts/imp.rhai", &format!("import \"../outside\" as o;\n{}", echo("o::secret()")));
    sb.write("imp.yaml", &graph("imp"));
    let out = sb.flow(&["validate", "imp.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = common::stderr(&out);
    assert!(
        err.contains("scripts/imp.rhai:1:1: import `../outside` refused: a script may only import modules inside its own folder `scripts`"),
        "{err}"
    );
}

#[test]
fn file_access_attempts_fail_clearly() {
    let sb = Sandbox::new();
    let (code, error) = failing(&sb, "file", "open(\"/etc/passwd\")");
    assert_eq!(code, 1);
    assert!(error.starts_with("scripts/file.rhai:3:1: Function not found: open"), "{error}");
    sb.write("scripts/abs.rhai", &format!("import \"/etc/passwd\" as p;\n{}", echo("1")));
    sb.write("abs.yaml", &graph("abs"));
    let err = common::stderr(&sb.flow(&["validate", "abs.yaml"]));
    assert!(err.contains("import `/etc/passwd` refused"), "{err}");
}

#[test]
fn a_compile_error_is_located_at_validation() {
    let sb = Sandbox::new();
    sb.write("scripts/x.rhai", &echo("let a = ;"));
    sb.write("graphs/g.yaml", &graph("x"));
    let out = sb.flow(&["validate", "graphs/g.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = common::stderr(&out);
    assert!(err.contains("graphs/g.yaml:4:9: error: op `script.x`: scripts/x.rhai:3:9: "), "{err}");
    assert!(err.contains("op: script.x"), "{err}");
    let out = sb.flow(&["run", "graphs/g.yaml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_script_port_type_mismatch_is_caught_at_validation() {
    let sb = Sandbox::new();
    sb.write(
        "scripts/count.rhai",
        "fn ports() { #{ inputs: #{ text: \"text\" }, outputs: #{ n: \"int\" } } }\nfn run(i) { i.text.len() }\n",
    );
    sb.write(
        "g.yaml",
        "flow: 1\nnodes:\n  n:\n    op: script.count\n    in: { text: hello }\n  save:\n    op: file.write_text\n    in: { path: out/n.txt, text: $n }\n",
    );
    let out = sb.flow(&["validate", "g.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = common::stderr(&out);
    assert!(err.contains("g.yaml:8:34: error: input `text` of `file.write_text`: expects text") && err.contains("(int)"), "{err}");
}

const TWO_SCRIPTS: &str = "flow: 1
nodes:
  a:
    op: script.first
    in: { x: 1 }
  b:
    op: script.second
    in: { x: 2 }
  both:
    op: text.join
    in: { items: [$a, $b], sep: ' ' }
  save:
    op: file.write_text
    in: { path: out/both.txt, text: $both }
";

#[test]
fn editing_a_script_reruns_exactly_the_nodes_that_use_it() {
    let sb = Sandbox::new();
    sb.write("scripts/first.rhai", &echo("#{ y: `first ${i.x}` }"));
    sb.write("scripts/second.rhai", &echo("#{ y: `second ${i.x}` }"));
    sb.write("g.yaml", TWO_SCRIPTS);
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 0, "{events:#?}");
    assert_eq!(executed(&events), ["a", "b", "both", "save"]);

    // Unchanged: a new process serves everything from the cache.
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 0);
    assert!(executed(&events).is_empty(), "{events:#?}");

    sb.write("scripts/second.rhai", &echo("#{ y: `SECOND ${i.x}` }"));
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 0);
    assert_eq!(executed(&events), ["b", "both", "save"]);
    assert_eq!(event_for(&events, "node_started", "b")["reason"], "script changed");
    assert_eq!(std::fs::read_to_string(sb.path().join("out/both.txt")).unwrap(), "first 1 SECOND 2");

    // Keys follow the source, not what it means: a new comment runs the
    // script's node (and its consumers) again.
    sb.write("scripts/second.rhai", &format!("// note\n{}", echo("#{ y: `SECOND ${i.x}` }")));
    let (_, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(executed(&events), ["b", "both", "save"]);
}

#[test]
fn an_imported_module_is_part_of_the_script() {
    let sb = Sandbox::new();
    sb.write("scripts/lib/words.rhai", "fn shout(s) { s.to_upper() }");
    sb.write("scripts/first.rhai", &format!("import \"lib/words\" as w;\n{}", echo("#{ y: w::shout(`first ${i.x}`) }")));
    sb.write("scripts/second.rhai", &echo("#{ y: `second ${i.x}` }"));
    sb.write("g.yaml", TWO_SCRIPTS);
    assert_eq!(sb.run_json("g.yaml", &[]).0, 0);
    assert_eq!(std::fs::read_to_string(sb.path().join("out/both.txt")).unwrap(), "FIRST 1 second 2");
    sb.write("scripts/lib/words.rhai", "fn shout(s) { s.to_upper() + \"!\" }");
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 0);
    assert_eq!(executed(&events), ["a", "both", "save"]);
    assert_eq!(event_for(&events, "node_started", "a")["reason"], "script changed");
}

#[test]
fn a_script_by_path_and_print_messages() {
    let sb = Sandbox::new();
    sb.write("lib/hello.rhai", &echo("print(`hello ${i.x}`);\n#{ y: i.x + 1 }"));
    sb.write(
        "g.yaml",
        "flow: 1\nnodes:\n  s:\n    op: lib/hello.rhai\n    in: { x: 41 }\n  save:\n    op: file.write_text\n    in: { path: out/s.txt, text: \"${s}\" }\n",
    );
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 0, "{events:#?}");
    assert_eq!(event_for(&events, "message", "s")["text"], "hello 41");
    assert_eq!(std::fs::read_to_string(sb.path().join("out/s.txt")).unwrap(), "42");
}

#[test]
fn flow_ops_documents_scripts() {
    let sb = Sandbox::new();
    sb.write(
        "scripts/count.rhai",
        "fn ports() { #{ doc: \"Counts.\", inputs: #{ text: #{ type: \"text\", doc: \"what to count\" } }, outputs: #{ n: \"int\" } } }\nfn run(i) { i.text.len() }\n",
    );
    let out = sb.flow(&["ops", "script.count"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let text = common::stdout(&out);
    assert!(text.starts_with("script.count (version 1)\n\nCounts.") && text.contains("what to count"), "{text}");
    assert!(common::stdout(&sb.flow(&["ops"])).contains("script.count"));
    let out = sb.flow(&["ops", "script.cuont"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(common::stderr(&out).contains("did you mean `script.count`?"), "{}", common::stderr(&out));
}

#[test]
fn ctrl_c_stops_a_running_script() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::Instant;

    let sb = Sandbox::new();
    sb.write("scripts/spin.rhai", &echo("print(\"spinning\");\nlet n = 0;\nloop { n += 1; }"));
    sb.write("spin.yaml", &graph("spin"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_flow"))
        .args(["run", "--json", "spin.yaml"])
        .current_dir(sb.path())
        .env("FLOW_CACHE_DIR", sb.cache_dir())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.by_ref().map(|l| l.unwrap()).any(|l| l.contains("\"message\"") && l.contains("spinning")));
    let sent = Instant::now();
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert_eq!(child.wait().unwrap().code(), Some(130), "{rest:#?}");
    assert!(sent.elapsed().as_secs_f64() < 2.0, "{:?}", sent.elapsed());
    assert!(!rest.iter().any(|l| l.contains("too many operations")), "{rest:#?}");
}
