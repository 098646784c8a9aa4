//! The CLIP text encoder (transformers `CLIPTextModel`) as Stable Diffusion
//! uses it: token ids in, the final-layer-normed last hidden state out (or
//! that of an earlier layer: "CLIP skip").

use anyhow::{bail, Result};
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};

use super::config::ClipTextConfig;
use super::layers::{layer_norm, linear, sdpa, Activation, LayerNorm};

/// The causal self-attention of one encoder layer.
#[derive(Clone, Debug)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl ClipAttention {
    fn new(cfg: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let scale = ((d / cfg.num_attention_heads) as f64).powf(-0.5);
        let q = linear(d, d, true, vb.pp("q_proj"))?;
        // The softmax scale is folded into the query projection.
        let q_proj = Linear::new((q.weight() * scale)?, q.bias().map(|b| b * scale).transpose()?);
        Ok(ClipAttention {
            q_proj,
            k_proj: linear(d, d, true, vb.pp("k_proj"))?,
            v_proj: linear(d, d, true, vb.pp("v_proj"))?,
            out_proj: linear(d, d, true, vb.pp("out_proj"))?,
            heads: cfg.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let q = self.q_proj.forward(x)?;
        let k = self.k_proj.forward(x)?;
        let v = self.v_proj.forward(x)?;
        Ok(self.out_proj.forward(&sdpa(&q, &k, &v, self.heads, true)?)?)
    }
}

/// One pre-norm transformer layer: attention and MLP with residuals.
#[derive(Clone, Debug)]
struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl ClipEncoderLayer {
    fn new(cfg: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Ok(ClipEncoderLayer {
            layer_norm1: layer_norm(d, eps, vb.pp("layer_norm1"))?,
            self_attn: ClipAttention::new(cfg, vb.pp("self_attn"))?,
            layer_norm2: layer_norm(d, eps, vb.pp("layer_norm2"))?,
            fc1: linear(d, cfg.intermediate_size, true, vb.pp("mlp.fc1"))?,
            fc2: linear(cfg.intermediate_size, d, true, vb.pp("mlp.fc2"))?,
            act: Activation::parse(&cfg.hidden_act)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = (self.self_attn.forward(&self.layer_norm1.forward(x)?)? + x)?;
        let m = self.fc2.forward(&self.act.forward(&self.fc1.forward(&self.layer_norm2.forward(&h)?)?)?)?;
        Ok((m + h)?)
    }
}

/// The CLIP text transformer.
#[derive(Clone, Debug)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
    config: ClipTextConfig,
}

impl ClipTextModel {
    /// Builds the model from weights named as inside `text_model.` (pass
    /// `vb.pp("text_model")` for checkpoints that carry the prefix).
    pub fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        let d = config.hidden_size;
        let emb = vb.pp("embeddings");
        let token_embedding =
            Embedding::new(emb.pp("token_embedding").get((config.vocab_size, d), "weight")?, d);
        let position_embedding = emb.pp("position_embedding").get((config.max_position_embeddings, d), "weight")?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| ClipEncoderLayer::new(config, vb.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = layer_norm(d, config.layer_norm_eps, vb.pp("final_layer_norm"))?;
        Ok(ClipTextModel { token_embedding, position_embedding, layers, final_layer_norm, config: config.clone() })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        self.position_embedding.device()
    }

    /// The last hidden state after the final layer norm, `(B, L, hidden)`,
    /// for token ids `(B, L)` (u32); only the causal mask is applied, as
    /// the SD pipelines pass no attention mask.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.forward_skip(input_ids, 1)
    }

    /// The hidden state of layer `layers - clip_skip + 1` (1: the last,
    /// 2: the penultimate, ...) after the final layer norm, as A1111's
    /// "Clip skip", ComfyUI's `CLIPSetLastLayer(-clip_skip)` and diffusers'
    /// `clip_skip = clip_skip - 1` compute it; the layers above are not run.
    pub fn forward_skip(&self, input_ids: &Tensor, clip_skip: usize) -> Result<Tensor> {
        let (_, len) = input_ids.dims2()?;
        if len > self.config.max_position_embeddings {
            bail!("{len} tokens, the text encoder takes at most {}", self.config.max_position_embeddings);
        }
        let layers = self.layers.len();
        if clip_skip == 0 || clip_skip > layers {
            bail!("clip_skip is {clip_skip}; this text encoder has {layers} layers, so it must be between 1 and {layers}");
        }
        let x = self.token_embedding.forward(input_ids)?;
        let mut x = x.broadcast_add(&self.position_embedding.narrow(0, 0, len)?)?;
        for layer in &self.layers[..layers + 1 - clip_skip] {
            x = layer.forward(&x)?;
        }
        Ok(self.final_layer_norm.forward(&x)?)
    }

    /// The pooled output `(B, hidden)`: the row of `last_hidden_state` at the
    /// first end-of-text token of each sequence (at the largest id for the
    /// legacy `eos_token_id` 2), as transformers computes it.
    pub fn pooled(&self, last_hidden_state: &Tensor, input_ids: &Tensor) -> Result<Tensor> {
        let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let eos = self.config.eos_token_id;
        let rows = ids
            .iter()
            .enumerate()
            .map(|(b, row)| {
                let pos = if eos == 2 {
                    // The first position of the largest id, like torch.argmax.
                    row.iter().enumerate().fold(None, |best: Option<(usize, u32)>, (i, &id)| match best {
                        Some((_, b)) if b >= id => best,
                        _ => Some((i, id)),
                    })
                    .map(|(i, _)| i)
                } else {
                    row.iter().position(|id| *id == eos)
                };
                let pos = pos.unwrap_or(row.len() - 1);
                last_hidden_state.i((b, pos))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }
}
