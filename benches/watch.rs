//! `flow watch`: latency from a file save to the first re-executed node
//! starting, through the real binary (debounce, re-validation, planning and
//! dispatch included), over many saves.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench --bench watch`. The graph is a
//! 200-node text pipeline whose last node's literal changes on every save, so
//! each save re-runs one node; measured at the default 50 ms debounce and at
//! 10 ms.

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

const NODES: usize = 200;

fn graph(version: u64) -> String {
    let mut yaml = String::from("flow: 1\nnodes:\n  n0: { op: text.template, in: { template: \"start\" } }\n");
    for i in 1..NODES {
        yaml.push_str(&format!("  n{i}: {{ op: text.join, in: {{ items: [$n{}, \"{i}\"] }} }}\n", i - 1));
    }
    yaml.push_str(&format!(
        "  save: {{ op: file.write_text, in: {{ path: out/last.txt, text: \"${{n{}}} v{version}\" }} }}\n",
        NODES - 1
    ));
    yaml
}

struct Session {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Session {
    fn start(dir: &Path, debounce_ms: u64) -> Session {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flow"))
            .args(["watch", "--json", "--debounce", &debounce_ms.to_string(), "g.yaml"])
            .current_dir(dir)
            .env("FLOW_CACHE_DIR", dir.join("cache"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting flow watch");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut session = Session { child, lines };
        session.wait_for("\"run_finished\"");
        session
    }

    fn wait_for(&mut self, needle: &str) {
        for line in self.lines.by_ref() {
            if line.expect("reading events").contains(needle) {
                return;
            }
        }
        panic!("flow watch ended before `{needle}`");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn save_to_first_node(c: &mut Criterion) {
    let mut group = c.benchmark_group("watch");
    group.sample_size(30).measurement_time(Duration::from_secs(15));
    for debounce in [50, 10] {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("g.yaml"), graph(0)).expect("writing the graph");
        let mut session = Session::start(dir.path(), debounce);
        let mut version = 0;
        group.bench_function(format!("save_to_first_node_started_debounce_{debounce}ms"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    version += 1;
                    let t0 = Instant::now();
                    std::fs::write(dir.path().join("g.yaml"), graph(version)).expect("saving");
                    session.wait_for("\"node_started\"");
                    total += t0.elapsed();
                    session.wait_for("\"run_finished\"");
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, save_to_first_node);
criterion_main!(benches);
