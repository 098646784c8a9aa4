//! Generation on the `tiny:llama` model: loading, tokenizer and template,
//! sampling (seed, top-k, top-p, repeat penalty), stop strings, streaming,
//! and the op with its events and cancellation.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use candle_core::Device;
use flow_engine::models::ResolvedModel;
use flow_engine::{CancelToken, Event, EventSink, Inputs, Interrupted, Op, OpContext, Provenance, Value};

use super::*;

struct Tiny {
    _dir: tempfile::TempDir,
    path: PathBuf,
    lm: LanguageModel,
}

fn tiny() -> &'static Tiny {
    static TINY: OnceLock<Tiny> = OnceLock::new();
    TINY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        generate_tiny_llama(dir.path()).unwrap();
        let path = dir.path().to_path_buf();
        let lm = LanguageModel::load(&path, &Device::Cpu, Precision::Auto).unwrap();
        Tiny { _dir: dir, path, lm }
    })
}

const PROMPT: &str = "What is the capital of France?";

fn options(max_tokens: usize, sampling: SamplingParams) -> GenerateOptions {
    GenerateOptions { max_tokens, sampling, stop: Vec::new() }
}

fn run(options: &GenerateOptions) -> Generation {
    let lm = &tiny().lm;
    let ids = lm.prompt_ids(PROMPT, None, true).unwrap();
    generate(lm, &ids, options, None, &mut |_, _| Ok(())).unwrap()
}

fn sampled(seed: u64) -> SamplingParams {
    SamplingParams { temperature: 1.0, repeat_penalty: 1.0, seed, ..SamplingParams::default() }
}

#[test]
fn tiny_llama_loads_with_its_tokenizer_template_and_eos() {
    let lm = &tiny().lm;
    assert_eq!(lm.eos_ids().iter().copied().collect::<Vec<_>>(), [2]);
    assert_eq!(lm.precision(), Precision::F32);
    assert!(lm.description().contains("llama"), "{}", lm.description());
    assert_eq!(
        lm.prompt_text(PROMPT, None, true).unwrap(),
        "<|im_start|>system\nYou are a tiny random model.<|im_end|>\n<|im_start|>user\n\
         What is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(lm.prompt_text(PROMPT, None, false).unwrap(), PROMPT);
    assert!(lm.prompt_text(PROMPT, Some("sys"), false).is_err());
    let ids = lm.prompt_ids(PROMPT, Some("Be brief."), true).unwrap();
    assert_eq!(ids[0], 1, "<|im_start|> is parsed as the special token");
    let tok = lm.tokenizer();
    let text = "Hello world, the capital of France is Paris! café ☕ 42";
    assert_eq!(tok.decode(&tok.encode(text).unwrap()).unwrap(), text);
    assert_eq!(tok.encode(" the").unwrap().len(), 1, "merges spell common words");
    assert!(LoadPlan::new(&tiny().path, Precision::Quantized).is_err(), "safetensors have no quantized path");
}

#[test]
fn the_same_seed_gives_the_same_answer_and_another_seed_another() {
    let a = run(&options(24, sampled(1)));
    assert_eq!(a.tokens, run(&options(24, sampled(1))).tokens);
    let others: Vec<Vec<u32>> = (2..5).map(|s| run(&options(24, sampled(s))).tokens).collect();
    assert!(others.iter().all(|o| *o != a.tokens), "{a:?} {others:?}");
    assert!(!a.text.is_empty());
}

#[test]
fn greedy_is_temperature_zero_top_k_one_or_a_tiny_top_p() {
    let greedy = run(&options(16, SamplingParams::greedy())).tokens;
    assert!(greedy.len() >= 8, "the tiny model answers at some length: {greedy:?}");
    let top_k = SamplingParams { top_k: Some(1), temperature: 1.5, ..sampled(9) };
    assert_eq!(run(&options(16, top_k)).tokens, greedy);
    let top_p = SamplingParams { top_p: Some(1e-6), temperature: 1.5, ..sampled(9) };
    assert_eq!(run(&options(16, top_p)).tokens, greedy);
    // A wide top-k at high temperature does sample.
    let wide = SamplingParams { top_k: Some(50), temperature: 1.5, ..sampled(9) };
    assert_ne!(run(&options(16, wide)).tokens, greedy);
}

#[test]
fn the_repeat_penalty_breaks_repetitions() {
    let plain = run(&options(40, SamplingParams::greedy())).tokens;
    let penalized = SamplingParams { repeat_penalty: 3.0, repeat_last_n: 64, ..SamplingParams::greedy() };
    let penalized = run(&options(40, penalized)).tokens;
    assert_ne!(plain, penalized);
    let distinct = |t: &[u32]| t.iter().collect::<std::collections::BTreeSet<_>>().len();
    assert!(distinct(&penalized) > distinct(&plain), "{plain:?} vs {penalized:?}");
}

#[test]
fn a_stop_string_ends_the_answer_before_it() {
    let full = run(&options(40, SamplingParams::greedy()));
    let chars: Vec<char> = full.text.chars().collect();
    assert!(chars.len() > 12, "{:?}", full.text);
    let stop: String = chars[6..10].iter().collect();
    let want = &full.text[..full.text.find(&stop).unwrap()];
    let mut opts = options(40, SamplingParams::greedy());
    opts.stop = vec!["never appears \u{1}".into(), stop.clone()];
    let mut streamed = String::new();
    let lm = &tiny().lm;
    let ids = lm.prompt_ids(PROMPT, None, true).unwrap();
    let got = generate(lm, &ids, &opts, None, &mut |piece, _| {
        streamed.push_str(piece);
        Ok(())
    })
    .unwrap();
    assert_eq!(got.finish, FinishReason::Stop);
    assert_eq!(got.text, want, "stop string {stop:?}");
    assert_eq!(streamed, want, "the stop string never reaches the stream");
}

#[test]
fn max_tokens_bounds_the_answer() {
    let g = run(&options(5, SamplingParams::greedy()));
    assert_eq!((g.tokens.len(), g.finish), (5, FinishReason::MaxTokens));
    assert_eq!(g.decode_steps, 4, "the first token comes from the prompt's logits");
    assert_eq!(g.prompt_tokens, tiny().lm.prompt_ids(PROMPT, None, true).unwrap().len());
}

#[test]
fn streaming_never_splits_a_character() {
    let tok = tiny().lm.tokenizer();
    let text = "café ☕ and 日本 ok";
    let ids = tok.encode(text).unwrap();
    assert!(ids.len() > text.chars().count(), "multi-byte characters take several byte tokens");
    let mut stream = TokenStream::new(tok);
    let mut pieces = Vec::new();
    for &id in &ids {
        pieces.extend(stream.push(id).unwrap());
    }
    pieces.extend(stream.finish().unwrap());
    assert_eq!(pieces.concat(), text);
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    assert!(pieces.iter().any(|p| p.contains('☕')));
}

fn recording_ctx(dir: &Path, cancel: CancelToken) -> (OpContext, Arc<Mutex<Vec<Event>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let sink: EventSink = Arc::new(move |e| seen.lock().unwrap().push(e));
    let ctx = OpContext::new(
        "chat",
        Device::Cpu,
        dir.to_path_buf(),
        cancel,
        sink,
        Instant::now(),
        Arc::new(Provenance::default()),
    );
    (ctx, events)
}

fn op_inputs(given: &[(&str, Value)]) -> Inputs {
    let op = generate::Generate::new();
    let mut values: std::collections::BTreeMap<String, Value> =
        op.spec().inputs.iter().filter_map(|p| p.default.clone().map(|d| (p.name.to_string(), d))).collect();
    let model = ResolvedModel {
        reference: "tiny:llama".into(),
        path: tiny().path.clone(),
        kind: Some("llama".into()),
        fingerprint: "tiny-llama-test".into(),
    };
    values.insert("model".into(), model.into_value());
    values.insert("prompt".into(), Value::text(PROMPT));
    for (k, v) in given {
        assert!(op.spec().input(k).is_some(), "no input {k}");
        values.insert(k.to_string(), v.clone());
    }
    Inputs::new(values)
}

#[test]
fn the_op_streams_tokens_reports_progress_and_matches_the_loop() {
    let op = generate::Generate::new();
    let (ctx, events) = recording_ctx(&tiny().path, CancelToken::new());
    let given =
        [("max_tokens", Value::Int(12)), ("seed", Value::Int(3)), ("stop", Value::list(vec![Value::text("\u{1}")]))];
    let out = op.run(&op_inputs(&given), &ctx).unwrap();
    out.check_against(op.spec()).unwrap();
    let text = out.get("text").unwrap().as_text().unwrap().to_string();

    let events = events.lock().unwrap();
    let streamed: String = events
        .iter()
        .filter_map(|e| match e {
            Event::Token { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(streamed, text);
    let progress: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress { step, total, .. } => Some((*step, *total)),
            _ => None,
        })
        .collect();
    assert!(!progress.is_empty() && progress.iter().all(|&(_, t)| t == 12), "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0].0 <= w[1].0));
    assert!(events.iter().any(|e| matches!(e, Event::Message { text, .. } if text.contains("tok/s"))));

    // The op samples exactly as the loop does with the same settings.
    let sampling = SamplingParams { seed: 3, ..SamplingParams::default() };
    let want = run(&GenerateOptions { max_tokens: 12, sampling, stop: vec!["\u{1}".into()] });
    assert_eq!(text, want.text);
}

#[test]
fn the_op_stops_when_the_run_is_cancelled() {
    let op = generate::Generate::new();
    let cancel = CancelToken::new();
    cancel.cancel();
    let (ctx, _) = recording_ctx(&tiny().path, cancel);
    let e = op.run(&op_inputs(&[]), &ctx).unwrap_err();
    assert!(e.downcast_ref::<Interrupted>().is_some(), "{e:#}");

    // Cancelled while streaming: the op stops right after that token.
    let cancel = CancelToken::new();
    let trigger = cancel.clone();
    let steps = Arc::new(Mutex::new(Vec::new()));
    let seen = steps.clone();
    let sink: EventSink = Arc::new(move |e| {
        if let Event::Progress { step, .. } = e {
            seen.lock().unwrap().push(step);
            if step == 3 {
                trigger.cancel();
            }
        }
    });
    let ctx = OpContext::new(
        "chat",
        Device::Cpu,
        tiny().path.clone(),
        cancel,
        sink,
        Instant::now(),
        Arc::new(Provenance::default()),
    );
    let e = op
        .run(&op_inputs(&[("max_tokens", Value::Int(50)), ("stop", Value::list(vec![Value::text("\u{1}")]))]), &ctx)
        .unwrap_err();
    assert!(e.downcast_ref::<Interrupted>().is_some(), "{e:#}");
    assert_eq!(*steps.lock().unwrap(), [1, 2, 3]);
}

#[test]
fn the_op_rejects_bad_inputs() {
    let op = generate::Generate::new();
    let (ctx, _) = recording_ctx(&tiny().path, CancelToken::new());
    let cases: [(&[(&str, Value)], &str); 7] = [
        (&[("top_p", Value::Float(1.5))], "top_p"),
        (&[("top_k", Value::Int(0))], "top_k"),
        (&[("temperature", Value::Float(-0.1))], "temperature"),
        (&[("max_tokens", Value::Int(0))], "max_tokens"),
        (&[("precision", Value::text("int4"))], "precision"),
        (&[("precision", Value::text("quantized"))], "GGUF"),
        (&[("system", Value::text("x")), ("chat", Value::Bool(false))], "system"),
    ];
    for (given, want) in cases {
        let e = format!("{:#}", op.run(&op_inputs(given), &ctx).unwrap_err());
        assert!(e.contains(want), "{given:?}: {e}");
    }
    let e = format!("{:#}", op.run(&op_inputs(&[("stop", Value::list(vec![Value::Int(1)]))]), &ctx).unwrap_err());
    assert!(e.contains("stop"), "{e}");
}

#[test]
fn a_qwen2_folder_with_zero_biases_computes_what_the_llama_does() {
    // Qwen2 is llama plus q/k/v biases: with zero biases the tiny llama's
    // weights must give the same logits through candle's qwen2 model.
    let dir = tempfile::tempdir().unwrap();
    let llama = &tiny().path;
    let mut tensors = candle_core::safetensors::load(llama.join("model.safetensors"), &Device::Cpu).unwrap();
    for i in 0..2 {
        for (part, n) in [("q_proj", 64), ("k_proj", 32), ("v_proj", 32)] {
            let bias = candle_core::Tensor::zeros(n, candle_core::DType::F32, &Device::Cpu).unwrap();
            tensors.insert(format!("model.layers.{i}.self_attn.{part}.bias"), bias);
        }
    }
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(llama.join("config.json")).unwrap()).unwrap();
    for (k, v) in [
        ("model_type", serde_json::json!("qwen2")),
        ("hidden_act", serde_json::json!("silu")),
        ("sliding_window", serde_json::json!(1024)),
        ("max_window_layers", serde_json::json!(2)),
        ("use_sliding_window", serde_json::json!(false)),
    ] {
        config[k] = v;
    }
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(llama.join(f), dir.path().join(f)).unwrap();
    }
    let qwen = LanguageModel::load(dir.path(), &Device::Cpu, Precision::Auto).unwrap();
    assert!(qwen.description().starts_with("qwen2"), "{}", qwen.description());
    let ids = tiny().lm.prompt_ids(PROMPT, None, true).unwrap();
    assert_eq!(qwen.prompt_ids(PROMPT, None, true).unwrap(), ids);
    let (mut a, mut b) = (tiny().lm.session().unwrap(), qwen.session().unwrap());
    let (mut la, mut lb) = (a.feed(&ids).unwrap(), b.feed(&ids).unwrap());
    for step in 0..6 {
        let diff = la.iter().zip(&lb).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "step {step}: max |diff| {diff}");
        let next = argmax(&la);
        (la, lb) = (a.feed(&[next]).unwrap(), b.feed(&[next]).unwrap());
    }
}
