//! The provenance text chunks written into saved PNGs.

use flow_engine::Provenance;
use serde_json::Value as Json;

/// flow's version, recorded in every saved image.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Params shown on the first lines of the `parameters` summary, not among the
/// `Key: value` fields.
const PROMPT_KEYS: [&str; 1] = ["prompt"];
const NEGATIVE_KEYS: [&str; 2] = ["negative", "negative_prompt"];

/// The (keyword, text) pairs to store in a PNG of `width` × `height` pixels:
/// `flow:graph_hash`, `flow:graph_name`, `flow:params` (JSON), `flow:version`,
/// and `parameters`, a human-readable summary in the style of the AUTOMATIC1111
/// web UI that image viewers and other tools know how to show.
pub(crate) fn text_chunks(
    prov: &Provenance,
    width: usize,
    height: usize,
) -> Vec<(&'static str, String)> {
    vec![
        ("flow:graph_hash", prov.graph_hash.clone()),
        ("flow:graph_name", prov.graph_name.clone()),
        ("flow:params", params_object(prov).to_string()),
        ("flow:version", VERSION.to_string()),
        ("parameters", parameters_summary(prov, width, height)),
    ]
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
        let chunks = text_chunks(&Provenance::default(), 4, 3);
        let get = |k: &str| chunks.iter().find(|(key, _)| *key == k).unwrap().1.clone();
        assert_eq!(get("flow:params"), "{}");
        assert_eq!(
            get("parameters"),
            format!("Size: 4x3, Version: flow {VERSION}")
        );
    }
}
