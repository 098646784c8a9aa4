//! The `cond` value: the prompt and negative-prompt embeddings.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use candle_core::Tensor;
use flow_engine::{Object, Value, ValueType};

/// The tag of [`SdCond`]'s plain form in the disk cache.
pub(super) const TYPE_TAG: &str = "sd.cond";

/// Classifier-free-guidance conditioning: what `sd.encode_prompt` makes and
/// `sd.sample` consumes (with [`crate::sd::guided_eps`]).
#[derive(Clone, Debug)]
pub struct SdCond {
    /// The prompt embedding, `(1, L, D)` float32.
    pub cond: Tensor,
    /// The negative-prompt embedding, `(1, L, D)` float32 (the empty
    /// prompt is encoded, not zeroed).
    pub uncond: Tensor,
}

impl SdCond {
    /// Wraps the conditioning as a graph value.
    pub fn into_value(self) -> Value {
        Value::Object(Arc::new(self))
    }
}

impl Object for SdCond {
    fn value_type(&self) -> ValueType {
        ValueType::Cond
    }

    fn type_tag(&self) -> &'static str {
        TYPE_TAG
    }

    fn byte_size(&self) -> usize {
        (self.cond.elem_count() + self.uncond.elem_count()) * self.cond.dtype().size_in_bytes()
    }

    fn to_plain(&self) -> Option<Value> {
        let mut m = BTreeMap::new();
        m.insert("cond".to_string(), Value::tensor(ValueType::Tensor, self.cond.clone()));
        m.insert("uncond".to_string(), Value::tensor(ValueType::Tensor, self.uncond.clone()));
        Some(Value::map(m))
    }

    fn tensors(&self) -> Vec<&Tensor> {
        vec![&self.cond, &self.uncond]
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
    Ok(SdCond { cond: tensor("cond")?, uncond: tensor("uncond")? }.into_value())
}
