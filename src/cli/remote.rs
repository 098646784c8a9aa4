//! `flow run --server URL`: the graph is submitted to a running `flow serve`
//! (`POST /v1/runs`), its events are read back as Server-Sent Events and
//! shown with the same renderers as a local run; Ctrl-C cancels the remote
//! run. Paths in the graph are the server's (its `input/` and `output/`
//! folders).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use flow_engine::events::NodeStatus;
use flow_engine::run::{NodeReport, RunReport};
use flow_engine::Event;
use serde_json::{json, Map, Value};

use super::common::on_interrupt;
use super::render::human_sink;
use super::run::{exit_code, print_summary};
use super::{EXIT_FAILED, EXIT_INVALID};
use crate::GraphArgs;

/// Where to send the run.
pub struct Remote {
    /// The server's base URL, e.g. `http://127.0.0.1:8188`.
    pub url: String,
    /// Its token, if it needs one.
    pub token: Option<String>,
}

impl Remote {
    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .build();
        let request = agent.request(method, &self.endpoint(path));
        match &self.token {
            Some(t) => request.set("Authorization", &format!("Bearer {t}")),
            None => request,
        }
    }
}

/// `--set K=V` as a JSON param: numbers, booleans and JSON values as
/// such, anything else as text.
pub fn param_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// Runs the graph on the server; returns the exit code.
pub fn run(args: &GraphArgs, remote: &Remote, json: bool) -> u8 {
    let text = match std::fs::read_to_string(&args.graph) {
        Ok(t) => t,
        Err(e) => {
            errln!("error: cannot read {}: {e}", args.graph.display());
            return EXIT_INVALID;
        }
    };
    let mut params = Map::new();
    for s in &args.set {
        let Some((k, v)) = s.split_once('=') else {
            errln!("error: --set {s}: expected K=V");
            return EXIT_INVALID;
        };
        params.insert(k.trim().to_string(), param_value(v));
    }
    let name = args.graph.file_stem().map(|s| s.to_string_lossy().into_owned());
    let body = json!({ "graph": text, "params": params, "name": name });
    let run_id = match submit(remote, &body) {
        Ok(id) => id,
        Err(code) => return code,
    };
    let cancel = Remote {
        url: remote.url.clone(),
        token: remote.token.clone(),
    };
    let id = run_id.clone();
    on_interrupt(move || {
        errln!("\ninterrupted: cancelling the run on the server (Ctrl-C again to quit now)");
        let _ = cancel.request("POST", &format!("/v1/runs/{id}/cancel")).call();
    });
    let events = match follow(remote, &run_id, json) {
        Ok(events) => events,
        Err(message) => {
            errln!("error: {message}");
            return EXIT_FAILED;
        }
    };
    let Some(report) = report_of(&events, remote, &run_id) else {
        errln!("error: the server's event stream ended before the run finished");
        return EXIT_FAILED;
    };
    if !json {
        print_summary(&report);
    }
    exit_code(&report)
}

/// Queues the run; its id, or the exit code (2 for an invalid graph).
fn submit(remote: &Remote, body: &Value) -> Result<String, u8> {
    match remote
        .request("POST", "/v1/runs")
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
    {
        Ok(answer) => {
            let answer: Value = answer.into_json().map_err(|e| {
                errln!("error: bad answer from the server: {e}");
                EXIT_FAILED
            })?;
            answer["run_id"].as_str().map(String::from).ok_or_else(|| {
                errln!("error: the server gave no run id: {answer}");
                EXIT_FAILED
            })
        }
        Err(ureq::Error::Status(status, answer)) => {
            let answer: Value = answer.into_json().unwrap_or_default();
            let shown = answer["rendered"]
                .as_str()
                .or(answer["message"].as_str())
                .unwrap_or("(no details)");
            err!(
                "{}",
                if shown.ends_with('\n') {
                    shown.to_string()
                } else {
                    format!("{shown}\n")
                }
            );
            if status == 400 || status == 403 {
                Err(EXIT_INVALID)
            } else {
                errln!("error: the server answered {status}");
                Err(EXIT_FAILED)
            }
        }
        Err(e) => {
            errln!("error: cannot reach {}: {e}", remote.url);
            Err(EXIT_FAILED)
        }
    }
}

/// Reads the run's event stream to its end, showing each event; returns them.
fn follow(remote: &Remote, run_id: &str, json: bool) -> Result<Vec<Event>, String> {
    let answer = remote
        .request("GET", &format!("/v1/runs/{run_id}/events"))
        .call()
        .map_err(|e| format!("cannot follow run {run_id}: {e}"))?;
    let sink = if json { None } else { Some(human_sink()) };
    let mut events = Vec::new();
    for line in BufReader::new(answer.into_reader()).lines() {
        let line = line.map_err(|e| format!("the event stream of run {run_id} broke: {e}"))?;
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.strip_prefix(' ').unwrap_or(data);
        if json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{data}");
            let _ = out.flush();
        }
        let event = Event::from_json_line(data).map_err(|e| format!("bad event from the server: {e}: {data}"))?;
        if let Some(sink) = &sink {
            sink(event.clone());
        }
        let last = matches!(event, Event::RunFinished { .. });
        events.push(event);
        if last {
            break;
        }
    }
    Ok(events)
}

/// The run's report, rebuilt from its events (files as the server names
/// them, e.g. `output/x.png`); `None` without `run_finished`.
fn report_of(events: &[Event], remote: &Remote, run_id: &str) -> Option<RunReport> {
    let detail = run_detail(remote, run_id);
    let outputs = detail["outputs"].as_array().into_iter().flatten();
    let files = outputs.filter_map(|o| Some((o["node"].as_str()?.to_string(), o["path"].as_str()?.to_string())));
    // In the graph's order, as a local run lists them.
    let order = detail["graph"]["nodes"].as_array().into_iter().flatten().filter_map(|n| n["id"].as_str());
    report_from(events, files.collect(), &order.map(String::from).collect::<Vec<_>>())
}

/// A run's report from its events, the files it wrote (`(node, path)`) and
/// the order of its nodes; `None` without `run_finished`.
pub fn report_from(events: &[Event], files: Vec<(String, String)>, order: &[String]) -> Option<RunReport> {
    let mut nodes: Vec<NodeReport> = Vec::new();
    let mut elapsed = None;
    let mut interrupted = false;
    let node = |nodes: &mut Vec<NodeReport>, id: &str, op: &str| -> usize {
        if let Some(i) = nodes.iter().position(|n| n.id == id) {
            return i;
        }
        nodes.push(NodeReport {
            id: id.to_string(),
            op: op.to_string(),
            status: NodeStatus::Skipped,
            reason: String::new(),
            error: None,
            ms: 0.0,
            files: Vec::new(),
        });
        nodes.len() - 1
    };
    for event in events {
        match event {
            Event::NodeCached { node: id, op, .. } => {
                let i = node(&mut nodes, id, op);
                nodes[i].status = NodeStatus::Cached;
                nodes[i].reason = "cached".into();
            }
            Event::NodeStarted {
                node: id, op, reason, ..
            } => {
                let i = node(&mut nodes, id, op);
                nodes[i].reason = reason.clone();
            }
            Event::NodeFinished {
                node: id,
                op,
                status,
                ms,
                ..
            } => {
                let i = node(&mut nodes, id, op);
                nodes[i].status = status.clone();
                nodes[i].ms = *ms;
            }
            Event::NodeFailed {
                node: id,
                op,
                error,
                ms,
                ..
            } => {
                let i = node(&mut nodes, id, op);
                (nodes[i].status, nodes[i].error, nodes[i].ms) = (NodeStatus::Failed, Some(error.clone()), *ms);
            }
            Event::NodeSkipped {
                node: id, op, cause, ..
            } => {
                let i = node(&mut nodes, id, op);
                (nodes[i].status, nodes[i].reason) = (NodeStatus::Skipped, cause.clone());
            }
            Event::RunFinished {
                interrupted: stopped,
                ms,
                ..
            } => {
                interrupted = *stopped;
                elapsed = Some(Duration::from_secs_f64(ms / 1e3));
            }
            _ => {}
        }
    }
    let elapsed = elapsed?;
    for (node_id, path) in files {
        if let Some(n) = nodes.iter_mut().find(|n| n.id == node_id) {
            n.files.push(PathBuf::from(path));
        }
    }
    nodes.sort_by_key(|n| order.iter().position(|id| *id == n.id).unwrap_or(usize::MAX));
    Some(RunReport::new(nodes, Vec::new(), interrupted, elapsed))
}

/// `GET /v1/runs/{id}` (null when it cannot be read: the summary then
/// lists no files).
fn run_detail(remote: &Remote, run_id: &str) -> Value {
    match remote.request("GET", &format!("/v1/runs/{run_id}")).call() {
        Ok(answer) => answer.into_json().unwrap_or_default(),
        Err(_) => Value::Null,
    }
}
