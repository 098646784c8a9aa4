//! A candle `VarBuilder` backend that serves a component's tensors under
//! their diffusers names straight from the checkpoint file: each requested
//! name is looked up in a rename table, the original tensor is loaded (one
//! at a time, from the memory map), reshaped or split as the table says and
//! cast to the requested dtype. Nothing is copied ahead of time.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::weights::Weights;

/// How a stored tensor becomes the one the model reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fix {
    /// As stored.
    Keep,
    /// A 1x1 convolution `(out, in, 1, 1)` read as a linear weight `(out, in)`
    /// (left alone when already 2-D).
    Squeeze,
    /// Part `index` of `parts` equal slices along the first dimension (the
    /// query, key and value of OpenCLIP's fused `in_proj`).
    Chunk {
        /// Which slice.
        index: usize,
        /// How many slices.
        parts: usize,
    },
}

/// Where one diffusers-named tensor comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Name in the checkpoint file.
    pub name: String,
    /// What to do to it.
    pub fix: Fix,
}

impl Source {
    /// A tensor used as stored.
    pub fn keep(name: impl Into<String>) -> Self {
        Source { name: name.into(), fix: Fix::Keep }
    }
}

/// diffusers name -> source in the file.
pub type RenameTable = HashMap<String, Source>;

/// The renaming backend over an opened checkpoint.
pub struct Renamed {
    weights: Arc<Weights>,
    table: RenameTable,
}

impl Renamed {
    /// A `VarBuilder` reading `table`'s names from `weights`, converting to
    /// `dtype` on `device`.
    pub fn var_builder(
        weights: Arc<Weights>,
        table: RenameTable,
        dtype: DType,
        device: &Device,
    ) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(Renamed { weights, table }), dtype, device.clone())
    }

    fn fetch(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let source =
            self.table.get(name).ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() }.bt())?;
        let t = self.weights.load(&source.name, dev)?;
        let t = match source.fix {
            Fix::Keep => t,
            Fix::Squeeze if t.rank() == 4 => {
                let (o, i, kh, kw) = t.dims4()?;
                if (kh, kw) != (1, 1) {
                    candle_core::bail!("`{}` is a {kh}x{kw} convolution, a 1x1 one was expected", source.name)
                }
                t.reshape((o, i))?
            }
            Fix::Squeeze => t,
            Fix::Chunk { index, parts } => {
                let rows = t.dim(0)?;
                if rows % parts != 0 {
                    candle_core::bail!("`{}` has {rows} rows, not divisible into {parts} parts", source.name)
                }
                t.narrow(0, index * rows / parts, rows / parts)?.contiguous()?
            }
        };
        t.to_dtype(dtype)
    }
}

impl SimpleBackend for Renamed {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.fetch(name, dtype, dev)?;
        if t.shape() != &s {
            let from = self.table.get(name).map_or(name, |src| src.name.as_str());
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name} (`{from}` in the checkpoint)"),
                expected: s,
                got: t.shape().clone(),
            }
            .bt());
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.fetch(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.table.contains_key(name)
    }
}
