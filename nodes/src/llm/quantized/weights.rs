//! Reading a llama GGUF file's tensors without dequantizing them.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, TensorInfo};
use candle_core::quantized::GgmlDType;

use super::QMatrix;
use crate::kernels::quant::Format;

/// The shape of the network, from the GGUF metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct QLlamaConfig {
    /// Width of the residual stream.
    pub dim: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (fewer with grouped-query attention).
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Values rotated per head.
    pub rope_dims: usize,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub eps: f32,
}

/// One transformer block.
#[derive(Debug)]
pub(super) struct Block {
    pub(super) attn_norm: Vec<f32>,
    pub(super) q: QMatrix,
    pub(super) k: QMatrix,
    pub(super) v: QMatrix,
    pub(super) o: QMatrix,
    pub(super) ffn_norm: Vec<f32>,
    pub(super) gate: QMatrix,
    pub(super) up: QMatrix,
    pub(super) down: QMatrix,
}

/// A llama model's weights in their stored formats.
#[derive(Debug)]
pub struct QLlama {
    pub(super) config: QLlamaConfig,
    pub(super) embedding: QMatrix,
    pub(super) blocks: Vec<Block>,
    pub(super) norm: Vec<f32>,
    /// The output projection; `None` when tied to the embedding.
    pub(super) output: Option<QMatrix>,
}

fn format_of(dtype: GgmlDType) -> Result<Format> {
    Ok(match dtype {
        GgmlDType::F32 => Format::F32,
        GgmlDType::F16 => Format::F16,
        GgmlDType::BF16 => Format::BF16,
        GgmlDType::Q4_0 => Format::Q4_0,
        GgmlDType::Q4_1 => Format::Q4_1,
        GgmlDType::Q5_0 => Format::Q5_0,
        GgmlDType::Q5_1 => Format::Q5_1,
        GgmlDType::Q8_0 => Format::Q8_0,
        GgmlDType::Q4K => Format::Q4K,
        GgmlDType::Q5K => Format::Q5K,
        GgmlDType::Q6K => Format::Q6K,
        other => bail!("tensors of type {other:?} are not supported"),
    })
}

struct Reader<'a> {
    ct: &'a Content,
    file: &'a mut File,
    path: &'a Path,
}

impl Reader<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.ct.tensor_infos.get(name).ok_or_else(|| anyhow!("{}: tensor `{name}` is missing", self.path.display()))
    }

    fn bytes(&mut self, name: &str, len: usize) -> Result<Vec<u8>> {
        let offset = self.ct.tensor_data_offset + self.info(name)?.offset;
        let mut data = vec![0u8; len];
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.read_exact(&mut data).with_context(|| format!("{}: cannot read tensor `{name}`", self.path.display()))?;
        Ok(data)
    }

    /// A `[rows, cols]` matrix (GGUF dims `cols, rows`).
    fn matrix(&mut self, name: &str) -> Result<QMatrix> {
        let info = self.info(name)?;
        let (rows, cols) = match info.shape.dims() {
            [rows, cols] => (*rows, *cols),
            dims => bail!("{}: tensor `{name}` has shape {dims:?}, expected a matrix", self.path.display()),
        };
        let format = format_of(info.ggml_dtype)?;
        let data = self.bytes(name, rows * format.row_bytes(cols))?;
        QMatrix::new(format, rows, cols, data).with_context(|| format!("tensor `{name}`"))
    }

    /// A vector of `len` values, as f32.
    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let m = self.info(name)?;
        if m.shape.elem_count() != len {
            bail!("{}: tensor `{name}` has {} values, expected {len}", self.path.display(), m.shape.elem_count());
        }
        let format = format_of(m.ggml_dtype)?;
        let data = self.bytes(name, format.row_bytes(len))?;
        let mut out = vec![0f32; len];
        crate::kernels::quant::formats::dequantize_row(format, &data, &mut out);
        Ok(out)
    }
}

impl QLlama {
    /// Reads the weights of the llama GGUF `ct` (already parsed from `file`).
    pub fn read(ct: &Content, file: &mut File, path: &Path) -> Result<QLlama> {
        let md_u32 = |key: &str| -> Result<usize> {
            let v = ct.metadata.get(key).ok_or_else(|| anyhow!("{}: metadata `{key}` is missing", path.display()))?;
            Ok(crate::llm::tokenizer::value_u32(v)? as usize)
        };
        let md_f32 = |key: &str, default: f32| ct.metadata.get(key).and_then(|v| v.to_f32().ok()).unwrap_or(default);
        let dim = md_u32("llama.embedding_length")?;
        let heads = md_u32("llama.attention.head_count")?;
        let kv_heads = md_u32("llama.attention.head_count_kv").unwrap_or(heads);
        if heads == 0 || dim % heads != 0 || kv_heads == 0 || heads % kv_heads != 0 {
            bail!("{}: {heads} heads and {kv_heads} key/value heads do not fit a width of {dim}", path.display());
        }
        let head_dim = dim / heads;
        let config = QLlamaConfig {
            dim,
            layers: md_u32("llama.block_count")?,
            heads,
            kv_heads,
            head_dim,
            rope_dims: md_u32("llama.rope.dimension_count").unwrap_or(head_dim).min(head_dim),
            rope_base: md_f32("llama.rope.freq_base", 10_000.0),
            eps: md_f32("llama.attention.layer_norm_rms_epsilon", 1e-5),
        };
        let mut r = Reader { ct, file, path };
        let embedding = r.matrix("token_embd.weight")?;
        let mut blocks = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = |n: &str| format!("blk.{i}.{n}.weight");
            blocks.push(Block {
                attn_norm: r.vector(&p("attn_norm"), dim)?,
                q: r.matrix(&p("attn_q"))?,
                k: r.matrix(&p("attn_k"))?,
                v: r.matrix(&p("attn_v"))?,
                o: r.matrix(&p("attn_output"))?,
                ffn_norm: r.vector(&p("ffn_norm"), dim)?,
                gate: r.matrix(&p("ffn_gate"))?,
                up: r.matrix(&p("ffn_up"))?,
                down: r.matrix(&p("ffn_down"))?,
            });
        }
        let norm = r.vector("output_norm.weight", dim)?;
        let output = if ct.tensor_infos.contains_key("output.weight") { Some(r.matrix("output.weight")?) } else { None };
        let model = QLlama { config, embedding, blocks, norm, output };
        model.check_shapes(path)?;
        Ok(model)
    }

    fn check_shapes(&self, path: &Path) -> Result<()> {
        let c = &self.config;
        let kv = c.kv_heads * c.head_dim;
        let want = |m: &QMatrix, rows: usize, cols: usize, what: &str| -> Result<()> {
            if m.rows() != rows || m.cols() != cols {
                bail!("{}: `{what}` is {}x{}, expected {rows}x{cols}", path.display(), m.rows(), m.cols());
            }
            Ok(())
        };
        want(&self.embedding, self.embedding.rows(), c.dim, "token_embd")?;
        let hidden = self.blocks.first().map_or(0, |b| b.gate.rows());
        for b in &self.blocks {
            want(&b.q, c.dim, c.dim, "attn_q")?;
            want(&b.k, kv, c.dim, "attn_k")?;
            want(&b.v, kv, c.dim, "attn_v")?;
            want(&b.o, c.dim, c.dim, "attn_output")?;
            want(&b.gate, hidden, c.dim, "ffn_gate")?;
            want(&b.up, hidden, c.dim, "ffn_up")?;
            want(&b.down, c.dim, hidden, "ffn_down")?;
        }
        if let Some(o) = &self.output {
            want(o, o.rows(), c.dim, "output")?;
        }
        Ok(())
    }

    /// The network's shape.
    pub fn config(&self) -> &QLlamaConfig {
        &self.config
    }

    /// Vocabulary entries (rows of the output projection).
    pub fn vocab(&self) -> usize {
        self.output.as_ref().unwrap_or(&self.embedding).rows()
    }

    /// Bytes the weights hold.
    pub fn bytes(&self) -> usize {
        let m = |q: &QMatrix| q.bytes();
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| m(&b.q) + m(&b.k) + m(&b.v) + m(&b.o) + m(&b.gate) + m(&b.up) + m(&b.down) + 8 * self.config.dim)
            .sum();
        m(&self.embedding) + blocks + self.output.as_ref().map_or(0, m)
    }
}
