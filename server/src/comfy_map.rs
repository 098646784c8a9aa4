//! A workflow translated for a server: the graph, and for each flow node
//! the ComfyUI node ids it stands for, so that progress can be reported in
//! the ids the client sent (ComfyUI's `executing`, `executed`, ...).
//!
//! The ids come from the node comments the translation writes
//! (`ComfyUI node ID (Class)`, `ComfyUI nodes P (positive) and N (negative)`).

use std::collections::BTreeMap;
use std::path::Path;

use flow_nodes::comfy::translate::{translate, Purpose};
use flow_nodes::comfy::{validate, WorkflowErrors};

/// A workflow ready to run, with its mapping back to ComfyUI ids.
#[derive(Clone, Debug)]
pub struct Translated {
    /// The flow graph as YAML (what `to_yaml` gives for a run).
    pub yaml: String,
    /// Flow node name → the ComfyUI node ids it stands for, in order.
    pub origins: BTreeMap<String, Vec<String>>,
    /// ComfyUI node id → its `class_type`.
    pub classes: BTreeMap<String, String>,
    /// The ids of the workflow's output nodes (SaveImage, PreviewImage, ...).
    pub outputs: Vec<String>,
}

/// Validates and translates a workflow for a run (as `flow_nodes::comfy::to_yaml` does),
/// keeping which ComfyUI nodes each flow node comes from.
pub fn translate_for_run(json_text: &str, source_name: &str) -> Result<Translated, WorkflowErrors> {
    let prompt = validate::check(json_text, source_name)?;
    let stem = Path::new(source_name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workflow".into());
    let graph = translate(&prompt, source_name, &stem, Purpose::Run)?;
    let origins = graph.nodes.iter().map(|n| (n.name.clone(), comment_ids(&n.comment))).collect();
    let classes = prompt.nodes.iter().map(|(id, n)| (id.clone(), n.class.name.to_string())).collect();
    let outputs = prompt.ids().into_iter().filter(|id| prompt.nodes[*id].class.output_node).cloned().collect();
    Ok(Translated { yaml: graph.to_yaml(), origins, classes, outputs })
}

/// The ComfyUI ids a translation comment names.
fn comment_ids(comment: &str) -> Vec<String> {
    if let Some(rest) = comment.strip_prefix("ComfyUI nodes ") {
        // `P (positive) and N (negative), ...`
        return rest.split(" and ").filter_map(|part| part.split_once(" (").map(|(id, _)| id.to_string())).collect();
    }
    if let Some(rest) = comment.strip_prefix("ComfyUI node ") {
        if let Some((id, _)) = rest.split_once(" (") {
            return vec![id.to_string()];
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flow_node_of_the_default_workflow_names_its_comfy_nodes() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../graphs/comfy/default_txt2img.json"))
                .unwrap();
        let t = translate_for_run(&text, "default_txt2img.json").unwrap();
        let all: Vec<&String> = t.origins.values().flatten().collect();
        for id in ["3", "5", "6", "7", "8", "9"] {
            assert!(all.contains(&&id.to_string()), "node {id} is not mapped: {:?}", t.origins);
        }
        assert!(t.origins.values().all(|ids| !ids.is_empty()), "{:?}", t.origins);
        assert!(t.origins.values().any(|ids| ids == &["6".to_string(), "7".to_string()]));
        assert_eq!(t.classes["9"], "SaveImage");
        assert_eq!(t.outputs, ["9"]);
        assert!(t.yaml.contains("sd.sample"));
    }

    #[test]
    fn comments_give_their_ids() {
        assert_eq!(comment_ids("ComfyUI node 12:3 (KSampler) \"a (b)\""), ["12:3"]);
        assert_eq!(comment_ids("ComfyUI nodes 6 (positive) and 7 (negative), CLIPTextEncode"), ["6", "7"]);
        assert!(comment_ids("something else").is_empty());
    }
}
