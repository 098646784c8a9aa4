//! YAML trees as literal values (for params and `--set`).

use std::collections::BTreeMap;

use crate::source::scalar::plain_value;
use crate::source::yaml::{Node, NodeKind};
use crate::value::Value;

/// A YAML tree as plain data. Map keys must be scalars. The tree depth is
/// bounded by the YAML reader, so recursion here is bounded too.
pub fn plain_literal(node: &Node) -> Result<Value, String> {
    Ok(match &node.kind {
        NodeKind::Scalar { text, plain: true } => plain_value(text),
        NodeKind::Scalar { text, plain: false } => Value::text(text),
        NodeKind::Seq(items) => Value::list(items.iter().map(plain_literal).collect::<Result<_, _>>()?),
        NodeKind::Map(entries) => {
            let mut map = BTreeMap::new();
            for (k, v) in entries {
                let key = k.as_scalar().ok_or_else(|| format!("map keys must be text, not {}", k.describe()))?;
                map.insert(key.to_string(), plain_literal(v)?);
            }
            Value::map(map)
        }
    })
}
