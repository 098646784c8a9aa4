//! Group norm (NCHW) and layer norm (channel-last), as torch computes them.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Module, VarBuilder};

use super::Activation;
use crate::sd::cpu::group_norm::{self, FusedGroupNorm};
use crate::kernels::simd::isa;

/// `torch.nn.GroupNorm` with affine parameters, optionally followed by an
/// activation.
#[derive(Clone, Debug)]
pub(crate) struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
    /// The fused CPU kernels (plain and with SiLU) for float32 CPU weights.
    fused: Option<[FusedGroupNorm; 2]>,
}

impl GroupNorm {
    /// Loads `weight` and `bias` of a group norm over `channels`.
    pub(crate) fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        if groups == 0 || channels % groups != 0 {
            candle_core::bail!("group norm: {channels} channels are not divisible into {groups} groups");
        }
        let weight = vb.get(channels, "weight")?;
        let bias = vb.get(channels, "bias")?;
        let fused = if weight.device().is_cpu() && weight.dtype() == DType::F32 {
            let op = |silu| -> Result<FusedGroupNorm> {
                Ok(FusedGroupNorm { groups, eps, weight: weight.to_vec1()?, bias: bias.to_vec1()?, silu, isa: isa() })
            };
            Some([op(false)?, op(true)?])
        } else {
            None
        };
        Ok(GroupNorm { weight, bias, groups, eps, fused })
    }

    /// Normalises `x: (N, C, ...)` per sample and group, then applies the
    /// per-channel affine map and `act`.
    pub(crate) fn forward(&self, x: &Tensor, act: Option<Activation>) -> Result<Tensor> {
        if let (Some(ops), None | Some(Activation::Silu)) = (&self.fused, act) {
            if let Some(y) = group_norm::try_fused(x, &ops[usize::from(act.is_some())])? {
                return Ok(y);
            }
        }
        let dims = x.dims();
        let (n, c) = (dims[0], dims[1]);
        let dtype = x.dtype();
        let xs = x.reshape((n, self.groups, ()))?.to_dtype(DType::F32)?;
        let mean = xs.mean_keepdim(D::Minus1)?;
        let xs = xs.broadcast_sub(&mean)?;
        let var = xs.sqr()?.mean_keepdim(D::Minus1)?;
        let xs = xs.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let mut shape = vec![1usize; dims.len()];
        shape[1] = c;
        let xs = xs
            .to_dtype(dtype)?
            .reshape(dims)?
            .broadcast_mul(&self.weight.reshape(shape.as_slice())?)?
            .broadcast_add(&self.bias.reshape(shape.as_slice())?)?;
        match act {
            Some(act) => act.forward(&xs),
            None => Ok(xs),
        }
    }
}

/// `torch.nn.LayerNorm` over the last dimension, with affine parameters:
/// candle's fused kernel, or plain ops for float64 (which it lacks).
#[derive(Clone, Debug)]
pub(crate) struct LayerNorm {
    inner: candle_nn::LayerNorm,
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Normalises `x` over its last dimension.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.dtype() != DType::F64 {
            return self.inner.forward(x);
        }
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        xc.broadcast_div(&(var + self.eps)?.sqrt()?)?.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// Loads a [`LayerNorm`] over `dim` features.
pub(crate) fn layer_norm(dim: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    let (weight, bias) = (vb.get(dim, "weight")?, vb.get(dim, "bias")?);
    Ok(LayerNorm { inner: candle_nn::LayerNorm::new(weight.clone(), bias.clone(), eps), weight, bias, eps })
}
