//! `POST /v1/runs`, `GET /v1/runs`, `GET /v1/runs/{id}`,
//! `POST /v1/runs/{id}/cancel`. A run is a queue entry like a ComfyUI
//! prompt: one queue, one history, one persistence.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use flow_engine::diagnostics::Diagnostics;
use flow_engine::graph::{self, Override};
use flow_engine::Event;
use serde_json::{json, Map, Value as Json};

use super::types::*;
use super::{api_error, reply};
use crate::job::{number_json, HistoryEntry, Job};
use crate::prepare::{kind_of, prepare, Kind, Rejection};
use crate::queue::{Listed, Phase, Refused};
use crate::reporter::timestamp;
use crate::runlog::{graph_info, node_states, Record};
use crate::state::AppState;

/// Where a `/v1` run keeps its label and submission time in the job's `extra_data`.
const META: &str = "flow";

/// Submit a graph: YAML, a flow graph in JSON, or a ComfyUI API workflow.
#[utoipa::path(post, path = "/v1/runs", request_body = SubmitRequest, tag = "runs",
    responses((status = 201, body = Submitted), (status = 400, body = InvalidGraph),
        (status = 403, body = InvalidGraph), (status = 503, body = ApiError)))]
pub async fn submit(State(state): State<AppState>, body: Bytes) -> Response {
    let request: SubmitRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return invalid("invalid_request", format!("bad request body: {e}")),
    };
    let prompt = match serde_json::from_str::<Json>(&request.graph) {
        Ok(workflow) if workflow.is_object() && kind_of(&workflow) == Kind::Comfy => workflow,
        _ => Json::String(request.graph.clone()),
    };
    if kind_of(&prompt) == Kind::Comfy && !request.params.is_empty() {
        let message = "`params` apply to flow graphs, not to ComfyUI workflows".to_string();
        return invalid("invalid_request", message);
    }
    let mut extra_data = Map::new();
    extra_data.insert(
        META.into(),
        json!({ "name": request.name, "submitted_at": timestamp() }),
    );
    let mut job = Job {
        number: state.queue.next_number(false),
        prompt_id: uuid::Uuid::new_v4().to_string(),
        prompt,
        extra_data,
        client_id: None,
        params: request.params,
        outputs_to_execute: Vec::new(),
    };
    let checked = {
        let (state, job) = (state.clone(), job.clone());
        tokio::task::spawn_blocking(move || validate(&state, &job)).await
    };
    match checked {
        Ok(Ok(outputs)) => job.outputs_to_execute = outputs,
        Ok(Err(response)) => return response,
        Err(_) => {
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "validation stopped unexpectedly",
            )
        }
    }
    let (run_id, number) = (job.prompt_id.clone(), job.number);
    match state.queue.submit(job) {
        Ok(Ok(())) => reply(
            StatusCode::CREATED,
            &Submitted {
                run_id,
                number: number as i64,
            },
        ),
        Ok(Err(Refused::DuplicateId)) => api_error(StatusCode::CONFLICT, "duplicate_id", "a run with this id exists"),
        Ok(Err(Refused::Stopping)) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_stopping",
            "the server is shutting down",
        ),
        Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", &format!("{e:#}")),
    }
}

/// Checks a job as a run would prepare it; returns its output nodes, or the 4xx answer.
fn validate(state: &AppState, job: &Job) -> Result<Vec<String>, Response> {
    if let Json::String(text) = &job.prompt {
        let mut overrides = Vec::new();
        let mut diagnostics = Diagnostics::new("graph.yaml", text.as_str());
        for (k, v) in &job.params {
            match Override::parse(&format!("{k}={v}")) {
                Ok(o) => overrides.push(o),
                Err(e) => diagnostics.push(flow_engine::diagnostics::Diagnostic::general(format!("params: {e}"))),
            }
        }
        if diagnostics.is_empty() {
            let registry = state.engine.registry();
            if let Err(d) = graph::from_bytes(
                "graph.yaml",
                state.workspace.root(),
                text.as_bytes(),
                &overrides,
                registry,
            ) {
                diagnostics = *d;
            }
        }
        if !diagnostics.is_empty() {
            return Err(invalid_graph(&diagnostics));
        }
    }
    match prepare(job, &state.workspace, state.engine.registry(), false) {
        Ok(p) => Ok(p.outputs),
        Err(r) => Err(rejected(r, kind_of(&job.prompt) == Kind::Comfy)),
    }
}

/// 400 with every located error of a flow graph.
fn invalid_graph(d: &Diagnostics) -> Response {
    let diagnostics = d
        .items
        .iter()
        .map(|item| {
            let one = Diagnostics {
                file: d.file.clone(),
                source: d.source.clone(),
                items: vec![item.clone()],
            };
            let rendered = one.render();
            // Without the "1 error in FILE" line the whole rendering ends with.
            let rendered = rendered
                .lines()
                .take(rendered.lines().count().saturating_sub(1))
                .collect::<Vec<_>>();
            DiagnosticBody {
                message: item.message.clone(),
                line: item.loc.map(|l| l.line),
                col: item.loc.map(|l| l.col),
                rendered: rendered.join("\n") + "\n",
            }
        })
        .collect();
    let message = d.items.first().map(|i| i.message.clone()).unwrap_or_default();
    let body = InvalidGraph {
        error: "invalid_graph".into(),
        message,
        diagnostics,
        rendered: d.render(),
        comfy_errors: None,
    };
    reply(StatusCode::BAD_REQUEST, &body)
}

/// A prompt the preparation refused: ComfyUI's errors, or a path outside the folders.
fn rejected(r: Rejection, comfy: bool) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    let error = if r.status == 403 {
        "forbidden_path"
    } else {
        "invalid_graph"
    };
    let message = r.message();
    let body = InvalidGraph {
        error: error.into(),
        message: message.clone(),
        diagnostics: Vec::new(),
        rendered: rendered_rejection(&r.body, &message),
        comfy_errors: comfy.then_some(r.body),
    };
    reply(status, &body)
}

/// A ComfyUI error answer as text: the prompt's error, then each node's.
fn rendered_rejection(body: &Json, message: &str) -> String {
    let mut out = format!("{}\n", body["error"]["details"].as_str().unwrap_or(message));
    for (id, node) in body["node_errors"].as_object().into_iter().flatten() {
        for e in node["errors"].as_array().into_iter().flatten() {
            let class = node["class_type"].as_str().unwrap_or_default();
            let (m, d) = (
                e["message"].as_str().unwrap_or_default(),
                e["details"].as_str().unwrap_or_default(),
            );
            out.push_str(&format!("node {id} ({class}): {m}: {d}\n"));
        }
    }
    out
}

/// 400 without located errors.
fn invalid(error: &str, message: String) -> Response {
    let rendered = format!("{message}\n");
    let body = InvalidGraph {
        error: error.into(),
        message,
        diagnostics: Vec::new(),
        rendered,
        comfy_errors: None,
    };
    reply(StatusCode::BAD_REQUEST, &body)
}

/// The state word of a run. A running run whose log holds `run_finished`
/// (its history entry is being written) already shows how it ended.
fn state_of(phase: &Phase, record: Option<&Record>) -> &'static str {
    match phase {
        Phase::Queued => "queued",
        Phase::Running => record.and_then(ended_state).unwrap_or("running"),
        Phase::Finished(e) => finished_state(e),
    }
}

/// How a run ended according to its `run_finished` event.
fn ended_state(record: &Record) -> Option<&'static str> {
    if !record.finished {
        return None;
    }
    let last = record
        .events
        .iter()
        .rev()
        .find_map(|l| match Event::from_json_line(l) {
            Ok(Event::RunFinished { ok, interrupted, .. }) => Some((ok, interrupted)),
            _ => None,
        })?;
    Some(match last {
        (_, true) => "interrupted",
        (true, false) => "succeeded",
        (false, false) => "failed",
    })
}

fn finished_state(e: &HistoryEntry) -> &'static str {
    if e.status.completed {
        "succeeded"
    } else if e.status.messages.iter().any(|(m, _)| m == "execution_interrupted") {
        "interrupted"
    } else {
        "failed"
    }
}

/// A run's queue item fields: number and `extra_data`.
fn item_of(l: &Listed) -> (Json, Json) {
    match (&l.job, &l.phase) {
        (Some(j), _) => (number_json(j.number), Json::Object(j.extra_data.clone())),
        (None, Phase::Finished(e)) => (e.prompt[0].clone(), e.prompt[3].clone()),
        _ => (Json::Null, Json::Null),
    }
}

fn name_of(extra: &Json) -> Option<String> {
    extra[META]["name"].as_str().map(String::from)
}

/// Timestamp of the first and last status messages of a finished run.
fn times_of(e: &HistoryEntry) -> (Option<u64>, Option<u64>) {
    let at = |m: Option<&(String, Json)>| m.and_then(|(_, d)| d["timestamp"].as_u64());
    (at(e.status.messages.first()), at(e.status.messages.last()))
}

/// Every run, newest first.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", responses((status = 200, body = RunList)))]
pub async fn list(State(state): State<AppState>) -> Response {
    let runs = state
        .queue
        .list()
        .into_iter()
        .map(|l| {
            let (number, extra) = item_of(&l);
            let live = match &l.phase {
                Phase::Running => state.runs.get_live(&l.id).map(|g| g.record()),
                _ => None,
            };
            let (started_at, finished_at) = match (&l.phase, &live) {
                (Phase::Finished(e), _) => times_of(e),
                (_, Some(r)) => (r.started_at, r.finished_at),
                _ => (None, None),
            };
            RunSummary {
                state: state_of(&l.phase, live.as_ref()).into(),
                number,
                name: name_of(&extra),
                submitted_at: extra[META]["submitted_at"].as_u64(),
                started_at,
                finished_at,
                run_id: l.id,
            }
        })
        .collect();
    reply(StatusCode::OK, &RunList { runs })
}

/// A run: its graph, each node's state, its outputs.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = String, Path, description = "run id")),
    responses((status = 200, body = RunDetail), (status = 404, body = ApiError)))]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(listed) = state.queue.find(&id) else {
        return not_found(&id);
    };
    let mut record = state.runs.record(&id).unwrap_or_default();
    if record.graph.is_empty() && matches!(listed.phase, Phase::Queued) {
        if let Some(job) = listed.job.clone() {
            let s = state.clone();
            let graph = tokio::task::spawn_blocking(move || {
                prepare(&job, &s.workspace, s.engine.registry(), false)
                    .ok()
                    .map(|p| graph_info(&p.graph))
            })
            .await;
            record.graph = graph.ok().flatten().unwrap_or_default();
        }
    }
    let (_, extra) = item_of(&listed);
    let nodes = node_states(&record.graph, &record.events);
    let error = record.error.clone().or_else(|| first_failure(&nodes));
    let state_word = state_of(&listed.phase, Some(&record));
    let Record { graph, outputs, .. } = record;
    let body = RunDetail {
        run_id: id,
        name: name_of(&extra),
        state: state_word.into(),
        graph: GraphView { nodes: graph },
        nodes,
        outputs,
        error,
    };
    reply(StatusCode::OK, &body)
}

fn first_failure(nodes: &BTreeMap<String, crate::runlog::NodeState>) -> Option<String> {
    nodes
        .iter()
        .find_map(|(id, s)| s.error.as_ref().map(|e| format!("node `{id}` failed: {e}")))
}

/// Cancel a run: a queued one leaves the queue, a running one stops at its
/// next step; other runs are untouched.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path, description = "run id")),
    responses((status = 202, body = Cancelled), (status = 404, body = ApiError)))]
pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(listed) = state.queue.find(&id) else {
        return not_found(&id);
    };
    let run_state = match &listed.phase {
        Phase::Queued => {
            state.queue.delete(std::slice::from_ref(&id));
            // Subscribers waiting for it hear that it ended.
            if let Some(log) = state.runs.get_live(&id) {
                log.fail("cancelled before it started", true);
            }
            state.runs.release(&id);
            "interrupted"
        }
        Phase::Running => {
            state.queue.interrupt(Some(&id));
            "interrupted"
        }
        Phase::Finished(e) => finished_state(e),
    };
    reply(
        StatusCode::ACCEPTED,
        &Cancelled {
            run_id: id,
            state: run_state.into(),
        },
    )
}

/// 404 for an unknown run.
pub fn not_found(id: &str) -> Response {
    api_error(StatusCode::NOT_FOUND, "not_found", &format!("no run `{id}`"))
}
