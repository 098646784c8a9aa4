//! What the native API shows of each run: its graph, its `flow run --json`
//! event lines (replayed to late Server-Sent-Event subscribers), the state
//! of each node folded from those events, and its outputs. Live runs are
//! kept in memory; a finished run's record is written to `runs/ID.json`
//! beside the history (atomically, before the history entry), so it
//! survives a restart.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::{Context, Result};
use flow_engine::events::NodeStatus;
use flow_engine::graph::Graph;
use flow_engine::run::RunReport;
use flow_engine::{Event, EventSink, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::prepare::{file_ref, Workspace};
use crate::reporter::timestamp;

/// Event lines kept per run; past this, `progress`, `token` and `message`
/// lines are dropped (node and run events are always kept).
pub const MAX_EVENTS: usize = 20_000;

/// A node of a run's graph as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// The op it runs.
    pub op: String,
    /// Ids of the nodes it reads from.
    pub inputs_from: Vec<String>,
    /// Whether it is an output node (writes files, prints).
    pub output: bool,
}

/// The nodes of `graph` in its topological order (the order of `flow run`'s summary).
pub fn graph_info(graph: &Graph) -> Vec<NodeInfo> {
    graph
        .order
        .iter()
        .map(|&i| &graph.nodes[i])
        .map(|n| NodeInfo {
            id: n.id.clone(),
            op: n.op.spec().name.clone(),
            inputs_from: n.deps.iter().map(|&d| graph.nodes[d].id.clone()).collect(),
            output: n.op.spec().output,
        })
        .collect()
}

/// One node's state, folded from the run's events.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct NodeState {
    /// `pending`, `cached`, `running`, `done`, `failed` or `skipped`.
    pub state: String,
    /// `{done, total}` once it reports steps.
    pub progress: Option<Progress>,
    /// How long it ran.
    pub time_ms: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Why it was skipped.
    pub why: Option<String>,
}

impl NodeState {
    fn pending() -> Self {
        NodeState {
            state: "pending".into(),
            progress: None,
            time_ms: None,
            error: None,
            why: None,
        }
    }
}

/// Steps a node has done of its total.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Progress {
    /// Steps done.
    pub done: u64,
    /// Steps in all.
    pub total: u64,
}

/// Something a run produced.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RunOutput {
    /// The node that produced it.
    pub node: String,
    /// `image`, `text` or `file`.
    pub kind: String,
    /// Files: the path, relative to the server's workspace (`output/...`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<String>,
    /// Files: a `/view?...` URL to fetch it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub url: Option<String>,
    /// Text outputs: the text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub text: Option<String>,
}

/// The state of every node after `events` (nodes of `graph` not mentioned stay pending).
pub fn node_states(graph: &[NodeInfo], events: &[String]) -> BTreeMap<String, NodeState> {
    let mut states: BTreeMap<String, NodeState> = graph.iter().map(|n| (n.id.clone(), NodeState::pending())).collect();
    for line in events {
        let Ok(event) = Event::from_json_line(line) else {
            continue;
        };
        let node = match &event {
            Event::NodeCached { node, .. }
            | Event::NodeStarted { node, .. }
            | Event::Progress { node, .. }
            | Event::NodeFinished { node, .. }
            | Event::NodeFailed { node, .. }
            | Event::NodeSkipped { node, .. } => node.clone(),
            _ => continue,
        };
        let s = states.entry(node).or_insert_with(NodeState::pending);
        match event {
            Event::NodeCached { .. } => s.state = "cached".into(),
            Event::NodeStarted { .. } => s.state = "running".into(),
            Event::Progress { step, total, .. } => s.progress = Some(Progress { done: step, total }),
            Event::NodeFinished { status, ms, .. } => {
                let cached = status == NodeStatus::Cached;
                s.state = if cached { "cached" } else { "done" }.into();
                s.time_ms = (!cached).then_some(ms);
            }
            Event::NodeFailed { error, ms, .. } => {
                s.state = "failed".into();
                s.error = Some(error);
                s.time_ms = Some(ms);
            }
            Event::NodeSkipped { cause, .. } => {
                s.state = "skipped".into();
                s.why = Some(cause);
            }
            _ => {}
        }
    }
    states
}

/// A run's record: what `GET /v1/runs/{id}` and its event stream show.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The run's graph.
    pub graph: Vec<NodeInfo>,
    /// `flow run --json` lines, in order.
    pub events: Vec<String>,
    /// Event lines dropped past [`MAX_EVENTS`].
    pub dropped: usize,
    /// What it produced.
    pub outputs: Vec<RunOutput>,
    /// Why the run could not start, or failed as a whole.
    pub error: Option<String>,
    /// Milliseconds since the epoch.
    pub started_at: Option<u64>,
    /// Milliseconds since the epoch.
    pub finished_at: Option<u64>,
    /// True once `run_finished` is in `events`.
    pub finished: bool,
}

/// One live run: its record and a counter that moves with every new line.
pub struct RunLog {
    record: Mutex<Record>,
    seen: watch::Sender<usize>,
    /// The engine's `run_finished`, held until the run's outputs are recorded.
    held: Mutex<Option<Event>>,
}

impl RunLog {
    fn new(record: Record) -> Arc<Self> {
        let n = record.events.len();
        Arc::new(RunLog {
            record: Mutex::new(record),
            seen: watch::Sender::new(n),
            held: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the record.
    pub fn record(&self) -> Record {
        self.lock().clone()
    }

    /// Event lines from `from` on, and whether the run has finished.
    pub fn since(&self, from: usize) -> (Vec<String>, bool) {
        let r = self.lock();
        (
            r.events.get(from..).map(<[String]>::to_vec).unwrap_or_default(),
            r.finished,
        )
    }

    /// A receiver that changes whenever a line is added.
    pub fn watch(&self) -> watch::Receiver<usize> {
        self.seen.subscribe()
    }

    /// Appends an event.
    pub fn push(&self, event: &Event) {
        let mut r = self.lock();
        let chatty = matches!(
            event,
            Event::Progress { .. } | Event::Token { .. } | Event::Message { .. }
        );
        if chatty && r.events.len() >= MAX_EVENTS {
            r.dropped += 1;
            return;
        }
        r.events.push(event.to_json_line());
        if let Event::RunFinished { .. } = event {
            r.finished = true;
            r.finished_at = Some(timestamp());
        }
        let n = r.events.len();
        drop(r);
        self.seen.send_replace(n);
    }

    /// The sink that records the run's events; `run_finished` waits for [`RunLog::finish`].
    pub fn sink(self: &Arc<Self>) -> EventSink {
        let me = Arc::clone(self);
        Arc::new(move |event| match event {
            Event::RunFinished { .. } => *me.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(event),
            other => me.push(&other),
        })
    }

    /// Records the run's files (from its `output` events) and the text
    /// outputs of its target nodes, then its `run_finished`: whoever sees
    /// the run finished sees its outputs.
    pub fn finish(&self, ws: &Workspace, report: &RunReport) {
        self.collect_outputs(ws, report);
        if let Some(event) = self.held.lock().unwrap_or_else(PoisonError::into_inner).take() {
            self.push(&event);
        }
    }

    fn collect_outputs(&self, ws: &Workspace, report: &RunReport) {
        let mut r = self.lock();
        let mut outputs = Vec::new();
        for line in &r.events {
            if let Ok(Event::Output { node, path, .. }) = Event::from_json_line(line) {
                outputs.push(file_output(ws, &node, Path::new(&path)));
            }
        }
        for (node, outs) in &report.outputs {
            for (_, value) in outs.iter() {
                if let Value::Text(t) = value {
                    let text = Some(t.to_string());
                    outputs.push(RunOutput {
                        node: node.clone(),
                        kind: "text".into(),
                        path: None,
                        url: None,
                        text,
                    });
                }
            }
        }
        r.outputs = outputs;
    }

    /// Takes `record` as the run's record (a cluster worker's, which has
    /// every event even when some were missed on the way here).
    pub fn adopt(&self, record: Record) {
        let n = record.events.len();
        *self.lock() = record;
        self.held.lock().unwrap_or_else(PoisonError::into_inner).take();
        self.seen.send_replace(n);
    }

    /// Ends a run that could not start: a warning with the reason, then
    /// `run_finished` (not ok; `interrupted` when it was cancelled).
    pub fn fail(&self, message: &str, interrupted: bool) {
        self.lock().error = Some(message.to_string());
        let t_ms = 0.0;
        self.push(&Event::Warning {
            message: message.to_string(),
            t_ms,
        });
        let (ran, cached, failed, skipped) = (0, 0, 0, 0);
        self.push(&Event::RunFinished {
            ok: false,
            interrupted,
            ran,
            cached,
            failed,
            skipped,
            ms: 0.0,
            t_ms,
        });
    }
}

/// A file a run wrote, with its `/view` URL when it is in the output or temp folder.
fn file_output(ws: &Workspace, node: &str, path: &Path) -> RunOutput {
    let is_image = path
        .extension()
        .is_some_and(|e| ["png", "jpg", "jpeg", "webp"].iter().any(|x| e.eq_ignore_ascii_case(x)));
    let shown = path
        .strip_prefix(ws.root())
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned();
    let url = file_ref(ws, path).map(|r| {
        let q = |k: &str| percent_encode(r[k].as_str().unwrap_or_default());
        format!(
            "/view?filename={}&subfolder={}&type={}",
            q("filename"),
            q("subfolder"),
            q("type")
        )
    });
    let kind = if is_image { "image" } else { "file" }.into();
    RunOutput {
        node: node.to_string(),
        kind,
        path: Some(shown),
        url,
        text: None,
    }
}

/// `s` with everything but unreserved URL characters percent-encoded.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every run's log: live ones in memory, finished ones on disk.
pub struct RunLogs {
    dir: PathBuf,
    live: Mutex<HashMap<String, Arc<RunLog>>>,
}

impl RunLogs {
    /// The logs kept in `state_dir/runs`.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let dir = state_dir.join("runs");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(RunLogs {
            dir,
            live: Mutex::default(),
        })
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, Arc<RunLog>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The live log of run `id`, made empty if it has none yet (a
    /// subscriber waiting for a queued run gets the log the run fills).
    pub fn live_log(&self, id: &str) -> Arc<RunLog> {
        Arc::clone(
            self.live()
                .entry(id.to_string())
                .or_insert_with(|| RunLog::new(Record::default())),
        )
    }

    /// The live log of run `id`, if it has one.
    pub fn get_live(&self, id: &str) -> Option<Arc<RunLog>> {
        self.live().get(id).cloned()
    }

    /// A run starts with this graph.
    pub fn start(&self, id: &str, graph: Vec<NodeInfo>) -> Arc<RunLog> {
        let log = self.live_log(id);
        {
            let mut r = log.lock();
            r.graph = graph;
            r.started_at = Some(timestamp());
        }
        log
    }

    /// Writes a finished run's record to disk (before its history entry).
    pub fn save(&self, id: &str) -> Result<()> {
        let Some(log) = self.get_live(id) else { return Ok(()) };
        let bytes = serde_json::to_vec(&log.record())?;
        flow_engine::files::write_atomic(&self.file(id), &bytes)
            .with_context(|| format!("cannot persist the events of run {id}"))
    }

    /// Drops the in-memory log of a run (its record is on disk; subscribers
    /// holding it keep reading it).
    pub fn release(&self, id: &str) {
        self.live().remove(id);
    }

    /// The record of run `id`: live, or read back from disk.
    pub fn record(&self, id: &str) -> Option<Record> {
        if let Some(log) = self.get_live(id) {
            return Some(log.record());
        }
        let bytes = fs::read(self.file(id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Forgets the record of run `id`.
    pub fn remove(&self, id: &str) {
        self.release(id);
        let _ = fs::remove_file(self.file(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            op: "text.join".into(),
            inputs_from: vec![],
            output: false,
        }
    }

    #[test]
    fn states_fold_from_events_and_records_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let logs = RunLogs::open(dir.path()).unwrap();
        let waiting = logs.live_log("r");
        let log = logs.start("r", vec![info("a"), info("b"), info("c"), info("d")]);
        assert!(Arc::ptr_eq(&waiting, &log));
        let rx = log.watch();
        let t_ms = 1.0;
        log.push(&Event::RunStarted {
            graph: "g".into(),
            nodes: 4,
            to_run: 3,
            t_ms,
        });
        log.push(&Event::NodeCached {
            node: "a".into(),
            op: "text.join".into(),
            t_ms,
        });
        log.push(&Event::NodeStarted {
            node: "b".into(),
            op: "text.join".into(),
            device: "cpu".into(),
            reason: "new".into(),
            t_ms,
        });
        log.push(&Event::Progress {
            node: "b".into(),
            step: 2,
            total: 5,
            t_ms,
        });
        let mid = node_states(&log.record().graph, &log.record().events);
        assert_eq!(mid["b"].state, "running");
        assert_eq!(mid["b"].progress, Some(Progress { done: 2, total: 5 }));
        assert_eq!(mid["d"].state, "pending");
        log.push(&Event::NodeFinished {
            node: "b".into(),
            op: "text.join".into(),
            status: NodeStatus::Ran,
            ms: 12.5,
            t_ms,
        });
        log.push(&Event::NodeFailed {
            node: "c".into(),
            op: "x".into(),
            error: "boom".into(),
            ms: 1.0,
            t_ms,
        });
        log.push(&Event::NodeSkipped {
            node: "d".into(),
            op: "x".into(),
            cause: "input c failed".into(),
            t_ms,
        });
        assert_eq!(*rx.borrow(), 7);
        assert!(!log.since(0).1);
        log.fail("stopped", false);
        let (lines, finished) = log.since(7);
        assert!(finished);
        assert_eq!(lines.len(), 2);
        logs.save("r").unwrap();
        logs.release("r");
        let back = logs.record("r").unwrap();
        let s = node_states(&back.graph, &back.events);
        assert_eq!((s["a"].state.as_str(), s["b"].state.as_str()), ("cached", "done"));
        assert_eq!(s["b"].time_ms, Some(12.5));
        assert_eq!(
            (s["c"].state.as_str(), s["c"].error.as_deref()),
            ("failed", Some("boom"))
        );
        assert_eq!(
            (s["d"].state.as_str(), s["d"].why.as_deref()),
            ("skipped", Some("input c failed"))
        );
        assert_eq!(back.error.as_deref(), Some("stopped"));
        logs.remove("r");
        assert!(logs.record("r").is_none());
    }

    #[test]
    fn chatty_events_are_dropped_past_the_bound() {
        let log = RunLog::new(Record::default());
        for step in 0..(MAX_EVENTS as u64 + 10) {
            log.push(&Event::Progress {
                node: "n".into(),
                step,
                total: 1,
                t_ms: 0.0,
            });
        }
        log.push(&Event::Warning {
            message: "kept".into(),
            t_ms: 0.0,
        });
        let r = log.record();
        assert_eq!((r.events.len(), r.dropped), (MAX_EVENTS + 1, 10));
    }

    #[test]
    fn urls_are_percent_encoded() {
        assert_eq!(percent_encode("a b/ü.png"), "a%20b%2F%C3%BC.png");
    }
}
