//! rhai script ops: the overhead of calling a script through `Op::run` (a
//! fresh sandboxed engine per call, on a pooled big-stack thread), and a
//! tensor expression through the script API against the same work done by
//! candle directly and by the built-in tensor ops.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench --bench scripts`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use flow_engine::events::null_sink;
use flow_engine::registry::OpSource;
use flow_engine::script::ScriptSource;
use flow_engine::{CancelToken, Inputs, OpContext, OpRef, Provenance, Value, ValueType};

/// Loads `text` as `scripts/NAME.rhai` of a temporary folder.
fn script(dir: &Path, name: &str, text: &str) -> OpRef {
    std::fs::create_dir_all(dir.join("scripts")).expect("scripts folder");
    std::fs::write(dir.join(format!("scripts/{name}.rhai")), text).expect("script");
    ScriptSource::new().load(&format!("script.{name}"), dir).expect("load")
}

fn context(dir: &Path) -> OpContext {
    OpContext::new("bench", Device::Cpu, dir.to_path_buf(), CancelToken::new(), null_sink(), Instant::now(), Arc::new(Provenance::default()))
}

fn inputs(values: Vec<(&str, Value)>) -> Inputs {
    Inputs::new(values.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<BTreeMap<_, _>>())
}

fn scripts(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ctx = context(dir.path());

    let mut group = c.benchmark_group("script_call");
    let trivial = script(
        dir.path(),
        "trivial",
        r#"fn ports() { #{ inputs: #{ x: "int" }, outputs: #{ y: "int" } } } fn run(i) { #{ y: i.x + 1 } }"#,
    );
    let x = inputs(vec![("x", Value::Int(41))]);
    group.bench_function("trivial_op_run", |b| b.iter(|| trivial.run(&x, &ctx).expect("run")));
    // What each call would cost on top if it spawned its own big-stack
    // thread instead of using the script worker pool.
    group.bench_function("thread_with_256mib_stack", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                std::thread::Builder::new().stack_size(256 << 20).spawn_scoped(s, || 1).expect("spawn").join().expect("join")
            })
        })
    });
    group.finish();

    let mut group = c.benchmark_group("latent_4x64x64_a_times_half_plus_b");
    let a = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &Device::Cpu).expect("a");
    let b = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &Device::Cpu).expect("b");
    let blend = script(
        dir.path(),
        "blend",
        r#"fn ports() { #{ inputs: #{ a: "latent", b: "latent" }, outputs: #{ out: "latent" } } } fn run(i) { #{ out: i.a * 0.5 + i.b } }"#,
    );
    let ab = inputs(vec![("a", Value::tensor(ValueType::Latent, a.clone())), ("b", Value::tensor(ValueType::Latent, b.clone()))]);
    group.bench_function("script", |bench| bench.iter(|| blend.run(&ab, &ctx).expect("run")));
    group.bench_function("candle", |bench| bench.iter(|| ((&a * 0.5).expect("mul") + &b).expect("add")));
    let registry = flow_nodes::registry();
    let (scale, add) = (registry.get("tensor.scale").expect("tensor.scale"), registry.get("tensor.add").expect("tensor.add"));
    group.bench_function("builtin_ops", |bench| {
        bench.iter(|| {
            let half = scale
                .run(&inputs(vec![("tensor", Value::tensor(ValueType::Latent, a.clone())), ("factor", Value::Float(0.5))]), &ctx)
                .expect("scale");
            let half = half.get("tensor").expect("output").clone();
            add.run(&inputs(vec![("a", half), ("b", Value::tensor(ValueType::Latent, b.clone()))]), &ctx).expect("add")
        })
    });
    group.finish();
}

criterion_group!(benches, scripts);
criterion_main!(benches);
