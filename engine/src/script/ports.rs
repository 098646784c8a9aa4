//! The port declarations of a script: what `fn ports()` returns.
//!
//! ```rhai
//! fn ports() {
//!     #{
//!         doc: "what the node does",
//!         inputs: #{
//!             subject: "text",                                   // a type name
//!             n: #{ type: "int", default: 3, doc: "how many" },  // or a map
//!             style: #{ type: "list", optional: true },
//!         },
//!         outputs: #{ prompt: "text" },
//!     }
//! }
//! ```
//!
//! Ports keep the order of the map literal in the source (rhai maps are
//! sorted, so the literal is read from the script's syntax tree); the first
//! output is the one `$node` refers to. Errors point at the offending entry
//! of that literal when there is one.

use std::str::FromStr;

use rhai::{Dynamic, Expr, Map, Position, AST};

use super::convert;
use crate::diagnostics::did_you_mean;
use crate::types::ValueType;
use crate::value::Value;

/// One declared port.
#[derive(Clone, Debug)]
pub(crate) struct PortDecl {
    pub(crate) name: String,
    pub(crate) ty: ValueType,
    pub(crate) default: Option<Value>,
    pub(crate) optional: bool,
    pub(crate) doc: String,
}

/// Everything `ports()` declares.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ports {
    pub(crate) doc: String,
    pub(crate) inputs: Vec<PortDecl>,
    pub(crate) outputs: Vec<PortDecl>,
}

/// A declaration error and where it is.
pub(crate) type Located = (Position, String);

/// Reads the value `ports()` returned; `ast` (unoptimised) locates errors and
/// gives the declaration order.
pub(crate) fn parse(value: Dynamic, ast: &AST) -> Result<Ports, Located> {
    let literal = Literal::find(ast);
    let at = |path: &[&str]| literal.position(path);
    let top = value
        .try_cast_result::<Map>()
        .map_err(|v| (at(&[]), format!("`ports()` should return a map #{{ inputs, outputs, doc }}, got {}", convert::type_name(&v))))?;
    let mut ports = Ports::default();
    for (key, v) in &top {
        match key.as_str() {
            "doc" => ports.doc = text(v).ok_or_else(|| (at(&["doc"]), "`doc` should be a string".to_string()))?,
            "inputs" | "outputs" => {}
            other => {
                let help = did_you_mean(other, ["inputs", "outputs", "doc"]).map(|h| format!("; {h}")).unwrap_or_default();
                return Err((at(&[other]), format!("unknown key `{other}` in the map of `ports()` (keys: inputs, outputs, doc){help}")));
            }
        }
    }
    let order = |section: &str| literal.keys(section);
    ports.inputs = section(&top, "inputs", order("inputs"), &at)?;
    ports.outputs = section(&top, "outputs", order("outputs"), &at)?;
    if ports.outputs.is_empty() {
        return Err((at(&["outputs"]), "`ports()` declares no outputs: a script node needs at least one".to_string()));
    }
    Ok(ports)
}

fn text(v: &Dynamic) -> Option<String> {
    v.clone().into_immutable_string().ok().map(|s| s.to_string())
}

fn section(top: &Map, name: &str, order: Option<Vec<String>>, at: &dyn Fn(&[&str]) -> Position) -> Result<Vec<PortDecl>, Located> {
    let Some(value) = top.get(name) else {
        return Ok(Vec::new());
    };
    let map = value
        .clone()
        .try_cast_result::<Map>()
        .map_err(|v| (at(&[name]), format!("`{name}` should be a map of port name to type, got {}", convert::type_name(&v))))?;
    let mut names: Vec<String> = map.keys().map(|k| k.to_string()).collect();
    if let Some(order) = order.filter(|o| o.len() == names.len() && o.iter().all(|n| map.contains_key(n.as_str()))) {
        names = order;
    }
    let kind = if name == "inputs" { "input" } else { "output" };
    names.iter().map(|port| declaration(kind, port, &map[port.as_str()], &|key| at(&[name, port, key]))).collect()
}

fn declaration(kind: &str, name: &str, value: &Dynamic, at: &dyn Fn(&str) -> Position) -> Result<PortDecl, Located> {
    let err = |key: &str, msg: String| (at(key), format!("{kind} `{name}`: {msg}"));
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(err("", "a port name is letters, digits and `_`, not starting with a digit".to_string()));
    }
    let mut decl = PortDecl { name: name.to_string(), ty: ValueType::Any, default: None, optional: false, doc: String::new() };
    let Ok(spec) = value.clone().try_cast_result::<Map>() else {
        let ty = text(value).ok_or_else(|| err("", format!("should be a type name or a map #{{ type, ... }}, got {}", convert::type_name(value))))?;
        decl.ty = type_named(&ty, kind).map_err(|m| err("", m))?;
        return Ok(decl);
    };
    let keys: &[&str] = if kind == "input" { &["type", "default", "optional", "doc"] } else { &["type", "doc"] };
    if let Some(bad) = spec.keys().find(|k| !keys.contains(&k.as_str())) {
        let help = did_you_mean(bad, keys.iter().copied()).map(|h| format!("; {h}")).unwrap_or_default();
        return Err(err(bad, format!("unknown key `{bad}` (keys: {}){help}", keys.join(", "))));
    }
    let ty = spec.get("type").ok_or_else(|| err("", "the map has no `type`".to_string()))?;
    let ty = text(ty).ok_or_else(|| err("type", "`type` should be a type name".to_string()))?;
    decl.ty = type_named(&ty, kind).map_err(|m| err("type", m))?;
    if let Some(doc) = spec.get("doc") {
        decl.doc = text(doc).ok_or_else(|| err("doc", "`doc` should be a string".to_string()))?;
    }
    if let Some(optional) = spec.get("optional") {
        decl.optional = optional.as_bool().map_err(|_| err("optional", "`optional` should be true or false".to_string()))?;
    }
    if let Some(default) = spec.get("default") {
        if decl.optional {
            return Err(err("default", "give either `default` or `optional: true`, not both".to_string()));
        }
        decl.default = Some(default_value(default, decl.ty).map_err(|m| err("default", m))?);
    }
    Ok(decl)
}

/// The type called `name`; scripts cannot take models or produce objects.
fn type_named(name: &str, kind: &str) -> Result<ValueType, String> {
    let ty = ValueType::from_str(name).map_err(|_| {
        let help = did_you_mean(name, ValueType::ALL.iter().map(|t| t.name())).map(|h| format!(" ({h})")).unwrap_or_default();
        format!("unknown type `{name}`{help}")
    })?;
    if ty == ValueType::Model {
        return Err("scripts cannot take models".to_string());
    }
    if kind == "output" && !(ty.is_plain() || ty.is_tensor_like() || ty == ValueType::Any) {
        return Err(format!(
            "scripts cannot produce `{ty}`: they see such objects in their plain form (lists and maps) \
             and cannot turn them back; declare the output `list`, `map` or `json`"
        ));
    }
    Ok(ty)
}

fn default_value(value: &Dynamic, ty: ValueType) -> Result<Value, String> {
    let v = convert::from_dynamic(value.clone(), 0)?;
    let v = match (ty, v) {
        (ValueType::Float, Value::Int(i)) => Value::Float(i as f64),
        (_, v) => v,
    };
    if ty.is_tensor_like() || !ty.accepts(v.value_type()) {
        return Err(format!("the default {} is not a {ty}", v.to_display_string()));
    }
    Ok(v)
}

/// The map literal of the declarations in the source.
struct Literal {
    pos: Position,
    entries: Vec<(String, Position, Expr)>,
}

impl Literal {
    /// The first map literal of `fn ports()` that has a key `inputs`,
    /// `outputs` or `doc`; without one, an empty literal at the start of the
    /// function's body.
    fn find(ast: &AST) -> Literal {
        let ports = ast.clone_functions_only_filtered(|_, _, _, name, params| name == "ports" && params == 0);
        let mut start = Position::NONE;
        let mut found = None;
        ports.walk(&mut |path| {
            let Some(node) = path.last() else {
                return true;
            };
            if start.is_none() {
                start = node.position();
            }
            if let rhai::ASTNode::Expr(e) = node {
                if let Some(l) = Literal::of(e).filter(|l| l.entries.iter().any(|(k, ..)| ["inputs", "outputs", "doc"].contains(&k.as_str()))) {
                    found = Some(l);
                    return false;
                }
            }
            true
        });
        found.unwrap_or(Literal { pos: start, entries: Vec::new() })
    }

    fn of(expr: &Expr) -> Option<Literal> {
        match expr {
            Expr::Map(x, pos) => Some(Literal {
                pos: *pos,
                entries: x.0.iter().map(|(k, v)| (k.name.to_string(), k.pos, v.clone())).collect(),
            }),
            _ => None,
        }
    }

    fn entry(&self, key: &str) -> Option<&(String, Position, Expr)> {
        self.entries.iter().find(|(k, ..)| k == key)
    }

    /// The keys of the map literal at `section`, in source order.
    fn keys(&self, section: &str) -> Option<Vec<String>> {
        let (_, _, value) = self.entry(section)?;
        Literal::of(value).map(|l| l.entries.into_iter().map(|(k, ..)| k).collect())
    }

    /// Where the entry at `path` is (keys into nested map literals; empty
    /// keys are skipped): its value when that is not a map literal, else
    /// its key; the closest enclosing entry when the path goes further than
    /// the literal.
    fn position(&self, path: &[&str]) -> Position {
        let path: Vec<&str> = path.iter().copied().filter(|k| !k.is_empty()).collect();
        let Some((first, rest)) = path.split_first() else {
            return self.pos;
        };
        let Some((_, key_pos, value)) = self.entry(first) else {
            return self.pos;
        };
        match Literal::of(value) {
            Some(inner) if rest.first().is_some_and(|k| inner.entry(k).is_some()) => inner.position(rest),
            Some(_) => *key_pos,
            None => value.position(),
        }
    }
}
