//! Graph-wide input defaults: the top-level `defaults:` map, `port -> value`,
//! applied to every node whose op has an input of that name and that does
//! not set it, exactly as if the node had written it (same checks, same
//! cache key).
//!
//! A default is a literal, a `$param`, a `$model` or text interpolating
//! params; it never links a node's output (that would add edges no node
//! shows). Only input ports take defaults: a node's `device:` and `cache:`
//! are per node (`--device` sets the run's default device). A default
//! naming an input that no op of the graph has is an error with a
//! did-you-mean, as an unknown key is.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostics::{did_you_mean, Diagnostic, Diagnostics};
use crate::graph::typecheck::check_port;
use crate::graph::Expr;
use crate::op::OpRef;
use crate::source::Location;
use crate::value::Value;

use super::Builder;

/// One entry of `defaults:` after checking.
pub(super) struct GraphDefault {
    /// The input port it fills.
    pub port: String,
    /// Its value per op name, made for that op's port; `None` where the
    /// value does not fit that op (reported once). Ops for which the value
    /// is `null` (the op's own default) are absent.
    pub by_op: BTreeMap<String, Option<Expr>>,
}

impl Builder<'_> {
    /// Checks `defaults:` against the ops of the graph; every mistake goes to
    /// `diags`. Defaults naming no op's input are left out.
    pub(super) fn read_defaults(&self, diags: &mut Diagnostics) -> Vec<GraphDefault> {
        let mut ops: Vec<&OpRef> = self.ops.iter().flatten().collect();
        ops.sort_by(|a, b| a.spec().name.cmp(&b.spec().name));
        ops.dedup_by(|a, b| a.spec().name == b.spec().name);
        let all_bound = self.ops.iter().all(Option::is_some);
        let mut out = Vec::new();
        for (port, value) in &self.doc.defaults {
            if !ops.iter().any(|op| op.spec().input(&port.name).is_some()) {
                // With an unknown op (already reported) the port may be its.
                if all_bound {
                    diags.push(unknown_default(&port.name, port.loc, port.len, &ops));
                }
                continue;
            }
            let mut by_op = BTreeMap::new();
            let mut linked = None;
            for op in &ops {
                let spec = op.spec();
                let Some(spec_port) = spec.input(&port.name) else { continue };
                // The value as written on a node of this op (a text on a model
                // port is a model reference, verbatim ports keep `${...}`).
                // Errors repeated for several ops are reported once (the
                // diagnostics drop duplicates).
                let fitted = match self.expr(value, Some(spec_port), diags) {
                    Some(Expr::Literal(Value::Null)) => continue,
                    None => None,
                    Some(expr) => {
                        expr.for_each_link(&mut |n, _| linked = linked.or(Some(n)));
                        match check_port(spec_port, &expr, &|_, _| None) {
                            _ if linked.is_some() => None,
                            Ok(()) => Some(expr),
                            Err(msg) => {
                                diags.push(Diagnostic::at(
                                    value.loc,
                                    value.len,
                                    format!(
                                        "default `{}` for input `{}` of `{}`: {msg}",
                                        port.name, port.name, spec.name
                                    ),
                                ));
                                None
                            }
                        }
                    }
                };
                by_op.insert(spec.name.clone(), fitted);
            }
            if let Some(n) = linked {
                diags.push(
                    Diagnostic::at(
                        value.loc,
                        value.len,
                        format!(
                            "default `{}` links node `{}`: defaults cannot link node outputs",
                            port.name, self.doc.nodes[n].id.name
                        ),
                    )
                    .with_help(Some("write the link on the nodes that need it, or use a param or a model".into())),
                );
            }
            out.push(GraphDefault { port: port.name.clone(), by_op });
        }
        out
    }
}

/// A default naming an input no op of the graph has.
fn unknown_default(name: &str, loc: Location, len: usize, ops: &[&OpRef]) -> Diagnostic {
    let inputs: BTreeSet<&str> = ops.iter().flat_map(|op| op.spec().inputs.iter().map(|p| p.name)).collect();
    let help = did_you_mean(name, inputs.iter().copied()).or_else(|| {
        Some(if matches!(name, "device" | "cache") {
            format!("defaults fill op inputs; `{name}` is set per node (and `--device` sets the run's default device)")
        } else {
            format!("inputs of this graph's ops: {}", inputs.into_iter().collect::<Vec<_>>().join(", "))
        })
    });
    Diagnostic::at(loc, len, format!("default `{name}`: no op in this graph has an input `{name}`")).with_help(help)
}
