//! `GET /object_info[/{class}]`, `GET /system_stats`, `GET /embeddings`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use flow_engine::graph::DeviceChoice;
use flow_engine::models::{LibraryFolder, ModelLibrary};
use flow_engine::{OpSpec, ValueType};
use flow_nodes::comfy::classes::CLASSES;
use serde_json::{json, Map, Value};

use super::json_response;
use crate::state::AppState;

/// Every ComfyUI class flow runs, then flow's own ops (named `family.op`).
fn object_info(state: &AppState) -> Map<String, Value> {
    let mut out: Map<String, Value> = CLASSES.iter().map(|c| (c.name.to_string(), c.object_info())).collect();
    for op in state.engine.registry().ops() {
        let spec = op.spec();
        out.insert(spec.name.clone(), op_info(spec));
    }
    out
}

/// ComfyUI's type name for a flow type.
fn comfy_type(ty: ValueType) -> String {
    match ty {
        ValueType::Text => "STRING".into(),
        ValueType::Int => "INT".into(),
        ValueType::Float => "FLOAT".into(),
        ValueType::Bool => "BOOLEAN".into(),
        ValueType::Any => "*".into(),
        other => other.name().to_ascii_uppercase(),
    }
}

/// A flow op in `/object_info`'s shape.
fn op_info(spec: &OpSpec) -> Value {
    let (mut required, mut optional) = (Map::new(), Map::new());
    for p in &spec.inputs {
        let mut options = Map::new();
        if let Some(d) = &p.default {
            options.insert("default".into(), d.to_json());
        }
        options.insert("tooltip".into(), json!(p.doc));
        let ty = match p.choices {
            Some(choices) => json!(choices),
            None => json!(comfy_type(p.ty)),
        };
        let target = if p.is_required() { &mut required } else { &mut optional };
        target.insert(p.name.to_string(), json!([ty, options]));
    }
    let outputs: Vec<String> = spec.outputs.iter().map(|p| comfy_type(p.ty)).collect();
    let names: Vec<&str> = spec.outputs.iter().map(|p| p.name).collect();
    let family = spec.name.split('.').next().unwrap_or_default();
    json!({
        "input": { "required": required, "optional": optional },
        "input_order": { "required": spec.inputs.iter().filter(|p| p.is_required()).map(|p| p.name).collect::<Vec<_>>() },
        "output": outputs,
        "output_is_list": spec.outputs.iter().map(|_| false).collect::<Vec<_>>(),
        "output_name": names,
        "name": spec.name,
        "display_name": spec.name,
        "description": spec.doc,
        "python_module": "flow",
        "category": format!("flow/{family}"),
        "output_node": spec.output,
    })
}

/// `GET /object_info`.
pub async fn all(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, Value::Object(object_info(&state)))
}

/// `GET /object_info/{class}`: `{class: info}`, or `{}` when unknown.
pub async fn one(State(state): State<AppState>, Path(class): Path<String>) -> Response {
    let mut out = Map::new();
    if let Some(c) = CLASSES.iter().find(|c| c.name == class) {
        out.insert(class, c.object_info());
    } else if let Some(op) = state.engine.registry().get(&class) {
        out.insert(class, op_info(op.spec()));
    }
    json_response(StatusCode::OK, Value::Object(out))
}

/// Total and available memory in bytes (Linux; zeros elsewhere).
fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// `GET /system_stats`: the machine and the devices flow runs on.
pub async fn system_stats(State(state): State<AppState>) -> Response {
    let (total, free) = memory();
    let (name, kind, index) = match state.engine.resolve_device(DeviceChoice::Auto) {
        DeviceChoice::Cuda(n) => (format!("cuda:{n}"), "cuda", n),
        _ => ("cpu".to_string(), "cpu", 0),
    };
    json_response(
        StatusCode::OK,
        json!({
            "system": {
                "os": std::env::consts::OS,
                "ram_total": total,
                "ram_free": free,
                "comfyui_version": format!("flow {}", env!("CARGO_PKG_VERSION")),
                "python_version": "",
                "pytorch_version": "",
                "embedded_python": false,
                "argv": std::env::args().collect::<Vec<_>>(),
            },
            "devices": [{
                "name": name, "type": kind, "index": index,
                "vram_total": 0, "vram_free": 0, "torch_vram_total": 0, "torch_vram_free": 0,
            }],
        }),
    )
}

/// `GET /embeddings`: the names of the models folder's embeddings, without extension.
pub async fn embeddings(State(state): State<AppState>) -> Response {
    let names: Vec<String> = match &state.config.models_dir {
        Some(dir) => ModelLibrary::new(dir.clone())
            .entries(LibraryFolder::Embeddings)
            .into_iter()
            .map(|e| match e.name.rsplit_once('.') {
                Some((stem, _)) => stem.to_string(),
                None => e.name,
            })
            .collect(),
        None => Vec::new(),
    };
    json_response(StatusCode::OK, json!(names))
}
