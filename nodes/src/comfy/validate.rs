//! Validation of an API-format workflow against the class table, every error
//! at once, in ComfyUI's kinds: `missing_node_type`, `required_input_missing`,
//! `bad_linked_input`, `return_type_mismatch`, `invalid_input_type`,
//! `value_smaller_than_min`, `value_bigger_than_max`, `value_not_in_list`,
//! `dependency_cycle`; prompt-level `invalid_prompt` (bad JSON, with
//! line:col) and `prompt_no_outputs`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::classes::{class, ClassSpec, InputKind, CLASSES, NOT_YET};
use super::errors::{id_order, ErrorItem, NodeErrors, WorkflowErrors};
use super::names::unsupported_upscale_method;
use crate::sd::kdiffusion::unsupported_reason;

/// A checked input value.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Output `index` of node `from`.
    Link {
        /// The source node id.
        from: String,
        /// The output index.
        index: usize,
    },
    /// An INT widget.
    Int(i128),
    /// A FLOAT widget.
    Float(f64),
    /// A STRING, combo or file widget.
    Text(String),
}

/// A checked node.
#[derive(Clone, Debug)]
pub struct Node {
    /// The workflow's node id.
    pub id: String,
    /// Its class.
    pub class: &'static ClassSpec,
    /// `_meta.title`, when present and not empty.
    pub title: Option<String>,
    /// Inputs by name (absent optional inputs are left out).
    pub inputs: BTreeMap<&'static str, Input>,
}

impl Node {
    /// The link of input `name`, if it is one.
    pub fn link(&self, name: &str) -> Option<(&str, usize)> {
        match self.inputs.get(name) {
            Some(Input::Link { from, index }) => Some((from.as_str(), *index)),
            _ => None,
        }
    }
}

/// A workflow that passed validation.
#[derive(Clone, Debug)]
pub struct Prompt {
    /// Nodes by id.
    pub nodes: BTreeMap<String, Node>,
    /// The prompt object as compact JSON (what ComfyUI stores in a PNG's `prompt` chunk).
    pub json: String,
}

impl Prompt {
    /// Node ids in numeric order.
    pub fn ids(&self) -> Vec<&String> {
        super::errors::sorted_ids(&self.nodes)
    }
}

/// Collects node errors.
#[derive(Default)]
struct Report {
    nodes: BTreeMap<String, NodeErrors>,
}

impl Report {
    fn push(&mut self, id: &str, class_type: &str, error: ErrorItem) {
        self.nodes
            .entry(id.to_string())
            .or_insert_with(|| NodeErrors {
                errors: Vec::new(),
                dependent_outputs: Vec::new(),
                class_type: class_type.into(),
            })
            .errors
            .push(error);
    }
}

/// Parses and validates workflow text; `source` names it in errors.
pub fn check(text: &str, source: &str) -> Result<Prompt, WorkflowErrors> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let error = ErrorItem::new(
            "invalid_prompt",
            "Invalid JSON",
            format!("{source}:{}:{}: {}", e.line(), e.column(), strip_position(&e.to_string())),
        )
        .with("line", e.line())
        .with("column", e.column());
        WorkflowErrors::prompt(source, error)
    })?;
    let prompt = unwrap_prompt(value).map_err(|details| {
        WorkflowErrors::prompt(source, ErrorItem::new("invalid_prompt", "Cannot execute the prompt", details))
    })?;
    let json = serde_json::to_string(&prompt).unwrap_or_default();
    let mut report = Report::default();
    let mut nodes = BTreeMap::new();
    let mut raw_nodes: BTreeMap<String, (String, Map<String, Value>, Option<String>)> = BTreeMap::new();
    for (id, v) in prompt {
        match node_shape(&v) {
            Ok(shape) => {
                raw_nodes.insert(id, shape);
            }
            Err(e) => report.push(&id, v.get("class_type").and_then(Value::as_str).unwrap_or(""), e),
        }
    }
    for (id, (class_type, inputs, title)) in &raw_nodes {
        let Some(spec) = class(class_type) else {
            report.push(id, class_type, missing_class(class_type));
            continue;
        };
        let mut checked = BTreeMap::new();
        for input in spec.inputs {
            match inputs.get(input.name) {
                None if input.required => report.push(
                    id,
                    class_type,
                    ErrorItem::new("required_input_missing", "Required input is missing", input.name)
                        .with("input_name", input.name),
                ),
                None => {}
                Some(v) => match check_input(input.name, &input.kind, v, &raw_nodes) {
                    Ok(value) => {
                        checked.insert(input.name, value);
                    }
                    Err(e) => report.push(id, class_type, e),
                },
            }
        }
        nodes.insert(id.clone(), Node { id: id.clone(), class: spec, title: title.clone(), inputs: checked });
    }
    for cycle in cycles(&raw_nodes) {
        let path = cycle.iter().chain(cycle.first()).map(String::as_str).collect::<Vec<_>>().join(" -> ");
        for id in &cycle {
            let class_type = &raw_nodes[id].0;
            report.push(
                id,
                class_type,
                ErrorItem::new(
                    "dependency_cycle",
                    "Dependency cycle detected",
                    format!("node {id} is in the cycle {path}"),
                )
                .with("cycle", cycle.clone()),
            );
        }
    }
    let outputs: Vec<&String> =
        raw_nodes.iter().filter(|(_, (c, _, _))| class(c).is_some_and(|s| s.output_node)).map(|(id, _)| id).collect();
    if report.nodes.is_empty() && outputs.is_empty() {
        return Err(WorkflowErrors::prompt(
            source,
            ErrorItem::new(
                "prompt_no_outputs",
                "Prompt has no outputs",
                "the workflow has no output node (SaveImage or PreviewImage), so nothing would run",
            ),
        ));
    }
    if !report.nodes.is_empty() {
        let mut errors = report.nodes;
        for out in outputs {
            for id in upstream(out, &raw_nodes) {
                if let Some(n) = errors.get_mut(&id) {
                    n.dependent_outputs.push(out.clone());
                }
            }
        }
        for n in errors.values_mut() {
            n.dependent_outputs.sort_by(|a, b| id_order(a, b));
        }
        return Err(WorkflowErrors::nodes(source, errors));
    }
    Ok(Prompt { nodes, json })
}

/// serde_json's message without its trailing " at line L column C".
fn strip_position(message: &str) -> &str {
    message.rsplit_once(" at line ").map_or(message, |(m, _)| m)
}

/// The prompt object: the file itself, or its `prompt` member as sent to `/prompt`.
fn unwrap_prompt(value: Value) -> Result<Map<String, Value>, String> {
    let Value::Object(mut top) = value else {
        return Err(format!("a workflow in API format is a JSON object of nodes; this file holds {}", kind_of(&value)));
    };
    if let Some(Value::Object(p)) = top.get("prompt") {
        if !p.contains_key("class_type") {
            let Some(Value::Object(p)) = top.remove("prompt") else { unreachable!("checked above") };
            return Ok(p);
        }
    }
    if top.contains_key("nodes") && top.contains_key("links") {
        return Err("this is a ComfyUI workflow in UI format (nodes and links); export it in API format \
                    (Workflow > Export (API)) and use that file"
            .into());
    }
    if top.is_empty() {
        return Err("the workflow has no nodes".into());
    }
    Ok(top)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

type Shape = (String, Map<String, Value>, Option<String>);

/// The class_type, inputs and title of a node entry.
fn node_shape(v: &Value) -> Result<Shape, ErrorItem> {
    let bad = |details: String| ErrorItem::new("invalid_prompt", "Cannot execute because a node is malformed", details);
    let Value::Object(node) = v else {
        return Err(bad(format!("a node is an object with `class_type` and `inputs`; this one is {}", kind_of(v))));
    };
    let class_type = match node.get("class_type") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(bad(format!("`class_type` must be text; it is {}", kind_of(other)))),
        None => {
            return Err(ErrorItem::new(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                "the node has no `class_type`",
            ))
        }
    };
    let inputs = match node.get("inputs") {
        Some(Value::Object(m)) => m.clone(),
        None => Map::new(),
        Some(other) => return Err(bad(format!("`inputs` must be an object; it is {}", kind_of(other)))),
    };
    let title = node
        .get("_meta")
        .and_then(|m| m.get("title"))
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .map(str::to_string);
    Ok((class_type, inputs, title))
}

fn missing_class(class_type: &str) -> ErrorItem {
    let (message, details) = match NOT_YET.iter().find(|(n, _)| *n == class_type) {
        Some((_, why)) => (
            format!("Node '{class_type}' is not supported by flow yet"),
            format!("`{class_type}` is not supported by flow yet: {why}"),
        ),
        None => {
            let help = flow_engine::diagnostics::did_you_mean(class_type, CLASSES.iter().map(|c| c.name))
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            (
                format!("Node '{class_type}' not found"),
                format!(
                    "`{class_type}` is not a ComfyUI node class flow supports{help} (flow runs: {})",
                    supported_list()
                ),
            )
        }
    };
    ErrorItem::new("missing_node_type", message, details).with("class_type", class_type)
}

fn supported_list() -> String {
    CLASSES.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
}

/// Checks one input value against its spec.
fn check_input(
    name: &'static str,
    kind: &InputKind,
    v: &Value,
    nodes: &BTreeMap<String, Shape>,
) -> Result<Input, ErrorItem> {
    let config = kind.input_config();
    let base = |kind_name: &str, message: String, details: String| {
        ErrorItem::new(kind_name, message, details).with("input_name", name).with("input_config", config.clone())
    };
    if let Value::Array(items) = v {
        let link_err = |why: String| {
            base(
                "bad_linked_input",
                "Bad linked input, must be a length-2 list of [node_id, slot_index]".into(),
                format!("{name}: {why}"),
            )
            .with("received_value", v.clone())
        };
        let [from, index] = items.as_slice() else {
            return Err(link_err(format!("a link has 2 items, [node_id, output_index]; this one has {}", items.len())));
        };
        let from = match from {
            Value::String(s) => s.clone(),
            Value::Number(n) if n.is_u64() => n.to_string(),
            other => return Err(link_err(format!("the node id must be text; it is {}", kind_of(other)))),
        };
        let Some(index) = index.as_u64() else {
            return Err(link_err(format!("the output index must be a whole number ≥ 0; it is {index}")));
        };
        let Some((source_class, _, _)) = nodes.get(&from) else {
            return Err(link_err(format!("it links to node {from}, which is not in the workflow")));
        };
        let index = usize::try_from(index).unwrap_or(usize::MAX);
        let Some(source) = class(source_class) else {
            // The source's own error (missing_node_type) says why.
            return Ok(Input::Link { from, index });
        };
        let Some(received) = source.outputs.get(index) else {
            return Err(link_err(format!(
                "node {from} ({source_class}) has {} output{}; index {index} does not exist",
                source.outputs.len(),
                if source.outputs.len() == 1 { "" } else { "s" }
            )));
        };
        let expected = kind.type_name();
        if *received != expected {
            return Err(base(
                "return_type_mismatch",
                "Return type mismatch between linked nodes".into(),
                format!("{name}, received_type({received}) mismatch input_type({expected})"),
            )
            .with("received_type", *received)
            .with("linked_node", json!([from, index])));
        }
        return Ok(Input::Link { from, index });
    }
    let v = match v {
        Value::Object(m) if m.contains_key("__value__") => &m["__value__"],
        other => other,
    };
    let invalid = |type_name: &str, why: String| {
        base(
            "invalid_input_type",
            format!("Failed to convert an input value to a {type_name} value"),
            format!("{name}, {}, {why}", short(v)),
        )
        .with("received_value", v.clone())
    };
    let range = |below: bool, shown: String, bound: String| {
        let (kind_name, word) = if below {
            ("value_smaller_than_min", "smaller than min")
        } else {
            ("value_bigger_than_max", "bigger than max")
        };
        base(kind_name, format!("Value {shown} {word} of {bound}"), format!("{name}: {shown} is {word} of {bound}"))
            .with("received_value", v.clone())
    };
    match *kind {
        InputKind::Link { type_name } => Err(base(
            "bad_linked_input",
            "Bad linked input, must be a length-2 list of [node_id, slot_index]".into(),
            format!("{name}: takes a {type_name} link [node_id, output_index]; got the value {}", short(v)),
        )
        .with("received_value", v.clone())),
        InputKind::Int { min, max, .. } => {
            let n = to_int(v).map_err(|why| invalid("INT", why))?;
            if n < min {
                return Err(range(true, n.to_string(), min.to_string()));
            }
            if n > max {
                return Err(range(false, n.to_string(), max.to_string()));
            }
            Ok(Input::Int(n))
        }
        InputKind::Float { min, max, .. } => {
            let x = to_float(v).map_err(|why| invalid("FLOAT", why))?;
            if x < min {
                return Err(range(true, py_float(x), py_float(min)));
            }
            if x > max {
                return Err(range(false, py_float(x), py_float(max)));
            }
            Ok(Input::Float(x))
        }
        InputKind::Text { .. } => Ok(Input::Text(to_text(v))),
        InputKind::File { .. } => match v {
            Value::String(s) if !s.is_empty() => Ok(Input::Text(s.clone())),
            _ => Err(base(
                "value_not_in_list",
                "Value not in list".into(),
                format!("{name}: {} is not a file name", short(v)),
            )
            .with("received_value", v.clone())),
        },
        InputKind::Combo { options } => {
            let Value::String(s) = v else {
                return Err(not_in_list(name, v, options, None).with("input_config", config.clone()));
            };
            if options.contains(&s.as_str()) {
                return Ok(Input::Text(s.clone()));
            }
            let why = unsupported_reason(s).or_else(|| unsupported_upscale_method(s));
            Err(not_in_list(name, v, options, why).with("input_config", config.clone()))
        }
    }
}

fn not_in_list(name: &'static str, v: &Value, options: &[&str], why: Option<&str>) -> ErrorItem {
    let list = format!("[{}]", options.iter().map(|o| format!("'{o}'")).collect::<Vec<_>>().join(", "));
    let shown = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let reason = match why {
        Some(why) => format!(" (`{shown}`: {why})"),
        None => flow_engine::diagnostics::did_you_mean(&shown, options.iter().copied())
            .map(|h| format!("; {h}"))
            .unwrap_or_default(),
    };
    ErrorItem::new("value_not_in_list", "Value not in list", format!("{name}: '{shown}' not in {list}{reason}"))
        .with("input_name", name)
        .with("received_value", v.clone())
}

/// A value as shown in messages, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

/// Python's `int(v)` for JSON values.
fn to_int(v: &Value) -> Result<i128, String> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Ok(i128::from(u))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.is_finite() && f.abs() < 1e30 {
                    Ok(f.trunc() as i128)
                } else {
                    Err("not a finite number".into())
                }
            }
        }
        Value::Bool(b) => Ok(i128::from(*b)),
        Value::String(s) => {
            s.trim().parse::<i128>().map_err(|_| format!("invalid literal for int() with base 10: '{s}'"))
        }
        other => Err(format!("int() cannot take {}", kind_of(other))),
    }
}

/// Python's `float(v)` for JSON values.
fn to_float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| "not a number".to_string()),
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("could not convert string to float: '{s}'")),
        other => Err(format!("float() cannot take {}", kind_of(other))),
    }
}

/// Python's `str(v)` for JSON values.
fn to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

/// A float as Python prints it (`8.0`, not `8`).
fn py_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        x.to_string()
    }
}

/// The ids of the nodes a link of `node` names (existing ones only).
fn sources<'a>(node: &'a Shape, nodes: &'a BTreeMap<String, Shape>) -> impl Iterator<Item = String> + 'a {
    node.1.values().filter_map(move |v| {
        let Value::Array(items) = v else { return None };
        let id = match items.first()? {
            Value::String(s) => s.clone(),
            Value::Number(n) if n.is_u64() => n.to_string(),
            _ => return None,
        };
        (items.len() == 2 && nodes.contains_key(&id)).then_some(id)
    })
}

/// Every node `id` depends on, itself included.
fn upstream(id: &str, nodes: &BTreeMap<String, Shape>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![id.to_string()];
    while let Some(n) = stack.pop() {
        if seen.insert(n.clone()) {
            stack.extend(sources(&nodes[&n], nodes));
        }
    }
    seen
}

/// The dependency cycles, each as its node ids in link order (each node in at most one).
fn cycles(nodes: &BTreeMap<String, Shape>) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark: BTreeMap<&String, Mark> = nodes.keys().map(|k| (k, Mark::New)).collect();
    let mut found = Vec::new();
    let mut ids: Vec<&String> = nodes.keys().collect();
    ids.sort_by(|a, b| id_order(a, b));
    for start in ids {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative depth-first search; `path` is the active chain.
        let mut path: Vec<(String, Vec<String>)> = Vec::new();
        mark.insert(start, Mark::Active);
        let mut deps: Vec<String> = sources(&nodes[start], nodes).collect();
        deps.sort_by(|a, b| id_order(b, a));
        path.push((start.clone(), deps));
        while let Some((_, deps)) = path.last_mut() {
            match deps.pop() {
                Some(next) => {
                    let key = nodes.get_key_value(&next).map(|(k, _)| k).expect("sources exist");
                    match mark[key] {
                        Mark::New => {
                            mark.insert(key, Mark::Active);
                            let mut d: Vec<String> = sources(&nodes[key], nodes).collect();
                            d.sort_by(|a, b| id_order(b, a));
                            path.push((next, d));
                        }
                        Mark::Active => {
                            let at = path.iter().position(|(n, _)| *n == next).expect("active nodes are on the path");
                            // Links point from consumer to source; show the data flow order.
                            let mut cycle: Vec<String> = path[at..].iter().map(|(n, _)| n.clone()).collect();
                            cycle.reverse();
                            if !found.iter().any(|c: &Vec<String>| c.iter().any(|n| cycle.contains(n))) {
                                found.push(cycle);
                            }
                        }
                        Mark::Done => {}
                    }
                }
                None => {
                    let (done, _) = path.pop().expect("non-empty");
                    let key = nodes.get_key_value(&done).map(|(k, _)| k).expect("on the path");
                    mark.insert(key, Mark::Done);
                }
            }
        }
    }
    found
}
