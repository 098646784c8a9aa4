//! basicsr `RRDBNet` (ESRGAN / Real-ESRGAN x4plus): residual-in-residual dense
//! blocks, then two nearest x2 upsampling convolutions.

use anyhow::{ensure, Context, Result};
use candle_core::Tensor;

use super::conv::Conv;
use super::prelu::Prelu;
use super::state_dict::StateDict;

/// LeakyReLU slope used throughout RRDBNet.
const LRELU_SLOPE: f32 = 0.2;
/// Residual scaling of dense blocks.
const RESIDUAL_SCALE: f64 = 0.2;

/// Residual dense block: five convolutions, each reading all earlier features.
#[derive(Clone, Debug)]
struct DenseBlock {
    convs: [Conv; 5],
}

impl DenseBlock {
    fn load(sd: &StateDict, prefix: &str) -> Result<DenseBlock> {
        let conv = |i: usize| sd.conv(&format!("{prefix}.conv{i}"));
        Ok(DenseBlock {
            convs: [conv(1)?, conv(2)?, conv(3)?, conv(4)?, conv(5)?],
        })
    }

    fn forward(&self, x: &Tensor, lrelu: &Prelu) -> Result<Tensor> {
        let mut feats = vec![x.clone()];
        for conv in &self.convs[..4] {
            let y = conv.forward(&Tensor::cat(&feats, 1)?, Some(lrelu))?;
            feats.push(y);
        }
        let x5 = self.convs[4].forward(&Tensor::cat(&feats, 1)?, None)?;
        Ok(((x5 * RESIDUAL_SCALE)? + x)?)
    }
}

/// RRDBNet as in basicsr; scales 1 and 2 fold the input with a pixel unshuffle.
#[derive(Clone, Debug)]
pub struct Rrdb {
    conv_first: Conv,
    body: Vec<[DenseBlock; 3]>,
    conv_body: Conv,
    conv_up1: Conv,
    conv_up2: Conv,
    conv_hr: Conv,
    conv_last: Conv,
    lrelu: Prelu,
    /// Pixel-unshuffle factor applied to the input (1 for x4 models).
    unshuffle: usize,
}

impl Rrdb {
    /// Builds the network from basicsr key names.
    pub fn from_state_dict(sd: &StateDict) -> Result<Rrdb> {
        let blocks = sd.indices("body", "rdb1.conv1.weight");
        ensure!(
            !blocks.is_empty(),
            "RRDBNet: no `body.N.rdb1.conv1.weight` weights"
        );
        ensure!(
            blocks.iter().enumerate().all(|(i, &b)| i == b),
            "RRDBNet: blocks are not numbered 0..{}",
            blocks.len()
        );
        let body = blocks
            .iter()
            .map(|b| {
                let rdb = |k: usize| DenseBlock::load(sd, &format!("body.{b}.rdb{k}"));
                Ok([rdb(1)?, rdb(2)?, rdb(3)?])
            })
            .collect::<Result<Vec<_>>>()?;
        let conv_first = sd.conv("conv_first")?;
        let lrelu = Prelu::leaky(LRELU_SLOPE, conv_first.weight().device())?;
        let net = Rrdb {
            conv_first,
            body,
            conv_body: sd.conv("conv_body")?,
            conv_up1: sd.conv("conv_up1")?,
            conv_up2: sd.conv("conv_up2")?,
            conv_hr: sd.conv("conv_hr")?,
            conv_last: sd.conv("conv_last")?,
            lrelu,
            unshuffle: 1,
        };
        let (_, c_in, _, _) = net.conv_first.weight().dims4()?;
        let (c_out, _, _, _) = net.conv_last.weight().dims4()?;
        let unshuffle = [1, 2, 4]
            .into_iter()
            .find(|u| c_out * u * u == c_in)
            .with_context(|| {
                format!("RRDBNet: conv_first reads {c_in} channels, conv_last writes {c_out}")
            })?;
        Ok(Rrdb { unshuffle, ..net })
    }

    /// The factor by which the network enlarges images (4, 2 or 1).
    pub fn scale(&self) -> usize {
        4 / self.unshuffle
    }

    /// Image sides must be multiples of this (the pixel-unshuffle factor).
    pub fn input_multiple(&self) -> usize {
        self.unshuffle
    }

    /// Input pixels an output pixel depends on, per side: one per 3x3
    /// convolution, divided by the resolution it runs at.
    pub fn receptive_radius(&self) -> usize {
        let low_res = 2 + 15 * self.body.len();
        // conv_up1 runs at 2x, conv_up2 / conv_hr / conv_last at 4x the low resolution.
        (self.unshuffle * (4 * low_res + 2 + 3)).div_ceil(4)
    }

    /// Runs the network on `xs`, `[N, C, H, W]` in `[0, 1]`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let x = if self.unshuffle > 1 {
            candle_nn::ops::pixel_unshuffle(xs, self.unshuffle)?
        } else {
            xs.clone()
        };
        let feat = self.conv_first.forward(&x, None)?;
        let mut h = feat.clone();
        for rrdb in &self.body {
            let mut out = h.clone();
            for rdb in rrdb {
                out = rdb.forward(&out, &self.lrelu)?;
            }
            h = ((out * RESIDUAL_SCALE)? + &h)?;
        }
        let feat = (feat + self.conv_body.forward(&h, None)?)?;
        let up = |t: &Tensor, conv: &Conv| -> Result<Tensor> {
            let (_, _, height, width) = t.dims4()?;
            conv.forward(
                &t.upsample_nearest2d(height * 2, width * 2)?,
                Some(&self.lrelu),
            )
        };
        let feat = up(&feat, &self.conv_up1)?;
        let feat = up(&feat, &self.conv_up2)?;
        let feat = self.conv_hr.forward(&feat, Some(&self.lrelu))?;
        self.conv_last.forward(&feat, None)
    }
}
