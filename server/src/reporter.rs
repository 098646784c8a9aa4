//! A run's engine events as ComfyUI's WebSocket messages, in ComfyUI's
//! order: `execution_start`, `execution_cached` (every node served from the
//! cache, then `executed` for those that stand for files), per node
//! `executing`, `progress` and `executed` (with its images), then
//! `execution_success`, `execution_error` or `execution_interrupted`. The
//! final `executing {node: null}` is the worker's, after the history entry
//! is ready. The same events make the run's history entry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use flow_engine::{Event, EventSink};
use serde_json::{json, Map, Value};

use crate::hub::Hub;
use crate::job::{HistoryEntry, Job, RunStatus};
use crate::prepare::{file_ref, Prepared, Workspace};

/// Milliseconds since the Unix epoch (ComfyUI's `timestamp`).
pub fn timestamp() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[derive(Default)]
struct State {
    /// Flow nodes served from the cache, before `execution_cached` is sent.
    cached: Vec<String>,
    cached_sent: bool,
    /// Files announced per flow node.
    files: BTreeMap<String, Vec<PathBuf>>,
    /// Client ids of the nodes done so far.
    executed: BTreeSet<String>,
    /// Flow nodes started and not finished.
    running: Vec<String>,
    /// The first failure was reported.
    failed: bool,
    interrupted: bool,
    /// The run's `run_finished` was seen.
    ended: bool,
    /// `[event, data]` for the history's status.
    messages: Vec<(String, Value)>,
    outputs: Map<String, Value>,
    meta: Map<String, Value>,
}

/// Turns one run's events into messages for its client.
pub struct Reporter {
    hub: Hub,
    sid: Option<String>,
    prompt_id: String,
    origins: BTreeMap<String, Vec<String>>,
    classes: BTreeMap<String, String>,
    workspace: Arc<Workspace>,
    state: Mutex<State>,
}

impl Reporter {
    /// A reporter for `job` prepared as `prepared`.
    pub fn new(hub: Hub, job: &Job, prepared: &Prepared, workspace: Arc<Workspace>) -> Arc<Self> {
        Arc::new(Reporter {
            hub,
            sid: job.client_id.clone(),
            prompt_id: job.prompt_id.clone(),
            origins: prepared.origins.clone(),
            classes: prepared.classes.clone(),
            workspace,
            state: Mutex::default(),
        })
    }

    /// Reports these flow nodes as cached (nodes the run does not need).
    pub fn count_as_cached(&self, nodes: Vec<String>) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).cached.extend(nodes);
    }

    /// The event sink to run the graph with.
    pub fn sink(self: &Arc<Self>) -> EventSink {
        let me = Arc::clone(self);
        Arc::new(move |event| me.on_event(event))
    }

    fn ids(&self, node: &str) -> Vec<String> {
        self.origins.get(node).cloned().unwrap_or_else(|| vec![node.to_string()])
    }

    fn send(&self, event: &str, data: Value) {
        self.hub.send(event, data, self.sid.as_deref());
    }

    /// Sends a message that also goes into the history's status messages.
    fn send_status(&self, s: &mut State, event: &str, mut data: Value) {
        data["timestamp"] = json!(timestamp());
        s.messages.push((event.to_string(), data.clone()));
        self.send(event, data);
    }

    fn on_event(&self, event: Event) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::RunStarted { .. } => {
                self.send_status(&mut s, "execution_start", json!({ "prompt_id": self.prompt_id }));
            }
            Event::NodeCached { node, .. } => s.cached.push(node),
            Event::Output { node, path, .. } => s.files.entry(node).or_default().push(PathBuf::from(path)),
            Event::NodeStarted { node, .. } => {
                self.flush_cached(&mut s);
                for id in self.ids(&node) {
                    self.send("executing", json!({ "node": id, "display_node": id, "prompt_id": self.prompt_id }));
                }
                s.running.push(node);
            }
            Event::Progress { node, step, total, .. } => {
                self.flush_cached(&mut s);
                let id = self.ids(&node).into_iter().next();
                self.send("progress", json!({ "value": step, "max": total, "prompt_id": self.prompt_id, "node": id }));
            }
            Event::NodeFinished { node, .. } => {
                self.flush_cached(&mut s);
                s.running.retain(|n| *n != node);
                self.node_done(&mut s, &node);
            }
            Event::NodeFailed { node, error, .. } => {
                self.flush_cached(&mut s);
                s.running.retain(|n| *n != node);
                if !s.failed {
                    s.failed = true;
                    let ids = self.ids(&node);
                    let id = ids.first().cloned().unwrap_or_default();
                    let data = json!({
                        "prompt_id": self.prompt_id,
                        "node_id": id,
                        "node_type": self.classes.get(&id).cloned().unwrap_or_default(),
                        "executed": s.executed.iter().collect::<Vec<_>>(),
                        "exception_message": error,
                        "exception_type": "flow.NodeError",
                        "traceback": [],
                        "current_inputs": {},
                        "current_outputs": {},
                    });
                    self.send_status(&mut s, "execution_error", data);
                }
            }
            Event::NodeSkipped { node, cause, .. } => {
                if cause == "interrupted" && !s.interrupted {
                    s.interrupted = true;
                    s.running.retain(|n| *n != node);
                    s.running.insert(0, node);
                }
            }
            Event::RunFinished { ok, interrupted, .. } => {
                s.ended = true;
                self.flush_cached(&mut s);
                if interrupted {
                    let node = s.running.first().cloned();
                    let id = node.map(|n| self.ids(&n).into_iter().next().unwrap_or(n));
                    let data = json!({
                        "prompt_id": self.prompt_id,
                        "node_id": id,
                        "node_type": id.as_ref().and_then(|i| self.classes.get(i)).cloned(),
                        "executed": s.executed.iter().collect::<Vec<_>>(),
                    });
                    s.interrupted = true;
                    self.send_status(&mut s, "execution_interrupted", data);
                } else if ok && !s.failed {
                    self.send_status(&mut s, "execution_success", json!({ "prompt_id": self.prompt_id }));
                } else if !s.failed {
                    s.failed = true;
                    let data = json!({
                        "prompt_id": self.prompt_id, "node_id": null, "node_type": null,
                        "executed": s.executed.iter().collect::<Vec<_>>(),
                        "exception_message": "the run failed", "exception_type": "flow.RunError",
                        "traceback": [], "current_inputs": {}, "current_outputs": {},
                    });
                    self.send_status(&mut s, "execution_error", data);
                }
            }
            Event::Token { .. } | Event::Message { .. } | Event::Warning { .. } => {}
        }
    }

    /// `execution_cached` with every node served from the cache, then
    /// `executed` for those standing for files.
    fn flush_cached(&self, s: &mut State) {
        if s.cached_sent {
            return;
        }
        s.cached_sent = true;
        let nodes: Vec<String> = s.cached.iter().flat_map(|n| self.ids(n)).collect();
        self.send_status(s, "execution_cached", json!({ "nodes": nodes, "prompt_id": self.prompt_id }));
        for node in s.cached.clone() {
            self.node_done(s, &node);
        }
    }

    /// A node is done: its ids count as executed; its files are its output.
    fn node_done(&self, s: &mut State, node: &str) {
        let ids = self.ids(node);
        s.executed.extend(ids.iter().cloned());
        let Some(files) = s.files.get(node) else { return };
        let (mut images, mut others) = (Vec::new(), Vec::new());
        for f in files {
            let Some(r) = file_ref(&self.workspace, f) else { continue };
            let is_image =
                f.extension().is_some_and(|e| ["png", "jpg", "jpeg", "webp"].iter().any(|x| e.eq_ignore_ascii_case(x)));
            if is_image {
                images.push(r);
            } else {
                others.push(r);
            }
        }
        if images.is_empty() && others.is_empty() {
            return;
        }
        let mut output = Map::new();
        if !images.is_empty() {
            output.insert("images".into(), Value::Array(images));
        }
        if !others.is_empty() {
            output.insert("files".into(), Value::Array(others));
        }
        let id = ids.first().cloned().unwrap_or_else(|| node.to_string());
        s.outputs.insert(id.clone(), Value::Object(output.clone()));
        s.meta.insert(id.clone(), json!({ "node_id": id, "display_node": id }));
        self.send("executed", json!({ "node": id, "display_node": id, "output": output, "prompt_id": self.prompt_id }));
    }

    /// Whether the run's `run_finished` event has been reported.
    pub fn saw_end(&self) -> bool {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).ended
    }

    /// The history entry of the finished run; true when it was interrupted.
    pub fn entry(&self, job: &Job) -> (HistoryEntry, bool) {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let completed = !s.failed && !s.interrupted;
        let status = RunStatus {
            status_str: if completed { "success" } else { "error" }.into(),
            completed,
            messages: s.messages.clone(),
        };
        (
            HistoryEntry { prompt: job.queue_item(), outputs: s.outputs.clone(), status, meta: s.meta.clone() },
            s.interrupted,
        )
    }
}
