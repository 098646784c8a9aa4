//! Events a run emits, for the CLI's progress display and `--json` output.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Why a node runs, or that it was served from the cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// The node executed.
    Ran,
    /// The node's result came from the cache.
    Cached,
    /// The node failed.
    Failed,
    /// The node did not run: an input failed, or the run was interrupted.
    Skipped,
}

impl NodeStatus {
    /// The word shown in summaries.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeStatus::Ran => "ran",
            NodeStatus::Cached => "cached",
            NodeStatus::Failed => "failed",
            NodeStatus::Skipped => "skipped",
        }
    }
}

/// One thing that happened during a run. Serialised as one JSON object per
/// line by `flow run --json`, tagged by `event`. `t_ms` is milliseconds since
/// the run started.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The plan is made; `nodes` will be run or taken from the cache.
    RunStarted {
        graph: String,
        nodes: usize,
        to_run: usize,
        t_ms: f64,
    },
    /// A node was served from the cache without running.
    NodeCached { node: String, op: String, t_ms: f64 },
    /// A node started executing.
    NodeStarted {
        node: String,
        op: String,
        device: String,
        reason: String,
        t_ms: f64,
    },
    /// A node reports progress (`step` of `total`).
    Progress {
        node: String,
        step: u64,
        total: u64,
        t_ms: f64,
    },
    /// A node streams a piece of generated text.
    Token { node: String, text: String, t_ms: f64 },
    /// A node prints a message for the user (e.g. `debug.print`).
    Message { node: String, text: String, t_ms: f64 },
    /// A node wrote a file (or, served from the cache, stands for a file
    /// it wrote before that still holds exactly those bytes).
    /// `size` and `blake3` (hex) describe the bytes the file holds.
    Output {
        node: String,
        path: String,
        size: u64,
        blake3: String,
        t_ms: f64,
    },
    /// A node finished successfully.
    NodeFinished {
        node: String,
        op: String,
        status: NodeStatus,
        ms: f64,
        t_ms: f64,
    },
    /// A node failed.
    NodeFailed {
        node: String,
        op: String,
        error: String,
        ms: f64,
        t_ms: f64,
    },
    /// A node did not run because `cause`.
    NodeSkipped { node: String, op: String, cause: String, t_ms: f64 },
    /// A non-fatal problem (e.g. a corrupt cache entry that will be recomputed).
    Warning { message: String, t_ms: f64 },
    /// The run ended.
    RunFinished {
        ok: bool,
        interrupted: bool,
        ran: usize,
        cached: usize,
        failed: usize,
        skipped: usize,
        ms: f64,
        t_ms: f64,
    },
}

impl Event {
    /// The event as one line of `flow run --json` (no newline): the form the
    /// CLI prints and the server streams.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// An event read back from one `--json` line.
    pub fn from_json_line(line: &str) -> Result<Event, serde_json::Error> {
        serde_json::from_str(line)
    }

    /// The event's name as `--json` writes it (`run_started`, `node_finished`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Event::RunStarted { .. } => "run_started",
            Event::NodeCached { .. } => "node_cached",
            Event::NodeStarted { .. } => "node_started",
            Event::Progress { .. } => "progress",
            Event::Token { .. } => "token",
            Event::Message { .. } => "message",
            Event::Output { .. } => "output",
            Event::NodeFinished { .. } => "node_finished",
            Event::NodeFailed { .. } => "node_failed",
            Event::NodeSkipped { .. } => "node_skipped",
            Event::Warning { .. } => "warning",
            Event::RunFinished { .. } => "run_finished",
        }
    }
}

/// Where a run sends its events.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// A sink that drops every event.
pub fn null_sink() -> EventSink {
    Arc::new(|_| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_read_back_to_the_same_lines() {
        let events = [
            Event::RunStarted { graph: "g".into(), nodes: 2, to_run: 1, t_ms: 0.5 },
            Event::NodeFinished { node: "a".into(), op: "text.join".into(), status: NodeStatus::Cached, ms: 1.25, t_ms: 2.0 },
            Event::Output { node: "a".into(), path: "out/x.png".into(), size: 3, blake3: "ab".into(), t_ms: 2.5 },
            Event::RunFinished { ok: true, interrupted: false, ran: 1, cached: 1, failed: 0, skipped: 0, ms: 3.0, t_ms: 3.0 },
        ];
        for event in events {
            let line = event.to_json_line();
            assert!(line.starts_with(&format!("{{\"event\":\"{}\"", event.name())), "{line}");
            assert_eq!(Event::from_json_line(&line).unwrap().to_json_line(), line);
        }
        assert!(Event::from_json_line("{\"event\":\"nope\"}").is_err());
    }
}
