//! The example graphs of `graphs/` that use these ops, run by the engine on a
//! copy in a temporary folder (so that their `out/` stays out of the tree).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use flow_engine::graph::{self, DeviceChoice, Override};
use flow_engine::run::{NoModels, PlanOptions, RunReport};
use flow_engine::{CancelToken, Engine, EngineConfig, Event, EventSink, NodeStatus};

/// A temporary copy of `graphs/NAME` (and `graphs/data/`).
fn copy_graph(name: &str) -> (tempfile::TempDir, PathBuf) {
    let graphs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../graphs");
    let dir = tempfile::tempdir().unwrap();
    fs::copy(graphs.join(name), dir.path().join(name)).unwrap();
    fs::create_dir(dir.path().join("data")).unwrap();
    for entry in fs::read_dir(graphs.join("data")).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_file() {
            continue;
        }
        fs::copy(
            entry.path(),
            dir.path().join("data").join(entry.file_name()),
        )
        .unwrap();
    }
    let path = dir.path().join(name);
    (dir, path)
}

fn engine() -> Engine {
    let config = EngineConfig { memory_budget: 256 << 20, default_device: DeviceChoice::Cpu, ..Default::default() };
    Engine::new(flow_nodes::registry(), Arc::new(NoModels), config).unwrap()
}

/// Runs the graph at `path` with `--set` overrides; returns the report and
/// the messages printed.
fn run(engine: &Engine, path: &Path, set: &[&str]) -> (RunReport, Vec<String>) {
    let overrides: Vec<Override> = set.iter().map(|s| Override::parse(s).unwrap()).collect();
    let graph = graph::load(path, &overrides, engine.registry())
        .unwrap_or_else(|d| panic!("{}", d.render()));
    let messages = Arc::new(Mutex::new(Vec::new()));
    let seen = messages.clone();
    let sink: EventSink = Arc::new(move |event| {
        if let Event::Message { text, .. } = event {
            seen.lock().unwrap().push(text);
        }
    });
    let report = engine.run(
        Arc::new(graph),
        &PlanOptions::default(),
        sink,
        CancelToken::new(),
    );
    for node in &report.nodes {
        assert!(node.error.is_none(), "{} failed: {:?}", node.id, node.error);
    }
    assert!(report.ok());
    let messages = messages.lock().unwrap().clone();
    (report, messages)
}

fn status(report: &RunReport, id: &str) -> NodeStatus {
    report
        .nodes
        .iter()
        .find(|n| n.id == id)
        .unwrap_or_else(|| panic!("no node `{id}`"))
        .status
        .clone()
}

#[test]
fn hello_writes_its_text() {
    let (dir, path) = copy_graph("hello.yaml");
    let engine = engine();
    let (report, messages) = run(&engine, &path, &[]);
    let want = "Hello, world! Said 3 times, for $0.\nparams: who=world, times=3\n-- written by the hello graph";
    assert_eq!(
        fs::read_to_string(dir.path().join("out/hello.txt")).unwrap(),
        want
    );
    assert_eq!(messages, [want]);
    assert_eq!(status(&report, "save"), NodeStatus::Ran);

    // Unchanged: served from the cache; a new param re-runs the greeting.
    let (again, _) = run(&engine, &path, &[]);
    assert_eq!(status(&again, "save"), NodeStatus::Cached);
    let (changed, _) = run(&engine, &path, &["who=flow"]);
    assert_eq!(status(&changed, "greeting"), NodeStatus::Ran);
    assert_eq!(status(&changed, "footer"), NodeStatus::Cached);
    let text = fs::read_to_string(dir.path().join("out/hello.txt")).unwrap();
    assert!(text.starts_with("Hello, flow! Said 3 times"), "{text}");
}

#[test]
fn tensors_saves_both_branches() {
    let (dir, path) = copy_graph("tensors.yaml");
    let (report, _) = run(&engine(), &path, &["size=8"]);
    assert_eq!(report.count(NodeStatus::Ran), 9);
    let ab = candle_core::safetensors::load(
        dir.path().join("out/ab.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(ab["ab"].dims(), [8, 8]);
    let uv = candle_core::safetensors::load(
        dir.path().join("out/uv.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let values: Vec<f32> = uv["uv"].flatten_all().unwrap().to_vec1().unwrap();
    // Means of 16 products of two uniforms in [0, 1).
    assert!(
        values.iter().all(|&x| (0.0..1.0).contains(&x)),
        "{values:?}"
    );
}

#[test]
fn image_resize_doubles_the_picture() {
    let (dir, path) = copy_graph("image_resize.yaml");
    run(&engine(), &path, &[]);
    let saved = image::open(dir.path().join("out/sunset-lanczos.png")).unwrap();
    assert_eq!((saved.width(), saved.height()), (128, 128));
    run(&engine(), &path, &["filter=nearest", "scale=0.5"]);
    let small = image::open(dir.path().join("out/sunset-nearest.png")).unwrap();
    assert_eq!((small.width(), small.height()), (32, 32));
}
