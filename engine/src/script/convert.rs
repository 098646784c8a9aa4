//! Values between flow and rhai.
//!
//! Plain data maps one to one (text, ints, floats, bools, lists, maps, null
//! as `()`); tensor-like values become the script type `Tensor`; domain
//! objects (documents, chunks, an index, conditioning) reach scripts in
//! their plain form ([`crate::value::Object::to_plain`]) and cannot be
//! turned back, so script outputs are plain data or tensors.

use std::collections::BTreeMap;

use rhai::{Array, Dynamic, Map, FLOAT, INT};

use super::tensor_api::ScriptTensor;
use crate::op::{Inputs, OpSpec, Outputs, PortSpec};
use crate::types::ValueType;
use crate::value::Value;

/// How deep lists and maps leaving a script may nest.
const MAX_DEPTH: usize = 128;

/// The map `run` receives: every input port, `()` for an optional input
/// that was not given.
pub(crate) fn inputs_map(inputs: &Inputs, spec: &OpSpec) -> Result<Map, String> {
    let mut map = Map::new();
    for port in &spec.inputs {
        let value = match inputs.get(port.name) {
            Some(v) => to_dynamic(v).map_err(|e| format!("input `{}`: {e}", port.name))?,
            None => Dynamic::UNIT,
        };
        map.insert(port.name.into(), value);
    }
    Ok(map)
}

/// A flow value as a rhai value.
pub(crate) fn to_dynamic(value: &Value) -> Result<Dynamic, String> {
    Ok(match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Int(i) => Dynamic::from_int(*i),
        Value::Float(f) => Dynamic::from_float(*f),
        Value::Text(s) => Dynamic::from(s.to_string()),
        Value::List(items) => Dynamic::from_array(items.iter().map(to_dynamic).collect::<Result<Array, _>>()?),
        Value::Map(m) => Dynamic::from_map(
            m.iter()
                .map(|(k, v)| Ok((k.as_str().into(), to_dynamic(v)?)))
                .collect::<Result<Map, String>>()?,
        ),
        Value::Tensor(t) => Dynamic::from(ScriptTensor::new(t.tensor.clone(), t.kind)),
        Value::Object(o) => match o.to_plain() {
            Some(plain) => to_dynamic(&plain)?,
            None => return Err(format!("a {} cannot be passed to a script (it has no plain form)", o.value_type())),
        },
    })
}

/// The outputs of `run` from what it returned: a map of output name to
/// value, or, for a script with a single output, that output's value (a
/// map whose only key is the output's name counts as the map of outputs).
pub(crate) fn outputs(returned: Dynamic, spec: &OpSpec) -> Result<Outputs, String> {
    let single = match spec.outputs.as_slice() {
        [port] => Some(port),
        _ => None,
    };
    let map = match returned.try_cast_result::<Map>() {
        Ok(map) if single.is_none_or(|p| map.len() == 1 && map.contains_key(p.name)) => map,
        Ok(map) => return one(Dynamic::from_map(map), single),
        Err(other) => return one(other, single),
    };
    let mut out = Outputs::new();
    for port in &spec.outputs {
        let value = map.get(port.name).ok_or_else(|| {
            let got: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
            format!("`run` returned no value for output `{}` (it returned: {})", port.name, listing(&got))
        })?;
        out.set(port.name, output(value.clone(), port)?);
    }
    if let Some(extra) = map.keys().find(|k| spec.output_port(k).is_none()) {
        let names: Vec<&str> = spec.outputs.iter().map(|p| p.name).collect();
        return Err(format!("`run` returned `{extra}`, which is not an output (outputs: {})", listing(&names)));
    }
    Ok(out)
}

fn one(value: Dynamic, single: Option<&PortSpec>) -> Result<Outputs, String> {
    match single {
        Some(port) => Ok(Outputs::single(port.name, output(value, port)?)),
        None => Err(format!("`run` should return a map of outputs, got {}", type_name(&value))),
    }
}

fn listing(names: &[&str]) -> String {
    if names.is_empty() {
        "nothing".to_string()
    } else {
        names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
    }
}

/// The value of output `port`, checked against its type. Ints widen to
/// float ports; tensors take the port's kind.
pub(crate) fn output(value: Dynamic, port: &PortSpec) -> Result<Value, String> {
    let wrong = |v: &Dynamic| format!("output `{}` should be {}, got {}", port.name, port.ty, type_name(v));
    let ty = port.ty;
    if ty.is_tensor_like() {
        let t = value.try_cast_result::<ScriptTensor>().map_err(|v| wrong(&v))?;
        return Ok(Value::tensor(ty, t.tensor));
    }
    if value.is_unit() && !matches!(ty, ValueType::Any | ValueType::Json) {
        return Err(format!("output `{}` is `()`: give it a value of type {}", port.name, ty));
    }
    let converted = match (ty, value.as_int()) {
        (ValueType::Float, Ok(i)) => Value::Float(i as FLOAT),
        _ => from_dynamic(value.clone(), 0).map_err(|e| format!("output `{}`: {e}", port.name))?,
    };
    if !ty.accepts(converted.value_type()) || (ty == ValueType::Json && converted.value_type().is_tensor_like()) {
        return Err(wrong(&value));
    }
    Ok(converted)
}

/// A rhai value as a flow value: plain data and tensors (tensors keep the
/// kind they came with, `tensor` for new ones).
pub(crate) fn from_dynamic(value: Dynamic, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("lists and maps nest deeper than {MAX_DEPTH} levels"));
    }
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::Int(i as INT));
    }
    if let Ok(f) = value.as_float() {
        return Ok(Value::Float(f));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::text(c.to_string()));
    }
    if value.is_string() {
        return Ok(Value::text(value.into_immutable_string().unwrap_or_default().as_str()));
    }
    if value.is_array() {
        let items = value.into_array().unwrap_or_default();
        return Ok(Value::list(items.into_iter().map(|v| from_dynamic(v, depth + 1)).collect::<Result<_, _>>()?));
    }
    if value.is_map() {
        let map = value.cast::<Map>();
        let entries = map
            .into_iter()
            .map(|(k, v)| Ok((k.to_string(), from_dynamic(v, depth + 1)?)))
            .collect::<Result<BTreeMap<_, _>, String>>()?;
        return Ok(Value::map(entries));
    }
    match value.try_cast_result::<ScriptTensor>() {
        Ok(t) => Ok(Value::tensor(t.kind, t.tensor)),
        Err(v) => Err(format!("{} cannot leave a script", type_name(&v))),
    }
}

/// The script-facing name of a value's type.
pub(crate) fn type_name(value: &Dynamic) -> String {
    if value.is::<ScriptTensor>() {
        let t = value.clone().cast::<ScriptTensor>();
        return format!("a Tensor ({})", t.kind);
    }
    let name = match value.type_name() {
        "()" => "`()`",
        "bool" => "a bool",
        "i64" => "an int",
        "f64" => "a float",
        "char" | "string" => "a string",
        "array" => "an array",
        "map" => "a map",
        other => return format!("a value of type `{other}`"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn round_trip(v: Value) -> Value {
        from_dynamic(to_dynamic(&v).unwrap(), 0).unwrap()
    }

    #[test]
    fn plain_values_round_trip() {
        let v = Value::map(BTreeMap::from([
            ("t".to_string(), Value::text("é")),
            ("i".to_string(), Value::Int(-3)),
            ("f".to_string(), Value::Float(2.5)),
            ("b".to_string(), Value::Bool(true)),
            ("n".to_string(), Value::Null),
            ("l".to_string(), Value::list(vec![Value::Int(1), Value::list(vec![Value::text("x")])])),
        ]));
        assert_eq!(round_trip(v.clone()).to_json(), v.to_json());
    }

    #[test]
    fn tensors_round_trip_and_take_the_port_kind() {
        let t = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let back = round_trip(Value::tensor(ValueType::Latent, t.clone()));
        assert_eq!(back.value_type(), ValueType::Latent);
        assert_eq!(back.as_tensor().unwrap().to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
        let port = PortSpec::new("x", ValueType::Image, "");
        let out = output(to_dynamic(&Value::tensor(ValueType::Latent, t)).unwrap(), &port).unwrap();
        assert_eq!(out.value_type(), ValueType::Image);
    }

    #[test]
    fn outputs_are_checked_by_port_type() {
        let spec = |outputs: Vec<PortSpec>| OpSpec {
            name: "script.t".into(),
            version: 1,
            doc: String::new(),
            inputs: vec![],
            outputs,
            output: false,
            cost: crate::op::Cost::Heavy,
        };
        let one = spec(vec![PortSpec::new("x", ValueType::Float, "")]);
        assert_eq!(outputs(Dynamic::from_int(2), &one).unwrap().get("x").unwrap().as_f64(), Some(2.0));
        let mut m = Map::new();
        m.insert("x".into(), Dynamic::from_float(1.5));
        assert_eq!(outputs(Dynamic::from_map(m), &one).unwrap().get("x").unwrap().as_f64(), Some(1.5));
        let err = outputs(Dynamic::from("no".to_string()), &one).unwrap_err();
        assert_eq!(err, "output `x` should be float, got a string");

        let two = spec(vec![PortSpec::new("a", ValueType::Text, ""), PortSpec::new("b", ValueType::Int, "")]);
        let mut m = Map::new();
        m.insert("a".into(), Dynamic::from("x".to_string()));
        assert!(outputs(Dynamic::from_map(m.clone()), &two).unwrap_err().contains("no value for output `b`"));
        m.insert("b".into(), Dynamic::from_int(1));
        m.insert("c".into(), Dynamic::from_int(1));
        assert!(outputs(Dynamic::from_map(m), &two).unwrap_err().contains("`c`, which is not an output"));
        assert!(outputs(Dynamic::UNIT, &two).unwrap_err().contains("should return a map"));

        let any = spec(vec![PortSpec::new("v", ValueType::Text, "")]);
        assert!(outputs(Dynamic::UNIT, &any).unwrap_err().contains("is `()`"));
        let f = Dynamic::from(rhai::FnPtr::new("f").unwrap());
        let j = spec(vec![PortSpec::new("j", ValueType::Json, "")]);
        assert!(outputs(f, &j).unwrap_err().contains("cannot leave a script"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut v = Dynamic::from_array(vec![]);
        for _ in 0..1000 {
            v = Dynamic::from_array(vec![v]);
        }
        assert!(from_dynamic(v, 0).unwrap_err().contains("nest deeper"));
    }
}
