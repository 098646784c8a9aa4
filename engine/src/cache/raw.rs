//! The raw little-endian bytes of a tensor, shared by key hashing and the
//! entry codec.

use candle_core::{CpuStorage, Device, Error, Result, Storage, Tensor};

/// The tensor's elements in row-major order as little-endian bytes, copied to
/// the CPU and made contiguous first. Fails for the packed sub-byte dtypes
/// (f4, f6), which have no per-element byte layout.
pub(crate) fn le_bytes(tensor: &Tensor) -> Result<Vec<u8>> {
    let cpu = tensor.to_device(&Device::Cpu)?.contiguous()?;
    let dtype = cpu.dtype();
    let (storage, layout) = cpu.storage_and_layout();
    let Storage::Cpu(storage) = &*storage else {
        return Err(Error::Msg(
            "tensor is not on the CPU after copying it there".into(),
        ));
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::Msg("tensor is not contiguous after making it so".into()))?;
    let bytes = match storage {
        CpuStorage::U8(v) | CpuStorage::F8E8M0(v) => range(v, start, end)?.to_vec(),
        CpuStorage::U32(v) => flatten(range(v, start, end)?, |x| x.to_le_bytes()),
        CpuStorage::I16(v) => flatten(range(v, start, end)?, |x| x.to_le_bytes()),
        CpuStorage::I32(v) => flatten(range(v, start, end)?, |x| x.to_le_bytes()),
        CpuStorage::I64(v) => flatten(range(v, start, end)?, |x| x.to_le_bytes()),
        CpuStorage::BF16(v) => flatten(range(v, start, end)?, |x| x.to_le_bytes()),
        CpuStorage::F16(v) => flatten(range(v, start, end)?, |x| x.to_le_bytes()),
        CpuStorage::F32(v) => flatten(range(v, start, end)?, |x| x.to_le_bytes()),
        CpuStorage::F64(v) => flatten(range(v, start, end)?, |x| x.to_le_bytes()),
        CpuStorage::F8E4M3(v) => range(v, start, end)?.iter().map(|x| x.to_bits()).collect(),
        CpuStorage::F6E2M3(_) | CpuStorage::F6E3M2(_) | CpuStorage::F4(_) => {
            return Err(Error::Msg(format!(
                "tensors of packed dtype {} cannot be cached",
                dtype.as_str()
            )))
        }
    };
    Ok(bytes)
}

/// The elements `start..end` of a storage vector.
fn range<T>(v: &[T], start: usize, end: usize) -> Result<&[T]> {
    v.get(start..end)
        .ok_or_else(|| Error::Msg(format!("tensor range {start}..{end} outside its storage")))
}

/// Concatenates the byte form of every element.
fn flatten<T: Copy, const N: usize>(v: &[T], to_bytes: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * N);
    for &x in v {
        out.extend_from_slice(&to_bytes(x));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn bytes_are_little_endian_row_major_even_for_views() {
        let t = Tensor::new(&[[1u32, 2], [3, 4]], &Device::Cpu).unwrap();
        assert_eq!(
            le_bytes(&t.t().unwrap()).unwrap(),
            [1u32, 3, 2, 4]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<_>>()
        );
        let half = Tensor::new(&[1f32, -2.0], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        assert_eq!(le_bytes(&half).unwrap(), vec![0x00, 0x3c, 0x00, 0xc0]);
    }
}
