//! Images as planar f32 data on the CPU, the form the image ops work on.

use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Device, Tensor};
use flow_engine::{Value, ValueType};

/// An image batch `[n, c, h, w]`, row-major, on the CPU.
pub(crate) struct Planes {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) data: Vec<f32>,
}

impl Planes {
    /// The pixels of an image tensor; `port` names the input in errors.
    pub(crate) fn from_tensor(tensor: &Tensor, port: &str) -> Result<Self> {
        let &[n, c, h, w] = tensor.dims() else {
            bail!(
                "input `{port}` should be an image [N, C, H, W], got a tensor of shape {:?}",
                tensor.dims()
            );
        };
        if ![1, 3, 4].contains(&c) {
            bail!(
                "input `{port}` has {c} channels (shape {:?}); images have 1, 3 or 4",
                tensor.dims()
            );
        }
        if n == 0 || h == 0 || w == 0 {
            bail!("input `{port}` is empty (shape {:?})", tensor.dims());
        }
        let data = tensor
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Planes { n, c, h, w, data })
    }

    /// Planes of the given size from planar data.
    pub(crate) fn new(n: usize, c: usize, h: usize, w: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(data.len(), n * c * h * w);
        Planes { n, c, h, w, data }
    }

    /// The image as a value on `device`.
    pub(crate) fn into_value(self, device: &Device) -> Result<Value> {
        let tensor = Tensor::from_vec(self.data, (self.n, self.c, self.h, self.w), device)?;
        Ok(Value::tensor(ValueType::Image, tensor))
    }

    /// The pixels of image `index` interleaved (`[h, w, c]`) as 8-bit values,
    /// each `round(clamp(x, 0, 1) * 255)`.
    pub(crate) fn to_interleaved_u8(&self, index: usize) -> Vec<u8> {
        let plane = self.h * self.w;
        let image = &self.data[index * self.c * plane..(index + 1) * self.c * plane];
        let mut out = vec![0u8; self.c * plane];
        for ch in 0..self.c {
            for (p, &x) in image[ch * plane..(ch + 1) * plane].iter().enumerate() {
                // NaN becomes 0 through the saturating cast.
                out[p * self.c + ch] = (x.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        out
    }
}

/// A zeroed buffer of `len` values, or an error instead of an abort when
/// memory runs out.
pub(crate) fn alloc(len: usize, what: &str) -> Result<Vec<f32>> {
    flow_engine::limits::check_memory(len as u64 * 4, what)?;
    let mut data = Vec::new();
    data.try_reserve_exact(len)
        .map_err(|_| anyhow!("{what} needs {len} values, more memory than is available"))?;
    data.resize(len, 0.0);
    Ok(data)
}
