//! An ncnn `.param`/`.bin` network turned into candle modules and run as the
//! graph the file describes. Covers the layers that Real-ESRGAN exports use
//! (SRVGGNetCompact and RRDBNet); any other layer type is refused by name.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};

use super::conv::Conv;
use super::ncnn::{parse_param, LayerDecl, ParamDict, WeightReader};
use super::prelu::Prelu;

/// Activation fused into an ncnn convolution (`9=type`, `-23310=params`).
#[derive(Clone, Debug)]
enum Activation {
    Relu,
    LeakyRelu(Prelu),
    Clip(f32, f32),
    Sigmoid,
}

impl Activation {
    fn from_params(params: &ParamDict, device: &Device) -> Result<Option<Activation>> {
        let args = params.floats(10)?;
        let arg = |i: usize| {
            args.get(i)
                .copied()
                .with_context(|| format!("activation parameter {i} is missing"))
        };
        Ok(match params.int(9, 0)? {
            0 => None,
            1 => Some(Activation::Relu),
            2 => Some(Activation::LeakyRelu(Prelu::leaky(arg(0)?, device)?)),
            3 => Some(Activation::Clip(arg(0)?, arg(1)?)),
            4 => Some(Activation::Sigmoid),
            other => bail!("fused activation type {other} is not supported"),
        })
    }

    fn apply(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Relu => xs.relu()?,
            Activation::LeakyRelu(prelu) => prelu.forward(xs)?,
            Activation::Clip(lo, hi) => xs.clamp(*lo, *hi)?,
            Activation::Sigmoid => candle_nn::ops::sigmoid(xs)?,
        })
    }
}

/// Elementwise operation of a two-input `BinaryOp` layer.
#[derive(Clone, Copy, Debug)]
enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

/// What a layer computes.
#[derive(Clone, Debug)]
enum LayerOp {
    /// The network input.
    Input,
    /// Copies its input to every output.
    Split,
    Conv {
        conv: Conv,
        act: Option<Activation>,
    },
    PRelu(Prelu),
    PixelShuffle(usize),
    /// Nearest-neighbour upsampling by integer factors.
    UpsampleNearest {
        fy: usize,
        fx: usize,
    },
    Binary(Binary),
    /// `Eltwise` sum with per-input coefficients (`0.2 * a + 1.0 * b`).
    WeightedSum(Vec<f64>),
    /// `Eltwise` product.
    Product,
    /// `Eltwise` max.
    Max,
    /// Concatenation along a tensor dimension (batch is dimension 0).
    Concat(usize),
}

#[derive(Clone, Debug)]
struct Layer {
    name: String,
    op: LayerOp,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
}

/// A network loaded from an ncnn `.param`/`.bin` pair.
#[derive(Clone, Debug)]
pub struct NcnnNet {
    layers: Vec<Layer>,
    /// For each blob, the index of the last layer that reads it.
    last_use: Vec<Option<usize>>,
    /// For each layer, true if it is a PReLU that the convolution before it
    /// applies band by band (it alone reads that convolution's output).
    fused: Vec<bool>,
    blob_count: usize,
    input: usize,
    output: usize,
    receptive_radius: usize,
    scale: usize,
}

impl NcnnNet {
    /// Loads `param` and `bin` from disk.
    pub fn load(param: &Path, bin: &Path, device: &Device) -> Result<NcnnNet> {
        let text = std::fs::read_to_string(param)
            .with_context(|| format!("reading {}", param.display()))?;
        let weights = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
        NcnnNet::from_bytes(&text, &weights, device)
            .with_context(|| format!("loading ncnn model {}", param.display()))
    }

    /// Builds the network from the text of a `.param` file and the bytes of
    /// its `.bin` file.
    pub fn from_bytes(param: &str, bin: &[u8], device: &Device) -> Result<NcnnNet> {
        let decls = parse_param(param)?;
        let mut blobs: HashMap<String, usize> = HashMap::new();
        let mut reader = WeightReader::new(bin);
        let mut layers = Vec::with_capacity(decls.len());
        for decl in &decls {
            let inputs = decl
                .inputs
                .iter()
                .map(|b| {
                    blobs.get(b).copied().with_context(|| {
                        format!(
                            "layer `{}` reads blob `{b}` that no earlier layer writes",
                            decl.name
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let op = build_op(decl, &mut reader, device)
                .with_context(|| format!("layer `{}` ({})", decl.name, decl.kind))?;
            let mut outputs = Vec::with_capacity(decl.outputs.len());
            for b in &decl.outputs {
                let id = blobs.len();
                if blobs.insert(b.clone(), id).is_some() {
                    bail!("blob `{b}` is written twice (layer `{}`)", decl.name);
                }
                outputs.push(id);
            }
            layers.push(Layer {
                name: decl.name.clone(),
                op,
                inputs,
                outputs,
            });
        }
        reader.finish()?;
        NcnnNet::from_layers(layers, blobs.len())
    }

    fn from_layers(layers: Vec<Layer>, blob_count: usize) -> Result<NcnnNet> {
        let inputs: Vec<usize> = layers
            .iter()
            .filter(|l| matches!(l.op, LayerOp::Input))
            .flat_map(|l| l.outputs.iter().copied())
            .collect();
        let [input] = inputs[..] else {
            bail!(
                "the network should have one input blob, found {}",
                inputs.len()
            );
        };
        let mut last_use = vec![None; blob_count];
        let mut readers = vec![0usize; blob_count];
        for (i, layer) in layers.iter().enumerate() {
            for &b in &layer.inputs {
                last_use[b] = Some(i);
                readers[b] += 1;
            }
        }
        let fused = (0..layers.len())
            .map(|i| {
                let (Some(prev), layer) = (i.checked_sub(1).map(|p| &layers[p]), &layers[i]) else {
                    return false;
                };
                matches!(prev.op, LayerOp::Conv { act: None, .. })
                    && matches!(layer.op, LayerOp::PRelu(_))
                    && prev.outputs.len() == 1
                    && layer.inputs == prev.outputs
                    && readers[prev.outputs[0]] == 1
            })
            .collect();
        let outputs: Vec<usize> = (0..blob_count).filter(|&b| last_use[b].is_none()).collect();
        let [output] = outputs[..] else {
            bail!(
                "the network should have one output blob, found {}",
                outputs.len()
            );
        };
        let mut net = NcnnNet {
            layers,
            last_use,
            fused,
            blob_count,
            input,
            output,
            receptive_radius: 0,
            scale: 1,
        };
        let (radius, scale) = net.geometry()?;
        ensure!(
            scale >= 1.0 && scale.fract() == 0.0,
            "the network scales images by {scale}, not by a whole factor"
        );
        net.receptive_radius = radius.ceil() as usize;
        net.scale = scale as usize;
        Ok(net)
    }

    /// How far, in input pixels, an output pixel sees around its own
    /// position: tiles padded by this much give exactly the untiled result.
    pub fn receptive_radius(&self) -> usize {
        self.receptive_radius
    }

    /// The learned tensors in layer order, named `{layer}.weight` and
    /// `{layer}.bias` (convolutions) or `{layer}.weight` (PReLU slopes).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for layer in &self.layers {
            match &layer.op {
                LayerOp::Conv { conv, .. } => {
                    out.push((format!("{}.weight", layer.name), conv.weight().clone()));
                    if let Some(bias) = conv.bias() {
                        out.push((format!("{}.bias", layer.name), bias.clone()));
                    }
                }
                LayerOp::PRelu(prelu) => {
                    out.push((format!("{}.weight", layer.name), prelu.slopes().clone()))
                }
                _ => {}
            }
        }
        out
    }

    /// The factor by which the network enlarges images.
    pub fn scale(&self) -> usize {
        self.scale
    }

    /// Receptive radius and scale of the output blob. Follows every path from
    /// the input: a k x k convolution at resolution `scale` (relative to the
    /// input) widens the view by `(k-1)/2/scale` input pixels.
    fn geometry(&self) -> Result<(f64, f64)> {
        let mut blob: Vec<(f64, f64)> = vec![(0.0, 1.0); self.blob_count];
        for layer in &self.layers {
            let (radius, scale) = layer
                .inputs
                .iter()
                .map(|&b| blob[b])
                .reduce(|a, b| (a.0.max(b.0), a.1))
                .unwrap_or((0.0, 1.0));
            let out = match &layer.op {
                LayerOp::Conv { conv, .. } => (
                    radius + conv.reach() as f64 / scale,
                    scale / conv.stride() as f64,
                ),
                LayerOp::PixelShuffle(r) => (radius, scale * *r as f64),
                LayerOp::UpsampleNearest { fy, fx } => (radius, scale * (*fy).min(*fx) as f64),
                _ => (radius, scale),
            };
            for &b in &layer.outputs {
                blob[b] = out;
            }
        }
        Ok(blob[self.output])
    }

    /// Runs `layer` on `xs`; a convolution applies `then` (a PReLU fused
    /// into it) to its output.
    fn run_layer(layer: &Layer, xs: &[&Tensor], then: Option<&Prelu>) -> Result<Tensor> {
        let first = || xs.first().copied().context("layer has no input");
        Ok(match &layer.op {
            LayerOp::Input => bail!("the input layer is not run"),
            LayerOp::Split => first()?.clone(),
            LayerOp::Conv { conv, act } => match act {
                Some(Activation::LeakyRelu(prelu)) => conv.forward(first()?, Some(prelu))?,
                Some(act) => act.apply(&conv.forward(first()?, None)?)?,
                None => conv.forward(first()?, then)?,
            },
            LayerOp::PRelu(prelu) => prelu.forward(first()?)?,
            LayerOp::PixelShuffle(r) => candle_nn::ops::pixel_shuffle(first()?, *r)?,
            LayerOp::UpsampleNearest { fy, fx } => {
                let x = first()?;
                let (_, _, h, w) = x.dims4()?;
                x.upsample_nearest2d(h * fy, w * fx)?
            }
            LayerOp::Binary(op) => {
                let [a, b] = xs else {
                    bail!("BinaryOp needs two inputs, got {}", xs.len())
                };
                match op {
                    Binary::Add => a.broadcast_add(b)?,
                    Binary::Sub => a.broadcast_sub(b)?,
                    Binary::Mul => a.broadcast_mul(b)?,
                    Binary::Div => a.broadcast_div(b)?,
                }
            }
            LayerOp::WeightedSum(coeffs) => {
                let mut acc: Option<Tensor> = None;
                for (i, x) in xs.iter().enumerate() {
                    let c = coeffs.get(i).copied().unwrap_or(1.0);
                    let term = if c == 1.0 {
                        (*x).clone()
                    } else {
                        x.affine(c, 0.0)?
                    };
                    acc = Some(match acc {
                        None => term,
                        Some(acc) => (acc + term)?,
                    });
                }
                acc.context("Eltwise needs inputs")?
            }
            LayerOp::Product => fold(xs, |a, b| a.mul(b))?,
            LayerOp::Max => fold(xs, |a, b| a.maximum(b))?,
            LayerOp::Concat(dim) => Tensor::cat(xs, *dim)?,
        })
    }
}

fn fold(
    xs: &[&Tensor],
    f: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    let (first, rest) = xs.split_first().context("layer has no input")?;
    rest.iter()
        .try_fold((*first).clone(), |acc, x| Ok(f(&acc, x)?))
}

impl NcnnNet {
    /// Runs the network on `xs`, `[N, C, H, W]`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut blobs: Vec<Option<Tensor>> = vec![None; self.blob_count];
        blobs[self.input] = Some(xs.clone());
        for (i, layer) in self.layers.iter().enumerate() {
            if matches!(layer.op, LayerOp::Input) || self.fused[i] {
                continue;
            }
            // A PReLU fused into this layer takes over its outputs.
            let (then, outputs) = match self.layers.get(i + 1) {
                Some(
                    next @ Layer {
                        op: LayerOp::PRelu(prelu),
                        ..
                    },
                ) if self.fused[i + 1] => (Some(prelu), &next.outputs),
                _ => (None, &layer.outputs),
            };
            let out = {
                let xs = layer
                    .inputs
                    .iter()
                    .map(|&b| {
                        blobs[b]
                            .as_ref()
                            .context("blob used before it was computed")
                    })
                    .collect::<Result<Vec<_>>>()?;
                NcnnNet::run_layer(layer, &xs, then)
                    .with_context(|| format!("layer `{}`", layer.name))?
            };
            for &b in &layer.inputs {
                if self.last_use[b] == Some(i) && b != self.output {
                    blobs[b] = None;
                }
            }
            for &b in outputs {
                blobs[b] = Some(out.clone());
            }
        }
        blobs[self.output]
            .take()
            .context("the output blob was not computed")
    }
}

fn build_op(decl: &LayerDecl, reader: &mut WeightReader<'_>, device: &Device) -> Result<LayerOp> {
    let p = &decl.params;
    Ok(match decl.kind.as_str() {
        "Input" => LayerOp::Input,
        "Split" => LayerOp::Split,
        "Convolution" => build_conv(p, reader, device)?,
        "PReLU" => {
            let n = p.usize(0, 0)?;
            let slopes = reader.raw_f32(n)?;
            LayerOp::PRelu(Prelu::new(Tensor::from_vec(slopes, n, device)?)?)
        }
        "PixelShuffle" => {
            ensure!(
                p.int(1, 0)? == 0,
                "only PixelShuffle mode 0 (PyTorch order) is supported"
            );
            LayerOp::PixelShuffle(p.usize(0, 1)?)
        }
        "Interp" => build_interp(p)?,
        "BinaryOp" => {
            ensure!(
                p.int(1, 0)? == 0,
                "BinaryOp with a scalar operand is not supported"
            );
            LayerOp::Binary(match p.int(0, 0)? {
                0 => Binary::Add,
                1 => Binary::Sub,
                2 => Binary::Mul,
                3 => Binary::Div,
                other => bail!("BinaryOp type {other} is not supported"),
            })
        }
        "Eltwise" => match p.int(0, 0)? {
            0 => LayerOp::Product,
            1 => LayerOp::WeightedSum(p.floats(1)?.into_iter().map(f64::from).collect()),
            2 => LayerOp::Max,
            other => bail!("Eltwise type {other} is not supported"),
        },
        "Concat" => {
            // ncnn counts axes without the batch: 0 = channels of a [C, H, W] blob.
            let axis = p.int(0, 0)?;
            let axis = if axis < 0 { axis + 3 } else { axis };
            ensure!(
                (0..3).contains(&axis),
                "Concat axis {} is out of range",
                p.int(0, 0)?
            );
            LayerOp::Concat(axis as usize + 1)
        }
        other => bail!("unsupported ncnn layer type `{other}`"),
    })
}

fn build_conv(p: &ParamDict, reader: &mut WeightReader<'_>, device: &Device) -> Result<LayerOp> {
    let c_out = p.usize(0, 0)?;
    let kw = p.usize(1, 0)?;
    let kh = p.usize(11, kw)?;
    let dilation = p.usize(2, 1)?;
    let stride = p.usize(3, 1)?;
    let pad = p.int(4, 0)?;
    ensure!(kw == kh, "non-square kernels ({kw}x{kh}) are not supported");
    ensure!(
        p.usize(12, dilation)? == dilation,
        "different dilations per axis are not supported"
    );
    ensure!(
        p.usize(13, stride)? == stride,
        "different strides per axis are not supported"
    );
    ensure!(pad >= 0, "automatic padding mode {pad} is not supported");
    for id in [14, 15, 16] {
        ensure!(
            p.int(id, pad)? == pad,
            "asymmetric padding is not supported"
        );
    }
    ensure!(
        p.float(18, 0.0)? == 0.0,
        "padding with a non-zero value is not supported"
    );
    ensure!(p.int(8, 0)? == 0, "int8 convolutions are not supported");
    ensure!(
        p.int(19, 0)? == 0,
        "convolutions with dynamic weights are not supported"
    );
    ensure!(
        c_out > 0 && kw > 0,
        "convolution needs num_output (0=) and kernel size (1=)"
    );
    let size = p.usize(6, 0)?;
    let per_in = c_out * kw * kh;
    ensure!(
        size % per_in == 0,
        "weight size {size} is not a multiple of {c_out}x{kw}x{kh}"
    );
    let c_in = size / per_in;
    let act = Activation::from_params(p, device)?;
    let weight = Tensor::from_vec(reader.tagged(size)?, (c_out, c_in, kh, kw), device)?;
    let bias = if p.int(5, 0)? != 0 {
        Some(Tensor::from_vec(reader.raw_f32(c_out)?, c_out, device)?)
    } else {
        None
    };
    let conv = Conv::new(weight, bias, pad as usize, stride, dilation)?;
    Ok(LayerOp::Conv { conv, act })
}

fn build_interp(p: &ParamDict) -> Result<LayerOp> {
    let kind = p.int(0, 0)?;
    ensure!(
        kind == 1,
        "Interp resize type {kind} is not supported (only 1, nearest; 2 is bilinear, 3 bicubic)"
    );
    ensure!(
        !p.contains(3) && !p.contains(4),
        "Interp to a fixed output size is not supported, only scale factors"
    );
    let factor = |id: i32| -> Result<usize> {
        let f = p.float(id, 1.0)?;
        ensure!(
            f >= 1.0 && f.fract() == 0.0,
            "nearest Interp needs an integer factor >= 1, got {f}"
        );
        Ok(f as usize)
    };
    Ok(LayerOp::UpsampleNearest {
        fy: factor(1)?,
        fx: factor(2)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(vals: &[f32]) -> Vec<u8> {
        let mut out = 0u32.to_le_bytes().to_vec();
        out.extend(vals.iter().flat_map(|v| v.to_le_bytes()));
        out
    }

    #[test]
    fn runs_a_tiny_graph() {
        // 1 channel: out = upsample2(x) + pixel_shuffle(conv1x1(x) with 4 outputs).
        let param = "7767517\n6 7\n\
            Input in 0 1 data\n\
            Split sp 1 2 data a b\n\
            Convolution c 1 1 a c1 0=4 1=1 5=1 6=4\n\
            PixelShuffle ps 1 1 c1 s 0=2\n\
            Interp up 1 1 b u 0=1 1=2.0 2=2.0\n\
            BinaryOp add 2 1 s u out\n";
        let mut bin = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
        bin.extend(
            [0.0f32, 0.0, 0.0, 10.0]
                .iter()
                .flat_map(|v| v.to_le_bytes()),
        );
        let net = NcnnNet::from_bytes(param, &bin, &Device::Cpu).unwrap();
        assert_eq!((net.receptive_radius(), net.scale()), (0, 2));
        let x = Tensor::new(&[[[[1.0f32]]]], &Device::Cpu).unwrap();
        let y = net.forward(&x).unwrap();
        assert_eq!(y.dims(), [1, 1, 2, 2]);
        let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(y, [2.0, 3.0, 4.0, 15.0]);
    }

    #[test]
    fn fuses_prelu_into_the_convolution_before_it() {
        // out = prelu(conv1x1(x)) with weight -1, bias 0, slope 0.5; the
        // split keeps the second convolution's output read twice: not fused.
        let param = "7767517\n6 6\n\
            Input in 0 1 data\n\
            Convolution c 1 1 data c1 0=1 1=1 5=1 6=1\n\
            PReLU p 1 1 c1 p1 0=1\n\
            Convolution d 1 1 p1 d1 0=1 1=1 5=1 6=1\n\
            Split sp 1 2 d1 e f\n\
            BinaryOp add 2 1 e f out\n";
        let mut bin = f32_bytes(&[-1.0]);
        bin.extend([0.0f32, 0.5].iter().flat_map(|v| v.to_le_bytes()));
        bin.extend(f32_bytes(&[3.0]));
        bin.extend(1.0f32.to_le_bytes());
        let net = NcnnNet::from_bytes(param, &bin, &Device::Cpu).unwrap();
        assert_eq!(net.fused, [false, false, true, false, false, false]);
        let x = Tensor::new(&[[[[2.0f32, -4.0]]]], &Device::Cpu).unwrap();
        let y: Vec<f32> = net
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // prelu(-2) = -1, prelu(4) = 4; then 2 * (3 * v + 1).
        assert_eq!(y, [-4.0, 26.0]);
    }

    #[test]
    fn names_unsupported_layers() {
        let param = "7767517\n2 2\nInput in 0 1 data\nSoftmax sm 1 1 data out\n";
        let err = NcnnNet::from_bytes(param, &[], &Device::Cpu).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("`sm`") && msg.contains("Softmax"), "{msg}");
    }

    #[test]
    fn rejects_leftover_weights() {
        let param = "7767517\n2 2\nInput in 0 1 data\nPReLU p 1 1 data out 0=1\n";
        let err = NcnnNet::from_bytes(param, &[0; 8], &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("left over"), "{err}");
    }
}
