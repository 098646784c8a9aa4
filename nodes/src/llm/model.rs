//! Loading language models, and running them one step at a time.
//!
//! Supported layouts:
//! * a GGUF file of the llama architecture (or a folder holding one), run by
//!   candle-transformers' `quantized_llama`, either on its quantized kernels
//!   or dequantized to f32 at load (see [`Precision`]); tokenizer and chat
//!   template come from the file's metadata unless a `tokenizer.json` /
//!   `tokenizer_config.json` / `chat_template.jinja` sits beside it;
//! * a Hugging Face folder (`config.json`, `*.safetensors`, `tokenizer.json`,
//!   `tokenizer_config.json`) of `model_type` `llama` (candle-transformers'
//!   `llama`) or `qwen2` (`qwen2`), in f32.
//!
//! A [`LanguageModel`] is immutable and shared (it lives in the engine's model
//! pool); each generation opens a [`Session`] that owns its KV cache.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, TensorInfo};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, quantized_llama, qwen2};
use serde_json::Value as Json;

use super::chat::{ChatTemplate, Message};
use super::prefix::{PrefixCache, PrefixMemo, CHECKPOINT};
use super::quantized::{QLlama, QSession};
use crate::kernels::pool::Pool;
use crate::kernels::quant::Isa;
use super::tokenizer::{value_u32, TextTokenizer};

/// Bumped when the quantized path's keys and values change for the same
/// weights and tokens: stored prefixes of older versions are not used.
const QUANTIZED_KV_VERSION: &str = "kv1";

/// Prompts are fed to the model in chunks of this many tokens, which bounds
/// the memory of the attention scores.
const PREFILL_CHUNK: usize = 512;

/// How a GGUF model's quantized weights are computed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// The quantized path for GGUF files.
    Auto,
    /// Dequantize every weight to f32 at load; plain f32 matmuls (the
    /// numerics of transformers' GGUF loader).
    F32,
    /// Keep the weights in their GGUF format: flow's kernels on the CPU
    /// (8-bit activations and attention arithmetic as llama.cpp's), candle's
    /// quantized kernels on other devices.
    Quantized,
}

impl Precision {
    /// Parses `auto`, `f32` or `quantized`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "auto" => Ok(Precision::Auto),
            "f32" => Ok(Precision::F32),
            "quantized" => Ok(Precision::Quantized),
            other => bail!("precision must be `auto`, `f32` or `quantized`, got `{other}`"),
        }
    }

    /// The name used in graph files.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::Quantized => "quantized",
        }
    }
}

/// Where a model's files are and in which layout.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Layout {
    Gguf(PathBuf),
    HfFolder(PathBuf),
}

impl Layout {
    fn find(path: &Path) -> Result<Layout> {
        let is_gguf = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
        if path.is_file() {
            if is_gguf(path) {
                return Ok(Layout::Gguf(path.to_path_buf()));
            }
            let dir = path.parent().unwrap_or(Path::new("."));
            if dir.join("config.json").is_file() {
                return Ok(Layout::HfFolder(dir.to_path_buf()));
            }
            bail!("{} is neither a .gguf file nor part of a Hugging Face model folder", path.display());
        }
        if path.join("config.json").is_file() {
            return Ok(Layout::HfFolder(path.to_path_buf()));
        }
        let mut ggufs: Vec<PathBuf> = fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && is_gguf(p))
            .collect();
        match ggufs.len() {
            1 => Ok(Layout::Gguf(ggufs.remove(0))),
            0 => bail!("{} holds neither a config.json nor a .gguf file", path.display()),
            _ => bail!("{} holds several .gguf files: name one", path.display()),
        }
    }
}

/// What loading a model will take, decided before loading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    /// The precision the weights will be computed in ([`Precision::Auto`]
    /// resolved).
    pub precision: Precision,
    /// Bytes the loaded weights will hold.
    pub bytes: u64,
    /// Loader id for the model pool key (changes with the precision).
    pub loader: &'static str,
}

impl LoadPlan {
    /// Reads the headers of the model at `path` (a file or folder) and decides
    /// how to load it.
    pub fn new(path: &Path, precision: Precision) -> Result<LoadPlan> {
        match Layout::find(path)? {
            Layout::Gguf(file) => {
                let (ct, _) = open_gguf(&file)?;
                let (mut stored, mut f32_bytes) = (0u64, 0u64);
                for info in ct.tensor_infos.values() {
                    let n = info.shape.elem_count() as u64;
                    stored += n / info.ggml_dtype.block_size() as u64 * info.ggml_dtype.type_size() as u64;
                    f32_bytes += 4 * n;
                }
                // In f32, without an `output.weight` the embedding table also
                // serves as the output projection, in its own copy.
                let embedding = ct.tensor_infos.get("token_embd.weight").map_or(0, |i| 4 * i.shape.elem_count() as u64);
                let tied = !ct.tensor_infos.contains_key("output.weight");
                Ok(if precision == Precision::F32 {
                    let bytes = if tied { f32_bytes + embedding } else { f32_bytes };
                    LoadPlan { precision: Precision::F32, bytes, loader: "llm-gguf-f32" }
                } else {
                    LoadPlan { precision: Precision::Quantized, bytes: stored, loader: "llm-gguf-quantized-v2" }
                })
            }
            Layout::HfFolder(dir) => {
                if precision == Precision::Quantized {
                    bail!("precision `quantized` needs a GGUF model; {} holds safetensors weights", dir.display());
                }
                let files = safetensors_files(&dir)?;
                // SAFETY: the files are memory-mapped read-only; the model store
                // never rewrites a model file in place.
                let st = unsafe { MmapedSafetensors::multi(&files) }
                    .with_context(|| format!("cannot read the safetensors files of {}", dir.display()))?;
                let bytes = st.tensors().iter().map(|(_, t)| 4 * t.shape().iter().product::<usize>() as u64).sum();
                Ok(LoadPlan { precision: Precision::F32, bytes, loader: "llm-hf-f32" })
            }
        }
    }
}

enum Weights {
    Gguf(Box<quantized_llama::ModelWeights>),
    Quantized(Box<QLlama>),
    Llama { model: Box<llama::Llama>, config: Box<llama::Config> },
    Qwen2(Box<qwen2::ModelForCausalLM>),
}

/// A loaded language model: weights, tokenizer, chat template and special
/// tokens.
pub struct LanguageModel {
    weights: Weights,
    device: Device,
    tokenizer: TextTokenizer,
    template: Option<ChatTemplate>,
    eos: BTreeSet<u32>,
    bos: Option<u32>,
    add_bos: bool,
    context: usize,
    precision: Precision,
    description: String,
    /// Recent prompts' KV states (quantized path), shared by the runs that
    /// use this loaded model.
    prefixes: PrefixCache,
}

impl std::fmt::Debug for LanguageModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LanguageModel")
            .field("description", &self.description)
            .field("eos", &self.eos)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl LanguageModel {
    /// Loads the model at `path` (a `.gguf` file, or a folder) on `device`;
    /// `precision` applies to GGUF weights (safetensors load in f32).
    pub fn load(path: &Path, device: &Device, precision: Precision) -> Result<Self> {
        match Layout::find(path)? {
            Layout::Gguf(file) => {
                let precision = match precision {
                    Precision::Auto => LoadPlan::new(&file, precision)?.precision,
                    p => p,
                };
                load_gguf(&file, device, precision)
            }
            Layout::HfFolder(dir) => {
                if precision == Precision::Quantized {
                    bail!("precision `quantized` needs a GGUF model; {} holds safetensors weights", dir.display());
                }
                load_hf(&dir, device)
            }
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The chat template, if the model has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// Token ids that end an answer.
    pub fn eos_ids(&self) -> &BTreeSet<u32> {
        &self.eos
    }

    /// The number of positions the model can attend to (prompt and answer).
    pub fn context_length(&self) -> usize {
        self.context
    }

    /// The precision the weights are computed in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// What the model is, for messages (`llama GGUF (F32/Q4_1/Q8_0) dequantized to f32`).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The text fed to the model for a user `prompt`: the chat template
    /// applied to an optional system message and the prompt, ending where the
    /// answer starts. With `chat` false, or a model without chat template,
    /// the prompt is fed as is (and `system` is an error).
    pub fn prompt_text(&self, prompt: &str, system: Option<&str>, chat: bool) -> Result<String> {
        match (&self.template, chat) {
            (Some(template), true) => {
                let mut messages = Vec::new();
                if let Some(system) = system {
                    messages.push(Message::new("system", system));
                }
                messages.push(Message::new("user", prompt));
                template.render(&messages, true)
            }
            _ => {
                if system.is_some() {
                    bail!(if chat {
                        "a system message needs a chat template, and this model has none"
                    } else {
                        "a system message needs the chat template (chat: true)"
                    });
                }
                Ok(prompt.to_string())
            }
        }
    }

    /// The token ids fed to the model (see [`LanguageModel::prompt_text`]);
    /// a raw prompt gets the BOS token when the model asks for one.
    pub fn prompt_ids(&self, prompt: &str, system: Option<&str>, chat: bool) -> Result<Vec<u32>> {
        let text = self.prompt_text(prompt, system, chat)?;
        let mut ids = Vec::new();
        let templated = chat && self.template.is_some();
        if !templated && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend(self.tokenizer.encode(&text)?);
        if ids.is_empty() {
            bail!("the prompt is empty");
        }
        Ok(ids)
    }

    /// The on-disk prompt-prefix memo of this model under `root` (a memo
    /// folder of the cache), named by the model's `fingerprint`; only the
    /// quantized path keeps one.
    pub fn prefix_memo(&self, root: &Path, fingerprint: &str) -> Option<PrefixMemo> {
        let Weights::Quantized(m) = &self.weights else { return None };
        let c = m.config();
        let name = format!("{}-{}", &fingerprint[..fingerprint.len().min(32)], QUANTIZED_KV_VERSION);
        Some(PrefixMemo::new(root.join(name), c.layers, c.kv_heads * c.head_dim))
    }

    /// A fresh generation state (empty KV cache) for the whole context.
    pub fn session(&self) -> Result<Session<'_>> {
        self.session_for(self.context)
    }

    /// A fresh generation state for at most `positions` tokens (prompt and
    /// answer): the quantized path preallocates its KV cache for them.
    pub fn session_for(&self, positions: usize) -> Result<Session<'_>> {
        let state = match &self.weights {
            Weights::Quantized(m) => {
                State::Quantized(Box::new(QSession::new(m, positions.min(self.context), Pool::global())))
            }
            Weights::Gguf(w) => {
                let mut w = w.clone();
                w.clear_kv_cache();
                State::Gguf(w)
            }
            Weights::Llama { model, config } => {
                State::Llama { model, cache: Box::new(llama::Cache::new(true, DType::F32, config, &self.device)?) }
            }
            Weights::Qwen2(m) => {
                let mut m = m.clone();
                m.clear_kv_cache();
                State::Qwen2(m)
            }
        };
        Ok(Session { lm: self, state, position: 0 })
    }
}

enum State<'a> {
    Gguf(Box<quantized_llama::ModelWeights>),
    Quantized(Box<QSession<'a>>),
    Llama { model: &'a llama::Llama, cache: Box<llama::Cache> },
    Qwen2(Box<qwen2::ModelForCausalLM>),
}

/// One generation in progress: the model and its KV cache.
pub struct Session<'a> {
    lm: &'a LanguageModel,
    state: State<'a>,
    position: usize,
}

impl Session<'_> {
    /// Feeds `ids` after the tokens fed so far; returns the logits that
    /// predict the next token (f32, one per vocabulary entry).
    pub fn feed(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.is_empty() {
            bail!("no tokens to feed");
        }
        if self.position + ids.len() > self.lm.context {
            bail!(
                "{} tokens do not fit the model's context of {} positions",
                self.position + ids.len(),
                self.lm.context
            );
        }
        let mut logits = None;
        let end = self.position + ids.len();
        for chunk in ids.chunks(PREFILL_CHUNK) {
            let input = Tensor::new(chunk, &self.lm.device)?.unsqueeze(0)?;
            let out = match &mut self.state {
                State::Quantized(q) => {
                    let logits = q.feed(chunk)?;
                    self.position += chunk.len();
                    if self.position == end {
                        return Ok(logits.to_vec());
                    }
                    continue;
                }
                State::Gguf(w) => w.forward(&input, self.position)?,
                State::Llama { model, cache } => model.forward(&input, self.position, cache)?,
                State::Qwen2(m) => m.forward(&input, self.position)?,
            };
            self.position += chunk.len();
            logits = Some(out);
        }
        let logits = logits.expect("at least one chunk");
        Ok(logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }

    /// The number of tokens fed so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Feeds a prompt to a fresh session, reusing the KV state of the
    /// longest prefix of it that the model's in-memory prefix cache or
    /// `memo` (on disk) holds, and keeping this prompt's state in both.
    /// Returns the logits and how many prompt tokens came from a stored
    /// prefix (only the quantized path keeps prefixes).
    pub fn feed_prompt(&mut self, ids: &[u32], memo: Option<&PrefixMemo>) -> Result<(Vec<f32>, usize)> {
        let State::Quantized(q) = &mut self.state else {
            return Ok((self.feed(ids)?, 0));
        };
        if self.position != 0 || ids.is_empty() {
            bail!("a prompt is fed to a fresh session");
        }
        // At least the last token is fed: its logits are the answer's start.
        let limit = ids.len() - 1;
        let memory = self.lm.prefixes.longest(ids).map(|(p, n)| (p, n.min(limit)));
        let disk = match (&memory, memo) {
            (Some((_, n)), _) if *n >= limit / CHECKPOINT * CHECKPOINT => None,
            (_, Some(memo)) => memo.longest(&ids[..limit]).map(|p| {
                let n = p.tokens.len();
                (Arc::new(p), n)
            }),
            _ => None,
        };
        let best = match (memory, disk) {
            (Some(m), Some(d)) => Some(if d.1 > m.1 { d } else { m }),
            (m, d) => m.or(d),
        };
        let reused = match best {
            Some((p, n)) if n > 0 => {
                q.restore(&p, n)?;
                n
            }
            _ => 0,
        };
        self.position = reused;
        let logits = self.feed(&ids[reused..])?;
        if let State::Quantized(q) = &self.state {
            let state = Arc::new(q.snapshot());
            if let Some(memo) = memo {
                // Only a recompute is lost when the memo cannot be written.
                let _ = memo.store(&state);
            }
            self.lm.prefixes.insert(state);
        }
        Ok((logits, reused))
    }
}

/// Opens a GGUF file (buffered: the metadata is read in many small pieces).
fn open_gguf(path: &Path) -> Result<(Content, BufReader<File>)> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::new(f);
    let ct = Content::read(&mut reader).map_err(|e| anyhow!("{} is not a readable GGUF file: {e}", path.display()))?;
    Ok((ct, reader))
}

fn load_gguf(path: &Path, device: &Device, precision: Precision) -> Result<LanguageModel> {
    let (mut ct, mut file) = open_gguf(path)?;
    let md_str = |key: &str| ct.metadata.get(key).and_then(|v| v.to_string().ok()).cloned();
    let md_u32 = |key: &str| ct.metadata.get(key).and_then(|v| value_u32(v).ok());
    let arch = md_str("general.architecture").unwrap_or_default();
    if arch != "llama" {
        bail!("{}: architecture `{arch}` is not supported in GGUF files (only `llama`)", path.display());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let sidecar_config = read_tokenizer_config(dir)?;
    let tokenizer = match dir.join("tokenizer.json") {
        p if p.is_file() => TextTokenizer::from_file(&p)?,
        _ => TextTokenizer::from_gguf(&ct)?,
    };
    let token_text = |id: Option<u32>| id.and_then(|id| tokenizer.token(id)).unwrap_or_default();
    let bos = md_u32("tokenizer.ggml.bos_token_id");
    let mut eos: BTreeSet<u32> =
        ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"]
            .into_iter()
            .filter_map(md_u32)
            .collect();
    let template_source = match sidecar_template(dir, sidecar_config.as_ref())? {
        Some(t) => Some(t),
        None => md_str("tokenizer.chat_template"),
    };
    let template = template_source
        .map(|src| ChatTemplate::new(&src, &token_text(bos), &token_text(eos.first().copied())))
        .transpose()?;
    eos.extend(
        sidecar_config.as_ref().and_then(|c| special_token(c, "eos_token")).and_then(|t| tokenizer.token_id(&t)),
    );
    let add_bos = ct.metadata.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
    let context = md_u32("llama.context_length").map_or(quantized_llama::MAX_SEQ_LEN, |n| n as usize);
    let context = context.min(quantized_llama::MAX_SEQ_LEN);

    let kinds: BTreeSet<String> = ct.tensor_infos.values().map(|i| format!("{:?}", i.ggml_dtype)).collect();
    let kinds = kinds.into_iter().collect::<Vec<_>>().join("/");
    let (weights, description) = match precision {
        Precision::F32 => {
            let (f32_content, mut reader) = Dequantizer::new(&mut ct, &mut file)?;
            let w = quantized_llama::ModelWeights::from_gguf(f32_content, &mut reader, device)?;
            (Weights::Gguf(Box::new(w)), format!("llama GGUF ({kinds}) dequantized to f32"))
        }
        _ if matches!(device, Device::Cpu) => {
            let w = QLlama::read(&ct, file.get_mut(), path)?;
            (Weights::Quantized(Box::new(w)), format!("llama GGUF ({kinds}) on flow's quantized CPU kernels ({:?})", Isa::best()))
        }
        _ => {
            let w = quantized_llama::ModelWeights::from_gguf(ct, &mut file, device)?;
            (Weights::Gguf(Box::new(w)), format!("llama GGUF ({kinds}) on candle's quantized kernels"))
        }
    };
    Ok(LanguageModel {
        weights,
        device: device.clone(),
        tokenizer,
        template,
        eos,
        bos,
        add_bos,
        context,
        precision: if precision == Precision::F32 { Precision::F32 } else { Precision::Quantized },
        description,
        prefixes: PrefixCache::default(),
    })
}

/// Serves a GGUF file's tensors dequantized to f32, as if read from an f32
/// GGUF file: `quantized_llama` loads from it unchanged, and only one tensor
/// at a time is held in its f32 form besides the loaded weights.
struct Dequantizer<'a, R> {
    file: &'a mut R,
    data_offset: u64,
    /// Original tensors, by start in the f32 layout (sorted).
    tensors: Vec<(u64, u64, TensorInfo)>,
    len: u64,
    pos: u64,
    current: Option<(usize, Vec<u8>)>,
}

impl<'a, R: Read + Seek> Dequantizer<'a, R> {
    /// Moves the tensors of `ct` into a reader of their f32 form; returns the
    /// content describing that form (with `ct`'s metadata) and the reader.
    fn new(ct: &mut Content, file: &'a mut R) -> Result<(Content, Dequantizer<'a, R>)> {
        let mut originals: Vec<(String, TensorInfo)> = std::mem::take(&mut ct.tensor_infos).into_iter().collect();
        originals.sort_by_key(|(_, info)| info.offset);
        let mut infos = HashMap::new();
        let mut tensors = Vec::with_capacity(originals.len());
        let mut start = 0u64;
        for (name, info) in originals {
            let bytes = 4 * info.shape.elem_count() as u64;
            infos.insert(name, TensorInfo { ggml_dtype: GgmlDType::F32, shape: info.shape.clone(), offset: start });
            tensors.push((start, bytes, info));
            start += bytes;
        }
        let content = Content {
            magic: ct.magic,
            metadata: std::mem::take(&mut ct.metadata),
            tensor_infos: infos,
            tensor_data_offset: 0,
        };
        let reader =
            Dequantizer { file, data_offset: ct.tensor_data_offset, tensors, len: start, pos: 0, current: None };
        Ok((content, reader))
    }

    fn load(&mut self, index: usize) -> std::io::Result<()> {
        if self.current.as_ref().is_some_and(|(i, _)| *i == index) {
            return Ok(());
        }
        let info = &self.tensors[index].2;
        // The f32 "quantization" of the dequantized tensor holds its bytes as
        // an f32 GGUF file stores them.
        let bytes = info
            .read(self.file, self.data_offset, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .and_then(|t| QTensor::quantize(&t, GgmlDType::F32))
            .and_then(|q| Ok(q.data()?.into_owned()))
            .map_err(std::io::Error::other)?;
        self.current = Some((index, bytes));
        Ok(())
    }
}

impl<R: Read + Seek> Read for Dequantizer<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let index = self.tensors.partition_point(|(start, _, _)| *start <= self.pos) - 1;
        let (start, len, _) = self.tensors[index];
        self.load(index)?;
        let data = &self.current.as_ref().expect("loaded").1;
        let from = (self.pos - start) as usize;
        let n = buf.len().min(len as usize - from);
        buf[..n].copy_from_slice(&data[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for Dequantizer<'_, R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}

fn read_json(path: &Path) -> Result<Json> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn read_tokenizer_config(dir: &Path) -> Result<Option<Json>> {
    let p = dir.join("tokenizer_config.json");
    p.is_file().then(|| read_json(&p)).transpose()
}

/// The chat template of a folder: `chat_template.jinja`, else
/// `tokenizer_config.json`'s `chat_template` (a text, or a list of named
/// templates of which `default` is taken).
fn sidecar_template(dir: &Path, config: Option<&Json>) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return Ok(Some(fs::read_to_string(&jinja).with_context(|| format!("cannot read {}", jinja.display()))?));
    }
    Ok(match config.and_then(|c| c.get("chat_template")) {
        Some(Json::String(s)) => Some(s.clone()),
        Some(Json::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
            .and_then(|t| t.get("template").and_then(Json::as_str))
            .map(str::to_string),
        _ => None,
    })
}

/// A special token of `tokenizer_config.json`: a text or `{content: text}`.
fn special_token(config: &Json, key: &str) -> Option<String> {
    match config.get(key)? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

/// Token ids of a `config.json` / `generation_config.json` entry (a number or
/// a list of numbers).
fn json_ids(v: Option<&Json>) -> Vec<u32> {
    match v {
        Some(Json::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()).into_iter().collect(),
        Some(Json::Array(a)) => a.iter().filter_map(|n| n.as_u64().and_then(|n| u32::try_from(n).ok())).collect(),
        _ => Vec::new(),
    }
}

/// The safetensors files of a folder: those named by
/// `model.safetensors.index.json`, else every `*.safetensors`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    let files: BTreeSet<PathBuf> = if index.is_file() {
        let json = read_json(&index)?;
        let map = json
            .get("weight_map")
            .and_then(Json::as_object)
            .ok_or_else(|| anyhow!("{} has no weight_map", index.display()))?;
        map.values().filter_map(Json::as_str).map(|f| dir.join(f)).collect()
    } else {
        fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "safetensors"))
            .collect()
    };
    if files.is_empty() {
        bail!("{} holds no .safetensors weights", dir.display());
    }
    Ok(files.into_iter().collect())
}

fn load_hf(dir: &Path, device: &Device) -> Result<LanguageModel> {
    let config_json = read_json(&dir.join("config.json"))?;
    let model_type = config_json.get("model_type").and_then(Json::as_str).unwrap_or_default().to_string();
    let tokenizer_path = dir.join("tokenizer.json");
    if !tokenizer_path.is_file() {
        bail!("{} has no tokenizer.json", dir.display());
    }
    let tokenizer = TextTokenizer::from_file(&tokenizer_path)?;
    let tok_config = read_tokenizer_config(dir)?;
    let files = safetensors_files(dir)?;
    // SAFETY: the files are memory-mapped read-only; the model store never
    // rewrites a model file in place.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, device) }
        .with_context(|| format!("cannot map the safetensors files of {}", dir.display()))?;
    let parse_err = |e: serde_json::Error| anyhow!("{}/config.json: {e}", dir.display());
    let (weights, context) = match model_type.as_str() {
        "llama" => {
            let cfg: llama::LlamaConfig = serde_json::from_value(config_json.clone()).map_err(parse_err)?;
            let config = cfg.into_config(false);
            check_llama_tensors(&vb, &config)?;
            let model = llama::Llama::load(vb, &config)?;
            let context = config.max_position_embeddings;
            (Weights::Llama { model: Box::new(model), config: Box::new(config) }, context)
        }
        "qwen2" => {
            let config: qwen2::Config = serde_json::from_value(config_json.clone()).map_err(parse_err)?;
            let model = qwen2::ModelForCausalLM::new(&config, vb)?;
            (Weights::Qwen2(Box::new(model)), config.max_position_embeddings)
        }
        other => bail!("{}: model_type `{other}` is not supported (only `llama` and `qwen2`)", dir.display()),
    };

    let token = |key: &str| tok_config.as_ref().and_then(|c| special_token(c, key));
    let bos_text = token("bos_token").unwrap_or_default();
    let eos_text = token("eos_token").unwrap_or_default();
    let mut eos: BTreeSet<u32> = json_ids(config_json.get("eos_token_id")).into_iter().collect();
    let generation = dir.join("generation_config.json");
    if generation.is_file() {
        eos.extend(json_ids(read_json(&generation)?.get("eos_token_id")));
    }
    eos.extend(tokenizer.token_id(&eos_text));
    let bos = json_ids(config_json.get("bos_token_id")).first().copied().or_else(|| tokenizer.token_id(&bos_text));
    let add_bos = tok_config.as_ref().and_then(|c| c.get("add_bos_token")).and_then(Json::as_bool).unwrap_or(false);
    let template = sidecar_template(dir, tok_config.as_ref())?
        .map(|src| ChatTemplate::new(&src, &bos_text, &eos_text))
        .transpose()?;
    Ok(LanguageModel {
        weights,
        device: device.clone(),
        tokenizer,
        template,
        eos,
        bos,
        add_bos,
        context,
        precision: Precision::F32,
        description: format!("{model_type} safetensors in f32"),
        prefixes: PrefixCache::default(),
    })
}

/// candle's `Llama::load` panics on a missing block tensor: check first.
fn check_llama_tensors(vb: &VarBuilder, config: &llama::Config) -> Result<()> {
    let mut names = vec!["model.embed_tokens.weight".to_string(), "model.norm.weight".to_string()];
    if !config.tie_word_embeddings {
        names.push("lm_head.weight".into());
    }
    for i in 0..config.num_hidden_layers {
        for part in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
            "input_layernorm",
            "post_attention_layernorm",
        ] {
            names.push(format!("model.layers.{i}.{part}.weight"));
        }
    }
    let missing: Vec<&String> = names.iter().filter(|n| !vb.contains_tensor(n)).collect();
    if let Some(first) = missing.first() {
        bail!("the llama weights lack {} tensors, among them `{first}`", missing.len());
    }
    Ok(())
}
