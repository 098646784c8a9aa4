//! Scheduling overhead: validate + plan + run graphs of trivial nodes, as
//! chains and as wide fan-outs, cold and warm; cache-key computation; a warm
//! re-run of an unchanged 1,000-node graph from the disk cache in a new engine.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench --bench scheduler`. Criterion's
//! throughput is in nodes, so "time per element" is the per-node overhead.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flow_engine::events::null_sink;
use flow_engine::graph::{self, DeviceChoice, Graph};
use flow_engine::run::{NoModels, PlanOptions};
use flow_engine::{CancelToken, Engine, EngineConfig};

const SIZES: [usize; 4] = [100, 1_000, 10_000, 100_000];

/// `n` text.join nodes, each consuming the previous one; a debug.print at the end.
fn chain(n: usize) -> String {
    let mut s = String::from("flow: 1\nnodes:\n  n0: { op: text.join, in: { items: [start] } }\n");
    for i in 1..n {
        s.push_str(&format!("  n{i}: {{ op: text.join, in: {{ items: [$n{}] }} }}\n", i - 1));
    }
    s.push_str(&format!("  out: {{ op: debug.print, in: {{ value: $n{} }} }}\n", n - 1));
    s
}

/// One root, `n` independent children of it, each printed.
fn fan_out(n: usize) -> String {
    let mut s = String::from("flow: 1\nnodes:\n  root: { op: text.join, in: { items: [start] } }\n");
    for i in 0..n / 2 {
        s.push_str(&format!("  c{i}: {{ op: text.join, in: {{ items: [$root, \"{i}\"] }} }}\n"));
        s.push_str(&format!("  p{i}: {{ op: debug.print, in: {{ value: $c{i} }} }}\n"));
    }
    s
}

fn engine(cache_dir: Option<std::path::PathBuf>) -> Engine {
    let config = EngineConfig { cache_dir, memory_budget: 1 << 30, default_device: DeviceChoice::Cpu, ..Default::default() };
    Engine::new(flow_nodes::registry(), Arc::new(NoModels), config).expect("engine")
}

fn load(yaml: &str) -> Graph {
    graph::from_bytes("bench.yaml", std::path::Path::new("."), yaml.as_bytes(), &[], &flow_nodes::registry())
        .unwrap_or_else(|d| panic!("{}", d.render()))
}

fn run(engine: &Engine, graph: Graph) {
    let report = engine.run(Arc::new(graph), &PlanOptions::default(), null_sink(), CancelToken::new());
    assert!(report.ok());
}

fn bench_shapes(c: &mut Criterion) {
    for (shape, make) in [("chain", chain as fn(usize) -> String), ("fan_out", fan_out)] {
        let mut group = c.benchmark_group(format!("schedule/{shape}"));
        group.sample_size(10);
        for n in SIZES {
            let yaml = make(n);
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new("validate", n), &yaml, |b, yaml| b.iter(|| load(yaml)));
            // Cold: a fresh engine with an empty in-memory cache runs every node.
            group.bench_with_input(BenchmarkId::new("validate+plan+run cold", n), &yaml, |b, yaml| {
                b.iter_batched(|| engine(None), |e| run(&e, load(yaml)), criterion::BatchSize::PerIteration)
            });
            // Warm: the same engine again; every output comes from memory.
            let warm = engine(None);
            run(&warm, load(&yaml));
            group.bench_with_input(BenchmarkId::new("validate+plan+run warm", n), &yaml, |b, yaml| {
                b.iter(|| run(&warm, load(yaml)))
            });
        }
        group.finish();
    }
}

fn bench_disk_rerun(c: &mut Criterion) {
    let n = 1_000;
    let yaml = chain(n);
    let dir = tempfile::tempdir().expect("temp dir");
    run(&engine(Some(dir.path().to_path_buf())), load(&yaml));
    let mut group = c.benchmark_group("rerun_unchanged_from_disk");
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::new("new engine, chain", n), |b| {
        b.iter(|| run(&engine(Some(dir.path().to_path_buf())), load(&yaml)))
    });
    group.finish();
}

fn bench_keys(c: &mut Criterion) {
    // Planning computes every node's key: a 10,000-node plan with a probe-only
    // cache is dominated by key computation.
    let n = 10_000;
    let graph = load(&fan_out(n));
    let e = engine(None);
    let mut group = c.benchmark_group("cache_keys");
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::new("plan (keys of every node)", n), |b| {
        b.iter(|| e.plan(&graph, &PlanOptions::default()))
    });
    group.finish();
}

criterion_group!(benches, bench_shapes, bench_disk_rerun, bench_keys);
criterion_main!(benches);
