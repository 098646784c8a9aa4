//! The sinusoidal timestep embedding and its MLP.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::sd::layers::{linear, Activation};

/// diffusers' `get_timestep_embedding` for one timestep, computed in float32
/// step by step as torch does: `(1, dim)`.
pub(super) fn sinusoidal(t: f64, dim: usize, flip_sin_to_cos: bool, shift: f64, device: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let ln_period = -(10000f64.ln()) as f32;
    let denom = (half as f64 - shift) as f32;
    let args: Vec<f32> = (0..half).map(|i| t as f32 * ((ln_period * i as f32) / denom).exp()).collect();
    let sin = args.iter().map(|a| a.sin());
    let cos = args.iter().map(|a| a.cos());
    let mut emb: Vec<f32> = if flip_sin_to_cos { cos.chain(sin).collect() } else { sin.chain(cos).collect() };
    emb.resize(dim, 0.0);
    Tensor::from_vec(emb, (1, dim), device)
}

/// `linear_1 -> act -> linear_2 (-> post_act)`.
#[derive(Clone, Debug)]
pub(super) struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    act: Activation,
    post_act: Option<Activation>,
}

impl TimestepEmbedding {
    pub(super) fn new(
        in_dim: usize,
        dim: usize,
        act: Activation,
        post_act: Option<Activation>,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(TimestepEmbedding {
            linear_1: linear(in_dim, dim, true, vb.pp("linear_1"))?,
            linear_2: linear(dim, dim, true, vb.pp("linear_2"))?,
            act,
            post_act,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.linear_2.forward(&self.act.forward(&self.linear_1.forward(x)?)?)?;
        match self.post_act {
            Some(act) => act.forward(&h),
            None => Ok(h),
        }
    }
}
