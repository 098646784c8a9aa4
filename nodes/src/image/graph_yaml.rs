//! A validated graph written back as a graph file (format version 1), for
//! the `flow:graph` text chunk of saved PNGs: params hold the values of the
//! run (after `--set`), and node inputs the literals they resolved to, so the
//! file reproduces the run that made the image.

use flow_engine::graph::{DeviceChoice, Expr, Graph, InterpPart};
use flow_engine::Value;
use serde_json::Value as Json;

/// The graph as YAML text.
pub(crate) fn graph_yaml(graph: &Graph) -> String {
    let mut out = String::from("flow: 1\n");
    out.push_str(&format!("name: {}\n", json_text(&graph.name)));
    if !graph.description.is_empty() {
        out.push_str(&format!("description: {}\n", json_text(&graph.description)));
    }
    if !graph.params.is_empty() {
        out.push_str("params:\n");
        for (name, value) in &graph.params {
            out.push_str(&format!("  {name}: {}\n", literal(value, true)));
        }
    }
    if !graph.models.is_empty() {
        out.push_str("models:\n");
        for (name, reference) in &graph.models {
            out.push_str(&format!("  {name}: {}\n", json_text(reference)));
        }
    }
    out.push_str("nodes:\n");
    for node in &graph.nodes {
        out.push_str(&format!(
            "  {}:\n    op: {}\n",
            node.id,
            node.op.spec().name
        ));
        if !node.inputs.is_empty() {
            out.push_str("    in:\n");
            for (port, expr) in &node.inputs {
                let interpolate = node.op.spec().input(port).is_none_or(|p| p.interpolate);
                out.push_str(&format!(
                    "      {port}: {}\n",
                    expression(graph, expr, interpolate)
                ));
            }
        }
        if node.device != DeviceChoice::Auto {
            out.push_str(&format!("    device: {}\n", node.device));
        }
        if !node.cache {
            out.push_str("    cache: false\n");
        }
    }
    out
}

/// An input expression in graph-file syntax.
fn expression(graph: &Graph, expr: &Expr, interpolate: bool) -> String {
    match expr {
        Expr::Literal(value) => literal(value, interpolate),
        Expr::Model { name, .. } => format!("${name}"),
        Expr::Link { node, port } => format!("${}.{port}", graph.nodes[*node].id),
        Expr::Interp(parts) => {
            let text: String = parts
                .iter()
                .map(|part| match part {
                    InterpPart::Text(t) => t.replace('$', "$$"),
                    InterpPart::Link { node, port } => {
                        format!("${{{}.{port}}}", graph.nodes[*node].id)
                    }
                })
                .collect();
            json_text(&text)
        }
        Expr::List(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|e| expression(graph, e, interpolate))
                .collect();
            format!("[{}]", items.join(", "))
        }
        Expr::Map(entries) => {
            let entries: Vec<String> = entries
                .iter()
                .map(|(k, e)| format!("{}: {}", json_text(k), expression(graph, e, interpolate)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
    }
}

/// A literal value as YAML (JSON syntax, which YAML reads); text has its `$`
/// doubled where the graph file would interpolate it.
fn literal(value: &Value, interpolate: bool) -> String {
    let json = value.to_json();
    if interpolate {
        escape_dollars(json).to_string()
    } else {
        json.to_string()
    }
}

fn escape_dollars(json: Json) -> Json {
    match json {
        Json::String(s) => Json::String(s.replace('$', "$$")),
        Json::Array(items) => Json::Array(items.into_iter().map(escape_dollars).collect()),
        Json::Object(m) => {
            Json::Object(m.into_iter().map(|(k, v)| (k, escape_dollars(v))).collect())
        }
        other => other,
    }
}

/// Text as a JSON string (a double-quoted YAML scalar), `$` left as is.
fn json_text(text: &str) -> String {
    Json::String(text.to_string()).to_string()
}
