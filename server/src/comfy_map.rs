//! A workflow translated for a server: the graph, and for each flow node
//! the ComfyUI node ids it stands for, so that progress can be reported in
//! the ids the client sent (ComfyUI's `executing`, `executed`, ...).
//!
//! The mapping is the translator's own record ([`Translation::origins`]),
//! not something read back from the YAML.

use flow_nodes::comfy::{translate_workflow, Purpose, Translation, WorkflowErrors};

/// A workflow ready to run, with its mapping back to ComfyUI ids.
pub type Translated = Translation;

/// Validates and translates a workflow for a run (as `flow_nodes::comfy::to_yaml` does),
/// keeping which ComfyUI nodes each flow node comes from.
pub fn translate_for_run(json_text: &str, source_name: &str) -> Result<Translated, WorkflowErrors> {
    translate_workflow(json_text, source_name, Purpose::Run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow(name: &str) -> String {
        std::fs::read_to_string(format!("{}/../graphs/comfy/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn every_flow_node_of_the_default_workflow_names_its_comfy_nodes() {
        let t = translate_for_run(&workflow("default_txt2img.json"), "default_txt2img.json").unwrap();
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
    fn ids_that_read_like_comments_map_by_data() {
        // ComfyUI ids are any strings; these would confuse a reader of the YAML comments.
        let text =
            workflow("default_txt2img.json").replace("\"6\"", "\"6 (a) and 7\"").replace("\"3\"", "\"3\\n (b)\"");
        let t = translate_for_run(&text, "w.json").unwrap();
        assert!(t.origins.values().any(|ids| ids == &["6 (a) and 7".to_string(), "7".to_string()]), "{:?}", t.origins);
        assert!(t.origins.values().any(|ids| ids == &["3\n (b)".to_string()]), "{:?}", t.origins);
    }
}
