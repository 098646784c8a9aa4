//! Validation: binds the file's structure to ops, resolves references, checks
//! ports and types, and builds the DAG. Collects every error.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::diagnostics::{did_you_mean, Diagnostic, Diagnostics};
use crate::op::{OpRef, PortSpec};
use crate::registry::Registry;
use crate::source::document::{self, GraphDoc, NodeDecl};
use crate::source::refs::{parse_string, Piece, Reference, StringExpr};
use crate::source::yaml::{Node, NodeKind};
use crate::source::Location;
use crate::types::ValueType;
use crate::value::Value;

use self::defaults::GraphDefault;
use super::literal::plain_literal;
use super::typecheck::check_port;
use super::{cycles, DeviceChoice, Expr, Graph, GraphNode, InterpPart, Override};

mod defaults;

/// What a name in the shared namespace stands for.
#[derive(Clone, Copy)]
enum Symbol {
    Param,
    Model,
    Node(usize),
}

struct Builder<'a> {
    registry: &'a Registry,
    dir: &'a Path,
    doc: &'a GraphDoc,
    params: BTreeMap<String, Value>,
    models: BTreeMap<String, String>,
    symbols: HashMap<&'a str, Symbol>,
    ops: Vec<Option<OpRef>>,
    defaults: Vec<GraphDefault>,
}

pub(super) fn build(
    file: &str,
    dir: &Path,
    source: &str,
    source_hash: String,
    overrides: &[Override],
    registry: &Registry,
) -> Result<Graph, Box<Diagnostics>> {
    let mut diags = Diagnostics::new(file, source);
    let doc = document::read(source, &mut diags);
    let mut b = Builder {
        registry,
        dir,
        doc: &doc,
        params: BTreeMap::new(),
        models: BTreeMap::new(),
        symbols: HashMap::new(),
        ops: Vec::new(),
        defaults: Vec::new(),
    };
    b.declare_names(&mut diags);
    b.read_params(overrides, &mut diags);
    for (name, reference) in &doc.models {
        b.models.insert(name.name.clone(), reference.name.clone());
    }
    b.bind_ops(&mut diags);
    b.defaults = b.read_defaults(&mut diags);
    let mut nodes = Vec::with_capacity(doc.nodes.len());
    let mut deps = Vec::with_capacity(doc.nodes.len());
    for (i, decl) in doc.nodes.iter().enumerate() {
        let (node, node_deps) = b.build_node(i, decl, &mut diags);
        nodes.extend(node);
        deps.push(node_deps);
    }
    // Links are checked for cycles even when nodes have other errors, so
    // that every error is reported at once.
    let mut dag = DiGraph::with_capacity(deps.len(), deps.len());
    for i in 0..deps.len() {
        dag.add_node(i);
    }
    for (i, node_deps) in deps.iter().enumerate() {
        for &d in node_deps {
            dag.add_edge(NodeIndex::new(d), NodeIndex::new(i), ());
        }
    }
    let order = cycles::topological_order(&dag).map_err(|cycle| {
        let path: Vec<&str> = cycle.iter().chain(cycle.first()).map(|&i| doc.nodes[i].id.name.as_str()).collect();
        let first = &doc.nodes[cycle[0]].id;
        diags.push(
            Diagnostic::at(first.loc, first.len, format!("cycle: {}", path.join(" -> ")))
                .with_help(Some("a graph must not feed a node's output back into its own inputs".into())),
        );
    });
    let order = match order {
        Ok(order) if diags.is_empty() => order,
        _ => {
            diags.sort();
            return Err(Box::new(diags));
        }
    };
    let name = doc.name.clone().unwrap_or_else(|| {
        Path::new(file).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    });
    Ok(Graph {
        file: file.to_string(),
        dir: dir.to_path_buf(),
        source_hash,
        name,
        description: doc.description.clone().unwrap_or_default(),
        params: b.params,
        models: b.models,
        nodes,
        dag,
        order,
    })
}

impl<'a> Builder<'a> {
    fn declare_names(&mut self, diags: &mut Diagnostics) {
        let mut declared: HashMap<&str, (&'static str, Location)> = HashMap::new();
        let params = self.doc.params.iter().map(|(n, _)| (n, "param", Symbol::Param));
        let models = self.doc.models.iter().map(|(n, _)| (n, "model", Symbol::Model));
        let nodes = self.doc.nodes.iter().enumerate().map(|(i, d)| (&d.id, "node", Symbol::Node(i)));
        for (named, kind, symbol) in params.chain(models).chain(nodes) {
            if let Some((other_kind, other_loc)) = declared.get(named.name.as_str()) {
                diags.push(Diagnostic::at(
                    named.loc,
                    named.len,
                    format!(
                        "the name `{}` is used twice: {kind} here and {other_kind} at line {}; params, models and nodes share one namespace",
                        named.name, other_loc.line
                    ),
                ));
                continue;
            }
            declared.insert(&named.name, (kind, named.loc));
            self.symbols.insert(&named.name, symbol);
        }
    }

    fn read_params(&mut self, overrides: &[Override], diags: &mut Diagnostics) {
        for (name, node) in &self.doc.params {
            match plain_literal(node) {
                Ok(v) => {
                    self.params.insert(name.name.clone(), v);
                }
                Err(e) => diags.push(Diagnostic::at(node.loc, node.len, format!("param `{}`: {e}", name.name))),
            }
        }
        for o in overrides {
            if self.params.contains_key(&o.key) {
                self.params.insert(o.key.clone(), o.value.clone());
            } else {
                let names = self.params.keys().map(String::as_str);
                let help = did_you_mean(&o.key, names).or_else(|| {
                    Some(if self.params.is_empty() {
                        "this graph declares no params".to_string()
                    } else {
                        format!("params: {}", self.params.keys().cloned().collect::<Vec<_>>().join(", "))
                    })
                });
                diags.push(Diagnostic::general(format!("--set {}: the graph has no param `{}`", o.key, o.key)).with_help(help));
            }
        }
    }

    fn bind_ops(&mut self, diags: &mut Diagnostics) {
        for decl in &self.doc.nodes {
            let op = match self.registry.resolve(&decl.op.name, self.dir) {
                Ok(Some(op)) => Some(op),
                Ok(None) => {
                    let names = self.registry.names_for(self.dir);
                    diags.push(
                        Diagnostic::at(decl.op.loc, decl.op.len, format!("unknown op `{}`", decl.op.name)).with_help(
                            did_you_mean(&decl.op.name, names.iter().map(String::as_str))
                                .or_else(|| Some("`flow ops` lists the available ops".to_string())),
                        ),
                    );
                    None
                }
                Err(e) => {
                    diags.push(Diagnostic::at(decl.op.loc, decl.op.len, format!("op `{}`: {e}", decl.op.name)));
                    None
                }
            };
            self.ops.push(op);
        }
    }

    /// The node, or `None` if it has errors (reported to `diags`), and the
    /// nodes its links name (also when it has errors, for the cycle check).
    fn build_node(&self, index: usize, decl: &NodeDecl, diags: &mut Diagnostics) -> (Option<GraphNode>, Vec<usize>) {
        let op = self.ops[index].clone();
        let mut inputs = BTreeMap::new();
        let mut ok = true;
        let given: Vec<&str> = decl.inputs.iter().map(|(p, _)| p.name.as_str()).collect();
        for (port_name, value) in &decl.inputs {
            let port = op.as_ref().and_then(|op| op.spec().input(&port_name.name));
            if let Some(op) = &op {
                if port.is_none() {
                    let spec = op.spec();
                    let names = spec.inputs.iter().map(|p| p.name);
                    diags.push(
                        Diagnostic::at(port_name.loc, port_name.len, format!("op `{}` has no input `{}`", spec.name, port_name.name))
                            .with_help(did_you_mean(&port_name.name, names).or_else(|| {
                                Some(format!("inputs: {}", spec.inputs.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")))
                            })),
                    );
                    ok = false;
                }
            }
            match self.expr(value, port, diags) {
                Some(Expr::Literal(Value::Null)) => {}
                Some(expr) => {
                    if let Some(port) = port {
                        ok &= self.check(decl, port, &expr, value, diags);
                    }
                    inputs.insert(port_name.name.clone(), expr);
                }
                None => ok = false,
            }
        }
        let mut given = given;
        if let Some(op) = &op {
            ok &= self.apply_defaults(op, &mut given, &mut inputs);
        }
        let mut deps = Vec::new();
        for e in inputs.values() {
            e.for_each_link(&mut |n, _| deps.push(n));
        }
        deps.sort_unstable();
        deps.dedup();
        let Some(op) = op else { return (None, deps) };
        for port in op.spec().inputs.iter().filter(|p| p.is_required()) {
            if !given.contains(&port.name) {
                diags.push(Diagnostic::at(
                    decl.id.loc,
                    decl.id.len,
                    format!("node `{}` is missing required input `{}` ({}) of op `{}`", decl.id.name, port.name, port.ty, op.spec().name),
                ));
                ok = false;
            }
        }
        let device = match &decl.device {
            None => DeviceChoice::Auto,
            Some(d) => match DeviceChoice::parse(&d.name) {
                Some(dev) => dev,
                None => {
                    diags.push(
                        Diagnostic::at(d.loc, d.len, format!("unknown device `{}`", d.name))
                            .with_help(Some("use `cpu`, `cuda:N` or `auto`".into())),
                    );
                    ok = false;
                    DeviceChoice::Auto
                }
            },
        };
        if !ok {
            return (None, deps);
        }
        let template_params = self.template_params(&op, &inputs);
        let node = GraphNode {
            id: decl.id.name.clone(),
            op,
            inputs,
            device,
            cache: decl.cache.unwrap_or(true),
            deps: deps.clone(),
            template_params,
            loc: decl.id.loc,
        };
        (Some(node), deps)
    }

    /// Fills the inputs of `op` that the node does not set from `defaults:`;
    /// false if a default that applies does not fit the op (reported once
    /// for the op by [`Builder::read_defaults`]).
    fn apply_defaults<'g>(&'g self, op: &OpRef, given: &mut Vec<&'g str>, inputs: &mut BTreeMap<String, Expr>) -> bool {
        let mut ok = true;
        for default in &self.defaults {
            if given.contains(&default.port.as_str()) {
                continue;
            }
            match default.by_op.get(&op.spec().name) {
                Some(Some(expr)) => {
                    inputs.insert(default.port.clone(), expr.clone());
                    given.push(&default.port);
                }
                Some(None) => {
                    given.push(&default.port);
                    ok = false;
                }
                None => {}
            }
        }
        ok
    }

    /// Params named as `${name}` in the node's verbatim text inputs.
    fn template_params(&self, op: &OpRef, inputs: &BTreeMap<String, Expr>) -> BTreeMap<String, Value> {
        let mut used = BTreeMap::new();
        for port in op.spec().inputs.iter().filter(|p| !p.interpolate) {
            if let Some(Expr::Literal(Value::Text(text))) = inputs.get(port.name) {
                for (_, rest) in text.match_indices("${").map(|(i, _)| ((), &text[i + 2..])) {
                    let Some(end) = rest.find('}') else { continue };
                    let name = rest[..end].trim();
                    if let Some(v) = self.params.get(name) {
                        used.insert(name.to_string(), v.clone());
                    }
                }
            }
        }
        used
    }

    fn check(&self, decl: &NodeDecl, port: &PortSpec, expr: &Expr, value: &Node, diags: &mut Diagnostics) -> bool {
        let op_name = &decl.op.name;
        match check_port(port, expr, &|n, p| self.output_type(n, p)) {
            Ok(()) => true,
            Err(msg) => {
                diags.push(Diagnostic::at(value.loc, value.len, format!("input `{}` of `{op_name}`: {msg}", port.name)));
                false
            }
        }
    }

    fn output_type(&self, node: usize, port: &str) -> Option<ValueType> {
        let op = self.ops.get(node)?.as_ref()?;
        op.spec().output_port(port).map(|p| p.ty)
    }

    /// Converts an input value tree into an expression; `None` after reporting errors.
    fn expr(&self, value: &Node, port: Option<&PortSpec>, diags: &mut Diagnostics) -> Option<Expr> {
        match &value.kind {
            NodeKind::Scalar { text, plain } => {
                if *plain && !text.starts_with('$') && !text.contains("${") && !text.contains("$$") {
                    let literal = crate::source::scalar::plain_value(text);
                    return Some(self.literal_or_model(literal, port));
                }
                let quote = usize::from(!plain);
                let whole_ref = text.starts_with('$') && !text.starts_with("$$") && !text.starts_with("${");
                if port.is_some_and(|p| !p.interpolate) && !whole_ref {
                    return Some(Expr::Literal(Value::text(text)));
                }
                match parse_string(text) {
                    Ok(StringExpr::Text(t)) => Some(self.literal_or_model(Value::text(t), port)),
                    Ok(StringExpr::Ref(r)) => self.reference(&r, value, quote, diags),
                    Ok(StringExpr::Interp(pieces)) => self.interpolation(&pieces, value, quote, diags),
                    Err(e) => {
                        diags.push(Diagnostic::at(offset_loc(value, e.offset + quote), e.len, e.message));
                        None
                    }
                }
            }
            NodeKind::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for item in items {
                    match self.expr(item, None, diags) {
                        Some(e) => out.push(e),
                        None => ok = false,
                    }
                }
                ok.then(|| simplify_list(out))
            }
            NodeKind::Map(entries) => {
                let mut out = BTreeMap::new();
                let mut ok = true;
                for (k, v) in entries {
                    let Some(key) = k.as_scalar() else {
                        diags.push(Diagnostic::at(k.loc, k.len, format!("map keys must be text, not {}", k.describe())));
                        ok = false;
                        continue;
                    };
                    match self.expr(v, None, diags) {
                        Some(e) => {
                            out.insert(key.to_string(), e);
                        }
                        None => ok = false,
                    }
                }
                ok.then(|| simplify_map(out))
            }
        }
    }

    /// A text literal on a model port is an inline model reference.
    fn literal_or_model(&self, literal: Value, port: Option<&PortSpec>) -> Expr {
        match (&literal, port) {
            (Value::Text(t), Some(p)) if p.ty == ValueType::Model => {
                Expr::Model { name: t.to_string(), reference: t.to_string() }
            }
            _ => Expr::Literal(literal),
        }
    }

    fn reference(&self, r: &Reference, value: &Node, quote: usize, diags: &mut Diagnostics) -> Option<Expr> {
        let loc = offset_loc(value, r.offset + quote);
        match self.symbols.get(r.name.as_str()) {
            None => {
                diags.push(self.unknown_name(r, loc));
                None
            }
            Some(Symbol::Param) | Some(Symbol::Model) if r.port.is_some() => {
                diags.push(Diagnostic::at(loc, r.len, format!("`{}` is a param or model and has no ports", r.name)));
                None
            }
            Some(Symbol::Param) => Some(Expr::Literal(self.params[&r.name].clone())),
            Some(Symbol::Model) => Some(Expr::Model { name: r.name.clone(), reference: self.models[&r.name].clone() }),
            Some(&Symbol::Node(n)) => self.link(n, r, loc, diags).map(|port| Expr::Link { node: n, port }),
        }
    }

    /// The output port a reference to node `n` names, checked.
    fn link(&self, n: usize, r: &Reference, loc: Location, diags: &mut Diagnostics) -> Option<String> {
        let Some(op) = &self.ops[n] else {
            // The node's op is unknown and already reported.
            return Some(r.port.clone().unwrap_or_default());
        };
        let spec = op.spec();
        match &r.port {
            None => match spec.outputs.first() {
                Some(p) => Some(p.name.to_string()),
                None => {
                    diags.push(Diagnostic::at(loc, r.len, format!("node `{}` ({}) has no outputs", r.name, spec.name)));
                    None
                }
            },
            Some(port) if spec.output_port(port).is_some() => Some(port.clone()),
            Some(port) => {
                let names = spec.outputs.iter().map(|p| p.name);
                diags.push(
                    Diagnostic::at(loc, r.len, format!("node `{}` ({}) has no output `{port}`", r.name, spec.name)).with_help(
                        did_you_mean(port, names).or_else(|| {
                            Some(format!("outputs: {}", spec.outputs.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")))
                        }),
                    ),
                );
                None
            }
        }
    }

    fn unknown_name(&self, r: &Reference, loc: Location) -> Diagnostic {
        let names = self.symbols.keys().copied();
        Diagnostic::at(loc, r.len, format!("`${}` refers to nothing: no param, model or node is called `{}`", r.name, r.name))
            .with_help(did_you_mean(&r.name, names))
    }

    fn interpolation(&self, pieces: &[Piece], value: &Node, quote: usize, diags: &mut Diagnostics) -> Option<Expr> {
        let mut parts: Vec<InterpPart> = Vec::new();
        let mut ok = true;
        let push_text = |parts: &mut Vec<InterpPart>, t: String| match parts.last_mut() {
            Some(InterpPart::Text(prev)) => prev.push_str(&t),
            _ => parts.push(InterpPart::Text(t)),
        };
        for piece in pieces {
            match piece {
                Piece::Text(t) => push_text(&mut parts, t.clone()),
                Piece::Ref(r) => {
                    let loc = offset_loc(value, r.offset + quote);
                    match self.symbols.get(r.name.as_str()) {
                        None => {
                            diags.push(self.unknown_name(r, loc));
                            ok = false;
                        }
                        Some(Symbol::Param) if r.port.is_none() => {
                            push_text(&mut parts, self.params[&r.name].to_display_string())
                        }
                        Some(Symbol::Param) | Some(Symbol::Model) => {
                            diags.push(Diagnostic::at(
                                loc,
                                r.len,
                                format!("`${{{}}}` cannot be interpolated: only params and node text or number outputs can", r.name),
                            ));
                            ok = false;
                        }
                        Some(&Symbol::Node(n)) => match self.link(n, r, loc, diags) {
                            Some(port) => {
                                let ty = self.output_type(n, &port);
                                if let Some(ty) = ty.filter(|t| !interpolatable(*t)) {
                                    diags.push(Diagnostic::at(
                                        loc,
                                        r.len,
                                        format!("`{}` is {ty}; only text, numbers and bools can be interpolated into text", r.name),
                                    ));
                                    ok = false;
                                } else {
                                    parts.push(InterpPart::Link { node: n, port });
                                }
                            }
                            None => ok = false,
                        },
                    }
                }
            }
        }
        if !ok {
            return None;
        }
        match parts.as_slice() {
            [] => Some(Expr::Literal(Value::text(""))),
            [InterpPart::Text(t)] => Some(Expr::Literal(Value::text(t))),
            _ => Some(Expr::Interp(parts)),
        }
    }
}

fn interpolatable(t: ValueType) -> bool {
    matches!(t, ValueType::Text | ValueType::Int | ValueType::Float | ValueType::Bool | ValueType::Json | ValueType::Any)
}

/// A list of literals is one literal list.
fn simplify_list(items: Vec<Expr>) -> Expr {
    let literals: Option<Vec<Value>> = items.iter().map(literal_value).collect();
    match literals {
        Some(values) => Expr::Literal(Value::list(values)),
        None => Expr::List(items),
    }
}

/// A map of literals is one literal map.
fn simplify_map(entries: BTreeMap<String, Expr>) -> Expr {
    let literals: Option<BTreeMap<String, Value>> =
        entries.iter().map(|(k, e)| literal_value(e).map(|v| (k.clone(), v))).collect();
    match literals {
        Some(values) => Expr::Literal(Value::map(values)),
        None => Expr::Map(entries),
    }
}

fn literal_value(e: &Expr) -> Option<Value> {
    match e {
        Expr::Literal(v) => Some(v.clone()),
        _ => None,
    }
}

fn offset_loc(value: &Node, offset: usize) -> Location {
    Location::new(value.loc.line, value.loc.col + offset)
}
