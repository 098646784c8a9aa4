//! `GET /v1/ops` and `GET /v1/ops/{name}`: the ops graphs can use.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use flow_engine::{OpSpec, PortSpec};

use super::types::{ApiError, OpList, OpView, PortView};
use super::{api_error, reply};
use crate::state::AppState;

fn port(p: &PortSpec) -> PortView {
    PortView {
        name: p.name.to_string(),
        ty: p.ty.name().to_string(),
        default: p.default.as_ref().map(|d| d.to_json()),
        optional: p.optional,
        choices: p.choices.map(|c| c.iter().map(|s| s.to_string()).collect()),
        doc: p.doc.to_string(),
    }
}

fn op(spec: &OpSpec) -> OpView {
    OpView {
        name: spec.name.clone(),
        version: spec.version,
        doc: spec.doc.clone(),
        inputs: spec.inputs.iter().map(port).collect(),
        outputs: spec.outputs.iter().map(port).collect(),
        output_node: spec.output,
    }
}

/// Every op, by name.
#[utoipa::path(get, path = "/v1/ops", tag = "ops", responses((status = 200, body = OpList)))]
pub async fn list(State(state): State<AppState>) -> Response {
    let mut ops: Vec<OpView> = state.engine.registry().ops().map(|o| op(o.spec())).collect();
    ops.sort_by(|a, b| a.name.cmp(&b.name));
    reply(StatusCode::OK, &OpList { ops })
}

/// One op.
#[utoipa::path(get, path = "/v1/ops/{name}", tag = "ops", params(("name" = String, Path, description = "op name")),
    responses((status = 200, body = OpView), (status = 404, body = ApiError)))]
pub async fn one(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.engine.registry().get(&name) {
        Some(o) => reply(StatusCode::OK, &op(o.spec())),
        None => api_error(StatusCode::NOT_FOUND, "not_found", &format!("no op `{name}`")),
    }
}
