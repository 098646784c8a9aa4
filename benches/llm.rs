//! SmolLM2-135M-Instruct (GGUF Q4_1) on the CPU, in both precisions of the
//! llm module: `f32` (weights dequantized at load, plain f32 matmuls) and
//! `quantized` (the weights in their format on flow's kernels, 8-bit
//! activations). The side-by-side comparison with llama.cpp through the CLI
//! is `benches/compare/llm.py`.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench --bench llm` (and with
//! `RAYON_NUM_THREADS=2` for the 2-thread numbers). The model
//! (`smollm2-135m-instruct`) is fetched once into `$FLOW_TEST_MODELS_DIR`,
//! else `target/test-models`.
//!
//! * `llm/{f32,quantized}/prefill`: a fresh session fed a chat prompt of
//!   about 128 tokens (a passage of `graphs/data/corpus/honeybees.md` to
//!   summarise) in one `Session::feed`; criterion reports prompt tokens/s.
//! * `llm/{f32,quantized}/decode`: after that prompt (fed untimed, in a fresh
//!   session each time), 32 greedy single-token steps (`argmax`, then
//!   `feed`; end-of-text does not stop them), positions 128 to 160;
//!   criterion reports generated tokens/s.
//!
//! * `llm/quantized/second_question`: the prompt with its last 16 tokens
//!   changed (another question over the same context), prefilled after the
//!   first prompt's state is in the model's prefix cache: only the changed
//!   tokens are fed.
//!
//! Besides criterion's wall-clock figures, each case prints to stderr its rate
//! per second of process CPU time (user + system, all threads) and the load
//! average at the start: on a machine shared with other builds the CPU figure
//! is the steadier one.

use std::time::Duration;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use flow_nodes::llm::{argmax, LanguageModel, Precision};
use support::{catalog_model, threads_and_load, workspace, Meter};

#[path = "support/mod.rs"]
mod support;

/// Most prompt tokens.
const PROMPT_TOKENS: usize = 128;
/// Greedy steps timed after the prompt.
const DECODE_TOKENS: usize = 32;

/// The chat prompt ids: "Summarize this text" and as many words of the
/// passage as fit in [`PROMPT_TOKENS`].
fn prompt_ids(lm: &LanguageModel, passage: &str) -> Vec<u32> {
    let words: Vec<&str> = passage.split_whitespace().collect();
    let ids = |n: usize| {
        let prompt = format!("Summarize this text in one sentence:\n\n{}", words[..n].join(" "));
        lm.prompt_ids(&prompt, None, true).expect("prompt ids")
    };
    let mut n = 1;
    while n < words.len() && ids(n + 1).len() <= PROMPT_TOKENS {
        n += 1;
    }
    ids(n)
}

fn llm(c: &mut Criterion) {
    // As the `flow` binary does at start-up.
    flow_engine::allocator::keep_freed_memory();
    let workspace = workspace();
    let model = catalog_model("smollm2-135m-instruct");
    let passage =
        std::fs::read_to_string(workspace.join("graphs/data/corpus/honeybees.md")).expect("the corpus passage");

    let mut group = c.benchmark_group("llm");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_secs(1));
    for precision in [Precision::F32, Precision::Quantized] {
        let name = precision.name();
        let lm = LanguageModel::load(&model.path, &Device::Cpu, precision).expect("loading the model");
        let prompt = prompt_ids(&lm, &passage);
        eprintln!("llm/{name}: {}; prompt of {} tokens; {}", lm.description(), prompt.len(), threads_and_load());

        group.throughput(Throughput::Elements(prompt.len() as u64)).measurement_time(Duration::from_secs(5));
        let meter = Meter::default();
        group.bench_function(format!("{name}/prefill"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let mut session = lm.session().expect("session");
                        meter.time(prompt.len() as u64, || session.feed(&prompt).expect("prefill"))
                    })
                    .sum()
            })
        });
        meter.report(&format!("llm/{name}/prefill"), "tokens");

        group.throughput(Throughput::Elements(DECODE_TOKENS as u64)).measurement_time(Duration::from_secs(10));
        let meter = Meter::default();
        group.bench_function(format!("{name}/decode"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let mut session = lm.session().expect("session");
                        let mut logits = session.feed(&prompt).expect("prefill");
                        meter.time(DECODE_TOKENS as u64, || {
                            for _ in 0..DECODE_TOKENS {
                                logits = session.feed(&[argmax(&logits)]).expect("decode step");
                            }
                        })
                    })
                    .sum()
            })
        });
        meter.report(&format!("llm/{name}/decode"), "tokens");

        if precision == Precision::Quantized {
            let mut second = prompt.clone();
            let n = second.len();
            second[n - 16..].copy_from_slice(&prompt[n - 32..n - 16]);
            group.throughput(Throughput::Elements(second.len() as u64)).measurement_time(Duration::from_secs(5));
            let meter = Meter::default();
            group.bench_function(format!("{name}/second_question"), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            lm.session_for(n + 1).expect("session").feed_prompt(&prompt, None).expect("first prompt");
                            let mut session = lm.session_for(n + 1).expect("session");
                            meter.time(second.len() as u64, || session.feed_prompt(&second, None).expect("second prompt"))
                        })
                        .sum()
                })
            });
            meter.report(&format!("llm/{name}/second_question"), "prompt tokens");
        }
    }
    group.finish();
}

criterion_group!(benches, llm);
criterion_main!(benches);
