//! The `cond` value: the prompt and negative-prompt embeddings, several of
//! each once conds are combined (`sd.combine_cond`).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use candle_core::Tensor;
use flow_engine::{Object, Value, ValueType};

/// The tag of [`SdCond`]'s plain form in the disk cache (`.v2`: the form
/// with combined embeddings; entries of the old tag are recomputed).
pub(super) const TYPE_TAG: &str = "sd.cond.v2";

/// Classifier-free-guidance conditioning: what `sd.encode_prompt` makes,
/// `sd.combine_cond` joins and `sd.sample` consumes (with
/// [`crate::sd::guidance`]). With several embeddings on a side the sampler
/// averages their predictions, as ComfyUI does for combined full-area conds
/// of strength 1.
#[derive(Clone, Debug)]
pub struct SdCond {
    /// The prompt embedding, `(1, L, D)` float32 (the first one when conds
    /// are combined).
    pub cond: Tensor,
    /// The negative-prompt embedding, `(1, L, D)` float32 (the empty
    /// prompt is encoded, not zeroed; the first one when combined).
    pub uncond: Tensor,
    /// Further prompt embeddings joined by `sd.combine_cond`.
    pub more_cond: Vec<Tensor>,
    /// Further negative-prompt embeddings joined by `sd.combine_cond`.
    pub more_uncond: Vec<Tensor>,
}

impl SdCond {
    /// The conditioning of one prompt and one negative prompt.
    pub fn new(cond: Tensor, uncond: Tensor) -> Self {
        SdCond { cond, uncond, more_cond: Vec::new(), more_uncond: Vec::new() }
    }

    /// Every prompt embedding.
    pub fn positive(&self) -> Vec<Tensor> {
        std::iter::once(&self.cond).chain(&self.more_cond).cloned().collect()
    }

    /// Every negative-prompt embedding.
    pub fn negative(&self) -> Vec<Tensor> {
        std::iter::once(&self.uncond).chain(&self.more_uncond).cloned().collect()
    }

    /// The conditioning whose predictions average those of `self` and
    /// `other` on each side (ComfyUI's ConditioningCombine). An embedding
    /// equal bit for bit to one already on its side is not added again: its
    /// prediction would be the same, and the average of equal predictions
    /// is that prediction.
    pub fn combine(&self, other: &SdCond) -> Result<SdCond> {
        let mut out = self.clone();
        for t in other.positive() {
            if !contains(&out.positive(), &t)? {
                out.more_cond.push(t);
            }
        }
        for t in other.negative() {
            if !contains(&out.negative(), &t)? {
                out.more_uncond.push(t);
            }
        }
        Ok(out)
    }

    /// Wraps the conditioning as a graph value.
    pub fn into_value(self) -> Value {
        Value::Object(Arc::new(self))
    }

    fn all(&self) -> impl Iterator<Item = &Tensor> {
        [&self.cond, &self.uncond].into_iter().chain(&self.more_cond).chain(&self.more_uncond)
    }
}

/// Whether `list` holds a tensor equal to `t` (shape, dtype and bits).
fn contains(list: &[Tensor], t: &Tensor) -> Result<bool> {
    for x in list {
        if x.dims() == t.dims() && x.dtype() == t.dtype() {
            let (a, b) = (
                x.flatten_all()?.to_dtype(candle_core::DType::F32)?,
                t.flatten_all()?.to_dtype(candle_core::DType::F32)?,
            );
            let (a, b): (Vec<f32>, Vec<f32>) = (a.to_vec1()?, b.to_vec1()?);
            if a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

impl Object for SdCond {
    fn value_type(&self) -> ValueType {
        ValueType::Cond
    }

    fn type_tag(&self) -> &'static str {
        TYPE_TAG
    }

    fn byte_size(&self) -> usize {
        self.all().map(|t| t.elem_count() * t.dtype().size_in_bytes()).sum()
    }

    fn to_plain(&self) -> Option<Value> {
        let tensor = |t: &Tensor| Value::tensor(ValueType::Tensor, t.clone());
        let mut m = BTreeMap::new();
        m.insert("cond".to_string(), tensor(&self.cond));
        m.insert("uncond".to_string(), tensor(&self.uncond));
        m.insert("more_cond".to_string(), Value::list(self.more_cond.iter().map(tensor).collect()));
        m.insert("more_uncond".to_string(), Value::list(self.more_uncond.iter().map(tensor).collect()));
        Some(Value::map(m))
    }

    fn tensors(&self) -> Vec<&Tensor> {
        self.all().collect()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Rebuilds an [`SdCond`] from its plain form.
pub(super) fn decode(plain: &Value) -> Result<Value> {
    let Value::Map(m) = plain else { bail!("cached conditioning is not a map") };
    let tensor = |k: &str| {
        m.get(k).and_then(Value::as_tensor).cloned().ok_or_else(|| anyhow!("cached conditioning lacks `{k}`"))
    };
    let list = |k: &str| -> Result<Vec<Tensor>> {
        let Some(Value::List(items)) = m.get(k) else { bail!("cached conditioning lacks the list `{k}`") };
        items.iter().map(|v| v.as_tensor().cloned().ok_or_else(|| anyhow!("`{k}` holds a non-tensor"))).collect()
    };
    Ok(SdCond {
        cond: tensor("cond")?,
        uncond: tensor("uncond")?,
        more_cond: list("more_cond")?,
        more_uncond: list("more_uncond")?,
    }
    .into_value())
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use flow_engine::cache::codec;
    use flow_engine::{Outputs, Registry};

    use super::*;

    fn embedding(v: f32) -> Tensor {
        Tensor::full(v, (1, 3, 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn combined_conds_keep_every_distinct_embedding_and_survive_the_disk_cache() {
        let a = SdCond::new(embedding(1.0), embedding(0.0));
        let b = SdCond::new(embedding(2.0), embedding(0.0));
        let c = a.combine(&b).unwrap().combine(&a).unwrap();
        // The shared negative prompt and the repeated `a` are not duplicated.
        assert_eq!(c.positive().len(), 2);
        assert_eq!(c.negative().len(), 1);
        assert_eq!(c.more_cond[0].to_vec3::<f32>().unwrap(), embedding(2.0).to_vec3::<f32>().unwrap());

        let mut reg = Registry::new();
        reg.register_decoder(TYPE_TAG, decode);
        let bytes = codec::encode(&Outputs::single("cond", c.clone().into_value())).unwrap().unwrap();
        let back = codec::decode(&bytes, &reg).unwrap();
        let back = back.get("cond").unwrap().as_object::<SdCond>().unwrap().clone();
        assert_eq!(back.positive().len(), 2);
        assert_eq!(back.negative().len(), 1);
        for (x, y) in back.positive().iter().zip(c.positive()) {
            assert_eq!(x.to_vec3::<f32>().unwrap(), y.to_vec3::<f32>().unwrap());
        }
        // A cached map without the lists (the old form) is refused, not misread.
        let mut old = BTreeMap::new();
        old.insert("cond".to_string(), Value::tensor(ValueType::Tensor, embedding(1.0)));
        old.insert("uncond".to_string(), Value::tensor(ValueType::Tensor, embedding(0.0)));
        assert!(decode(&Value::map(old)).is_err());
    }
}
