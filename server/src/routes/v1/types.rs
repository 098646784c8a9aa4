//! The native API's request and answer bodies (their OpenAPI schemas are
//! derived from these types).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use utoipa::ToSchema;

use crate::runlog::{NodeInfo, NodeState, RunOutput};

/// `POST /v1/runs`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SubmitRequest {
    /// The graph: YAML text, or JSON text (a flow graph or a ComfyUI API workflow).
    pub graph: String,
    /// Values for the graph's params (as `flow run --set`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: BTreeMap<String, Json>,
    /// A label for the run.
    #[serde(default)]
    pub name: Option<String>,
}

/// A queued run.
#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    /// The run's id (the queue's prompt id).
    pub run_id: String,
    /// Its queue number.
    pub number: i64,
}

/// One located error of an invalid graph.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiagnosticBody {
    /// What is wrong.
    pub message: String,
    /// 1-based line in the submitted text (none for errors outside it, e.g. params).
    pub line: Option<usize>,
    /// 1-based column.
    pub col: Option<usize>,
    /// The error as the CLI prints it, with the source line.
    pub rendered: String,
}

/// Why a graph was not queued (400; 403 when it reaches outside the server's folders).
#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidGraph {
    /// `invalid_graph`, `invalid_request` or `forbidden_path`.
    pub error: String,
    /// One line.
    pub message: String,
    /// The located errors.
    pub diagnostics: Vec<DiagnosticBody>,
    /// Every error as the CLI prints it.
    pub rendered: String,
    /// ComfyUI workflows: ComfyUI's error answer (`{error, node_errors}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub comfy_errors: Option<Json>,
}

/// Any other error answer (404, 409, 503).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// A short code: `not_found`, `server_stopping`, ...
    pub error: String,
    /// One line.
    pub message: String,
}

/// A run in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: String,
    /// Its queue number.
    #[schema(value_type = f64)]
    pub number: Json,
    /// Its label, if it was given one.
    pub name: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed` or `interrupted`.
    pub state: String,
    /// Milliseconds since the Unix epoch (runs submitted over `/v1`).
    pub submitted_at: Option<u64>,
    /// Milliseconds since the Unix epoch.
    pub started_at: Option<u64>,
    /// Milliseconds since the Unix epoch.
    pub finished_at: Option<u64>,
}

/// `GET /v1/runs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// Newest first: queued, running, then finished.
    pub runs: Vec<RunSummary>,
}

/// A run's graph.
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphView {
    /// Its nodes, upstream before downstream (the order `flow run` lists them).
    pub nodes: Vec<NodeInfo>,
}

/// `GET /v1/runs/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    /// The run's id.
    pub run_id: String,
    /// Its label.
    pub name: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed` or `interrupted`.
    pub state: String,
    /// The graph it runs.
    pub graph: GraphView,
    /// Each node's state, by node id.
    pub nodes: BTreeMap<String, NodeState>,
    /// What it produced so far.
    pub outputs: Vec<RunOutput>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// `POST /v1/runs/{id}/cancel`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    /// The run's id.
    pub run_id: String,
    /// `interrupted` when it was queued or running, else the state it finished in.
    pub state: String,
}

/// An input or output port of an op.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortView {
    /// Port name.
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Default value (inputs).
    #[schema(value_type = Option<Object>)]
    pub default: Option<Json>,
    /// May be left out (inputs).
    pub optional: bool,
    /// The only values a text input accepts.
    pub choices: Option<Vec<String>>,
    /// One line of documentation.
    pub doc: String,
}

/// An op.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpView {
    /// Name as written in graphs, e.g. `text.join`.
    pub name: String,
    /// Bumped when its results change.
    pub version: u32,
    /// Documentation.
    pub doc: String,
    /// Input ports.
    pub inputs: Vec<PortView>,
    /// Output ports.
    pub outputs: Vec<PortView>,
    /// Output ops write files or print; runs execute what they need.
    pub output_node: bool,
}

/// `GET /v1/ops`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpList {
    /// Every op, by name.
    pub ops: Vec<OpView>,
}
