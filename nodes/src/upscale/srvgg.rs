//! basicsr `SRVGGNetCompact`: a plain stack of 3x3 convolutions with PReLU,
//! a pixel shuffle, and the input upsampled (nearest) added as a skip.

use anyhow::{bail, ensure, Context, Result};
use candle_core::Tensor;

use super::conv::Conv;
use super::prelu::Prelu;
use super::state_dict::StateDict;

/// SRVGGNetCompact with PReLU activations (`act_type="prelu"`).
#[derive(Clone, Debug)]
pub struct SrVgg {
    /// Every convolution but the last is followed by its PReLU.
    body: Vec<(Conv, Prelu)>,
    last: Conv,
    upscale: usize,
}

impl SrVgg {
    /// Builds the network from basicsr keys `body.{0,2,..}.weight|bias`
    /// (convolutions) and `body.{1,3,..}.weight` (PReLU slopes).
    pub fn from_state_dict(sd: &StateDict) -> Result<SrVgg> {
        let indices = sd.indices("body", "weight");
        let n = indices.len();
        ensure!(
            n % 2 == 1 && n >= 3,
            "SRVGGNetCompact: expected conv/PReLU pairs and a last conv, found {n} weights"
        );
        if indices.iter().enumerate().any(|(i, &k)| i != k) {
            bail!(
                "SRVGGNetCompact: weights `body.N` are not numbered 0..{n}: only act_type=\"prelu\" \
                 (activations with weights) is supported"
            );
        }
        let mut body = Vec::with_capacity(n / 2);
        for i in (0..n - 1).step_by(2) {
            let conv = sd.conv(&format!("body.{i}"))?;
            let slopes = sd.get(&format!("body.{}.weight", i + 1))?.clone();
            ensure!(
                slopes.rank() == 1,
                "`body.{}.weight` should be PReLU slopes",
                i + 1
            );
            body.push((conv, Prelu::new(slopes)?));
        }
        let last = sd.conv(&format!("body.{}", n - 1))?;
        let (c_first, c_in, _, _) = body[0].0.weight().dims4()?;
        let (c_last, c_prev, _, _) = last.weight().dims4()?;
        ensure!(
            c_prev == c_first,
            "last conv reads {c_prev} channels, the body has {c_first}"
        );
        let upscale = (1..=8)
            .find(|u| u * u * c_in == c_last)
            .with_context(|| format!("last conv has {c_last} channels, not {c_in} x upscale^2"))?;
        Ok(SrVgg {
            body,
            last,
            upscale,
        })
    }

    /// The factor by which the network enlarges images.
    pub fn scale(&self) -> usize {
        self.upscale
    }

    /// One pixel per 3x3 convolution.
    pub fn receptive_radius(&self) -> usize {
        self.body.iter().map(|(c, _)| c.reach()).sum::<usize>() + self.last.reach()
    }

    /// Runs the network on `xs`, `[N, 3, H, W]` in `[0, 1]`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut h = xs.clone();
        for (conv, act) in &self.body {
            h = conv.forward(&h, Some(act))?;
        }
        let out = candle_nn::ops::pixel_shuffle(&self.last.forward(&h, None)?, self.upscale)?;
        let (_, _, height, width) = xs.dims4()?;
        let base = xs.upsample_nearest2d(height * self.upscale, width * self.upscale)?;
        Ok((out + base)?)
    }
}
