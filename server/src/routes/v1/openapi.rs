//! `GET /v1/openapi.json`: the OpenAPI document of the native API, derived
//! from the handlers' annotations and the body types.

use axum::http::StatusCode;
use axum::response::Response;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::types::*;
use super::{events, ops, runs};
use crate::runlog::{NodeInfo, NodeState, Progress, RunOutput};

/// The token (when the server has one) as a bearer header or `?token=`.
struct Token;

impl Modify for Token {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        components.add_security_scheme("token", SecurityScheme::Http(bearer));
    }
}

/// The native API.
#[derive(OpenApi)]
#[openapi(
    info(title = "flow", description = "flow's native API: runs (submit, state, events, cancel) and ops."),
    paths(runs::submit, runs::list, runs::get, runs::cancel, events::events, ops::list, ops::one, document),
    components(schemas(
        SubmitRequest, Submitted, InvalidGraph, DiagnosticBody, ApiError, RunSummary, RunList, RunDetail,
        GraphView, Cancelled, OpList, OpView, PortView, NodeInfo, NodeState, Progress, RunOutput
    )),
    modifiers(&Token),
    security(("token" = [])),
    tags((name = "runs", description = "Runs of graphs"), (name = "ops", description = "The ops graphs use"))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "ops",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn document() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(text) => super::super::json_response(StatusCode::OK, serde_json::from_str(&text).unwrap_or_default()),
        Err(e) => super::api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", &e.to_string()),
    }
}
