//! `flow watch` end to end: saves re-run exactly what changed, broken saves
//! are reported in place without ending the session, a save during a run
//! restarts it, Ctrl-C ends with 130.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use common::{executed, matmul_chain, Sandbox};
use serde_json::Value as Json;

const WAIT: Duration = Duration::from_secs(60);

/// A running `flow watch --json` and its events.
struct Watch {
    child: Child,
    events: Receiver<Json>,
}

impl Watch {
    fn start(sb: &Sandbox, graph: &str) -> Watch {
        Watch::start_with(sb, graph, &[])
    }

    fn start_with(sb: &Sandbox, graph: &str, extra: &[&str]) -> Watch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flow"))
            .args(["watch", "--json", graph])
            .args(extra)
            .current_dir(sb.path())
            .env("FLOW_CACHE_DIR", sb.cache_dir())
            .env("FLOW_MODEL_CACHE", common::test_models_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Watch { child, events }
    }

    /// Events up to and including the first one `stop` accepts.
    fn until(&self, stop: impl Fn(&Json) -> bool) -> Vec<Json> {
        let mut seen = Vec::new();
        loop {
            let event = self.events.recv_timeout(WAIT).unwrap_or_else(|_| panic!("timed out; saw {seen:#?}"));
            let done = stop(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    }

    /// Events of one whole run.
    fn run(&self) -> Vec<Json> {
        self.until(|e| e["event"] == "run_finished")
    }

    /// Ctrl-C; returns the exit code and the last events.
    fn interrupt(mut self) -> (Option<i32>, Vec<Json>) {
        let kill = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap();
        assert!(kill.success());
        let code = self.child.wait().unwrap().code();
        (code, self.events.try_iter().collect())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CHAIN: &str = r#"flow: 1
params:
  who: world
nodes:
  a: { op: text.template, in: { template: "hello ${who}", vars: { who: $who } } }
  b: { op: text.join, in: { items: [$a, "!"], sep: "" } }
  c: { op: text.template, in: { template: "side" } }
  d: { op: text.join, in: { items: [$b, $c], sep: " / " } }
  save: { op: file.write_text, in: { path: out/d.txt, text: $d } }
"#;

/// Rewrites a file the way editors that save atomically do.
fn save_by_rename(sb: &Sandbox, name: &str, content: &str) {
    let tmp = sb.write(&format!(".{name}.swp"), content);
    std::fs::rename(tmp, sb.path().join(name)).unwrap();
}

#[test]
fn saves_re_run_exactly_the_changed_node_and_its_descendants() {
    let sb = Sandbox::new();
    sb.write("g.yaml", CHAIN);
    let watch = Watch::start(&sb, "g.yaml");
    let first = watch.run();
    assert_eq!(executed(&first).len(), 5, "{first:#?}");

    // In-place write: `a` changes, so a, b, d and save run; c stays cached.
    sb.write("g.yaml", &CHAIN.replace("who: world", "who: moon"));
    let second = watch.run();
    assert!(second.iter().any(|e| e["event"] == "watch_changed"), "{second:#?}");
    let mut ran = executed(&second);
    ran.sort();
    assert_eq!(ran, ["a", "b", "d", "save"]);
    let d = second.iter().find(|e| e["event"] == "node_started" && e["node"] == "d").unwrap();
    assert_eq!(d["reason"], "upstream `b` changed", "only the upstream that changed is named");
    assert_eq!(std::fs::read_to_string(sb.path().join("out/d.txt")).unwrap(), "hello moon! / side");

    // Atomic rename save of a change to `c` alone: c, d and save run.
    save_by_rename(&sb, "g.yaml", &CHAIN.replace("who: world", "who: moon").replace("\"side\"", "\"other\""));
    let third = watch.run();
    let mut ran = executed(&third);
    ran.sort();
    assert_eq!(ran, ["c", "d", "save"]);
    let started = third.iter().find(|e| e["event"] == "node_started" && e["node"] == "c").unwrap();
    assert_eq!(started["reason"], "input `template` changed");

    let (code, rest) = watch.interrupt();
    assert_eq!(code, Some(130));
    assert_eq!(rest.last().unwrap()["event"], "watch_stopped", "{rest:#?}");
}

#[test]
fn a_broken_save_is_reported_in_place_and_the_session_goes_on() {
    let sb = Sandbox::new();
    sb.write("g.yaml", CHAIN);
    let watch = Watch::start(&sb, "g.yaml");
    watch.run();

    sb.write("g.yaml", &CHAIN.replace("op: text.join, in: { items: [$b", "op: text.joint, in: { items: [$b"));
    let invalid = watch.until(|e| e["event"] == "watch_invalid");
    let errors = invalid.last().unwrap()["errors"].as_str().unwrap().to_string();
    assert!(errors.contains("g.yaml:8:12: error: unknown op `text.joint`"), "{errors}");
    assert!(errors.contains("did you mean `text.join`"), "{errors}");
    assert!(sb.path().join("out/d.txt").exists(), "the last results stay");

    // Fixing it runs again; nothing changed since the last good run.
    save_by_rename(&sb, "g.yaml", CHAIN);
    let fixed = watch.run();
    assert!(executed(&fixed).is_empty(), "{fixed:#?}");
    let finished = fixed.last().unwrap();
    assert_eq!(finished["ok"], true);
    assert_eq!(finished["ran"], 0, "the output node is served from the cache, so nothing upstream loads");
}

#[test]
fn a_file_the_graph_reads_is_watched_too() {
    let sb = Sandbox::new();
    sb.write("notes.txt", "first");
    sb.write(
        "g.yaml",
        "flow: 1\nnodes:\n  read: { op: file.read_text, in: { path: notes.txt } }\n  \
         upper: { op: text.join, in: { items: [$read, \"!\"] } }\n  \
         save: { op: file.write_text, in: { path: out/n.txt, text: $upper } }\n",
    );
    let watch = Watch::start(&sb, "g.yaml");
    let first = watch.run();
    let watching = first.iter().find(|e| e["event"] == "watching").expect("the watched paths are announced");
    assert!(watching["paths"].as_array().unwrap().iter().any(|p| p.as_str().unwrap().ends_with("notes.txt")));

    save_by_rename(&sb, "notes.txt", "second");
    let second = watch.run();
    let mut ran = executed(&second);
    ran.sort();
    assert_eq!(ran, ["read", "save", "upper"]);
    assert_eq!(std::fs::read_to_string(sb.path().join("out/n.txt")).unwrap(), "second!");
}

#[test]
fn a_save_during_a_run_cancels_it_and_runs_again() {
    let sb = Sandbox::new();
    let yaml = matmul_chain(800, 30, "out/m.safetensors");
    sb.write("g.yaml", &yaml);
    let watch = Watch::start(&sb, "g.yaml");
    watch.until(|e| e["event"] == "node_finished" && e["node"] == "m1");
    sb.write("g.yaml", &yaml.replace("out/m.safetensors", "out/n.safetensors"));
    let cancelled = watch.run();
    assert!(cancelled.iter().any(|e| e["event"] == "watch_restarting"), "{cancelled:#?}");
    assert_eq!(cancelled.last().unwrap()["interrupted"], true);
    assert!(!sb.path().join("out/m.safetensors").exists(), "the cancelled run wrote nothing");

    let again = watch.run();
    let ran = executed(&again);
    assert!(!ran.contains(&"m0".to_string()) && !ran.contains(&"m1".to_string()), "finished nodes stay cached: {ran:?}");
    assert!(ran.contains(&"save".to_string()), "{again:#?}");
    assert_eq!(again.last().unwrap()["ok"], true);
    assert!(sb.path().join("out/n.safetensors").exists());
}

#[test]
fn saves_that_keep_coming_do_not_hold_a_run_off_forever() {
    let sb = Sandbox::new();
    let yaml = matmul_chain(600, 20, "out/m.safetensors");
    sb.write("g.yaml", &yaml);
    let watch = Watch::start_with(&sb, "g.yaml", &["--max-wait", "500"]);
    watch.until(|e| e["event"] == "node_finished" && e["node"] == "m1");
    // Every save changes the seed, so the whole chain must run again.
    let saving = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let saver = {
        let saving = std::sync::Arc::clone(&saving);
        let (dir, yaml) = (sb.path().to_path_buf(), yaml.clone());
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut seed = 2;
            while saving.load(std::sync::atomic::Ordering::SeqCst) && started.elapsed() < WAIT {
                std::fs::write(dir.join("g.yaml"), yaml.replace("seed: 1 }", &format!("seed: {seed} }}"))).unwrap();
                seed += 1;
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    let events = watch.until(|e| e["event"] == "run_finished" && e["interrupted"] == false);
    let still_saving = !saver.is_finished();
    saving.store(false, std::sync::atomic::Ordering::SeqCst);
    saver.join().unwrap();
    assert!(still_saving, "a run finished only after the saves stopped");
    assert!(events.iter().any(|e| e["event"] == "watch_restarting"), "{events:#?}");
    assert!(events.iter().any(|e| e["event"] == "watch_queued"), "{events:#?}");
    assert_eq!(events.last().unwrap()["ok"], true);
}

#[test]
fn a_graph_writing_what_it_reads_does_not_trigger_itself() {
    let sb = Sandbox::new();
    sb.write("in.txt", "seed");
    sb.write(
        "g.yaml",
        "flow: 1\nnodes:\n  t: { op: file.read_text, in: { path: in.txt } }\n  \
         save: { op: file.write_text, in: { path: in.txt, text: \"${t}+\" } }\n",
    );
    let watch = Watch::start(&sb, "g.yaml");
    let first = watch.run();
    let failed = first.iter().find(|e| e["event"] == "node_failed").expect("the write is refused");
    assert!(failed["error"].as_str().unwrap().contains("read by this graph"), "{failed}");
    assert_eq!(std::fs::read_to_string(sb.path().join("in.txt")).unwrap(), "seed");
    // Nothing changed, so nothing runs again.
    std::thread::sleep(Duration::from_millis(1500));
    let more: Vec<Json> = watch.events.try_iter().collect();
    assert!(!more.iter().any(|e| e["event"] == "run_started"), "{more:#?}");
}

const UPPER: &str = r#"fn ports() { #{ inputs: #{ text: "text" }, outputs: #{ text: "text" } } }
fn run(i) { let t = i.text; t.make_upper(); #{ text: t } }
"#;
const EXCLAIM: &str = r#"fn ports() { #{ inputs: #{ text: "text" }, outputs: #{ text: "text" } } }
fn run(i) { #{ text: i.text + "!" } }
"#;

#[test]
fn editing_a_script_re_runs_exactly_the_nodes_that_use_it() {
    let sb = Sandbox::new();
    sb.write("scripts/upper.rhai", UPPER);
    sb.write("scripts/exclaim.rhai", EXCLAIM);
    sb.write(
        "g.yaml",
        "flow: 1\nnodes:\n  shout: { op: script.upper, in: { text: hello } }\n  \
         excite: { op: script.exclaim, in: { text: world } }\n  \
         both: { op: text.join, in: { items: [$shout, $excite], sep: \" \" } }\n  \
         save: { op: file.write_text, in: { path: out/s.txt, text: $both } }\n",
    );
    let watch = Watch::start(&sb, "g.yaml");
    let first = watch.run();
    assert_eq!(executed(&first).len(), 4, "{first:#?}");
    assert_eq!(std::fs::read_to_string(sb.path().join("out/s.txt")).unwrap(), "HELLO world!");

    save_by_rename(&sb, "scripts/exclaim.rhai", &EXCLAIM.replace("\"!\"", "\"?\""));
    let second = watch.run();
    let mut ran = executed(&second);
    ran.sort();
    assert_eq!(ran, ["both", "excite", "save"]);
    let started = second.iter().find(|e| e["event"] == "node_started" && e["node"] == "excite").unwrap();
    assert_eq!(started["reason"], "script changed");
    assert_eq!(std::fs::read_to_string(sb.path().join("out/s.txt")).unwrap(), "HELLO world?");

    // A script that no longer compiles is reported, located, and the session goes on.
    sb.write("scripts/upper.rhai", &UPPER.replace("t.make_upper();", "t.make_upper(;"));
    let invalid = watch.until(|e| e["event"] == "watch_invalid");
    let errors = invalid.last().unwrap()["errors"].as_str().unwrap().to_string();
    assert!(errors.contains("scripts/upper.rhai:2:"), "{errors}");
    sb.write("scripts/upper.rhai", UPPER);
    let fixed = watch.run();
    assert_eq!(fixed.last().unwrap()["ok"], true);
}
