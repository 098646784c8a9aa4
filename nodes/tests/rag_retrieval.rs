//! Retrieval quality and cache grain of the rag ops on the real MiniLM model
//! and the corpus in graphs/data/corpus.
//!
//! * A labelled set of questions, each with the corpus file that answers it:
//!   the top hit must come from that file for most questions, and the top
//!   three must include it for all.
//! * Through the engine: a new question embeds one text (the question), and a
//!   file added to the corpus embeds only that file's chunks; the counts come
//!   from the `computed N of M texts` messages of the embedding nodes.
//!
//! The model comes from the model store (`minilm`, fetched once with pip)
//! under `$FLOW_TEST_MODELS_DIR`, else `<workspace>/target/test-models`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use candle_core::Device;
use flow_engine::graph::{self, DeviceChoice, Override};
use flow_engine::models::{no_progress, ModelStore, ResolvedModel, StoreResolver};
use flow_engine::run::{PlanOptions, RunReport};
use flow_engine::{
    CancelToken, Engine, EngineConfig, Event, EventSink, Inputs, NodeStatus, OpContext, Outputs, Provenance, Registry,
    Value,
};
use flow_nodes::rag::{chunk_spans, Unit};

/// Chunking used throughout: small enough for MiniLM's 256-token limit.
const SIZE: usize = 96;
const OVERLAP: usize = 16;

/// Questions and the corpus file that answers each.
const LABELLED: [(&str, &str); 22] = [
    ("Who looked after the lamp before lighthouses were automated?", "corpus/lighthouses.md"),
    ("How does a forager show the other bees where the flowers are?", "corpus/honeybees.md"),
    ("Which kind of volcano is built up from runny basalt lava?", "corpus/volcanoes.md"),
    ("How often should a starter kept on the kitchen counter be fed?", "corpus/sourdough.txt"),
    ("What happens to a String when it is passed to a function by value?", "corpus/rust_ownership.md"),
    ("Why are high tides especially high at full moon?", "corpus/tides.md"),
    ("What does Black reply to 1.e4 in the Sicilian?", "corpus/chess_openings.md"),
    ("Where in a leaf cell is carbon dioxide turned into sugar?", "corpus/photosynthesis.txt"),
    ("Which coffee beans contain the most caffeine?", "corpus/coffee.md"),
    ("Why is the race exactly 42.195 km long?", "corpus/marathon.md"),
    ("Does renaming a node throw away its cached result?", "corpus/flow_cache.md"),
    ("What destroyed the Roman town of Pompeii?", "corpus/volcanoes.md"),
    ("Why do runners feel their legs go heavy after thirty kilometres?", "corpus/marathon.md"),
    ("Which protein is probably the most abundant on Earth?", "corpus/photosynthesis.txt"),
    ("What happens when a cache file on disk is corrupted?", "corpus/flow_cache.md"),
    ("How did sailors recognise which light they were seeing?", "corpus/lighthouses.md"),
    ("Why do leaves look green?", "corpus/photosynthesis.txt"),
    ("Can two threads write to the same data at the same time?", "corpus/rust_ownership.md"),
    ("Which opening sacrifices a pawn for faster development?", "corpus/chess_openings.md"),
    ("How do I get big irregular holes in my loaf?", "corpus/sourdough.txt"),
    ("Why is the day getting slightly longer over the centuries?", "corpus/tides.md"),
    ("How coarse should the grounds be for a French press?", "corpus/coffee.md"),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn models_root() -> PathBuf {
    std::env::var_os("FLOW_TEST_MODELS_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| workspace().join("target/test-models"), PathBuf::from)
}

/// The installed minilm model (fetched on first use).
fn minilm() -> &'static ResolvedModel {
    static MODEL: OnceLock<ResolvedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        ModelStore::new(models_root())
            .resolve_str("minilm", &workspace(), &no_progress)
            .expect("fetching the minilm model")
    })
}

/// A temporary folder holding a copy of the corpus as `corpus/`.
fn corpus_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = workspace().join("graphs/data/corpus");
    fs::create_dir(dir.path().join("corpus")).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.path().join("corpus").join(entry.file_name())).unwrap();
    }
    dir
}

/// The rag ops with their embedding memo in `memo`.
fn registry(memo: &Path) -> Registry {
    let mut reg = flow_nodes::registry();
    flow_nodes::rag::register_with_memo_dir(&mut reg, Some(memo.to_path_buf()));
    reg
}

fn run_op(reg: &Registry, name: &str, given: Vec<(&str, Value)>, ctx: &OpContext) -> Outputs {
    let op = reg.get(name).unwrap();
    let mut values: BTreeMap<String, Value> =
        op.spec().inputs.iter().filter_map(|p| p.default.clone().map(|d| (p.name.to_string(), d))).collect();
    values.extend(given.into_iter().map(|(k, v)| (k.to_string(), v)));
    let out = op.run(&Inputs::new(values), ctx).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    out.check_against(op.spec()).unwrap();
    out
}

fn field<'a>(hit: &'a Value, key: &str) -> &'a Value {
    match hit {
        Value::Map(m) => &m[key],
        other => panic!("a hit should be a map, got {other:?}"),
    }
}

#[test]
fn labelled_questions_find_their_source_file() {
    let dir = corpus_copy();
    let memo = tempfile::tempdir().unwrap();
    let reg = registry(memo.path());
    let ctx = OpContext::new(
        "rag",
        Device::Cpu,
        dir.path().to_path_buf(),
        CancelToken::new(),
        flow_engine::events::null_sink(),
        Instant::now(),
        Arc::new(Provenance::default()),
    );
    let model = minilm().clone().into_value();
    let docs = run_op(&reg, "docs.load", vec![("path", Value::text("corpus"))], &ctx);
    let docs = docs.get("docs").unwrap().clone();
    let chunks = run_op(
        &reg,
        "text.chunk",
        vec![("docs", docs), ("size", Value::Int(SIZE as i64)), ("overlap", Value::Int(OVERLAP as i64))],
        &ctx,
    );
    let chunks = chunks.get("chunks").unwrap().clone();
    let emb = run_op(&reg, "embed.text", vec![("model", model.clone()), ("texts", chunks.clone())], &ctx);
    let emb = emb.get("embeddings").unwrap().clone();
    let index = run_op(&reg, "index.build", vec![("embeddings", emb), ("chunks", chunks)], &ctx);
    let index = index.get("index").unwrap().clone();

    let (mut top1, mut top3) = (0, 0);
    for (question, want) in LABELLED {
        let out = run_op(
            &reg,
            "index.search",
            vec![
                ("index", index.clone()),
                ("model", model.clone()),
                ("query", Value::text(question)),
                ("k", Value::Int(3)),
            ],
            &ctx,
        );
        let Some(Value::List(hits)) = out.get("hits") else { panic!("hits should be a list") };
        assert_eq!(hits.len(), 3);
        let paths: Vec<&str> = hits.iter().map(|h| field(h, "path").as_text().unwrap()).collect();
        let scores: Vec<f64> = hits.iter().map(|h| field(h, "score").as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "hits come best first: {scores:?}");
        assert_eq!(field(&hits[0], "rank").as_int(), Some(1));
        // Offsets point at the chunk's text in its document.
        let (start, end) = (field(&hits[0], "start").as_int().unwrap(), field(&hits[0], "end").as_int().unwrap());
        let doc = fs::read_to_string(dir.path().join(paths[0])).unwrap();
        assert_eq!(&doc[start as usize..end as usize], field(&hits[0], "text").as_text().unwrap());
        let context = out.get("context").unwrap().as_text().unwrap();
        assert!(context.starts_with(&format!("[1] ({}) ", paths[0])), "{context}");
        assert!(context.contains(&format!("\n\n[3] ({}) ", paths[2])), "{context}");

        top1 += usize::from(paths[0] == want);
        top3 += usize::from(paths.contains(&want));
        eprintln!("{} {question} -> {paths:?} {scores:.3?}", if paths[0] == want { "ok  " } else { "MISS" });
    }
    let n = LABELLED.len();
    eprintln!("top-1 {top1}/{n}, top-3 {top3}/{n}");
    assert!(top1 * 4 >= n * 3, "top-1 {top1} of {n} is under 75%");
    assert_eq!(top3, n, "every question's file should be in the top 3");
}

/// Messages of a run, by node id.
type Messages = Arc<Mutex<Vec<(String, String)>>>;

fn run_graph(engine: &Engine, path: &Path, set: &[&str]) -> (RunReport, Vec<(String, String)>) {
    let overrides: Vec<Override> = set.iter().map(|s| Override::parse(s).unwrap()).collect();
    let graph = graph::load(path, &overrides, engine.registry()).unwrap_or_else(|d| panic!("{}", d.render()));
    let messages: Messages = Arc::default();
    let seen = messages.clone();
    let sink: EventSink = Arc::new(move |event| {
        if let Event::Message { node, text, .. } = event {
            seen.lock().unwrap().push((node, text));
        }
    });
    let report = engine.run(Arc::new(graph), &PlanOptions::default(), sink, CancelToken::new());
    for node in &report.nodes {
        assert!(node.error.is_none(), "{} failed: {:?}", node.id, node.error);
    }
    let messages = messages.lock().unwrap().clone();
    (report, messages)
}

/// What happened to node `id`; `None` if the run did not need it (a cached
/// node downstream stood in for it).
fn status(report: &RunReport, id: &str) -> Option<NodeStatus> {
    report.nodes.iter().find(|n| n.id == id).map(|n| n.status.clone())
}

/// The `computed N of M texts` counts that node `id` reported.
fn computed(messages: &[(String, String)], id: &str) -> Vec<(usize, usize)> {
    messages
        .iter()
        .filter(|(node, _)| node == id)
        .filter_map(|(_, text)| {
            let rest = text.strip_prefix("computed ")?;
            let (n, rest) = rest.split_once(" of ")?;
            let m = rest.split_whitespace().next()?;
            Some((n.parse().ok()?, m.parse().ok()?))
        })
        .collect()
}

#[test]
fn a_new_question_or_a_new_file_embeds_only_what_is_new() {
    let dir = corpus_copy();
    let memo = tempfile::tempdir().unwrap();
    let graph = dir.path().join("rag.yaml");
    fs::write(
        &graph,
        format!(
            r#"flow: 1
name: rag-cache-grain
params:
  question: How do bees tell each other where the flowers are?
models:
  minilm: minilm
nodes:
  docs:
    op: docs.load
    in: {{ path: corpus }}
  chunks:
    op: text.chunk
    in: {{ docs: $docs, size: {SIZE}, overlap: {OVERLAP} }}
  embeddings:
    op: embed.text
    in: {{ model: $minilm, texts: $chunks }}
  index:
    op: index.build
    in: {{ embeddings: $embeddings, chunks: $chunks }}
  search:
    op: index.search
    in: {{ index: $index, model: $minilm, query: $question, k: 2 }}
  show:
    op: debug.print
    in: {{ value: $search.context }}
"#
        ),
    )
    .unwrap();
    let resolver = Arc::new(StoreResolver::new(Arc::new(ModelStore::new(models_root())), Arc::new(|_| {})));
    let config =
        EngineConfig { memory_budget: 256 << 20, cpu_slots: 1, default_device: DeviceChoice::Cpu, ..Default::default() };
    minilm();
    let engine = Engine::new(registry(memo.path()), resolver, config).unwrap();

    let corpus_chunks: usize = fs::read_dir(dir.path().join("corpus"))
        .unwrap()
        .map(|e| chunk_spans(&fs::read_to_string(e.unwrap().path()).unwrap(), SIZE, OVERLAP, Unit::Tokens).len())
        .sum();
    let (report, messages) = run_graph(&engine, &graph, &[]);
    assert_eq!(computed(&messages, "embeddings"), [(corpus_chunks, corpus_chunks)]);
    assert_eq!(computed(&messages, "search"), [(1, 1)]);
    assert!(messages.iter().any(|(n, t)| n == "show" && t.contains("(corpus/honeybees.md)")), "{messages:?}");
    assert_eq!(status(&report, "embeddings"), Some(NodeStatus::Ran));

    // A new question: the corpus embeddings come from the node cache, the
    // question alone is embedded.
    let (report, messages) = run_graph(&engine, &graph, &["question=Which bean has more caffeine?"]);
    assert_ne!(status(&report, "embeddings"), Some(NodeStatus::Ran));
    assert_eq!(status(&report, "search"), Some(NodeStatus::Ran));
    assert_eq!(computed(&messages, "embeddings"), []);
    assert_eq!(computed(&messages, "search"), [(1, 1)]);
    assert!(messages.iter().any(|(n, t)| n == "show" && t.contains("(corpus/coffee.md)")), "{messages:?}");

    // A new file: docs.load's key changes, the embedding node re-runs and
    // computes the new file's chunks only; the question is in the memo.
    let glaciers = "Glaciers are rivers of ice. Snow that survives the summer is buried and \
                    squeezed into dense ice, which flows slowly downhill under its own weight, \
                    carving U-shaped valleys and carrying boulders far from where they were \
                    picked up. When a glacier melts back it leaves ridges of rubble called moraines.\n";
    fs::write(dir.path().join("corpus/glaciers.md"), glaciers).unwrap();
    let new_chunks = chunk_spans(glaciers, SIZE, OVERLAP, Unit::Tokens).len();
    let (report, messages) = run_graph(&engine, &graph, &["question=What carves U-shaped valleys?"]);
    assert_eq!(status(&report, "embeddings"), Some(NodeStatus::Ran));
    assert_eq!(computed(&messages, "embeddings"), [(new_chunks, corpus_chunks + new_chunks)]);
    assert_eq!(computed(&messages, "search"), [(1, 1)]);
    assert!(messages.iter().any(|(n, t)| n == "show" && t.starts_with("[1] (corpus/glaciers.md)")), "{messages:?}");

    // The same question again after an edit elsewhere: the question comes
    // from the memo too.
    fs::write(dir.path().join("corpus/glaciers.md"), format!("{glaciers}Ice ages left many of them.\n")).unwrap();
    let (_, messages) = run_graph(&engine, &graph, &["question=What carves U-shaped valleys?"]);
    assert_eq!(computed(&messages, "search"), [(0, 1)]);
    let (n, m) = computed(&messages, "embeddings")[0];
    assert!(n <= new_chunks && m == corpus_chunks + new_chunks, "{n} of {m}");
}
