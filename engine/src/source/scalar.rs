//! Typing of plain YAML scalars (the YAML 1.2 core schema).

use crate::value::Value;

/// The value of a plain (unquoted) scalar: null, bool, int, float or text.
pub fn plain_value(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = parse_int(text) {
        return Value::Int(i);
    }
    if looks_like_float(text) {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::text(text)
}

fn parse_int(text: &str) -> Option<i64> {
    let (neg, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = if let Some(hex) = body.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = body.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        body.parse::<i64>().ok()?
    } else {
        return None;
    };
    Some(if neg { -magnitude } else { magnitude })
}

fn looks_like_float(text: &str) -> bool {
    let body = text.trim_start_matches(['-', '+']);
    body.bytes().any(|b| b.is_ascii_digit())
        && body.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_schema() {
        assert!(matches!(plain_value("30"), Value::Int(30)));
        assert!(matches!(plain_value("-0x10"), Value::Int(-16)));
        assert!(matches!(plain_value("7.5"), Value::Float(f) if f == 7.5));
        assert!(matches!(plain_value("1e3"), Value::Float(f) if f == 1000.0));
        assert!(matches!(plain_value("true"), Value::Bool(true)));
        assert!(matches!(plain_value("~"), Value::Null));
        assert!(matches!(plain_value("1.2.3"), Value::Text(_)));
        assert!(matches!(plain_value("euler"), Value::Text(_)));
        assert!(matches!(plain_value("99999999999999999999"), Value::Float(_)));
    }
}
