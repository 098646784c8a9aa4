//! The byte format of a disk entry, and the conversion of [`Outputs`] to it
//! and back.
//!
//! An entry is the 8-byte magic `FLOWCV01`, the 32-byte blake3 hash of the
//! payload, then the payload: a safetensors file. Its tensors are the tensor
//! values found in the outputs, named `t0`, `t1`, …; its metadata key `flow`
//! holds JSON describing the structure:
//!
//! ```json
//! {"ports": {"<port>": <tree>, ...},
//!  "effects": {"written": [{"path": "out/a.png", "size": 1234, "blake3": "<hex>"}],
//!              "shown": [{"message": "..."}, {"stream": "..."}]}}
//! ```
//!
//! (`effects`: see [`crate::effects::Effects`]; absent when there are none)
//! where a tree is `null`, a bool, an integer, a string, an array of trees,
//! `{"float": "<f64 as Rust prints it>"}` (exact, NaN and infinities included),
//! `{"map": {"<key>": <tree>, ...}}`, `{"tensor": "t0", "kind": "latent"}` or
//! `{"object": "<tag>", "plain": <tree>}`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype, SafeTensors, View};
use serde_json::{json, Map, Value as J};

use super::error::{CacheError, DecodeError};
use super::raw;
use crate::op::Outputs;
use crate::registry::Registry;
use crate::types::ValueType;
use crate::value::Value;

/// First bytes of every entry; the digits are the format version.
pub const MAGIC: &[u8; 8] = b"FLOWCV01";

/// Magic plus payload hash.
const HEADER_LEN: usize = MAGIC.len() + blake3::OUT_LEN;

/// The safetensors metadata key holding the structure.
const META_KEY: &str = "flow";

/// The entry bytes of `outputs`, or `None` if they hold an object that
/// cannot be persisted (its [`crate::value::Object::to_plain`] is `None`).
pub fn encode(outputs: &Outputs) -> Result<Option<Vec<u8>>, CacheError> {
    let mut encoder = Encoder::default();
    let mut ports = Map::new();
    for (port, value) in outputs.iter() {
        let Some(tree) = encoder.value(value)? else {
            return Ok(None);
        };
        ports.insert(port.to_string(), tree);
    }
    let mut structure = json!({ "ports": ports });
    if !outputs.effects().is_empty() {
        structure["effects"] =
            serde_json::to_value(outputs.effects()).map_err(|e| CacheError::Encode(e.to_string()))?;
    }
    let structure = structure.to_string();
    let named = encoder
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("t{i}"), t));
    let payload = safetensors::serialize(
        named,
        Some(HashMap::from([(META_KEY.to_string(), structure)])),
    )
    .map_err(|e| CacheError::Encode(e.to_string()))?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(blake3::hash(&payload).as_bytes());
    bytes.extend_from_slice(&payload);
    Ok(Some(bytes))
}

/// Reads entry bytes back. The magic, the length and the payload hash are
/// checked before anything is parsed; tensors come back on the CPU and
/// objects are rebuilt through `registry`'s decoders.
pub fn decode(bytes: &[u8], registry: &Registry) -> Result<Outputs, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Truncated {
            len: bytes.len(),
            min: HEADER_LEN,
        });
    }
    let (magic, rest) = bytes.split_at(MAGIC.len());
    let (hash, payload) = rest.split_at(blake3::OUT_LEN);
    if magic != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if blake3::hash(payload).as_bytes() != hash {
        return Err(DecodeError::HashMismatch);
    }
    let unreadable = |e: safetensors::SafeTensorError| malformed(e.to_string());
    let (_, metadata) = SafeTensors::read_metadata(payload).map_err(unreadable)?;
    let structure = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| malformed(format!("no `{META_KEY}` metadata")))?;
    let structure: J = serde_json::from_str(structure)
        .map_err(|e| malformed(format!("structure is not JSON: {e}")))?;
    let ports = structure
        .get("ports")
        .and_then(J::as_object)
        .ok_or_else(|| malformed("structure has no `ports` map".into()))?;
    let decoder = Decoder {
        tensors: SafeTensors::deserialize(payload).map_err(unreadable)?,
        registry,
    };
    let mut outputs = Outputs::new();
    for (port, tree) in ports {
        outputs.set(port, decoder.value(tree)?);
    }
    if let Some(effects) = structure.get("effects") {
        let effects = serde_json::from_value(effects.clone())
            .map_err(|e| malformed(format!("`effects` cannot be read: {e}")))?;
        outputs.set_effects(effects);
    }
    Ok(outputs)
}

/// A tensor's bytes ready for safetensors.
struct RawTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }

    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Turns values into structure trees, collecting their tensors.
#[derive(Default)]
struct Encoder {
    tensors: Vec<RawTensor>,
}

impl Encoder {
    /// The tree of `value`, or `None` if it holds an object without a plain form.
    fn value(&mut self, value: &Value) -> Result<Option<J>, CacheError> {
        let tree = match value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => json!({ "float": format!("{f:?}") }),
            Value::Text(s) => J::String(s.to_string()),
            Value::List(items) => {
                let mut trees = Vec::with_capacity(items.len());
                for item in items.iter() {
                    let Some(tree) = self.value(item)? else {
                        return Ok(None);
                    };
                    trees.push(tree);
                }
                J::Array(trees)
            }
            Value::Map(entries) => {
                let mut trees = Map::new();
                for (k, v) in entries.iter() {
                    let Some(tree) = self.value(v)? else {
                        return Ok(None);
                    };
                    trees.insert(k.clone(), tree);
                }
                json!({ "map": trees })
            }
            Value::Tensor(t) => {
                let data = raw::le_bytes(&t.tensor)
                    .map_err(|e| CacheError::Encode(format!("{} tensor: {e}", t.kind)))?;
                let name = format!("t{}", self.tensors.len());
                self.tensors.push(RawTensor {
                    dtype: t.tensor.dtype().into(),
                    shape: t.tensor.dims().to_vec(),
                    data,
                });
                json!({ "tensor": name, "kind": t.kind.name() })
            }
            Value::Object(o) => {
                let Some(plain) = o.to_plain() else {
                    return Ok(None);
                };
                let Some(tree) = self.value(&plain)? else {
                    return Ok(None);
                };
                json!({ "object": o.type_tag(), "plain": tree })
            }
        };
        Ok(Some(tree))
    }
}

/// Turns structure trees back into values.
struct Decoder<'a> {
    tensors: SafeTensors<'a>,
    registry: &'a Registry,
}

impl Decoder<'_> {
    fn value(&self, tree: &J) -> Result<Value, DecodeError> {
        Ok(match tree {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => Value::Int(
                n.as_i64()
                    .ok_or_else(|| malformed(format!("bad int {n}")))?,
            ),
            J::String(s) => Value::text(s),
            J::Array(items) => Value::list(
                items
                    .iter()
                    .map(|t| self.value(t))
                    .collect::<Result<_, _>>()?,
            ),
            J::Object(fields) => self.tagged(fields)?,
        })
    }

    fn tagged(&self, fields: &Map<String, J>) -> Result<Value, DecodeError> {
        let text = |name: &str| fields.get(name).and_then(J::as_str);
        if let Some(f) = text("float") {
            let f = f
                .parse::<f64>()
                .map_err(|_| malformed(format!("bad float `{f}`")))?;
            Ok(Value::Float(f))
        } else if let Some(entries) = fields.get("map").and_then(J::as_object) {
            let entries = entries
                .iter()
                .map(|(k, t)| Ok((k.clone(), self.value(t)?)))
                .collect::<Result<BTreeMap<_, _>, DecodeError>>()?;
            Ok(Value::map(entries))
        } else if let (Some(name), Some(kind)) = (text("tensor"), text("kind")) {
            self.tensor(name, kind)
        } else if let (Some(tag), Some(plain)) = (text("object"), fields.get("plain")) {
            let plain = self.value(plain)?;
            self.registry
                .decode_object(tag, &plain)
                .map_err(|e| malformed(format!("object `{tag}`: {e:#}")))
        } else {
            Err(malformed(format!(
                "unknown node {}",
                J::Object(fields.clone())
            )))
        }
    }

    fn tensor(&self, name: &str, kind: &str) -> Result<Value, DecodeError> {
        let kind: ValueType = kind.parse().map_err(malformed)?;
        if !kind.is_tensor_like() {
            return Err(malformed(format!(
                "tensor `{name}` has non-tensor kind {kind}"
            )));
        }
        let view = self
            .tensors
            .tensor(name)
            .map_err(|e| malformed(e.to_string()))?;
        let dtype = DType::try_from(view.dtype()).map_err(|e| malformed(e.to_string()))?;
        let tensor = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .map_err(|e| malformed(format!("tensor `{name}`: {e}")))?;
        Ok(Value::tensor(kind, tensor))
    }
}

fn malformed(reason: String) -> DecodeError {
    DecodeError::Malformed(reason)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::effects::Effects;
    use crate::files::WrittenFile;
    use crate::value::Object;

    /// A test object whose plain form is its content (`None`: not persistable).
    #[derive(Debug)]
    pub(crate) struct Doc(pub Option<Value>);

    impl Object for Doc {
        fn value_type(&self) -> ValueType {
            ValueType::Docs
        }
        fn type_tag(&self) -> &'static str {
            "test.doc"
        }
        fn byte_size(&self) -> usize {
            64
        }
        fn to_plain(&self) -> Option<Value> {
            self.0.clone()
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    /// A registry that decodes [`Doc`].
    pub(crate) fn registry() -> Registry {
        let mut registry = Registry::new();
        registry.register_decoder("test.doc", |plain| {
            Ok(Value::Object(Arc::new(Doc(Some(plain.clone())))))
        });
        registry
    }

    /// Outputs with every kind of value: text, numbers, lists, maps, tensors
    /// of several dtypes and a persistable object.
    pub(crate) fn sample() -> Outputs {
        let dev = Device::Cpu;
        let f32s = Tensor::new(
            &[[0.5f32, -1.25, 3.0], [f32::MAX, f32::MIN_POSITIVE, 0.0]],
            &dev,
        )
        .unwrap();
        let bytes = Tensor::new(&[0u8, 7, 255], &dev).unwrap();
        let longs = Tensor::new(&[[i64::MIN], [i64::MAX]], &dev).unwrap();
        let mut out = Outputs::new();
        out.set("text", "héllo\n\"world\"");
        out.set("int", Value::Int(-42));
        out.set("float", Value::Float(0.1));
        out.set("whole", Value::Float(2.0));
        out.set("nan", Value::Float(f64::NAN));
        out.set("inf", Value::Float(f64::NEG_INFINITY));
        out.set("null", Value::Null);
        out.set("bool", true);
        out.set(
            "nested",
            Value::list(vec![
                Value::Int(1),
                Value::map(BTreeMap::from([
                    ("k".to_string(), Value::list(vec![])),
                    ("float".to_string(), Value::text("not a tag")),
                    ("t".to_string(), Value::tensor(ValueType::Latent, bytes)),
                ])),
            ]),
        );
        out.set("image", Value::tensor(ValueType::Image, f32s.t().unwrap()));
        out.set("ids", Value::tensor(ValueType::Tensor, longs));
        out.set(
            "half",
            Value::tensor(ValueType::Embeddings, f32s.to_dtype(DType::BF16).unwrap()),
        );
        out.set(
            "empty",
            Value::tensor(
                ValueType::Tensor,
                Tensor::zeros((2, 0), DType::F16, &dev).unwrap(),
            ),
        );
        out.set(
            "doc",
            Value::Object(Arc::new(Doc(Some(Value::text("contents"))))),
        );
        out
    }

    /// Structural equality of values (floats by bits, tensors by content).
    pub(crate) fn assert_same(a: &Value, b: &Value) {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => {
                assert!(
                    x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                    "{x} vs {y}"
                )
            }
            (Value::List(x), Value::List(y)) => {
                assert_eq!(x.len(), y.len());
                x.iter().zip(y.iter()).for_each(|(x, y)| assert_same(x, y));
            }
            (Value::Map(x), Value::Map(y)) => {
                assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
                x.values()
                    .zip(y.values())
                    .for_each(|(x, y)| assert_same(x, y));
            }
            (Value::Tensor(x), Value::Tensor(y)) => {
                assert_eq!(x.kind, y.kind);
                assert_eq!(x.tensor.dtype(), y.tensor.dtype());
                assert_eq!(x.tensor.dims(), y.tensor.dims());
                assert_eq!(
                    raw::le_bytes(&x.tensor).unwrap(),
                    raw::le_bytes(&y.tensor).unwrap()
                );
            }
            (Value::Object(x), Value::Object(y)) => {
                assert_eq!(x.type_tag(), y.type_tag());
                assert_same(&x.to_plain().unwrap(), &y.to_plain().unwrap());
            }
            _ => assert_eq!(format!("{a:?}"), format!("{b:?}")),
        }
    }

    pub(crate) fn assert_same_outputs(a: &Outputs, b: &Outputs) {
        assert_eq!(a.effects(), b.effects());
        assert_eq!(
            a.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            b.iter().map(|(k, _)| k).collect::<Vec<_>>()
        );
        a.iter()
            .zip(b.iter())
            .for_each(|((_, x), (_, y))| assert_same(x, y));
    }

    #[test]
    fn round_trips_every_kind_of_value() {
        let out = sample();
        let bytes = encode(&out).unwrap().unwrap();
        assert_eq!(&bytes[..8], b"FLOWCV01");
        let back = decode(&bytes, &registry()).unwrap();
        assert_same_outputs(&out, &back);
        assert!(back.get("doc").unwrap().as_object::<Doc>().is_some());
    }

    #[test]
    fn round_trips_what_a_node_wrote_and_showed() {
        let mut out = Outputs::single("path", "out/a.png");
        let mut effects = Effects::default();
        effects.written = vec![WrittenFile::of("out/a.png", b"png"), WrittenFile::of("/abs/b.txt", b"")];
        effects.push_stream("an answer");
        out.set_effects(effects);
        let back = decode(&encode(&out).unwrap().unwrap(), &registry()).unwrap();
        assert_same_outputs(&out, &back);
        assert_eq!(back.effects().written.len(), 2);
    }

    #[test]
    fn round_trips_empty_outputs_and_extreme_floats() {
        assert!(
            decode(&encode(&Outputs::new()).unwrap().unwrap(), &registry())
                .unwrap()
                .is_empty()
        );
        for f in [f64::MIN_POSITIVE, -0.0, 1e300, 5e-324, std::f64::consts::PI] {
            let out = Outputs::single("f", f);
            assert_same_outputs(
                &out,
                &decode(&encode(&out).unwrap().unwrap(), &registry()).unwrap(),
            );
        }
    }

    #[test]
    fn objects_without_plain_form_are_not_persistable() {
        let mut out = sample();
        out.set(
            "opaque",
            Value::list(vec![Value::Object(Arc::new(Doc(None)))]),
        );
        assert!(encode(&out).unwrap().is_none());
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let bytes = encode(&sample()).unwrap().unwrap();
        for i in (0..bytes.len()).step_by(bytes.len() / 97 + 1) {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x20;
            let err = decode(&damaged, &registry()).unwrap_err();
            let expected = if i < 8 { "BadMagic" } else { "HashMismatch" };
            assert_eq!(format!("{err:?}"), expected, "byte {i}");
        }
    }

    #[test]
    fn truncation_is_detected() {
        let bytes = encode(&sample()).unwrap().unwrap();
        for len in [0, 7, 39, 40, 41, bytes.len() / 2, bytes.len() - 1] {
            let err = decode(&bytes[..len], &registry()).unwrap_err();
            match err {
                DecodeError::Truncated { .. } => assert!(len < HEADER_LEN),
                DecodeError::HashMismatch => assert!(len >= HEADER_LEN),
                other => panic!("length {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn missing_object_decoder_is_malformed() {
        let bytes = encode(&sample()).unwrap().unwrap();
        let err = decode(&bytes, &Registry::new()).unwrap_err();
        assert!(
            matches!(err, DecodeError::Malformed(ref m) if m.contains("test.doc")),
            "{err}"
        );
    }
}
