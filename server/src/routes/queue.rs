//! `GET /queue`, `POST /queue` (clear, delete), `POST /interrupt` (one
//! prompt or all running ones), `GET /history[/{id}]`, `POST /history`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::{json_response, rejection};
use crate::prepare::Rejection;
use crate::state::AppState;

/// A JSON object body; an empty body is `{}`.
fn body_object(body: &Bytes) -> Result<serde_json::Map<String, Value>, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Default::default());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => {
            Err(rejection(Rejection::new(400, "invalid_request", "Invalid request", "the body must be a JSON object")))
        }
        Err(e) => {
            Err(rejection(Rejection::new(400, "invalid_request", "Invalid JSON", format!("the body is not JSON: {e}"))))
        }
    }
}

/// The ids of a `delete` list (ids as text or numbers).
fn ids(value: Option<&Value>) -> Result<Vec<String>, Response> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()),
        Some(_) => Err(rejection(Rejection::new(
            400,
            "invalid_request",
            "Invalid request",
            "`delete` must be a list of prompt ids",
        ))),
    }
}

/// `GET /queue`: `{queue_running, queue_pending}`.
pub async fn get_queue(State(state): State<AppState>) -> Response {
    let (running, pending) = state.queue.snapshot();
    json_response(StatusCode::OK, json!({ "queue_running": running, "queue_pending": pending }))
}

/// `POST /queue`: `{clear: true}` empties the queue, `{delete: [ids]}`
/// removes pending prompts.
pub async fn post_queue(State(state): State<AppState>, body: Bytes) -> Response {
    let obj = match body_object(&body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let delete = match ids(obj.get("delete")) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if obj.get("clear").and_then(Value::as_bool) == Some(true) {
        state.queue.clear();
    }
    if !delete.is_empty() {
        state.queue.delete(&delete);
    }
    json_response(StatusCode::OK, json!({}))
}

/// `POST /interrupt`: `{prompt_id}` stops that prompt only; no id stops
/// every running prompt.
pub async fn post_interrupt(State(state): State<AppState>, body: Bytes) -> Response {
    let obj = match body_object(&body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let id = match obj.get("prompt_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    let stopped = state.queue.interrupt(id.as_deref());
    json_response(StatusCode::OK, json!({ "interrupted": stopped }))
}

/// `GET /history?max_items=N&offset=K`.
pub async fn get_history(State(state): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let max_items = match q.get("max_items").map(|v| v.parse::<usize>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return rejection(Rejection::new(
                400,
                "invalid_request",
                "Invalid max_items",
                "`max_items` must be a number",
            ))
        }
    };
    let offset = match q.get("offset").map(|v| v.parse::<i64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return rejection(Rejection::new(400, "invalid_request", "Invalid offset", "`offset` must be a number"))
        }
    };
    json_response(StatusCode::OK, Value::Object(state.queue.history(max_items, offset)))
}

/// `GET /history/{prompt_id}`: `{id: entry}`, or `{}`.
pub async fn get_history_of(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    json_response(StatusCode::OK, Value::Object(state.queue.history_of(&id)))
}

/// `POST /history`: `{clear: true}` or `{delete: [ids]}`.
pub async fn post_history(State(state): State<AppState>, body: Bytes) -> Response {
    let obj = match body_object(&body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let delete = match ids(obj.get("delete")) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if obj.get("clear").and_then(Value::as_bool) == Some(true) {
        state.queue.forget(None);
    }
    if !delete.is_empty() {
        state.queue.forget(Some(&delete));
    }
    json_response(StatusCode::OK, json!({}))
}
