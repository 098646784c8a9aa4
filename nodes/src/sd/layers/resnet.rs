//! The diffusers `ResnetBlock2D` (default time-embedding mode).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::{conv2d, linear, Activation, Conv2d, GroupNorm};

/// `norm1 -> act -> conv1 (+ time_emb_proj(temb)) -> norm2 -> act -> conv2`,
/// plus the (1x1-projected when the width changes) input.
#[derive(Clone, Debug)]
pub(crate) struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    act: Activation,
    output_scale_factor: f64,
}

/// The hyper-parameters of a [`ResnetBlock2D`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResnetConfig {
    /// Group-norm groups.
    pub(crate) groups: usize,
    /// Group-norm epsilon.
    pub(crate) eps: f64,
    /// Width of the time embedding, `None` for the VAE.
    pub(crate) temb_channels: Option<usize>,
    /// Activation.
    pub(crate) act: Activation,
    /// The output is divided by this.
    pub(crate) output_scale_factor: f64,
}

impl ResnetBlock2D {
    /// Loads a block from `in_ch` to `out_ch` channels.
    pub(crate) fn new(in_ch: usize, out_ch: usize, cfg: ResnetConfig, vb: VarBuilder) -> Result<Self> {
        let time_emb_proj = match cfg.temb_channels {
            Some(t) => Some(linear(t, out_ch, true, vb.pp("time_emb_proj"))?),
            None => None,
        };
        let conv_shortcut = if in_ch != out_ch {
            Some(conv2d(in_ch, out_ch, 1, 1, 0, vb.pp("conv_shortcut"))?)
        } else {
            None
        };
        Ok(ResnetBlock2D {
            norm1: GroupNorm::new(cfg.groups, in_ch, cfg.eps, vb.pp("norm1"))?,
            conv1: conv2d(in_ch, out_ch, 3, 1, 1, vb.pp("conv1"))?,
            time_emb_proj,
            norm2: GroupNorm::new(cfg.groups, out_ch, cfg.eps, vb.pp("norm2"))?,
            conv2: conv2d(out_ch, out_ch, 3, 1, 1, vb.pp("conv2"))?,
            conv_shortcut,
            act: cfg.act,
            output_scale_factor: cfg.output_scale_factor,
        })
    }

    /// `x: (N, C, H, W)`; `temb_act`: the time embedding after the
    /// activation, `(N or 1, T)`.
    pub(crate) fn forward(&self, x: &Tensor, temb_act: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&self.norm1.forward(x, Some(self.act))?)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb_act) {
            let t = proj.forward(temb)?;
            let (n, c) = t.dims2()?;
            h = h.broadcast_add(&t.reshape((n, c, 1, 1))?)?;
        }
        let h = self.conv2.forward(&self.norm2.forward(&h, Some(self.act))?)?;
        let out = match &self.conv_shortcut {
            Some(sc) => (sc.forward(x)? + h)?,
            None => (x + h)?,
        };
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale_factor
        }
    }
}
