//! What the queue holds and the history keeps, in the form they are
//! persisted and shown (ComfyUI's queue items and history entries).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// One submitted prompt.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Job {
    /// Queue position: lower runs first (`front` submissions are negative).
    pub number: f64,
    /// The prompt's id (client-chosen or generated).
    pub prompt_id: String,
    /// As submitted: a ComfyUI API-format workflow (an object of nodes), or
    /// a flow graph (YAML or JSON text, or a JSON object).
    pub prompt: Value,
    /// ComfyUI's `extra_data`, with `client_id` in it when given.
    pub extra_data: Map<String, Value>,
    /// The WebSocket client the run's messages go to.
    pub client_id: Option<String>,
    /// Values for a flow graph's params.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    /// The ids of the output nodes to execute.
    pub outputs_to_execute: Vec<String>,
}

impl Job {
    /// ComfyUI's queue item: `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
    pub fn queue_item(&self) -> Value {
        json!([number_json(self.number), self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute])
    }
}

/// A queue number as JSON: whole numbers as integers, as ComfyUI shows them.
pub fn number_json(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

/// ComfyUI's `status` of a history entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunStatus {
    /// `success` or `error`.
    pub status_str: String,
    /// True when the run finished without error or interruption.
    pub completed: bool,
    /// `[event, data]` pairs: execution_start, execution_cached, and how it ended.
    pub messages: Vec<(String, Value)>,
}

/// A finished run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    /// The queue item of the run.
    pub prompt: Value,
    /// Per output node: `{"images": [{filename, subfolder, type}]}` and other files.
    pub outputs: Map<String, Value>,
    /// How it ended.
    pub status: RunStatus,
    /// Per output node: `{node_id, display_node}`.
    #[serde(default)]
    pub meta: Map<String, Value>,
}
