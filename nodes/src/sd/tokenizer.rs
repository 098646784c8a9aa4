//! The CLIP tokenizer of an SD directory's `tokenizer/` folder, padding and
//! truncating like transformers' `CLIPTokenizer(..., padding="max_length",
//! truncation=True)`.
//!
//! `tokenizer.json` is used when present; real SD 1.x/2.x repositories ship
//! only `vocab.json` + `merges.txt`, from which the same fast tokenizer is
//! built (transformers' CLIP conversion). Special tokens and the length come
//! from `special_tokens_map.json`, then `tokenizer_config.json`: SD 1.x pads
//! with `<|endoftext|>`, SD 2.x with `!`.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value as Json};
use tokenizers::Tokenizer;

/// A CLIP tokenizer producing fixed-length id sequences.
#[derive(Clone)]
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    max_len: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("max_len", &self.max_len)
            .finish()
    }
}

/// A special-token entry: `"<tok>"` or `{"content": "<tok>", ...}`.
fn token_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(m) => m.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

fn read_optional_json(path: &Path) -> Result<Json> {
    if !path.exists() {
        return Ok(Json::Null);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("cannot parse `{}`", path.display()))
}

impl ClipTokenizer {
    /// Loads the tokenizer folder `dir`; sequences are `min(model_max_length,
    /// max_positions)` long (`max_positions`: the text encoder's
    /// `max_position_embeddings`).
    pub fn load(dir: &Path, max_positions: usize) -> Result<Self> {
        let config = read_optional_json(&dir.join("tokenizer_config.json"))?;
        let special = read_optional_json(&dir.join("special_tokens_map.json"))?;
        let token = |key: &str, default: &str| {
            special.get(key).and_then(token_text).or_else(|| config.get(key).and_then(token_text)).unwrap_or_else(|| default.to_string())
        };
        let bos = token("bos_token", "<|startoftext|>");
        let eos = token("eos_token", "<|endoftext|>");
        let unk = token("unk_token", "<|endoftext|>");
        let pad = token("pad_token", &eos);
        let json_path = dir.join("tokenizer.json");
        let tokenizer = if json_path.exists() {
            Tokenizer::from_file(&json_path).map_err(|e| anyhow!("cannot load `{}`: {e}", json_path.display()))?
        } else {
            from_vocab_and_merges(dir, &bos, &eos, &unk)?
        };
        let id = |t: &str| tokenizer.token_to_id(t).ok_or_else(|| anyhow!("token `{t}` is not in the vocabulary of `{}`", dir.display()));
        let model_max = config.get("model_max_length").and_then(Json::as_f64).unwrap_or(max_positions as f64);
        let max_len = if model_max >= 2.0 { (model_max as usize).min(max_positions) } else { max_positions };
        Ok(ClipTokenizer { bos_id: id(&bos)?, eos_id: id(&eos)?, pad_id: id(&pad)?, max_len, tokenizer })
    }

    /// Sequence length of [`ClipTokenizer::encode`]'s output.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The padding token id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The end of `text` that [`ClipTokenizer::encode`] cuts off (only
    /// `max_len - 2` tokens fit between the start and end tokens), with the
    /// number of tokens of the whole text; `None` when all of it fits.
    pub fn cut_off<'t>(&self, text: &'t str) -> Result<Option<(&'t str, usize)>> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| anyhow!("cannot tokenize prompt: {e}"))?;
        let fit = self.max_len.saturating_sub(2);
        Ok(enc.get_offsets().get(fit).map(|&(start, _)| (text.get(start..).unwrap_or(""), enc.len())))
    }

    /// `[bos, tokens (truncated to max_len - 2), eos, pad...]`, exactly
    /// `max_len` ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| anyhow!("cannot tokenize prompt: {e}"))?;
        let body = enc.get_ids();
        let body = &body[..body.len().min(self.max_len.saturating_sub(2))];
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.bos_id);
        ids.extend_from_slice(body);
        ids.push(self.eos_id);
        ids.resize(self.max_len, self.pad_id);
        Ok(ids)
    }
}

/// transformers' conversion of a slow `CLIPTokenizer` (vocab.json +
/// merges.txt) into its fast form.
fn from_vocab_and_merges(dir: &Path, bos: &str, eos: &str, unk: &str) -> Result<Tokenizer> {
    let vocab_path = dir.join("vocab.json");
    let vocab: Json = read_optional_json(&vocab_path)?;
    if vocab.is_null() {
        anyhow::bail!("`{}` has neither tokenizer.json nor vocab.json", dir.display());
    }
    let merges_path = dir.join("merges.txt");
    let merges_text =
        std::fs::read_to_string(&merges_path).with_context(|| format!("cannot read `{}`", merges_path.display()))?;
    let merges: Vec<&str> =
        merges_text.lines().filter(|l| !l.starts_with("#version") && !l.trim().is_empty()).collect();
    let id = |t: &str| vocab.get(t).and_then(Json::as_u64).ok_or_else(|| anyhow!("`{t}` is not in `{}`", vocab_path.display()));
    let special = |t: &str, id: u64| {
        json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})
    };
    let (bos_id, eos_id) = (id(bos)?, id(eos)?);
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(bos, bos_id), special(eos, eos_id)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex":
                "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": [eos, eos_id], "cls": [bos, bos_id],
                           "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    });
    let bytes = serde_json::to_vec(&spec)?;
    Tokenizer::from_bytes(bytes).map_err(|e| anyhow!("cannot build the CLIP tokenizer of `{}`: {e}", dir.display()))
}
