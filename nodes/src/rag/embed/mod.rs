//! `embed.text`, and the embedding routine it shares with `index.search`:
//! the model comes from the resident pool, every text is looked up in the
//! per-text memo first, and only the texts it lacks go through the model.

mod bert;
mod gelu;
mod memo;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use candle_core::{Device, Tensor};
use flow_engine::models::{Residence, ResolvedModel};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

pub use bert::{EncoderSettings, Pooling, SentenceEncoder, TokenIds, TOKENS_PER_PASS};
use memo::EmbeddingMemo;

use super::values::Chunks;

/// The pool loader id of [`SentenceEncoder`]; bump it when the way weights
/// load or embeddings are computed changes (it is part of the memo's recipe).
const LOADER: &str = "sentence-bert-f32-v1";

/// Texts per forward pass unless the graph says otherwise.
pub(crate) const DEFAULT_BATCH: i64 = 32;

/// The `model` input of an op, as a resolved model.
pub(crate) fn model_input<'a>(inputs: &'a Inputs, port: &str) -> Result<&'a ResolvedModel> {
    let v = inputs.value(port)?;
    v.as_object::<ResolvedModel>().ok_or_else(|| anyhow!("input `{port}` should be a model, got {}", v.value_type()))
}

/// The sentence encoder of `model` on the node's device, from the model pool.
fn load_encoder(ctx: &OpContext, model: &ResolvedModel) -> Result<Arc<SentenceEncoder>> {
    let key = model.pool_key(ctx.device(), LOADER);
    let bytes = std::fs::metadata(model.dir().join("model.safetensors")).map_or(0, |m| m.len());
    ctx.models().get_or_load(&key, Residence::of(ctx.device()), bytes, || SentenceEncoder::load(model.dir(), ctx.device()))
}

/// Embeddings of `texts` as a row-major `[texts.len(), dim]` matrix, with
/// `dim`. Texts found in the memo under `memo_root` (default: the run's
/// memo folder `embeddings` inside the disk cache, see
/// [`OpContext::memo_dir`]; no memo when the run has no disk cache) are not
/// recomputed (under `--no-cache` the memo is written, not read); the others
/// go through the model `batch` at a time and are added to the memo. Reports progress
/// per batch and, once done, the message `computed N of M texts`.
pub(crate) fn embed_texts(
    ctx: &OpContext,
    model: &ResolvedModel,
    texts: &[&str],
    batch: usize,
    memo_root: Option<&Path>,
) -> Result<(Vec<f32>, usize)> {
    let settings = EncoderSettings::read(model.dir())?;
    let dim = settings.dim;
    let recipe = format!("{LOADER}|{}|{settings:?}", model.fingerprint);
    let memo = memo_root
        .map(Path::to_path_buf)
        .or_else(|| ctx.memo_dir("embeddings"))
        .map(|root| EmbeddingMemo::new(&root, &recipe, dim));
    let readable = memo.as_ref().filter(|_| ctx.memo_reads());

    let hashes: Vec<blake3::Hash> = texts.iter().map(|t| blake3::hash(t.as_bytes())).collect();
    let mut vectors: HashMap<blake3::Hash, Vec<f32>> = HashMap::new();
    let mut missing: Vec<usize> = Vec::new();
    let mut seen = HashSet::new();
    for (i, h) in hashes.iter().enumerate() {
        if !seen.insert(*h) {
            continue;
        }
        match readable.and_then(|m| m.get(h)) {
            Some(v) => {
                vectors.insert(*h, v);
            }
            None => missing.push(i),
        }
    }

    let mut message = format!("computed {} of {} texts", missing.len(), texts.len());
    if !missing.is_empty() {
        // The weights are only needed (and loaded) when something is new.
        let encoder = load_encoder(ctx, model)?;
        let missing_texts: Vec<&str> = missing.iter().map(|&i| texts[i]).collect();
        let ids = encoder.token_ids(&missing_texts)?;
        let rows: Vec<&[u32]> = ids.iter().map(|t| t.ids.as_slice()).collect();
        let mut memo_error = None;
        encoder.embed_batched(&rows, batch, |group, batch_vectors, done, total| {
            for (&j, v) in group.iter().zip(batch_vectors) {
                let h = hashes[missing[j]];
                if let (Some(memo), None) = (&memo, &memo_error) {
                    memo_error = memo.put(&h, &v).err();
                }
                vectors.insert(h, v);
            }
            ctx.progress(done as u64, total as u64);
            ctx.check_cancelled()
        })?;
        if let Some(e) = memo_error {
            ctx.message(&format!("the embedding memo is not kept: {e}"));
        }
        let truncated = ids.iter().filter(|t| t.truncated).count();
        if truncated > 0 {
            message.push_str(&format!(
                "; {truncated} longer than {} tokens were truncated (use smaller chunks)",
                settings.max_len
            ));
        }
    }
    ctx.message(&message);

    let mut flat = Vec::with_capacity(texts.len() * dim);
    for h in &hashes {
        flat.extend_from_slice(&vectors[h]);
    }
    Ok((flat, dim))
}

/// The texts of a `texts` input: a text, a list of texts, or chunks.
fn texts_of(value: &Value) -> Result<Vec<&str>> {
    match value {
        Value::Text(t) => Ok(vec![t]),
        Value::List(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_text().ok_or_else(|| anyhow!("input `texts`: item {i} should be text, got {}", v.value_type()))
            })
            .collect(),
        other => match other.as_object::<Chunks>() {
            Some(chunks) => Ok(chunks.chunks.iter().map(|c| c.text.as_str()).collect()),
            None => bail!("input `texts` should be text, a list of texts or chunks, got {}", other.value_type()),
        },
    }
}

pub(crate) struct EmbedText {
    spec: OpSpec,
    memo_root: Option<PathBuf>,
}

impl EmbedText {
    pub(crate) fn new(memo_root: Option<PathBuf>) -> Self {
        EmbedText {
            spec: OpSpec {
                name: "embed.text".into(),
                version: 1,
                doc: "Sentence embeddings with a BERT-family sentence-transformers model (e.g. \
                      `minilm`): WordPiece tokens truncated at the model's max_seq_length, the \
                      encoder's last hidden state mean-pooled over the real tokens, then \
                      L2-normalised, so a dot product of two rows is their cosine similarity. \
                      Every text's embedding is also kept in a memo keyed by the model's \
                      fingerprint and the text's hash (under <cache dir>/embeddings), so a \
                      re-run after a small change (a file added to a corpus) only computes the \
                      new texts; the node reports `computed N of M texts`."
                    .into(),
                inputs: vec![
                    PortSpec::new("model", ValueType::Model, "the embedding model (BERT, HF layout)"),
                    PortSpec::new(
                        "texts",
                        ValueType::Any,
                        "what to embed: a text, a list of texts, or chunks (from text.chunk)",
                    ),
                    PortSpec::with_default(
                        "batch",
                        ValueType::Int,
                        DEFAULT_BATCH,
                        "texts per forward pass (similar lengths are batched together)",
                    ),
                ],
                outputs: vec![PortSpec::new(
                    "embeddings",
                    ValueType::Embeddings,
                    "f32 [N, D] on the CPU, one unit-length row per text, in input order",
                )],
                output: false,
                cost: Cost::Heavy,
            },
            memo_root,
        }
    }
}

impl Op for EmbedText {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let model = model_input(inputs, "model")?;
        let texts = texts_of(inputs.value("texts")?)?;
        let batch = inputs.int("batch")?;
        if batch < 1 {
            bail!("batch must be at least 1, got {batch}");
        }
        let (flat, dim) = embed_texts(ctx, model, &texts, batch as usize, self.memo_root.as_deref())?;
        let tensor = Tensor::from_vec(flat, (texts.len(), dim), &Device::Cpu)?;
        Ok(Outputs::single("embeddings", Value::tensor(ValueType::Embeddings, tensor)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rag::values::Chunk;

    #[test]
    fn texts_come_from_text_lists_and_chunks() {
        assert_eq!(texts_of(&Value::text("a")).unwrap(), ["a"]);
        let list = Value::list(vec![Value::text("a"), Value::text("b")]);
        assert_eq!(texts_of(&list).unwrap(), ["a", "b"]);
        let chunks = Chunks { chunks: vec![Chunk { path: "p".into(), start: 0, end: 1, text: "c".into() }] };
        assert_eq!(texts_of(&chunks.into_value()).unwrap(), ["c"]);
        let err = texts_of(&Value::list(vec![Value::Int(1)])).unwrap_err().to_string();
        assert!(err.contains("item 0 should be text"), "{err}");
        assert!(texts_of(&Value::Int(3)).is_err());
    }
}
