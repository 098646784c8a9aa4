//! Real-ESRGAN super-resolution: ncnn `.param`/`.bin` networks and basicsr
//! checkpoints (SRVGGNetCompact, RRDBNet), tiled inference, and the
//! `image.upscale` op.
//!
//! * ncnn files are run as the graph they describe ([`NcnnNet`]): any export
//!   made of the supported layers loads, and others are refused naming the
//!   layer. basicsr `.pth`/`.safetensors` weights are recognised by their key
//!   names ([`StateDict::arch`]) and built as [`SrVgg`] or [`Rrdb`].
//! * Numerics follow the PyTorch reference in f32 (weights stored as f16 in
//!   ncnn files widen exactly): realesr-animevideov3 matches the reference
//!   output to 1.6e-6.
//! * Tiles get, by default, context equal to the network's receptive radius
//!   (capped at [`MAX_AUTO_TILE_PAD`]), so SRVGGNetCompact output does not
//!   depend on the tile size at all; RRDBNet's theoretical radius (hundreds
//!   of pixels) is capped, which is more context than Real-ESRGAN's usual 10.
//! * On the CPU, convolutions ([`Conv`]) and PReLU ([`Prelu`]) use faster
//!   paths than candle's generic ones (3.4x on the whole network).

mod conv;
mod graph;
pub mod ncnn;
mod op;
mod prelu;
mod rrdb;
mod srvgg;
mod state_dict;
mod tiling;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use flow_engine::Registry;

pub use conv::Conv;
pub use graph::NcnnNet;
pub use prelu::Prelu;
pub use rrdb::Rrdb;
pub use srvgg::SrVgg;
pub use state_dict::{Arch, StateDict};
pub use tiling::{run_tiled, NetGeometry, TileOptions};

/// Registers `image.upscale`.
pub fn register(reg: &mut Registry) {
    reg.register(op::UpscaleOp::new());
}

/// Most context per tile side chosen automatically; networks with a wider
/// receptive field (RRDBNet: hundreds of pixels) get this much, which hides
/// seams in practice at a bounded cost.
pub const MAX_AUTO_TILE_PAD: usize = 24;

/// A loaded super-resolution network.
#[derive(Clone, Debug)]
pub enum Upscaler {
    /// An ncnn graph, run layer by layer.
    Ncnn(NcnnNet),
    /// basicsr SRVGGNetCompact weights.
    SrVgg(SrVgg),
    /// basicsr RRDBNet weights.
    Rrdb(Box<Rrdb>),
}

/// Weight file extensions of PyTorch checkpoints and safetensors.
const WEIGHT_EXTENSIONS: [&str; 4] = ["pth", "pt", "ckpt", "safetensors"];

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

impl Upscaler {
    /// Loads a model from `path`: an ncnn `.param` (or `.bin`) file whose
    /// partner sits next to it, a `.pth`/`.safetensors` checkpoint, or a
    /// directory holding exactly one of these.
    pub fn load(path: &Path, device: &Device) -> Result<Upscaler> {
        let file = if path.is_dir() {
            model_in_dir(path)?
        } else {
            path.to_path_buf()
        };
        let net = match extension(&file).as_str() {
            "param" | "bin" => {
                let (param, bin) = (file.with_extension("param"), file.with_extension("bin"));
                NcnnNet::load(&param, &bin, device).map(Upscaler::Ncnn)
            }
            _ => StateDict::load(&file, device).and_then(|sd| match sd.arch()? {
                Arch::SrVgg => SrVgg::from_state_dict(&sd).map(Upscaler::SrVgg),
                Arch::Rrdb => Rrdb::from_state_dict(&sd).map(|n| Upscaler::Rrdb(Box::new(n))),
            }),
        };
        net.with_context(|| format!("loading upscaler {}", path.display()))
    }

    /// Output pixels per input pixel along each axis.
    pub fn scale(&self) -> usize {
        match self {
            Upscaler::Ncnn(n) => n.scale(),
            Upscaler::SrVgg(n) => n.scale(),
            Upscaler::Rrdb(n) => n.scale(),
        }
    }

    /// Input pixels per side that an output pixel depends on.
    pub fn receptive_radius(&self) -> usize {
        match self {
            Upscaler::Ncnn(n) => n.receptive_radius(),
            Upscaler::SrVgg(n) => n.receptive_radius(),
            Upscaler::Rrdb(n) => n.receptive_radius(),
        }
    }

    /// Scale and input-size constraint, for [`run_tiled`].
    pub fn geometry(&self) -> NetGeometry {
        let multiple = match self {
            Upscaler::Rrdb(n) => n.input_multiple(),
            Upscaler::Ncnn(_) | Upscaler::SrVgg(_) => 1,
        };
        NetGeometry {
            scale: self.scale(),
            multiple,
        }
    }

    /// The default context per tile side: the receptive radius (exact
    /// tiling), at most [`MAX_AUTO_TILE_PAD`].
    pub fn default_tile_pad(&self) -> usize {
        self.receptive_radius().min(MAX_AUTO_TILE_PAD)
    }

    /// Runs the network once on `xs`, `[N, 3, H, W]` RGB in `[0, 1]`; the
    /// result is not clamped.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Upscaler::Ncnn(n) => n.forward(xs),
            Upscaler::SrVgg(n) => n.forward(xs),
            Upscaler::Rrdb(n) => n.forward(xs),
        }
    }

    /// Upscales `image` (`[N, C, H, W]` in `[0, 1]`, C = 1 grey, 2 grey +
    /// alpha, 3 RGB or 4 RGBA) tile by tile and clamps the result to
    /// `[0, 1]`. Grey and alpha planes go through the network as grey RGB
    /// images and come back as their luma, as Real-ESRGAN does.
    /// `on_tile(done, total)` is called before the first tile and after each
    /// one; an error from it stops the work.
    pub fn upscale(
        &self,
        image: &Tensor,
        options: TileOptions,
        on_tile: impl FnMut(usize, usize) -> Result<()>,
    ) -> Result<Tensor> {
        let (n, c, _, _) = image.dims4().context("image should be [N, C, H, W]")?;
        let image = image.to_dtype(candle_core::DType::F32)?;
        let grey_rgb = |plane: Tensor| plane.repeat((1, 3, 1, 1));
        let (colour, alpha) = match c {
            1 => (grey_rgb(image.clone())?, None),
            2 => (
                grey_rgb(image.narrow(1, 0, 1)?)?,
                Some(image.narrow(1, 1, 1)?),
            ),
            3 => (image.clone(), None),
            4 => (image.narrow(1, 0, 3)?, Some(image.narrow(1, 3, 1)?)),
            _ => bail!("cannot upscale an image with {c} channels (1 to 4 are supported)"),
        };
        // Alpha planes ride along in the batch so that they share the tiles.
        let batch = match &alpha {
            Some(a) => Tensor::cat(&[colour, grey_rgb(a.clone())?], 0)?,
            None => colour,
        };
        let forward = |xs: &Tensor| self.forward(xs);
        let out =
            run_tiled(&batch, self.geometry(), options, forward, on_tile)?.clamp(0f32, 1f32)?;
        let colour = out.narrow(0, 0, n)?;
        let colour = if c <= 2 { luma(&colour)? } else { colour };
        match alpha {
            Some(_) => Ok(Tensor::cat(&[colour, luma(&out.narrow(0, n, n)?)?], 1)?),
            None => Ok(colour),
        }
    }
}

/// ITU-R BT.601 luma of `[N, 3, H, W]` RGB, as `[N, 1, H, W]`.
fn luma(rgb: &Tensor) -> Result<Tensor> {
    let w = Tensor::new(&[0.299f32, 0.587, 0.114], rgb.device())?.reshape((1, 3, 1, 1))?;
    Ok(rgb.broadcast_mul(&w)?.sum_keepdim(1)?)
}

/// The one model file in `dir`: an ncnn `.param` with its `.bin`, or a
/// checkpoint.
fn model_in_dir(dir: &Path) -> Result<PathBuf> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let ext = extension(&path);
        if (ext == "param" && path.with_extension("bin").is_file())
            || WEIGHT_EXTENSIONS.contains(&ext.as_str())
        {
            found.push(path);
        }
    }
    found.sort();
    match &found[..] {
        [one] => Ok(one.clone()),
        [] => bail!(
            "{}: no model found (expected an ncnn .param/.bin pair or a .pth/.safetensors file)",
            dir.display()
        ),
        many => bail!(
            "{}: several models found ({}); name the file to use",
            dir.display(),
            many.iter()
                .filter_map(|p| p.file_name()?.to_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Largest absolute element difference of two tensors (test helper).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).and_then(|d| d.abs()).and_then(|d| d.max_all()).and_then(|d| d.to_scalar()).expect("tensors of one shape")
}
