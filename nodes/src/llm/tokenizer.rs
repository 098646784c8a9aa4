//! Tokenizers of language models, and incremental decoding for streaming.
//!
//! A tokenizer comes from one of two places:
//! * a Hugging Face `tokenizer.json` (safetensors models, or a GGUF file with
//!   a `tokenizer.json` beside it, which then wins);
//! * the vocabulary embedded in a GGUF file (`tokenizer.ggml.*`): a GPT-2
//!   style byte-level BPE (`tokenizer.ggml.model = gpt2`) is rebuilt from its
//!   tokens, merges and token types, with the pre-tokenizer that llama.cpp
//!   uses for the file's `tokenizer.ggml.pre`. SentencePiece vocabularies
//!   (`llama`) are not rebuilt: such models need a `tokenizer.json` beside the
//!   file.
//!
//! Prompts are encoded without adding special tokens (chat templates write
//! them), but special-token text in the prompt (`<|im_start|>`) becomes the
//! special token. Decoding skips special tokens.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// llama.cpp's split of Llama 3 style vocabularies (`llama-bpe`, `llama3`, ...).
const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's split of Qwen2 vocabularies: like Llama 3, but single digits.
const REGEX_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: u32 = 3;
const TOKEN_TYPE_USER_DEFINED: u32 = 4;

/// A language model's tokenizer.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("vocab_size", &self.vocab_size()).finish()
    }
}

impl TextTokenizer {
    /// Reads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner =
            Tokenizer::from_file(path).map_err(|e| anyhow!("cannot read the tokenizer {}: {e}", path.display()))?;
        Ok(TextTokenizer { inner })
    }

    /// Rebuilds the tokenizer embedded in a GGUF file's metadata.
    pub fn from_gguf(ct: &Content) -> Result<Self> {
        let kind = metadata_str(ct, "tokenizer.ggml.model")?;
        if kind != "gpt2" {
            bail!(
                "the GGUF file carries a `{kind}` tokenizer, which flow cannot rebuild (only \
                 byte-level BPE, `gpt2`): put the model's tokenizer.json beside the .gguf file"
            );
        }
        let tokens = string_array(ct, "tokenizer.ggml.tokens")?;
        let merges = string_array(ct, "tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| anyhow!("invalid merge `{m}` in tokenizer.ggml.merges"))
            })
            .collect::<Result<Vec<_>>>()?;
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| anyhow!("cannot build the GGUF tokenizer: {e}"))?;
        let mut inner = Tokenizer::new(bpe);

        let pre = match ct.metadata.get("tokenizer.ggml.pre") {
            Some(v) => v.to_string().map_err(|e| anyhow!("tokenizer.ggml.pre: {e}"))?.clone(),
            None => "gpt2".to_string(),
        };
        let byte_level = |use_regex| ByteLevel::new(false, true, use_regex);
        let split = |regex: &str| -> Result<PreTokenizerWrapper> {
            let split = Split::new(SplitPattern::Regex(regex.into()), SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| anyhow!("bad pre-tokenizer regex: {e}"))?;
            Ok(split.into())
        };
        let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
            "gpt2" | "default" | "mpt" | "olmo" | "jais" => byte_level(true).into(),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
                Sequence::new(vec![Digits::new(true).into(), byte_level(true).into()]).into()
            }
            "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" | "falcon3" => {
                Sequence::new(vec![split(REGEX_LLAMA3)?, byte_level(false).into()]).into()
            }
            "qwen2" | "deepseek-r1-qwen" => {
                inner.with_normalizer(Some(NFC)).map_err(|e| anyhow!("GGUF normalizer: {e}"))?;
                Sequence::new(vec![split(REGEX_QWEN2)?, byte_level(false).into()]).into()
            }
            other => bail!(
                "the GGUF tokenizer uses the pre-tokenizer `{other}`, which flow does not know: \
                 put the model's tokenizer.json beside the .gguf file"
            ),
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        if let Some(types) = ct.metadata.get("tokenizer.ggml.token_type") {
            let types = types.to_vec().map_err(|e| anyhow!("tokenizer.ggml.token_type: {e}"))?;
            let (mut special, mut user) = (Vec::new(), Vec::new());
            for (token, ty) in tokens.iter().zip(types) {
                match value_u32(ty)? {
                    TOKEN_TYPE_CONTROL => special.push(AddedToken::from(token.clone(), true)),
                    TOKEN_TYPE_USER_DEFINED => user.push(AddedToken::from(token.clone(), false).normalized(false)),
                    _ => {}
                }
            }
            inner.add_special_tokens(special).map_err(|e| anyhow!("GGUF special tokens: {e}"))?;
            inner.add_tokens(user).map_err(|e| anyhow!("GGUF user-defined tokens: {e}"))?;
        }
        Ok(TextTokenizer { inner })
    }

    /// The ids of `text`, without added special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| anyhow!("cannot tokenize the prompt: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| anyhow!("cannot decode tokens: {e}"))
    }

    /// The id of a token given by its text (special tokens included).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The text of a token id (as stored in the vocabulary).
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

fn metadata_str<'a>(ct: &'a Content, key: &str) -> Result<&'a str> {
    let v = ct.metadata.get(key).ok_or_else(|| anyhow!("the GGUF file has no `{key}`"))?;
    v.to_string().map(String::as_str).map_err(|e| anyhow!("`{key}`: {e}"))
}

fn string_array(ct: &Content, key: &str) -> Result<Vec<String>> {
    let v = ct.metadata.get(key).ok_or_else(|| anyhow!("the GGUF file has no `{key}`"))?;
    v.to_vec()
        .map_err(|e| anyhow!("`{key}`: {e}"))?
        .iter()
        .map(|s| s.to_string().cloned().with_context(|| format!("`{key}` holds a non-text entry")))
        .collect()
}

/// A GGUF integer of any width as u32.
pub(crate) fn value_u32(v: &Value) -> Result<u32> {
    Ok(match v {
        Value::U8(x) => *x as u32,
        Value::I8(x) => u32::try_from(*x)?,
        Value::U16(x) => *x as u32,
        Value::I16(x) => u32::try_from(*x)?,
        Value::U32(x) => *x,
        Value::I32(x) => u32::try_from(*x)?,
        Value::U64(x) => u32::try_from(*x)?,
        Value::I64(x) => u32::try_from(*x)?,
        other => bail!("expected an integer, got {other:?}"),
    })
}

/// Turns generated token ids into text pieces as they come, never splitting a
/// multi-byte character across pieces: a piece is released once the decoded
/// text no longer ends in an incomplete UTF-8 sequence (U+FFFD).
///
/// Each step decodes a short window (the tokens since the last released
/// piece, plus the piece before them as context, so that tokenizers that
/// strip a leading space at the start of a text keep the spaces between
/// pieces).
pub struct TokenStream<'a> {
    tokenizer: &'a TextTokenizer,
    ids: Vec<u32>,
    prev: usize,
    current: usize,
}

impl<'a> TokenStream<'a> {
    /// An empty stream.
    pub fn new(tokenizer: &'a TextTokenizer) -> Self {
        TokenStream { tokenizer, ids: Vec::new(), prev: 0, current: 0 }
    }

    /// Adds a token; returns the text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        let before = self.tokenizer.decode(&self.ids[self.prev..self.current])?;
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids[self.prev..])?;
        if text.len() > before.len() && !text.ends_with('\u{FFFD}') {
            let piece = match text.strip_prefix(before.as_str()) {
                Some(rest) => rest.to_string(),
                // The context decoded differently with more tokens after it;
                // release what follows its length, on a character boundary.
                None => text.chars().skip(before.chars().count()).collect(),
            };
            self.prev = self.current;
            self.current = self.ids.len();
            return Ok(Some(piece));
        }
        Ok(None)
    }

    /// The text of tokens not released yet (an incomplete character shows as
    /// U+FFFD); call once at the end.
    pub fn finish(&mut self) -> Result<Option<String>> {
        let before = self.tokenizer.decode(&self.ids[self.prev..self.current])?;
        let text = self.tokenizer.decode(&self.ids[self.prev..])?;
        self.prev = self.current;
        self.current = self.ids.len();
        Ok(text.strip_prefix(before.as_str()).filter(|rest| !rest.is_empty()).map(str::to_string))
    }
}
