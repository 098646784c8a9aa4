//! What a saved image's graph says about how it was made, in the terms of
//! AUTOMATIC1111's `parameters` text: the nearest `sd.sample` upstream of the
//! image (its steps, sampler, scheduler, guidance, seed, strength and model)
//! and the `sd.encode_prompt` behind its conditioning (prompt, negative
//! prompt, CLIP skip). Only values the graph fixes are written: an input fed
//! by another node (a prompt made by a template node, noise given as a
//! tensor) leaves its field out. The web UI's `Model hash` (sha256 of the
//! checkpoint file) is left out too: flow fingerprints models differently and
//! hashing a checkpoint at every save would cost seconds.

use std::collections::{BTreeSet, VecDeque};

use flow_engine::graph::{Expr, Graph};
use flow_engine::value::format_float;
use flow_engine::Value;

use super::a1111::{sampler_label, scheduler_label, A1111Params};

/// The `parameters` of the image saved by node `node_id` of `graph`, or
/// `None` when no `sd.sample` is upstream of it.
pub(crate) fn sd_parameters(
    graph: &Graph,
    node_id: &str,
    width: usize,
    height: usize,
) -> Option<A1111Params> {
    let sample = nearest_upstream(graph, graph.node_index(node_id)?, "sd.sample")?;
    let input = |node: usize, port: &str| literal_input(graph, node, port);
    let mut p = A1111Params::default();
    let encode = match graph.nodes[sample].inputs.get("cond") {
        Some(Expr::Link { node, .. })
            if graph.nodes[*node].op.spec().name == "sd.encode_prompt" =>
        {
            Some(*node)
        }
        _ => None,
    };
    if let Some(encode) = encode {
        if let Some(prompt) = input(encode, "prompt").and_then(|v| v.as_text().map(str::to_string))
        {
            p.prompt = prompt;
        }
        p.negative = input(encode, "negative").and_then(|v| v.as_text().map(str::to_string));
    }
    let mut field = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            p.fields.push((key.to_string(), value));
        }
    };
    field(
        "Steps",
        input(sample, "steps")
            .and_then(|v| v.as_int())
            .map(|s| s.to_string()),
    );
    let sampler = input(sample, "sampler").and_then(|v| v.as_text().map(str::to_string));
    field(
        "Sampler",
        sampler.as_deref().map(|s| sampler_label(s).to_string()),
    );
    let scheduler = input(sample, "scheduler").and_then(|v| v.as_text().map(str::to_string));
    field(
        "Schedule type",
        scheduler
            .and_then(|s| scheduler_label(&s))
            .map(str::to_string),
    );
    field(
        "CFG scale",
        input(sample, "cfg").and_then(|v| v.as_f64()).map(number),
    );
    // Seeded noise only: a `noise` tensor replaces it.
    let seeded = !graph.nodes[sample].inputs.contains_key("noise");
    field(
        "Seed",
        input(sample, "seed")
            .and_then(|v| v.as_int())
            .filter(|_| seeded)
            .map(|s| s.to_string()),
    );
    field("Size", Some(format!("{width}x{height}")));
    if let Some(Expr::Model { reference, .. }) = graph.nodes[sample].inputs.get("model") {
        field("Model", Some(model_name(reference)));
    }
    field(
        "Denoising strength",
        input(sample, "denoise")
            .and_then(|v| v.as_f64())
            .filter(|d| *d < 1.0)
            .map(number),
    );
    let clip_skip = encode
        .and_then(|e| input(e, "clip_skip"))
        .and_then(|v| v.as_int());
    field(
        "Clip skip",
        clip_skip.filter(|c| *c > 1).map(|c| c.to_string()),
    );
    // The web UI's `RNG` names where the initial noise is drawn; flow's torch
    // generator draws it as torch does on the CPU.
    let rng = input(sample, "generator")
        .and_then(|v| v.as_text().map(str::to_string))
        .filter(|_| seeded);
    field(
        "RNG",
        rng.map(|g| if g == "torch" { "CPU".to_string() } else { g }),
    );
    Some(p)
}

/// The nearest node running `op` upstream of node `start` (breadth first).
fn nearest_upstream(graph: &Graph, start: usize, op: &str) -> Option<usize> {
    let mut seen = BTreeSet::from([start]);
    let mut queue = VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        if n != start && graph.nodes[n].op.spec().name == op {
            return Some(n);
        }
        for &d in &graph.nodes[n].deps {
            if seen.insert(d) {
                queue.push_back(d);
            }
        }
    }
    None
}

/// The value of an input the graph fixes: its literal, or the op's default
/// when the graph leaves it out; `None` when another node feeds it.
fn literal_input(graph: &Graph, node: usize, port: &str) -> Option<Value> {
    let node = &graph.nodes[node];
    match node.inputs.get(port) {
        Some(Expr::Literal(v)) => Some(v.clone()),
        Some(_) => None,
        None => node.op.spec().input(port)?.default.clone(),
    }
}

/// A number as the web UI writes it: `7`, `7.5`, `0.55`.
fn number(x: f64) -> String {
    let text = format_float(x);
    text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
}

/// The name the web UI shows for a model: the file name without its folder
/// and extension (`ckpt:v1-5.safetensors` → `v1-5`); other references as written.
fn model_name(reference: &str) -> String {
    let path = reference.strip_prefix("ckpt:").unwrap_or(reference);
    if path.contains(':') && !path.contains(['/', '\\']) {
        return reference.to_string();
    }
    let file = path
        .trim_end_matches(['/', '\\'])
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(path);
    [".safetensors", ".ckpt", ".pt", ".pth", ".bin"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))
        .unwrap_or(file)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_drop_folders_and_extensions() {
        assert_eq!(
            model_name("ckpt:v1-5-pruned-emaonly.safetensors"),
            "v1-5-pruned-emaonly"
        );
        assert_eq!(model_name("./models/sd15/"), "sd15");
        assert_eq!(model_name("C:\\models\\dream.ckpt"), "dream");
        assert_eq!(model_name("tiny:sd"), "tiny:sd");
        assert_eq!(model_name("hf:org/repo"), "repo");
    }

    #[test]
    fn numbers_read_like_the_web_ui() {
        assert_eq!(number(7.0), "7");
        assert_eq!(number(7.5), "7.5");
        assert_eq!(number(0.55), "0.55");
    }
}
