//! Type checking of an input expression against its port.

use crate::op::PortSpec;
use crate::types::ValueType;
use crate::value::Value;

use super::Expr;

/// Checks `expr` against `port`; `output_type(node, port)` gives the type of a
/// linked output (`None` when that node's op is unknown, already reported).
pub(super) fn check_port(
    port: &PortSpec,
    expr: &Expr,
    output_type: &dyn Fn(usize, &str) -> Option<ValueType>,
) -> Result<(), String> {
    let want = port.ty;
    if let Expr::Literal(v) = expr {
        if let Some(f) = non_finite(v) {
            return Err(format!("expects a finite number, got `{}` (NaN and infinities are not valid inputs)", show_float(f)));
        }
    }
    let (given, what) = match expr {
        Expr::Literal(v) => (literal_type(v), format!("the literal {}", describe_literal(v))),
        Expr::Model { name, .. } => (ValueType::Model, format!("model `{name}`")),
        Expr::Link { node, port: out } => match output_type(*node, out) {
            Some(t) => (t, format!("a link to output `{out}` ({t})")),
            None => return Ok(()),
        },
        Expr::Interp(_) => (ValueType::Text, "interpolated text".to_string()),
        Expr::List(_) => (ValueType::List, "a list".to_string()),
        Expr::Map(_) => (ValueType::Map, "a map".to_string()),
    };
    if want.accepts(given) && !(want.is_tensor_like() && matches!(expr, Expr::Literal(_))) {
        if let Expr::Literal(v) = expr {
            port.check_choice(v)?;
        }
        return Ok(());
    }
    let hint = match (want, expr) {
        (ValueType::Model, _) => " (name a model from `models:` with `$name`, or give a reference like `tiny:sd`)",
        (t, Expr::Literal(_)) if t.is_tensor_like() => " (tensors come from nodes such as `tensor.load`)",
        (ValueType::Int, Expr::Literal(Value::Float(f))) if f.fract() == 0.0 && f.abs() >= 2f64.powi(63) => {
            " (a whole number, but outside the range of a 64-bit int: -9223372036854775808 to 9223372036854775807)"
        }
        (ValueType::Int, Expr::Literal(Value::Float(_))) => " (write a whole number)",
        _ => "",
    };
    Err(format!("expects {want}, got {what}{hint}"))
}

fn literal_type(v: &Value) -> ValueType {
    v.value_type()
}

fn describe_literal(v: &Value) -> String {
    let mut text = v.to_display_string();
    if text.chars().count() > 40 {
        text = text.chars().take(37).collect::<String>() + "...";
    }
    match v {
        Value::Text(_) => format!("text {text:?}"),
        _ => format!("{} `{text}`", v.value_type()),
    }
}

/// The first NaN or infinity in a literal (lists and maps included).
fn non_finite(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) if !f.is_finite() => Some(*f),
        Value::List(items) => items.iter().find_map(non_finite),
        Value::Map(entries) => entries.values().find_map(non_finite),
        _ => None,
    }
}

/// A non-finite float as YAML writes it.
fn show_float(f: f64) -> &'static str {
    if f.is_nan() {
        ".nan"
    } else if f > 0.0 {
        ".inf"
    } else {
        "-.inf"
    }
}
