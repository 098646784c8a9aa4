//! The provenance text chunks written into saved PNGs.

use flow_engine::Provenance;
use serde_json::Value as Json;

use super::graph_yaml::graph_yaml;
use super::sd_facts::sd_parameters;

/// flow's version, recorded in every saved image.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Params shown on the first lines of the `parameters` summary, not among the
/// `Key: value` fields.
const PROMPT_KEYS: [&str; 1] = ["prompt"];
const NEGATIVE_KEYS: [&str; 2] = ["negative", "negative_prompt"];

/// Graphs whose YAML is longer than this are not stored in `flow:graph`
/// (a generated graph of thousands of nodes would dwarf the picture).
pub(crate) const MAX_GRAPH_CHUNK: usize = 256 * 1024;

/// The (keyword, text) pairs to store in a PNG of `width` × `height` pixels
/// saved by node `node` of the run:
/// - `flow:graph_hash`, `flow:graph_name`, `flow:params` (JSON), `flow:version`;
/// - `flow:graph`: the graph as YAML with the run's values (when the run has
///   a graph and its YAML is at most [`MAX_GRAPH_CHUNK`] bytes);
/// - `parameters`, in the style of the AUTOMATIC1111 web UI that image viewers
///   and other tools know how to show: from the `sd.sample` and
///   `sd.encode_prompt` nodes upstream of the image when there are any
///   (see [`sd_parameters`]), else a summary of the params;
/// - `prompt`: `comfy_prompt`, the ComfyUI API-format workflow the graph was
///   translated from, as ComfyUI stores it.
pub(crate) fn text_chunks(
    prov: &Provenance,
    node: &str,
    width: usize,
    height: usize,
    comfy_prompt: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut chunks = vec![
        ("flow:graph_hash", prov.graph_hash.clone()),
        ("flow:graph_name", prov.graph_name.clone()),
        ("flow:params", params_object(prov).to_string()),
        ("flow:version", VERSION.to_string()),
    ];
    let sd = prov.graph.as_ref().and_then(|g| sd_parameters(g, node, width, height));
    let parameters = match sd {
        Some(mut p) => {
            if !prov.graph_name.is_empty() {
                p.fields.push(("Graph".into(), prov.graph_name.clone()));
            }
            if !prov.graph_hash.is_empty() {
                p.fields.push(("Graph hash".into(), prov.graph_hash.clone()));
            }
            p.fields.push(("Version".into(), format!("flow {VERSION}")));
            p.to_text()
        }
        None => parameters_summary(prov, width, height),
    };
    chunks.push(("parameters", parameters));
    if let Some(yaml) = prov.graph.as_ref().map(|g| graph_yaml(g)).filter(|y| y.len() <= MAX_GRAPH_CHUNK) {
        chunks.push(("flow:graph", yaml));
    }
    if let Some(prompt) = comfy_prompt {
        chunks.push(("prompt", prompt.to_string()));
    }
    chunks
}

/// The params as a JSON object (`{}` when the run has none).
fn params_object(prov: &Provenance) -> Json {
    match &prov.params {
        Json::Null => Json::Object(Default::default()),
        other => other.clone(),
    }
}

/// The summary: the prompt, `Negative prompt: ...`, then one line of
/// `Key: value` fields (the other params, the size, the graph, the version).
fn parameters_summary(prov: &Provenance, width: usize, height: usize) -> String {
    let params = params_object(prov);
    let empty = serde_json::Map::new();
    let params = params.as_object().unwrap_or(&empty);
    let first = |keys: &[&str]| keys.iter().find_map(|k| params.get(*k)).map(plain);

    let mut lines = Vec::new();
    if let Some(prompt) = first(&PROMPT_KEYS) {
        lines.push(prompt);
    }
    if let Some(negative) = first(&NEGATIVE_KEYS) {
        lines.push(format!("Negative prompt: {negative}"));
    }
    let mut fields: Vec<String> = params
        .iter()
        .filter(|(k, _)| !PROMPT_KEYS.contains(&k.as_str()) && !NEGATIVE_KEYS.contains(&k.as_str()))
        .map(|(k, v)| format!("{}: {}", label(k), field_value(v)))
        .collect();
    fields.push(format!("Size: {width}x{height}"));
    if !prov.graph_name.is_empty() {
        fields.push(format!(
            "Graph: {}",
            field_value(&Json::String(prov.graph_name.clone()))
        ));
    }
    if !prov.graph_hash.is_empty() {
        fields.push(format!("Graph hash: {}", prov.graph_hash));
    }
    fields.push(format!("Version: flow {VERSION}"));
    lines.push(fields.join(", "));
    lines.join("\n")
}

/// `cfg_scale` → `Cfg scale`.
fn label(key: &str) -> String {
    let spaced = key.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => spaced,
    }
}

/// Text as is, anything else as JSON.
fn plain(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A field value; quoted as JSON when it would break the `Key: value, ...`
/// line apart.
fn field_value(value: &Json) -> String {
    let text = plain(value);
    if text.contains([',', ':', '\n', '"']) {
        Json::String(text).to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_like_a1111() {
        let prov = Provenance {
            graph_hash: "abc123".into(),
            graph_name: "txt2img".into(),
            params: serde_json::json!({
                "prompt": "a lighthouse, at dusk",
                "negative": "blurry",
                "seed": 42,
                "cfg_scale": 7.5,
                "style": "oil: thick"
            }),
            ..Provenance::default()
        };
        assert_eq!(
            parameters_summary(&prov, 512, 256),
            format!(
                "a lighthouse, at dusk\nNegative prompt: blurry\nCfg scale: 7.5, Seed: 42, \
                 Style: \"oil: thick\", Size: 512x256, Graph: txt2img, Graph hash: abc123, Version: flow {VERSION}"
            )
        );
    }

    #[test]
    fn empty_provenance_still_names_size_and_version() {
        let chunks = text_chunks(&Provenance::default(), "save", 4, 3, None);
        let get = |k: &str| chunks.iter().find(|(key, _)| *key == k).unwrap().1.clone();
        assert_eq!(get("flow:params"), "{}");
        assert_eq!(
            get("parameters"),
            format!("Size: 4x3, Version: flow {VERSION}")
        );
    }
}
