//! Workflow errors in ComfyUI's JSON shape (what its `POST /prompt` answers
//! with on a bad prompt) and rendered for the terminal.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

/// One error: ComfyUI's `{type, message, details, extra_info}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorItem {
    /// ComfyUI's error kind, e.g. `value_not_in_list`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short statement (ComfyUI's wording where it has one).
    pub message: String,
    /// What exactly is wrong, in full.
    pub details: String,
    /// Machine-readable context: `input_name`, `received_value`, ...
    pub extra_info: Map<String, Value>,
}

impl ErrorItem {
    /// An error of `kind` with no extra info.
    pub fn new(kind: &str, message: impl Into<String>, details: impl Into<String>) -> Self {
        ErrorItem { kind: kind.into(), message: message.into(), details: details.into(), extra_info: Map::new() }
    }

    /// Adds `key: value` to `extra_info`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra_info.insert(key.into(), value.into());
        self
    }

    /// The input the error is about, if any.
    pub fn input_name(&self) -> Option<&str> {
        self.extra_info.get("input_name").and_then(Value::as_str)
    }
}

/// The errors of one node: ComfyUI's `node_errors[id]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeErrors {
    /// Every error of the node.
    pub errors: Vec<ErrorItem>,
    /// The output nodes that depend on this node.
    pub dependent_outputs: Vec<String>,
    /// The node's `class_type`.
    pub class_type: String,
}

/// Everything wrong with a workflow, at once: ComfyUI's
/// `{error, node_errors}` answer (serialize it for a server), plus the
/// workflow's name for [`WorkflowErrors::render`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkflowErrors {
    /// The file name errors are reported against (not serialized).
    #[serde(skip)]
    pub source: String,
    /// The prompt-level error.
    pub error: ErrorItem,
    /// Errors per node id.
    pub node_errors: BTreeMap<String, NodeErrors>,
}

impl WorkflowErrors {
    /// A prompt-level error with no node errors (bad JSON, no outputs).
    pub fn prompt(source: &str, error: ErrorItem) -> Self {
        WorkflowErrors { source: source.into(), error, node_errors: BTreeMap::new() }
    }

    /// Node errors under ComfyUI's `prompt_outputs_failed_validation`.
    pub fn nodes(source: &str, node_errors: BTreeMap<String, NodeErrors>) -> Self {
        let details = sorted_ids(&node_errors)
            .into_iter()
            .flat_map(|id| node_errors[id].errors.iter().map(|e| format!("{}: {}", e.message, e.details)))
            .collect::<Vec<_>>()
            .join("\n");
        let error = ErrorItem::new("prompt_outputs_failed_validation", "Prompt outputs failed validation", details);
        WorkflowErrors { source: source.into(), error, node_errors }
    }

    /// The number of errors.
    pub fn count(&self) -> usize {
        let nodes: usize = self.node_errors.values().map(|n| n.errors.len()).sum();
        nodes.max(1)
    }

    /// One line per error, `file: node ID (Class) input `name`: kind: details`,
    /// then a count.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.node_errors.is_empty() {
            let _ = writeln!(out, "{}: {}: {}", self.source, self.error.kind, self.error.details);
        }
        for id in sorted_ids(&self.node_errors) {
            let node = &self.node_errors[id];
            for e in &node.errors {
                let input = e.input_name().map(|i| format!(" input `{i}`")).unwrap_or_default();
                let _ =
                    writeln!(out, "{}: node {id} ({}){input}: {}: {}", self.source, node.class_type, e.kind, e.details);
            }
        }
        let n = self.count();
        let _ = writeln!(out, "{n} error{} in {}", if n == 1 { "" } else { "s" }, self.source);
        out
    }

    /// The JSON text a ComfyUI server answers with.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl std::fmt::Display for WorkflowErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.render().trim_end())
    }
}

impl std::error::Error for WorkflowErrors {}

/// Node ids in numeric order where they are numbers (`2` before `10`), then by text.
pub fn sorted_ids<T>(map: &BTreeMap<String, T>) -> Vec<&String> {
    let mut ids: Vec<&String> = map.keys().collect();
    ids.sort_by(|a, b| id_order(a, b));
    ids
}

/// The order of node ids: numbers numerically, before other ids.
pub fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}
