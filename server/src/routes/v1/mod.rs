//! The native API under `/v1/`: runs (submit a graph with params, list,
//! state per node, Server-Sent Events that are exactly `flow run --json`'s
//! events, outputs, cancel), ops, and the OpenAPI document.

mod events;
mod openapi;
mod ops;
mod runs;
pub mod types;

use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;

use super::json_response;
use crate::state::AppState;
use types::ApiError;

/// A JSON answer from a body type.
fn reply(status: StatusCode, body: &impl Serialize) -> Response {
    json_response(status, serde_json::to_value(body).unwrap_or_default())
}

/// An error answer.
fn api_error(status: StatusCode, error: &str, message: &str) -> Response {
    reply(
        status,
        &ApiError {
            error: error.into(),
            message: message.into(),
        },
    )
}

/// The `/v1` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/runs", get(runs::list).post(runs::submit))
        .route("/v1/runs/{id}", get(runs::get))
        .route("/v1/runs/{id}/events", get(events::events))
        .route("/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/v1/ops", get(ops::list))
        .route("/v1/ops/{name}", get(ops::one))
        .route("/v1/openapi.json", get(openapi::document))
}
