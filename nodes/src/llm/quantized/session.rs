//! One generation on a [`QLlama`]: its KV cache (f16, preallocated for the
//! positions the run needs) and the forward pass over a batch of tokens.
//! All buffers live in the session, so a decode step allocates nothing.

use anyhow::{bail, Result};
use half::f16;
use half::slice::HalfFloatSliceExt;

use super::attention::{attend, Cached};
use super::ops::{rms_norm, rope, silu_mul};
use super::weights::QLlama;
use crate::kernels::pool::Pool;
use crate::kernels::quant::Acts;
use crate::llm::prefix::KvPrefix;

/// Per-token buffers, sized for a batch of tokens.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    acts: Vec<Acts>,
    logits: Vec<f32>,
    row_bytes: Vec<u8>,
}

/// A generation in progress.
pub struct QSession<'m> {
    model: &'m QLlama,
    /// `[layer][position][kv_heads * head_dim]`, f16 like llama.cpp's cache.
    k_cache: Vec<f16>,
    v_cache: Vec<f16>,
    capacity: usize,
    position: usize,
    /// The tokens fed so far.
    tokens: Vec<u32>,
    scratch: Scratch,
    pool: &'m Pool,
}

/// The three activation buffers a block uses: attention input, attention
/// output, feed-forward hidden state.
const ACT_ATTN: usize = 0;
const ACT_OUT: usize = 1;
const ACT_FFN: usize = 2;
const ACT_DOWN: usize = 3;

impl<'m> QSession<'m> {
    /// A session with room for `capacity` positions, on `pool`.
    pub fn new(model: &'m QLlama, capacity: usize, pool: &'m Pool) -> QSession<'m> {
        let c = &model.config;
        let per_layer = capacity * c.kv_heads * c.head_dim;
        let b = &model.blocks;
        let acts = match b.first() {
            Some(b) => vec![b.q.acts(), b.o.acts(), b.gate.acts(), b.down.acts()],
            None => Vec::new(),
        };
        QSession {
            model,
            k_cache: vec![f16::ZERO; per_layer * c.layers],
            v_cache: vec![f16::ZERO; per_layer * c.layers],
            capacity,
            position: 0,
            tokens: Vec::with_capacity(capacity),
            scratch: Scratch { acts, ..Scratch::default() },
            pool,
        }
    }

    /// Positions filled so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Bytes of the KV cache.
    pub fn cache_bytes(&self) -> usize {
        2 * 2 * self.k_cache.len()
    }

    /// The KV state of the tokens fed so far.
    pub fn snapshot(&self) -> KvPrefix {
        let c = &self.model.config;
        let kv_dim = c.kv_heads * c.head_dim;
        let copy = |cache: &[f16]| -> Vec<f16> {
            (0..c.layers)
                .flat_map(|l| cache[l * self.capacity * kv_dim..(l * self.capacity + self.position) * kv_dim].iter().copied())
                .collect()
        };
        KvPrefix { tokens: self.tokens.clone(), k: copy(&self.k_cache), v: copy(&self.v_cache) }
    }

    /// Starts a fresh session from the first `n` positions of `prefix`.
    pub fn restore(&mut self, prefix: &KvPrefix, n: usize) -> Result<()> {
        let c = &self.model.config;
        let kv_dim = c.kv_heads * c.head_dim;
        let len = prefix.tokens.len();
        if self.position != 0 || n > len || n > self.capacity || prefix.k.len() != c.layers * len * kv_dim {
            bail!("a stored prompt prefix does not fit this session");
        }
        for l in 0..c.layers {
            let (src, dst) = (l * len * kv_dim, l * self.capacity * kv_dim);
            self.k_cache[dst..dst + n * kv_dim].copy_from_slice(&prefix.k[src..src + n * kv_dim]);
            self.v_cache[dst..dst + n * kv_dim].copy_from_slice(&prefix.v[src..src + n * kv_dim]);
        }
        self.tokens.extend_from_slice(&prefix.tokens[..n]);
        self.position = n;
        Ok(())
    }

    /// Feeds `tokens` after the ones fed so far; returns the logits that
    /// predict the next token.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        let n = tokens.len();
        if n == 0 {
            bail!("no tokens to feed");
        }
        if self.position + n > self.capacity {
            bail!("{} positions do not fit the {} the session was made for", self.position + n, self.capacity);
        }
        let model = self.model;
        let c = &model.config;
        let (dim, kv_dim) = (c.dim, c.kv_heads * c.head_dim);
        let s = &mut self.scratch;
        s.x.resize(n * dim, 0.0);
        for (t, &id) in tokens.iter().enumerate() {
            if id as usize >= model.embedding.rows() {
                bail!("token id {id} is outside the vocabulary of {}", model.embedding.rows());
            }
            model.embedding.dequantize_row(id as usize, &mut s.x[t * dim..(t + 1) * dim], &mut s.row_bytes);
        }
        for (l, block) in model.blocks.iter().enumerate() {
            // Attention: projections, rotary, the new keys and values into the cache.
            let s = &mut self.scratch;
            s.xn.resize(n * dim, 0.0);
            for t in 0..n {
                rms_norm(&s.x[t * dim..(t + 1) * dim], &block.attn_norm, c.eps, &mut s.xn[t * dim..(t + 1) * dim]);
            }
            block.q.quantize(&s.xn, &mut s.acts[ACT_ATTN]);
            s.q.resize(n * dim, 0.0);
            s.k.resize(n * kv_dim, 0.0);
            s.v.resize(n * kv_dim, 0.0);
            block.q.matmul(&s.acts[ACT_ATTN], n, &mut s.q, self.pool);
            same_acts(&block.q, &block.k, &s.xn, &mut s.acts[ACT_ATTN]);
            block.k.matmul(&s.acts[ACT_ATTN], n, &mut s.k, self.pool);
            same_acts(&block.k, &block.v, &s.xn, &mut s.acts[ACT_ATTN]);
            block.v.matmul(&s.acts[ACT_ATTN], n, &mut s.v, self.pool);
            for t in 0..n {
                let pos = self.position + t;
                rope(&mut s.q[t * dim..(t + 1) * dim], c.head_dim, c.rope_dims, c.rope_base, pos);
                rope(&mut s.k[t * kv_dim..(t + 1) * kv_dim], c.head_dim, c.rope_dims, c.rope_base, pos);
                let at = (l * self.capacity + pos) * kv_dim;
                self.k_cache[at..at + kv_dim].convert_from_f32_slice(&s.k[t * kv_dim..(t + 1) * kv_dim]);
                self.v_cache[at..at + kv_dim].convert_from_f32_slice(&s.v[t * kv_dim..(t + 1) * kv_dim]);
            }
            s.att.resize(n * dim, 0.0);
            attention(self, l, n);
            // Output projection and feed-forward, each added to the residual.
            let s = &mut self.scratch;
            block.o.quantize(&s.att, &mut s.acts[ACT_OUT]);
            s.o.resize(n * dim, 0.0);
            block.o.matmul(&s.acts[ACT_OUT], n, &mut s.o, self.pool);
            s.x.iter_mut().zip(&s.o).for_each(|(x, o)| *x += o);
            for t in 0..n {
                rms_norm(&s.x[t * dim..(t + 1) * dim], &block.ffn_norm, c.eps, &mut s.xn[t * dim..(t + 1) * dim]);
            }
            let hidden = block.gate.rows();
            block.gate.quantize(&s.xn, &mut s.acts[ACT_FFN]);
            s.gate.resize(n * hidden, 0.0);
            s.up.resize(n * hidden, 0.0);
            block.gate.matmul(&s.acts[ACT_FFN], n, &mut s.gate, self.pool);
            same_acts(&block.gate, &block.up, &s.xn, &mut s.acts[ACT_FFN]);
            block.up.matmul(&s.acts[ACT_FFN], n, &mut s.up, self.pool);
            silu_mul(&mut s.gate, &s.up);
            block.down.quantize(&s.gate, &mut s.acts[ACT_DOWN]);
            block.down.matmul(&s.acts[ACT_DOWN], n, &mut s.o, self.pool);
            s.x.iter_mut().zip(&s.o).for_each(|(x, o)| *x += o);
        }
        self.position += n;
        self.tokens.extend_from_slice(tokens);
        // Logits of the last token only.
        let s = &mut self.scratch;
        let last = &s.x[(n - 1) * dim..n * dim];
        s.xn.resize(dim, 0.0);
        rms_norm(last, &model.norm, c.eps, &mut s.xn[..dim]);
        let output = model.output.as_ref().unwrap_or(&model.embedding);
        output.quantize(&s.xn[..dim], &mut s.acts[ACT_OUT]);
        s.logits.resize(output.rows(), 0.0);
        output.matmul(&s.acts[ACT_OUT], 1, &mut s.logits, self.pool);
        Ok(&s.logits)
    }
}

/// Re-quantizes `x` for `next` unless `prev` took the same activations.
fn same_acts(prev: &crate::kernels::quant::QMatrix, next: &crate::kernels::quant::QMatrix, x: &[f32], acts: &mut Acts) {
    if prev.format() != next.format() {
        next.quantize(x, acts);
    }
}

/// Causal attention of the session's `n` new tokens in layer `l` over the
/// cache, into `scratch.att`: one task per (key/value head, token); the
/// query heads that share a key/value head read each cached row once.
fn attention(session: &mut QSession<'_>, l: usize, n: usize) {
    let c = &session.model.config;
    let (hd, kv_dim, group) = (c.head_dim, c.kv_heads * c.head_dim, c.heads / c.kv_heads);
    let scale = 1.0 / (hd as f32).sqrt();
    let base = l * session.capacity * kv_dim;
    let (k_cache, v_cache) = (&session.k_cache[base..], &session.v_cache[base..]);
    let q = &session.scratch.q;
    let out = SharedOut(session.scratch.att.as_mut_ptr());
    let start = session.position;
    let dim = c.dim;
    let task = |i: usize| {
        let out = out;
        let (g, t) = (i % c.kv_heads, i / c.kv_heads);
        let len = start + t + 1;
        ATTENTION.with(|cell| {
            let a = &mut *cell.borrow_mut();
            a.q.resize(group * hd, 0.0);
            a.out.resize(group * hd, 0.0);
            a.acc.resize(group * hd, f16::ZERO);
            // Queries rounded to f16, as llama.cpp multiplies them with the f16 keys.
            for h in 0..group {
                let head = g * group + h;
                let src = &q[t * dim + head * hd..t * dim + (head + 1) * hd];
                for (dst, &v) in a.q[h * hd..(h + 1) * hd].iter_mut().zip(src) {
                    *dst = f16::from_f32(v).to_f32();
                }
            }
            let cached = Cached { k: &k_cache[g * hd..], v: &v_cache[g * hd..], stride: kv_dim, len };
            attend(&a.q, &cached, hd, scale, &mut a.out, &mut a.acc);
            for (h, out_h) in a.out.chunks_exact(hd).enumerate() {
                let head = g * group + h;
                for (d, &v) in out_h.iter().enumerate() {
                    // SAFETY: each (token, head) is written by one task.
                    unsafe { *out.0.add(t * dim + head * hd + d) = v };
                }
            }
        });
    };
    session.pool.run(c.kv_heads * n, &task);
}

/// Per-thread buffers of the attention tasks (kept between steps).
#[derive(Default)]
struct AttentionScratch {
    q: Vec<f32>,
    out: Vec<f32>,
    acc: Vec<f16>,
}

thread_local! {
    static ATTENTION: std::cell::RefCell<AttentionScratch> = std::cell::RefCell::new(AttentionScratch::default());
}

#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint elements of a buffer that outlives them.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}
