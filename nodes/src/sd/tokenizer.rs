//! The CLIP tokenizer of an SD directory's `tokenizer/` folder, padding and
//! truncating like transformers' `CLIPTokenizer(..., padding="max_length",
//! truncation=True)`.
//!
//! `tokenizer.json` is used when present; real SD 1.x/2.x repositories ship
//! only `vocab.json` + `merges.txt`, from which the same fast tokenizer is
//! built (transformers' CLIP conversion). Special tokens and the length come
//! from `special_tokens_map.json`, then `tokenizer_config.json`: SD 1.x pads
//! with `<|endoftext|>`, SD 2.x with `!`.
//!
//! Single-file checkpoints carry no tokenizer: [`ClipTokenizer::standard`]
//! builds the standard CLIP one from the BPE merges embedded in the binary
//! (`nodes/assets/clip-bpe-merges.txt`, OpenAI CLIP's
//! `bpe_simple_vocab_16e6` as transformers ships it, checked against a
//! pinned sha256); the vocabulary follows from the merges as CLIP builds it.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

/// The CLIP BPE merges (transformers' `merges.txt` of every SD 1.x/2.x
/// repository: a `#version` line, then 48894 merges).
const MERGES: &str = include_str!("../../assets/clip-bpe-merges.txt");

/// sha256 of [`MERGES`].
const MERGES_SHA256: &str = "9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a";

/// Start of every CLIP sequence.
const BOS: &str = "<|startoftext|>";

/// End of every CLIP sequence, and the unknown token.
const EOS: &str = "<|endoftext|>";

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

    /// The standard CLIP tokenizer from the embedded merges, padding with
    /// `pad` (`<|endoftext|>` for SD 1.x, `!` for SD 2.x) to
    /// `max_positions` tokens (the text encoder's, 77 in SD).
    pub fn standard(pad: &str, max_positions: usize) -> Result<Self> {
        let digest = Sha256::digest(MERGES.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        if hex != MERGES_SHA256 {
            bail!("the embedded CLIP BPE merges have sha256 {hex}, expected {MERGES_SHA256}: the flow binary is damaged");
        }
        let merges = merge_lines(MERGES);
        let vocab = clip_vocab(&merges);
        let tokenizer = fast_tokenizer(vocab, merges, BOS, EOS, EOS)?;
        let id = |t: &str| tokenizer.token_to_id(t).ok_or_else(|| anyhow!("token `{t}` is not in the CLIP vocabulary"));
        Ok(ClipTokenizer { bos_id: id(BOS)?, eos_id: id(EOS)?, pad_id: id(pad)?, max_len: max_positions, tokenizer })
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

/// The merge rules of a `merges.txt` text (header and blank lines dropped).
fn merge_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with("#version") && !l.trim().is_empty()).collect()
}

/// GPT-2's reversible byte-to-character map, in CLIP's order: the printable
/// bytes map to themselves, the others to U+0100 onwards.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let mut chars: Vec<char> = (0..256u32).filter(|&b| printable(b)).filter_map(char::from_u32).collect();
    chars.extend((0..256u32).filter(|&b| !printable(b)).enumerate().filter_map(|(n, _)| char::from_u32(256 + n as u32)));
    chars
}

/// CLIP's vocabulary from its merges: the 256 byte characters, the same
/// with `</w>`, one token per merge, then the start and end tokens.
fn clip_vocab(merges: &[&str]) -> Json {
    let chars = byte_chars();
    let tokens = chars
        .iter()
        .map(|c| c.to_string())
        .chain(chars.iter().map(|c| format!("{c}</w>")))
        .chain(merges.iter().map(|m| m.replace(' ', "")))
        .chain([BOS.to_string(), EOS.to_string()]);
    Json::Object(tokens.enumerate().map(|(i, t)| (t, json!(i))).collect())
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
    fast_tokenizer(vocab, merge_lines(&merges_text), bos, eos, unk)
        .with_context(|| format!("cannot build the CLIP tokenizer of `{}`", dir.display()))
}

/// The fast CLIP tokenizer of a vocabulary and its merges.
fn fast_tokenizer(vocab: Json, merges: Vec<&str>, bos: &str, eos: &str, unk: &str) -> Result<Tokenizer> {
    let id = |t: &str| vocab.get(t).and_then(Json::as_u64).ok_or_else(|| anyhow!("`{t}` is not in the vocabulary"));
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
    Tokenizer::from_bytes(bytes).map_err(|e| anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_tokenizer() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-sd/pipeline/tokenizer")
    }

    #[test]
    fn the_vocabulary_built_from_the_embedded_merges_is_clips() {
        let want: Json = serde_json::from_slice(&std::fs::read(fixture_tokenizer().join("vocab.json")).unwrap()).unwrap();
        let got = clip_vocab(&merge_lines(MERGES));
        assert_eq!(got.as_object().unwrap().len(), 49408);
        assert_eq!(got, want);
    }

    #[test]
    fn the_standard_tokenizer_pads_as_each_family_does() {
        let fast = ClipTokenizer::load(&fixture_tokenizer(), 77).unwrap();
        let sd1 = ClipTokenizer::standard("<|endoftext|>", 77).unwrap();
        for text in ["a photo of a cat", "", "Hello   World!! 123 don't émigré", &"a long prompt, ".repeat(30)] {
            assert_eq!(sd1.encode(text).unwrap(), fast.encode(text).unwrap(), "{text:?}");
        }
        let sd2 = ClipTokenizer::standard("!", 77).unwrap();
        assert_eq!(sd2.pad_id(), 0);
        assert_eq!(&sd2.encode("a cat").unwrap()[..5], &[49406, 320, 2368, 49407, 0]);
        assert!(ClipTokenizer::standard("<pad>", 77).is_err());
    }
}
