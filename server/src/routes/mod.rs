//! ComfyUI's HTTP routes, each also under `/api/`, behind the token check
//! and the body size limit.

mod files;
mod info;
mod prompt;
mod queue;
mod v1;
mod ws;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

use crate::prepare::Rejection;
use crate::state::AppState;

/// A JSON answer.
pub fn json_response(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// A plain-text answer.
pub fn plain(status: StatusCode, text: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{text}\n")).into_response()
}

/// ComfyUI's error answer for a prompt that cannot be queued.
pub fn rejection(r: Rejection) -> Response {
    json_response(StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST), r.body)
}

fn comfy_routes(state: &AppState) -> Router<AppState> {
    let upload_limit = state.config.max_upload.saturating_add(1 << 20);
    Router::new()
        .route("/prompt", get(prompt::get_prompt).post(prompt::post_prompt))
        .route("/queue", get(queue::get_queue).post(queue::post_queue))
        .route("/interrupt", post(queue::post_interrupt))
        .route("/history", get(queue::get_history).post(queue::post_history))
        .route("/history/{prompt_id}", get(queue::get_history_of))
        .route("/view", get(files::view))
        .route("/upload/image", post(files::upload_image).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/object_info", get(info::all))
        .route("/object_info/{class}", get(info::one))
        .route("/system_stats", get(info::system_stats))
        .route("/embeddings", get(info::embeddings))
        .route("/ws", get(ws::ws))
}

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    let routes = comfy_routes(&state);
    Router::new()
        .merge(routes.clone())
        .nest("/api", routes)
        .merge(v1::routes())
        .layer(DefaultBodyLimit::max(state.config.max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::require_token))
        .merge(crate::web::routes())
        .with_state(state)
}
