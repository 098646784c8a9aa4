//! The diffusers `Transformer2DModel` (continuous input) and its
//! `BasicTransformerBlock`s with GEGLU feed-forward.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::sd::layers::{layer_norm, linear, linear_or_1x1, Attention, GroupNorm, LayerNorm};

/// Token rows per feed-forward chunk.
const FF_ROWS: usize = 1024;

/// The GEGLU feed-forward: `proj -> a * gelu(b) -> linear`, with the EXACT
/// (erf) GELU that diffusers uses (the tanh form is measurably off).
#[derive(Clone, Debug)]
struct FeedForward {
    proj: Linear,
    out: Linear,
    inner: usize,
}

impl FeedForward {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let inner = 4 * dim;
        Ok(FeedForward {
            proj: linear(dim, 2 * inner, true, vb.pp("net.0.proj"))?,
            out: linear(inner, dim, true, vb.pp("net.2"))?,
            inner,
        })
    }

    /// Runs token rows in chunks of [`FF_ROWS`], so the `8 x dim` wide
    /// intermediate stays small (no huge fresh allocations) and warm in cache.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let dim = dims[dims.len() - 1];
        let rows = x.elem_count() / dim;
        if rows <= FF_ROWS {
            return self.forward_rows(x);
        }
        let x = x.reshape((rows, dim))?;
        let chunks = (0..rows)
            .step_by(FF_ROWS)
            .map(|r| self.forward_rows(&x.narrow(0, r, FF_ROWS.min(rows - r))?))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&chunks, 0)?.reshape(dims)
    }

    fn forward_rows(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.proj.forward(x)?;
        if let Some(y) = crate::sd::cpu::geglu::try_fused(&h)? {
            return self.out.forward(&y);
        }
        let a = h.narrow(candle_core::D::Minus1, 0, self.inner)?;
        let gate = h.narrow(candle_core::D::Minus1, self.inner, self.inner)?.gelu_erf()?;
        self.out.forward(&(a * gate)?)
    }
}

/// Self-attention (or text attention with `only_cross_attention`), text
/// cross-attention and feed-forward, each pre-normed with a residual.
#[derive(Clone, Debug)]
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    only_cross_attention: bool,
}

impl BasicTransformerBlock {
    fn new(dim: usize, heads: usize, context_dim: usize, only_cross_attention: bool, vb: VarBuilder) -> Result<Self> {
        let head_dim = dim / heads;
        let attn1_context = if only_cross_attention { context_dim } else { dim };
        Ok(BasicTransformerBlock {
            norm1: layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::new(dim, attn1_context, heads, head_dim, false, vb.pp("attn1"))?,
            norm2: layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::new(dim, context_dim, heads, head_dim, false, vb.pp("attn2"))?,
            norm3: layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(dim, vb.pp("ff"))?,
            only_cross_attention,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let ctx1 = if self.only_cross_attention { Some(context) } else { None };
        let x = (self.attn1.forward(&self.norm1.forward(x)?, ctx1)? + x)?;
        let x = (self.attn2.forward(&self.norm2.forward(&x)?, Some(context))? + x)?;
        self.ff.forward(&self.norm3.forward(&x)?)? + x
    }
}

/// Hyper-parameters of one [`Transformer2D`].
#[derive(Clone, Copy, Debug)]
pub(super) struct TransformerConfig {
    pub(super) heads: usize,
    pub(super) depth: usize,
    pub(super) context_dim: usize,
    pub(super) groups: usize,
    pub(super) use_linear_projection: bool,
    pub(super) only_cross_attention: bool,
}

/// Group norm, projection to tokens, transformer blocks, projection back,
/// residual.
#[derive(Clone, Debug)]
pub(super) struct Transformer2D {
    norm: GroupNorm,
    proj_in: Linear,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Linear,
}

impl Transformer2D {
    pub(super) fn new(channels: usize, cfg: TransformerConfig, vb: VarBuilder) -> Result<Self> {
        let conv = !cfg.use_linear_projection;
        let blocks = (0..cfg.depth)
            .map(|i| {
                BasicTransformerBlock::new(
                    channels,
                    cfg.heads,
                    cfg.context_dim,
                    cfg.only_cross_attention,
                    vb.pp(format!("transformer_blocks.{i}")),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer2D {
            norm: GroupNorm::new(cfg.groups, channels, 1e-6, vb.pp("norm"))?,
            proj_in: linear_or_1x1(channels, channels, conv, vb.pp("proj_in"))?,
            blocks,
            proj_out: linear_or_1x1(channels, channels, conv, vb.pp("proj_out"))?,
        })
    }

    /// `x: (N, C, H, W)`, `context: (N, L, Cc)`.
    pub(super) fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let tokens = self.norm.forward(x, None)?.reshape((n, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let mut t = self.proj_in.forward(&tokens)?;
        for block in &self.blocks {
            t = block.forward(&t, context)?;
        }
        let out = self.proj_out.forward(&t)?.transpose(1, 2)?.reshape((n, c, h, w))?;
        out + x
    }
}
