//! `POST /prompt` (queue a prompt) and `GET /prompt` (what is left).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{json_response, rejection};
use crate::job::{number_json, Job};
use crate::prepare::{prepare, Rejection};
use crate::queue::Refused;
use crate::state::AppState;

/// Longest client-chosen prompt id.
const MAX_ID: usize = 128;

/// `GET /prompt`: `{exec_info: {queue_remaining}}`.
pub async fn get_prompt(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, json!({ "exec_info": { "queue_remaining": state.queue.remaining() } }))
}

/// `POST /prompt`. The body is read as bytes whatever its Content-Type.
pub async fn post_prompt(State(state): State<AppState>, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return rejection(Rejection::new(
                400,
                "invalid_prompt",
                "Invalid JSON",
                format!("the body is not JSON: {e}"),
            ))
        }
    };
    let mut job = match job_from(&state, &request) {
        Ok(job) => job,
        Err(r) => return rejection(r),
    };
    let checked = {
        let state = state.clone();
        let job = job.clone();
        tokio::task::spawn_blocking(move || {
            prepare(&job, &state.workspace, state.engine.registry(), false).map(|p| p.outputs)
        })
        .await
    };
    match checked {
        Ok(Ok(outputs)) => job.outputs_to_execute = outputs,
        Ok(Err(r)) => return rejection(r),
        Err(_) => {
            return rejection(Rejection::new(
                500,
                "internal_error",
                "Internal error",
                "validation stopped unexpectedly",
            ))
        }
    }
    let (prompt_id, number) = (job.prompt_id.clone(), job.number);
    match state.queue.submit(job) {
        Ok(Ok(())) => json_response(
            StatusCode::OK,
            json!({ "prompt_id": prompt_id, "number": number_json(number), "node_errors": {} }),
        ),
        Ok(Err(Refused::DuplicateId)) => rejection(Rejection::new(
            400,
            "duplicate_prompt_id",
            "Duplicate prompt id",
            format!("a prompt with id `{prompt_id}` is already queued, running or in the history"),
        )),
        Ok(Err(Refused::Stopping)) => {
            rejection(Rejection::new(503, "server_stopping", "Server stopping", "the server is shutting down"))
        }
        Err(e) => rejection(Rejection::new(500, "internal_error", "Cannot persist the prompt", format!("{e:#}"))),
    }
}

/// The job a request describes, or why it is invalid.
fn job_from(state: &AppState, request: &Value) -> Result<Job, Rejection> {
    let Some(obj) = request.as_object() else {
        return Err(Rejection::new(
            400,
            "invalid_prompt",
            "Invalid prompt",
            "the body must be a JSON object with `prompt`",
        ));
    };
    let Some(prompt) = obj.get("prompt").filter(|p| !p.is_null()) else {
        return Err(Rejection::new(400, "no_prompt", "No prompt provided", "No prompt provided"));
    };
    if !prompt.is_object() && !prompt.is_string() {
        return Err(Rejection::new(
            400,
            "invalid_prompt",
            "Invalid prompt",
            "`prompt` must be a ComfyUI API-format workflow (an object) or a flow graph (YAML or JSON text, or an object with `flow: 1`)",
        ));
    }
    let prompt_id = match obj.get("prompt_id") {
        None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(bad_id("it must be text")),
    };
    if prompt_id.is_empty() || prompt_id.len() > MAX_ID {
        return Err(bad_id("it must be 1 to 128 characters"));
    }
    if prompt_id.starts_with('.') || !prompt_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        return Err(bad_id("use letters, digits, `-`, `_`, `.` and `:`, not starting with `.`"));
    }
    let mut extra_data = match obj.get("extra_data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(Rejection::new(400, "invalid_prompt", "Invalid extra_data", "`extra_data` must be an object"))
        }
    };
    let client_id = match obj.get("client_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Rejection::new(400, "invalid_prompt", "Invalid client_id", "`client_id` must be text")),
    };
    if let Some(c) = &client_id {
        extra_data.insert("client_id".into(), Value::String(c.clone()));
    }
    let params = match obj.get("params") {
        None | Some(Value::Null) => Default::default(),
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(_) => return Err(Rejection::new(400, "invalid_prompt", "Invalid params", "`params` must be an object")),
    };
    let front = obj.get("front").is_some_and(|f| f.as_bool() == Some(true));
    let number = match obj.get("number").and_then(Value::as_f64) {
        Some(n) if n.is_finite() => n,
        _ => state.queue.next_number(front),
    };
    Ok(Job { number, prompt_id, prompt: prompt.clone(), extra_data, client_id, params, outputs_to_execute: Vec::new() })
}

fn bad_id(why: &str) -> Rejection {
    Rejection::new(400, "invalid_prompt", "Invalid prompt_id", format!("`prompt_id`: {why}"))
}
