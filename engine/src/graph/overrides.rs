//! `--set K=V` parameter overrides.

use crate::source::{scalar, yaml};
use crate::value::Value;

use super::literal::plain_literal;

/// One `--set K=V`, with V typed like a YAML value (`30` is an int, `7.5` a
/// float, `"7"` text, `[1, 2]` a list).
#[derive(Clone, Debug)]
pub struct Override {
    /// Param name.
    pub key: String,
    /// The typed value.
    pub value: Value,
}

impl Override {
    /// Parses `K=V`.
    pub fn parse(arg: &str) -> Result<Override, String> {
        let Some((key, raw)) = arg.split_once('=') else {
            return Err(format!("bad --set `{arg}`: expected NAME=VALUE"));
        };
        let key = key.trim();
        if !crate::source::refs::is_identifier(key) {
            return Err(format!("bad --set `{arg}`: `{key}` is not a param name"));
        }
        let trimmed = raw.trim();
        let structured = trimmed.starts_with(['[', '{', '"', '\'']);
        let value = if structured {
            match yaml::parse(trimmed) {
                Ok(Some(node)) => plain_literal(&node).map_err(|e| format!("bad --set `{arg}`: {e}"))?,
                Ok(None) => Value::Null,
                Err(e) => return Err(format!("bad --set `{arg}`: {}", e.message)),
            }
        } else {
            scalar::plain_value(trimmed)
        };
        Ok(Override { key: key.to_string(), value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed() {
        assert!(matches!(Override::parse("steps=30").unwrap().value, Value::Int(30)));
        assert!(matches!(Override::parse("cfg=7.5").unwrap().value, Value::Float(_)));
        assert!(matches!(Override::parse("seed=\"7\"").unwrap().value, Value::Text(ref s) if &**s == "7"));
        assert!(matches!(Override::parse("prompt=a cat: on a mat").unwrap().value, Value::Text(_)));
        assert!(Override::parse("noequals").is_err());
        assert!(Override::parse("bad key=1").is_err());
    }
}
