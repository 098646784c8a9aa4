//! NaN and infinities fail the node that produced them: a sampler fed a NaN
//! `cfg` or a model that overflows must not write an all-NaN picture with
//! exit 0. Graph literals are checked at validation; here the numeric
//! tensors of a node's outputs (tensors, latents, images, embeddings, and
//! those inside objects such as conditioning) are checked right after the
//! op returns.

use candle_core::{DType, Device, Tensor};

use crate::op::Outputs;
use crate::value::Value;

/// An error naming `op` and the first output port holding a NaN or an
/// infinity, if one does.
pub fn check_outputs(outputs: &Outputs, op: &str) -> Result<(), String> {
    for (port, value) in outputs.iter() {
        if let Some(what) = first_non_finite(value).map_err(|e| format!("op `{op}`: cannot check output `{port}`: {e}"))? {
            return Err(format!("op `{op}` produced non-finite values ({what}) in output `{port}`"));
        }
    }
    Ok(())
}

/// `Some("NaN")` or `Some("infinity")` for the first non-finite number found.
fn first_non_finite(value: &Value) -> candle_core::Result<Option<&'static str>> {
    let tensors: Vec<&Tensor> = match value {
        Value::Tensor(t) => vec![&t.tensor],
        Value::Float(f) => return Ok(kind(*f)),
        Value::List(items) => {
            for v in items.iter() {
                if let Some(k) = first_non_finite(v)? {
                    return Ok(Some(k));
                }
            }
            return Ok(None);
        }
        Value::Map(entries) => {
            for v in entries.values() {
                if let Some(k) = first_non_finite(v)? {
                    return Ok(Some(k));
                }
            }
            return Ok(None);
        }
        Value::Object(o) => o.tensors(),
        _ => return Ok(None),
    };
    for t in tensors {
        if let Some(k) = tensor_non_finite(t)? {
            return Ok(Some(k));
        }
    }
    Ok(None)
}

fn kind(f: f64) -> Option<&'static str> {
    if f.is_nan() {
        Some("NaN")
    } else if f.is_infinite() {
        Some("infinity")
    } else {
        None
    }
}

/// The first kind of non-finite value in a float tensor. Contiguous f32 on
/// the CPU is scanned in place; anything else goes through candle: `0 * x`
/// is 0 for every finite `x` and NaN otherwise, so the sum is NaN exactly
/// when some element is not finite (the sum of zeros cannot overflow).
fn tensor_non_finite(t: &Tensor) -> candle_core::Result<Option<&'static str>> {
    if !t.dtype().is_float() {
        return Ok(None);
    }
    if let (Device::Cpu, DType::F32) = (t.device(), t.dtype()) {
        let (storage, layout) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(data[start..end].iter().find(|x| !x.is_finite()).and_then(|&x| kind(f64::from(x))));
        }
    }
    let probe = t.affine(0.0, 0.0)?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if probe.is_finite() {
        return Ok(None);
    }
    // Which kind: any NaN makes the plain sum NaN too.
    let plain = t.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
    Ok(if plain.is_nan() { Some("NaN") } else { Some("infinity") })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::types::ValueType;

    fn outputs(values: &[f32], dtype: DType) -> Outputs {
        let t = Tensor::new(values, &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
        Outputs::single("latent", Value::tensor(ValueType::Latent, t))
    }

    #[test]
    fn finite_tensors_pass_and_nan_or_infinity_fail_naming_op_and_port() {
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
            assert_eq!(check_outputs(&outputs(&[1.0, -2.0, 3e4], dtype), "sd.sample"), Ok(()));
            let err = check_outputs(&outputs(&[1.0, f32::NAN], dtype), "sd.sample").unwrap_err();
            assert_eq!(err, "op `sd.sample` produced non-finite values (NaN) in output `latent`", "{dtype:?}");
            let err = check_outputs(&outputs(&[f32::NEG_INFINITY, 1.0], dtype), "x.y").unwrap_err();
            assert!(err.contains("(infinity)"), "{dtype:?}: {err}");
        }
    }

    #[test]
    fn huge_finite_values_are_not_mistaken_for_infinities() {
        let big = outputs(&[f32::MAX, f32::MAX, f32::MAX], DType::F32);
        assert_eq!(check_outputs(&big, "op"), Ok(()));
        // Strided (not contiguous) goes through candle.
        let t = Tensor::new(&[[f32::MAX, 1.0], [f32::MAX, 2.0]], &Device::Cpu).unwrap().t().unwrap();
        assert!(!t.is_contiguous());
        assert_eq!(check_outputs(&Outputs::single("t", Value::tensor(ValueType::Tensor, t)), "op"), Ok(()));
    }

    #[test]
    fn nested_values_and_integers() {
        let ints = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
        assert_eq!(check_outputs(&Outputs::single("ids", Value::tensor(ValueType::Tensor, ints)), "op"), Ok(()));
        let nested = Value::map(BTreeMap::from([("x".to_string(), Value::list(vec![Value::Float(f64::NAN)]))]));
        assert!(check_outputs(&Outputs::single("m", nested), "op").is_err());
    }
}
