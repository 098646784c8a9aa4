//! The rag pipeline on the CPU: MiniLM sentence embeddings and the exact
//! cosine index.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench --bench rag` (and with
//! `RAYON_NUM_THREADS=2` for the 2-thread numbers). The model (`minilm`) is
//! fetched once into `$FLOW_TEST_MODELS_DIR`, else `target/test-models`.
//!
//! * `rag/embed_batch{1,32}`: `SentenceEncoder::embed` (tokenizing included)
//!   on the sentences of `graphs/data/corpus` (193 sentences, 30 tokens on
//!   average with `[CLS]` and `[SEP]`), 1 or 32 texts per forward pass;
//!   criterion reports sentences/s.
//! * `rag/embed_short_batch{1,32}`: the same on short sentences (the 4 of the
//!   MiniLM reference, 9 tokens on average, 64 times each).
//! * `rag/index_build_{10k,100k}`: `Index::new` over that many seeded random
//!   384-wide vectors (the copy out of the tensor and the L2 normalisation).
//! * `rag/index_search_top10_{10k,100k}`: `Index::search` for the 10 best rows,
//!   one query per iteration (random unit queries, seeded); criterion's time
//!   is the latency per query. `index.search` in a graph also embeds the
//!   query first (one batch-1 `embed`).
//!
//! Besides criterion's wall-clock figures, each case prints to stderr its rate
//! per second of process CPU time (user + system, all threads) and the load
//! average at the start: on a machine shared with other builds the CPU figure
//! is the steadier one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use flow_nodes::rag::{Chunk, Chunks, Index, SentenceEncoder};
use support::{catalog_model, threads_and_load, workspace, Meter};

#[path = "support/mod.rs"]
mod support;

/// Width of MiniLM's embeddings.
const DIM: usize = 384;

/// The sentences of the MiniLM reference (tests/fixtures/minilm), 8 to 10
/// tokens each.
const SHORT: [&str; 4] = [
    "The cat sits on the mat.",
    "A feline rests on a rug.",
    "Quarterly revenue grew 12 percent.",
    "Rust is a systems programming language.",
];

/// The sentences of the corpus (documents flattened, cut after ". ",
/// those over 20 bytes), in file order.
fn corpus_sentences(workspace: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace.join("graphs/data/corpus"))
        .expect("graphs/data/corpus")
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    let mut sentences = Vec::new();
    for file in files {
        let doc = std::fs::read_to_string(&file).expect("corpus file");
        let flat = doc.split_whitespace().collect::<Vec<_>>().join(" ");
        sentences.extend(flat.split_inclusive(". ").map(|s| s.trim().to_string()).filter(|s| s.len() > 20));
    }
    sentences
}

fn embed(c: &mut Criterion) {
    // As the `flow` binary does at start-up.
    flow_engine::allocator::keep_freed_memory();
    let workspace = workspace();
    let model = catalog_model("minilm");
    let encoder = SentenceEncoder::load(model.dir(), &Device::Cpu).expect("loading minilm");
    let corpus = corpus_sentences(workspace);
    let corpus: Vec<&str> = corpus.iter().map(String::as_str).collect();
    let short: Vec<&str> = SHORT.iter().cycle().take(256).copied().collect();

    let mut group = c.benchmark_group("rag");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_secs(2));
    for (name, texts) in [("", &corpus), ("_short", &short)] {
        let tokens: usize = encoder.token_ids(texts).expect("tokenizing").iter().map(|t| t.ids.len()).sum();
        eprintln!(
            "rag/embed{name}: {} sentences, {:.1} tokens each on average; {}",
            texts.len(),
            tokens as f64 / texts.len() as f64,
            threads_and_load()
        );
        group.throughput(Throughput::Elements(texts.len() as u64));
        for batch in [1, 32] {
            group.measurement_time(Duration::from_secs(if name.is_empty() { 20 } else { 10 }));
            let case = format!("embed{name}_batch{batch}");
            let meter = Meter::default();
            group.bench_function(&case, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| meter.time(texts.len() as u64, || encoder.embed(texts, batch).expect("embed")))
                        .sum()
                })
            });
            meter.report(&format!("rag/{case}"), "sentences");
        }
    }
    group.finish();
}

/// splitmix64: a seeded stream of u64s.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn signed(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` random unit vectors of width [`DIM`], row-major.
    fn unit_vectors(&mut self, n: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n * DIM).map(|_| self.signed()).collect();
        for row in v.chunks_mut(DIM) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

fn index(c: &mut Criterion) {
    eprintln!("rag/index: {DIM}-wide vectors; {}", threads_and_load());
    let mut rng = Rng(42);
    let queries = rng.unit_vectors(64);
    let mut group = c.benchmark_group("rag");
    group.sample_size(10);
    for (name, n) in [("10k", 10_000), ("100k", 100_000)] {
        let vectors = Tensor::from_vec(rng.unit_vectors(n), (n, DIM), &Device::Cpu).expect("vectors");
        let chunk = Chunk { path: String::new(), start: 0, end: 0, text: String::new() };
        let chunks = Chunks { chunks: vec![chunk; n] };

        group.throughput(Throughput::Elements(n as u64)).measurement_time(Duration::from_secs(5));
        let meter = Meter::default();
        group.bench_function(format!("index_build_{name}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let chunks = chunks.clone();
                        meter.time(n as u64, || Index::new(&vectors, chunks).expect("index"))
                    })
                    .sum()
            })
        });
        meter.report(&format!("rag/index_build_{name}"), "vectors");

        let index = Index::new(&vectors, chunks).expect("index");
        group.throughput(Throughput::Elements(1));
        let meter = Meter::default();
        let mut next = 0;
        group.bench_function(format!("index_search_top10_{name}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let query = &queries[next * DIM..(next + 1) * DIM];
                        next = (next + 1) % (queries.len() / DIM);
                        meter.time(1, || index.search(query, 10).expect("search"))
                    })
                    .sum()
            })
        });
        meter.report(&format!("rag/index_search_top10_{name}"), "queries");
    }
    group.finish();
}

criterion_group!(benches, embed, index);
criterion_main!(benches);
