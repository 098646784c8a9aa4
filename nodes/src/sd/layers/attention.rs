//! Multi-head attention: the diffusers `Attention` layer (UNet transformers,
//! VAE mid blocks) and the scaled-dot-product core shared with CLIP.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::linear;

/// Scaled dot-product attention over heads.
///
/// `q: (B, Lq, H*D)` must already carry the `1/sqrt(D)` scale; `k`, `v`:
/// `(B, Lk, H*D)`; `causal` masks the keys after each query position.
/// Float32 CPU tensors take the fused kernel; otherwise candle ops run the
/// textbook computation with the softmax in float32. Returns `(B, Lq, H*D)`.
pub(crate) fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, causal: bool) -> Result<Tensor> {
    if let Some(out) = crate::sd::cpu::attention::try_fused(q, k, v, heads, causal)? {
        return Ok(out);
    }
    let (b, lq, hd) = q.dims3()?;
    let lk = k.dim(1)?;
    let d = hd / heads;
    let split = |t: &Tensor, l: usize| t.reshape((b, l, heads, d))?.transpose(1, 2)?.contiguous()?.reshape((b * heads, l, d));
    let (q, k, v) = (split(q, lq)?, split(k, lk)?, split(v, lk)?);
    let mut scores = q.matmul(&k.t()?)?.to_dtype(DType::F32)?;
    if causal {
        let mask: Vec<f32> =
            (0..lq).flat_map(|i| (0..lk).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        scores = scores.broadcast_add(&Tensor::from_vec(mask, (lq, lk), q.device())?)?;
    }
    candle_nn::ops::softmax_last_dim(&scores)?
        .to_dtype(v.dtype())?
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
        self.to_out.forward(&sdpa(&q, &k, &v, self.heads, false)?)
    }
}
