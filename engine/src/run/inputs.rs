//! Turning a node's input expressions into values once its upstream nodes are done.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};

use crate::graph::{Expr, GraphNode, InterpPart};
use crate::op::{Inputs, Outputs};
use crate::value::Value;

/// The node's inputs with defaults filled in. `output(n)` gives the outputs of
/// upstream node `n`; `model(name)` the resolved model called `name`.
pub fn materialize(
    node: &GraphNode,
    output: &dyn Fn(usize) -> Option<Outputs>,
    model: &dyn Fn(&str) -> Option<Value>,
) -> Result<Inputs> {
    let mut values = BTreeMap::new();
    for port in &node.op.spec().inputs {
        let value = match node.inputs.get(port.name) {
            Some(expr) => eval(expr, output, model)?,
            None => match &port.default {
                Some(d) => d.clone(),
                None => continue,
            },
        };
        port.check_choice(&value).map_err(|msg| anyhow!("input `{}`: {msg}", port.name))?;
        values.insert(port.name.to_string(), value);
    }
    Ok(Inputs::new(values))
}

/// Only the literal inputs (and defaults, and resolved models): what an op may
/// look at to fingerprint itself while planning.
pub fn literal_inputs(node: &GraphNode, model: &dyn Fn(&str) -> Option<Value>) -> Inputs {
    let none = |_: usize| None;
    let mut values = BTreeMap::new();
    for port in &node.op.spec().inputs {
        let value = match node.inputs.get(port.name) {
            Some(expr) => match eval(expr, &none, model) {
                Ok(v) => v,
                Err(_) => continue,
            },
            None => match &port.default {
                Some(d) => d.clone(),
                None => continue,
            },
        };
        values.insert(port.name.to_string(), value);
    }
    Inputs::new(values)
}

fn eval(expr: &Expr, output: &dyn Fn(usize) -> Option<Outputs>, model: &dyn Fn(&str) -> Option<Value>) -> Result<Value> {
    let link = |node: usize, port: &str| -> Result<Value> {
        output(node)
            .and_then(|o| o.get(port).cloned())
            .ok_or_else(|| anyhow!("the value of an upstream output `{port}` is not available"))
    };
    Ok(match expr {
        Expr::Literal(v) => v.clone(),
        Expr::Model { name, reference } => {
            model(name).ok_or_else(|| anyhow!("model `{reference}` is not resolved"))?
        }
        Expr::Link { node, port } => link(*node, port)?,
        Expr::Interp(parts) => {
            let mut text = String::new();
            for p in parts {
                match p {
                    InterpPart::Text(t) => text.push_str(t),
                    InterpPart::Link { node, port } => text.push_str(&link(*node, port)?.to_display_string()),
                }
            }
            Value::text(text)
        }
        Expr::List(items) => {
            Value::list(items.iter().map(|e| eval(e, output, model)).collect::<Result<_>>()?)
        }
        Expr::Map(entries) => Value::map(
            entries.iter().map(|(k, e)| Ok((k.clone(), eval(e, output, model)?))).collect::<Result<_>>()?,
        ),
    })
}
