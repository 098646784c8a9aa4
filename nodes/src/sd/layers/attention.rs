//! Multi-head attention: the diffusers `Attention` layer (UNet transformers,
//! VAE mid blocks) and the scaled-dot-product core shared with CLIP.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::linear;

/// Scaled dot-product attention over heads.
///
/// `q: (B, Lq, H*D)` must already carry the `1/sqrt(D)` scale; `k`, `v`:
/// `(B, Lk, H*D)`; `mask`, if given, is added to the `(B*H, Lq, Lk)` scores.
/// The softmax runs in float32. Returns `(B, Lq, H*D)`.
pub(crate) fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, lq, hd) = q.dims3()?;
    let lk = k.dim(1)?;
    let d = hd / heads;
    let split = |t: &Tensor, l: usize| t.reshape((b, l, heads, d))?.transpose(1, 2)?.contiguous()?.reshape((b * heads, l, d));
    let (q, k, v) = (split(q, lq)?, split(k, lk)?, split(v, lk)?);
    let mut scores = q.matmul(&k.t()?)?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    let probs = if scores.dtype() == DType::F32 {
        candle_nn::ops::softmax_last_dim(&scores)?
    } else {
        candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(scores.dtype())?
    };
    probs
        .matmul(&v)?
        .reshape((b, heads, lq, d))?
        .transpose(1, 2)?
        .reshape((b, lq, hd))
}

/// The diffusers `Attention` layer (`to_q`, `to_k`, `to_v`, `to_out.0`; the
/// legacy VAE names `query`, `key`, `value`, `proj_attn` are accepted too).
#[derive(Clone, Debug)]
pub(crate) struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl Attention {
    /// Loads an attention layer: queries from `query_dim` channels, keys and
    /// values from `context_dim` channels, `heads` heads of `head_dim`.
    pub(crate) fn new(
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        let legacy = vb.contains_tensor("query.weight");
        let (q, k, v, out) = if legacy {
            ("query", "key", "value", "proj_attn")
        } else {
            ("to_q", "to_k", "to_v", "to_out.0")
        };
        let scale = (head_dim as f64).powf(-0.5);
        let to_q = linear(query_dim, inner, qkv_bias, vb.pp(q))?;
        // The softmax scale is folded into the query projection.
        let to_q = Linear::new((to_q.weight() * scale)?, to_q.bias().map(|b| b * scale).transpose()?);
        Ok(Attention {
            to_q,
            to_k: linear(context_dim, inner, qkv_bias, vb.pp(k))?,
            to_v: linear(context_dim, inner, qkv_bias, vb.pp(v))?,
            to_out: linear(inner, query_dim, true, vb.pp(out))?,
            heads,
        })
    }

    /// Attends from `x: (B, L, C)` to `context: (B, Lc, Cc)` (to `x` itself
    /// when `None`).
    pub(crate) fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let context = context.unwrap_or(x);
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(context)?;
        let v = self.to_v.forward(context)?;
        self.to_out.forward(&sdpa(&q, &k, &v, self.heads, None)?)
    }
}
