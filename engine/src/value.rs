//! Values that flow between nodes. Values are immutable and cheap to clone
//! (shared behind `Arc`), so the cache and every consumer share one copy.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use candle_core::Tensor;

use crate::types::ValueType;

/// A value produced by a node, given as a literal, or read from the cache.
#[derive(Clone)]
pub enum Value {
    /// YAML `null`: an absent optional value.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// UTF-8 text.
    Text(Arc<str>),
    /// A list.
    List(Arc<Vec<Value>>),
    /// A map with text keys, ordered by key.
    Map(Arc<BTreeMap<String, Value>>),
    /// A tensor with the domain type it stands for.
    Tensor(TensorValue),
    /// A domain object (conditioning, documents, an index, a model handle...).
    Object(Arc<dyn Object>),
}

/// A candle tensor tagged with the domain type it stands for.
#[derive(Clone, Debug)]
pub struct TensorValue {
    /// One of the tensor-like types: tensor, image, latent or embeddings.
    pub kind: ValueType,
    /// The tensor itself.
    pub tensor: Tensor,
}

/// A domain value that is not plain data or a single tensor.
///
/// An object states its type, its size for the cache's byte accounting, and how
/// it is written to the disk cache: as a plain [`Value`] (maps, lists, tensors)
/// that the decoder registered for its [`Object::type_tag`] turns back into the
/// object. Objects that cannot be persisted return `None` from
/// [`Object::to_plain`] and stay in the memory tier only.
pub trait Object: Send + Sync + fmt::Debug + 'static {
    /// The port type this object satisfies.
    fn value_type(&self) -> ValueType;
    /// A stable tag naming the decoder for [`Object::to_plain`]'s output.
    fn type_tag(&self) -> &'static str;
    /// Approximate bytes held in memory.
    fn byte_size(&self) -> usize;
    /// The object as plain data for the disk cache, if it can be persisted.
    fn to_plain(&self) -> Option<Value>;
    /// Downcasting support for the ops that consume this object.
    fn as_any(&self) -> &dyn std::any::Any;
    /// The numeric tensors the object holds (e.g. conditioning), checked for
    /// NaN and infinities when a node produces the object.
    fn tensors(&self) -> Vec<&Tensor> {
        Vec::new()
    }
}

impl Value {
    /// Text value from anything string-like.
    pub fn text(s: impl AsRef<str>) -> Value {
        Value::Text(Arc::from(s.as_ref()))
    }

    /// List value.
    pub fn list(items: Vec<Value>) -> Value {
        Value::List(Arc::new(items))
    }

    /// Map value.
    pub fn map(entries: BTreeMap<String, Value>) -> Value {
        Value::Map(Arc::new(entries))
    }

    /// Tensor value of the given tensor-like kind.
    pub fn tensor(kind: ValueType, tensor: Tensor) -> Value {
        debug_assert!(kind.is_tensor_like());
        Value::Tensor(TensorValue { kind, tensor })
    }

    /// The type of this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Null => ValueType::Any,
            Value::Bool(_) => ValueType::Bool,
            Value::Int(_) => ValueType::Int,
            Value::Float(_) => ValueType::Float,
            Value::Text(_) => ValueType::Text,
            Value::List(_) => ValueType::List,
            Value::Map(_) => ValueType::Map,
            Value::Tensor(t) => t.kind,
            Value::Object(o) => o.value_type(),
        }
    }

    /// Approximate bytes held by this value (for cache budgets).
    pub fn byte_size(&self) -> usize {
        const SMALL: usize = std::mem::size_of::<Value>();
        match self {
            Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) => SMALL,
            Value::Text(s) => SMALL + s.len(),
            Value::List(items) => SMALL + items.iter().map(Value::byte_size).sum::<usize>(),
            Value::Map(m) => {
                SMALL + m.iter().map(|(k, v)| k.len() + v.byte_size()).sum::<usize>()
            }
            Value::Tensor(t) => SMALL + t.tensor.elem_count() * t.tensor.dtype().size_in_bytes(),
            Value::Object(o) => SMALL + o.byte_size(),
        }
    }

    /// Bytes of the tensors in this value that live on a GPU (counted in
    /// [`Value::byte_size`] too): plain tensors, the tensors of lists and
    /// maps, and those objects list in [`Object::tensors`].
    pub fn device_byte_size(&self) -> usize {
        let on_device = |t: &Tensor| {
            if t.device().is_cpu() {
                0
            } else {
                t.elem_count() * t.dtype().size_in_bytes()
            }
        };
        match self {
            Value::List(items) => items.iter().map(Value::device_byte_size).sum(),
            Value::Map(m) => m.values().map(Value::device_byte_size).sum(),
            Value::Tensor(t) => on_device(&t.tensor),
            Value::Object(o) => o.tensors().into_iter().map(on_device).sum(),
            _ => 0,
        }
    }

    /// The text, if this is a text value.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an int value.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number as f64, if this is an int or a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The tensor, if this is a tensor-like value.
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Value::Tensor(t) => Some(&t.tensor),
            _ => None,
        }
    }

    /// The object downcast to `T`, if this is such an object.
    pub fn as_object<T: Object>(&self) -> Option<&T> {
        match self {
            Value::Object(o) => o.as_any().downcast_ref::<T>(),
            _ => None,
        }
    }

    /// Text rendering used by `${...}` interpolation and `debug.print`:
    /// text as is, numbers and bools in their literal form, anything else in a
    /// short descriptive form.
    pub fn to_display_string(&self) -> String {
        match self {
            Value::Null => "null".to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format_float(*f),
            Value::Text(s) => s.to_string(),
            Value::List(_) | Value::Map(_) => self.to_json().to_string(),
            Value::Tensor(t) => format!(
                "{}{:?} {:?}",
                t.kind,
                t.tensor.dims(),
                t.tensor.dtype()
            ),
            Value::Object(o) => format!("<{}>", o.value_type()),
        }
    }

    /// Plain data as JSON; tensors and objects become short descriptions.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            Value::Text(s) => J::String(s.to_string()),
            Value::List(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
            Value::Tensor(_) | Value::Object(_) => J::String(self.to_display_string()),
        }
    }

    /// Plain data from JSON.
    pub fn from_json(json: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match json {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Value::text(s),
            J::Array(items) => Value::list(items.iter().map(Value::from_json).collect()),
            J::Object(m) => {
                Value::map(m.iter().map(|(k, v)| (k.clone(), Value::from_json(v))).collect())
            }
        }
    }
}

/// Shortest float rendering that reads back as a float (`7.5`, `2.0`).
pub fn format_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Object(o) => write!(f, "{o:?}"),
            _ => f.write_str(&self.to_display_string()),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::text(s)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::text(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
