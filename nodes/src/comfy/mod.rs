//! ComfyUI workflows in API format: the node classes flow runs
//! ([`classes`]), validation with ComfyUI's error kinds, all errors at once
//! ([`validate`], [`WorkflowErrors`]), and translation into a flow graph
//! ([`translate_to_yaml`], [`load_workflow`], and [`translate_workflow`] with
//! the mapping back to the workflow's node ids).
//!
//! A workflow in API format is a JSON object `{ "<id>": { "class_type",
//! "inputs": { name: literal | ["<source id>", <output index>] }, "_meta":
//! { "title" } } }`; the `{"prompt": {...}}` body of ComfyUI's `POST /prompt`
//! is accepted too.

use std::collections::BTreeMap;
use std::path::Path;

use flow_engine::diagnostics::Diagnostics;
use flow_engine::graph::{Graph, Override};
use flow_engine::Registry;

pub mod classes;
pub mod errors;
pub mod names;
pub mod translate;
pub mod validate;
pub mod yaml;

pub use errors::{ErrorItem, NodeErrors, WorkflowErrors};
pub use translate::Purpose;

/// True if the file looks like a ComfyUI workflow rather than a flow graph:
/// its name ends in `.json`, or its text starts with `{`.
pub fn is_workflow(path: &Path, bytes: &[u8]) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Validates a workflow and writes the equivalent flow graph as YAML
/// (what `flow import comfy` prints). `source_name` names the workflow in
/// errors and in the graph's comments.
pub fn translate_to_yaml(json_text: &str, source_name: &str) -> Result<String, WorkflowErrors> {
    to_yaml(json_text, source_name, Purpose::Import)
}

/// [`translate_to_yaml`] for a purpose: [`Purpose::Run`] also hands the
/// workflow to `image.save` for the PNG's `prompt` chunk.
pub fn to_yaml(json_text: &str, source_name: &str, purpose: Purpose) -> Result<String, WorkflowErrors> {
    Ok(translate_workflow(json_text, source_name, purpose)?.yaml)
}

/// A translated workflow: the flow graph, and how its nodes map back to the
/// workflow's (what a server needs to report progress in the client's ids).
#[derive(Clone, Debug)]
pub struct Translation {
    /// The flow graph as YAML (what [`to_yaml`] gives).
    pub yaml: String,
    /// Flow node → the ComfyUI node ids whose work it does, in order: one id
    /// for most nodes; the positive and negative `CLIPTextEncode` (and any
    /// `CLIPSetLastLayer` on their way) for a merged `sd.encode_prompt`.
    /// Loaders become models and have no flow node.
    pub origins: BTreeMap<String, Vec<String>>,
    /// ComfyUI node id → its `class_type`.
    pub classes: BTreeMap<String, String>,
    /// The workflow's output nodes (SaveImage, PreviewImage, ...), in id order.
    pub outputs: Vec<String>,
}

/// Validates a workflow and translates it for `purpose`, keeping the
/// mapping between flow nodes and ComfyUI node ids.
pub fn translate_workflow(json_text: &str, source_name: &str, purpose: Purpose) -> Result<Translation, WorkflowErrors> {
    let prompt = validate::check(json_text, source_name)?;
    let stem = Path::new(source_name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workflow".into());
    let graph = translate::translate(&prompt, source_name, &stem, purpose)?;
    let origins = graph.nodes.iter().map(|n| (n.name.clone(), n.origins.clone())).collect();
    let classes = prompt.nodes.iter().map(|(id, n)| (id.clone(), n.class.name.to_string())).collect();
    let outputs = prompt.ids().into_iter().filter(|id| prompt.nodes[*id].class.output_node).cloned().collect();
    Ok(Translation { yaml: graph.to_yaml(), origins, classes, outputs })
}

/// Why a workflow could not become a graph.
#[derive(Debug)]
pub enum LoadError {
    /// The workflow is invalid (ComfyUI's terms).
    Workflow(WorkflowErrors),
    /// The translated graph did not validate in flow.
    Graph(Box<Diagnostics>),
}

impl LoadError {
    /// The errors for a terminal.
    pub fn render(&self) -> String {
        match self {
            LoadError::Workflow(w) => w.render(),
            LoadError::Graph(d) => format!("the flow graph translated from this workflow is invalid:\n{}", d.render()),
        }
    }
}

/// Validates workflow bytes, translates them for a run and validates the
/// graph with flow's loader: `file` names the workflow, `dir` is the folder
/// relative paths (LoadImage, SaveImage) resolve against, `overrides` are
/// `--set` values for the translated params.
pub fn load_workflow(
    file: &str,
    dir: &Path,
    bytes: &[u8],
    overrides: &[Override],
    registry: &Registry,
) -> Result<Graph, LoadError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let error = ErrorItem::new(
            "invalid_prompt",
            "Invalid JSON",
            format!("the file is not UTF-8 text (invalid byte at offset {})", e.valid_up_to()),
        );
        LoadError::Workflow(WorkflowErrors::prompt(file, error))
    })?;
    let yaml = to_yaml(text, file, Purpose::Run).map_err(LoadError::Workflow)?;
    flow_engine::graph::from_bytes(file, dir, yaml.as_bytes(), overrides, registry).map_err(LoadError::Graph)
}

#[cfg(test)]
mod tests;
