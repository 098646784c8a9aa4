//! [`SentenceEncoder`]: a sentence-transformers BERT model (HF layout:
//! `config.json`, `model.safetensors`, `tokenizer.json`, optionally
//! `sentence_bert_config.json` and `1_Pooling/config.json`) that turns texts
//! into unit-length embeddings.
//!
//! The recipe is sentence-transformers': WordPiece tokens with `[CLS]` and
//! `[SEP]`, truncated to `max_seq_length`; the BERT encoder's last hidden
//! state (post-LayerNorm blocks, `hidden_act: gelu` being the exact erf
//! GELU); pooled over the text's tokens (mean, or the `[CLS]` token when the
//! pooling config asks for it); then L2-normalised. The tokenizer file's own
//! padding is turned off.
//!
//! The encoder runs a batch *packed*: the tokens of all its texts form one
//! `[T, H]` matrix, so the projections and feed-forward layers (nearly all of
//! the work) are single large matrix products with no padding, and attention
//! runs text by text over that text's own tokens. This gives what running
//! each text alone gives (no masks needed) at the speed of a batch.

use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

use crate::rag::values::normalise;

/// How token states become one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean of the states of the text's tokens.
    Mean,
    /// The state of the first token (`[CLS]`).
    Cls,
}

/// The fields of a BERT `config.json` the encoder uses.
#[derive(Debug, Deserialize)]
struct Config {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    hidden_act: String,
    max_position_embeddings: usize,
    layer_norm_eps: f64,
    #[serde(default = "absolute")]
    position_embedding_type: String,
}

fn absolute() -> String {
    "absolute".into()
}

/// The feed-forward activation.
#[derive(Clone, Copy, Debug)]
enum Activation {
    /// `x * Φ(x)` with the exact erf (`gelu` in transformers).
    GeluErf,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn load(vb: &VarBuilder, name: &str, out_dim: usize, in_dim: usize) -> Result<Linear> {
        Ok(Linear {
            weight: vb.get((out_dim, in_dim), &format!("{name}.weight"))?.t()?.contiguous()?,
            bias: vb.get(out_dim, &format!("{name}.bias"))?,
        })
    }

    /// `xs [T, in] -> [T, out]`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs.matmul(&self.weight)?.broadcast_add(&self.bias)?)
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: &VarBuilder, name: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: vb.get(dim, &format!("{name}.weight"))?,
            bias: vb.get(dim, &format!("{name}.bias"))?,
            eps: eps as f32,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm(xs, &self.weight, &self.bias, self.eps)?)
    }
}

struct Layer {
    /// Query, key and value projections in one `[H, 3H]` product.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
    ff_norm: LayerNorm,
}

/// A loaded sentence-embedding model.
pub struct SentenceEncoder {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embedding: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    activation: Activation,
    tokenizer: Tokenizer,
    settings: EncoderSettings,
    device: Device,
}

/// What shapes a model's embeddings besides its weights, read from its
/// configuration files alone (cheap: no weights are loaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderSettings {
    /// Width of the embeddings (`hidden_size`).
    pub dim: usize,
    /// Most tokens per text (`[CLS]` and `[SEP]` included): `max_seq_length`
    /// of `sentence_bert_config.json`, else `max_position_embeddings`.
    pub max_len: usize,
    /// How token states are pooled (`1_Pooling/config.json`; mean if absent).
    pub pooling: Pooling,
}

impl EncoderSettings {
    /// The settings of the model in `dir`.
    pub fn read(dir: &Path) -> Result<EncoderSettings> {
        read_settings(dir).map(|(_, settings)| settings)
    }
}

fn read_settings(dir: &Path) -> Result<(Config, EncoderSettings)> {
    let config: Config = read_json(&dir.join("config.json"))?;
    ensure!(
        config.position_embedding_type == "absolute",
        "{}: position_embedding_type `{}` is not supported (only `absolute`)",
        dir.join("config.json").display(),
        config.position_embedding_type
    );
    let sbert: Option<serde_json::Value> = optional_json(&dir.join("sentence_bert_config.json"))?;
    let max_len = sbert
        .as_ref()
        .and_then(|j| j.get("max_seq_length")?.as_u64())
        .map_or(config.max_position_embeddings, |n| n as usize)
        .min(config.max_position_embeddings);
    let pooling = match optional_json::<serde_json::Value>(&dir.join("1_Pooling/config.json"))? {
        None => Pooling::Mean,
        Some(j) => {
            let on = |k: &str| j.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
            match (on("pooling_mode_mean_tokens"), on("pooling_mode_cls_token")) {
                (true, false) => Pooling::Mean,
                (false, true) => Pooling::Cls,
                _ => bail!(
                    "{}: only mean or [CLS] pooling (one of them) is supported",
                    dir.join("1_Pooling/config.json").display()
                ),
            }
        }
    };
    let settings = EncoderSettings { dim: config.hidden_size, max_len, pooling };
    Ok((config, settings))
}

/// Token ids of one text, with whether truncation cut it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenIds {
    /// The ids, `[CLS] ... [SEP]`.
    pub ids: Vec<u32>,
    /// True if the text was longer than the model's limit and was cut.
    pub truncated: bool,
}

impl SentenceEncoder {
    /// Loads the model in `dir` on `device`, in float32.
    pub fn load(dir: &Path, device: &Device) -> Result<SentenceEncoder> {
        let (config, settings) = read_settings(dir)?;
        let activation = match config.hidden_act.as_str() {
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => bail!("{}: hidden_act `{other}` is not supported", dir.join("config.json").display()),
        };
        let (h, heads) = (config.hidden_size, config.num_attention_heads);
        ensure!(heads > 0 && h % heads == 0, "hidden_size {h} is not a multiple of num_attention_heads {heads}");
        let max_len = settings.max_len;

        let tokenizer_file = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_file)
            .map_err(|e| anyhow!("cannot load the tokenizer {}: {e}", tokenizer_file.display()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_len, ..Default::default() }))
            .map_err(|e| anyhow!("cannot set the tokenizer's truncation: {e}"))?;

        let weights = dir.join("model.safetensors");
        ensure!(weights.is_file(), "{} is missing", weights.display());
        // SAFETY: the weights file is mapped read-only; the model store never
        // rewrites an installed file in place (installs are renames).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device)? };
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") { vb } else { vb.pp("bert") };
        let load = || -> Result<SentenceEncoder> {
            let word_embeddings = vb.get_unchecked("embeddings.word_embeddings.weight")?;
            let position_embeddings =
                vb.get((config.max_position_embeddings, h), "embeddings.position_embeddings.weight")?;
            let token_type_embedding = vb.get_unchecked("embeddings.token_type_embeddings.weight")?.get(0)?;
            let embed_norm = LayerNorm::load(&vb, "embeddings.LayerNorm", h, config.layer_norm_eps)?;
            let layers = (0..config.num_hidden_layers)
                .map(|i| load_layer(&vb, &format!("encoder.layer.{i}"), &config))
                .collect::<Result<_>>()?;
            Ok(SentenceEncoder {
                word_embeddings,
                position_embeddings,
                token_type_embedding,
                embed_norm,
                layers,
                heads,
                activation,
                tokenizer,
                settings,
                device: device.clone(),
            })
        };
        load().with_context(|| format!("loading BERT weights from {}", weights.display()))
    }

    /// What shapes the embeddings: width, token limit (longer texts are
    /// cut), pooling.
    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// The token ids of each text, unpadded.
    pub fn token_ids(&self, texts: &[&str]) -> Result<Vec<TokenIds>> {
        let encodings =
            self.tokenizer.encode_batch_fast(texts.to_vec(), true).map_err(|e| anyhow!("cannot tokenise: {e}"))?;
        Ok(encodings
            .into_iter()
            .map(|e| TokenIds { ids: e.get_ids().to_vec(), truncated: !e.get_overflowing().is_empty() })
            .collect())
    }

    /// The encoder's last hidden state for a batch of token-id rows, packed:
    /// `[T, H]` where the rows of text 0 come first, then those of text 1...
    pub fn hidden_states(&self, batch: &[&[u32]]) -> Result<Tensor> {
        let lens: Vec<usize> = batch.iter().map(|ids| ids.len()).collect();
        let positions = self.position_embeddings.dim(0)?;
        if let Some(&len) = lens.iter().find(|&&l| l == 0 || l > positions) {
            bail!("cannot encode a sequence of {len} tokens (1 to {positions} are possible)");
        }
        let ids = Tensor::new(batch.concat(), &self.device)?;
        let positions: Vec<u32> = lens.iter().flat_map(|&l| 0..l as u32).collect();
        let positions = Tensor::new(positions, &self.device)?;
        let xs = self
            .word_embeddings
            .embedding(&ids)?
            .add(&self.position_embeddings.embedding(&positions)?)?
            .broadcast_add(&self.token_type_embedding)?;
        let mut xs = self.embed_norm.forward(&xs)?;
        for layer in &self.layers {
            xs = self.layer_forward(layer, &xs, &lens)?;
        }
        Ok(xs)
    }

    fn layer_forward(&self, layer: &Layer, xs: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let h = self.settings.dim;
        let head_dim = h / self.heads;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let qkv = layer.qkv.forward(xs)?;
        let mut contexts = Vec::with_capacity(lens.len());
        let mut offset = 0;
        for &len in lens {
            // [len, 3H] -> [3, heads, len, head_dim]
            let parts = qkv
                .narrow(0, offset, len)?
                .reshape((len, 3, self.heads, head_dim))?
                .permute((1, 2, 0, 3))?
                .contiguous()?;
            let (q, k, v) = (parts.get(0)?, parts.get(1)?, parts.get(2)?);
            let scores = (q.matmul(&k.t()?)? * scale)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let context = probs.matmul(&v)?.transpose(0, 1)?.reshape((len, h))?;
            contexts.push(context);
            offset += len;
        }
        let context = Tensor::cat(&contexts, 0)?;
        let xs = layer.attn_norm.forward(&layer.attn_out.forward(&context)?.add(xs)?)?;
        let ff = layer.ff_in.forward(&xs)?;
        let ff = match self.activation {
            Activation::GeluErf => super::gelu::gelu_erf(&ff)?,
            Activation::GeluTanh => ff.gelu()?,
            Activation::Relu => ff.relu()?,
        };
        layer.ff_norm.forward(&layer.ff_out.forward(&ff)?.add(&xs)?)
    }

    /// Unit-length embeddings of a batch of token-id rows, one per row.
    pub fn embed_ids(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let hidden = self.hidden_states(batch)?;
        let mut rows = Vec::with_capacity(batch.len());
        let mut offset = 0;
        for ids in batch {
            let pooled = match self.settings.pooling {
                Pooling::Mean => hidden.narrow(0, offset, ids.len())?.mean(0)?,
                Pooling::Cls => hidden.get(offset)?,
            };
            rows.push(pooled);
            offset += ids.len();
        }
        let mut rows = Tensor::stack(&rows, 0)?.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        rows.iter_mut().for_each(|r| normalise(r));
        Ok(rows)
    }

    /// Unit-length embeddings of `texts`, in order, `batch` texts per
    /// forward pass.
    pub fn embed(&self, texts: &[&str], batch: usize) -> Result<Vec<Vec<f32>>> {
        let ids = self.token_ids(texts)?;
        let rows: Vec<&[u32]> = ids.iter().map(|t| t.ids.as_slice()).collect();
        let mut out = vec![Vec::new(); rows.len()];
        self.embed_batched(&rows, batch, |group, vectors, _, _| {
            for (&i, v) in group.iter().zip(vectors) {
                out[i] = v;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Embeds token-id rows in batches of at most `batch` rows, longest rows
    /// first. A batch also stops growing at [`TOKENS_PER_PASS`] tokens (it
    /// always holds at least one row), so that long texts do not make
    /// intermediates that spill out of the CPU caches. After each batch,
    /// `on_batch(rows, vectors, done, total)` gets the indices of the rows
    /// done, their embeddings, and the count of batches done and in all; an
    /// error from it stops the work.
    pub fn embed_batched(
        &self,
        rows: &[&[u32]],
        batch: usize,
        mut on_batch: impl FnMut(&[usize], Vec<Vec<f32>>, usize, usize) -> Result<()>,
    ) -> Result<()> {
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(rows[i].len()));
        let groups = batches(&order, |i| rows[i].len(), batch);
        // As many batches at once as there are threads: the layers' matrix
        // products split well over threads, but the rest of a forward pass
        // (attention text by text, norms, small ops) runs on one, so whole
        // batches side by side use the cores better. Each batch computes
        // exactly what it computes alone; results are handed over in order.
        let at_once = if self.device.is_cpu() { rayon::current_num_threads().max(1) } else { 1 };
        let mut done = 0;
        for wave in groups.chunks(at_once) {
            let vectors: Vec<Result<Vec<Vec<f32>>>> = wave
                .par_iter()
                .map(|group| self.embed_ids(&group.iter().map(|&i| rows[i]).collect::<Vec<_>>()))
                .collect();
            for (group, vectors) in wave.iter().zip(vectors) {
                done += 1;
                on_batch(group, vectors?, done, groups.len())?;
            }
        }
        Ok(())
    }
}

/// Most tokens one forward pass packs together (see
/// [`SentenceEncoder::embed_batched`]).
pub const TOKENS_PER_PASS: usize = 1024;

/// Splits `order` into runs of at most `batch` items and at most
/// [`TOKENS_PER_PASS`] tokens (`len(item)` each), at least one item per run.
fn batches(order: &[usize], len: impl Fn(usize) -> usize, batch: usize) -> Vec<&[usize]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut tokens = 0;
    for (pos, &i) in order.iter().enumerate() {
        let n = pos - start;
        if n > 0 && (n == batch.max(1) || tokens + len(i) > TOKENS_PER_PASS) {
            out.push(&order[start..pos]);
            start = pos;
            tokens = 0;
        }
        tokens += len(i);
    }
    if start < order.len() {
        out.push(&order[start..]);
    }
    out
}

fn load_layer(vb: &VarBuilder, prefix: &str, config: &Config) -> Result<Layer> {
    let (h, i, eps) = (config.hidden_size, config.intermediate_size, config.layer_norm_eps);
    let attn = format!("{prefix}.attention");
    let projections = ["query", "key", "value"]
        .iter()
        .map(|p| Linear::load(vb, &format!("{attn}.self.{p}"), h, h))
        .collect::<Result<Vec<_>>>()?;
    let qkv = Linear {
        weight: Tensor::cat(&projections.iter().map(|p| &p.weight).collect::<Vec<_>>(), D::Minus1)?.contiguous()?,
        bias: Tensor::cat(&projections.iter().map(|p| &p.bias).collect::<Vec<_>>(), 0)?,
    };
    Ok(Layer {
        qkv,
        attn_out: Linear::load(vb, &format!("{attn}.output.dense"), h, h)?,
        attn_norm: LayerNorm::load(vb, &format!("{attn}.output.LayerNorm"), h, eps)?,
        ff_in: Linear::load(vb, &format!("{prefix}.intermediate.dense"), i, h)?,
        ff_out: Linear::load(vb, &format!("{prefix}.output.dense"), h, i)?,
        ff_norm: LayerNorm::load(vb, &format!("{prefix}.output.LayerNorm"), h, eps)?,
    })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow!("{} is not a valid BERT file: {e}", path.display()))
}

fn optional_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stop_at_the_row_and_token_limits() {
        let order: Vec<usize> = (0..7).collect();
        let lens = [600, 500, 300, 300, 10, 10, 10];
        let got = batches(&order, |i| lens[i], 3);
        assert_eq!(got, [&[0][..], &[1, 2], &[3, 4, 5], &[6]]);
        let huge = batches(&[0], |_| 5000, 32);
        assert_eq!(huge, [&[0][..]], "a row over the token limit still gets its batch");
        assert!(batches(&[], |_| 1, 4).is_empty());
    }
}
