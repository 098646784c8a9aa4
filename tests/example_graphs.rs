//! Every example graph in graphs/ runs with the real binary, then runs again
//! entirely from the cache.

mod common;

use std::path::Path;

use common::{executed, Sandbox};

/// Graphs that need network access or real checkpoints are listed here and
/// covered by their own tests. The ComfyUI workflows of graphs/comfy/*.json
/// (not `.yaml`, so not listed below) run in tests/comfy_workflows.rs, with
/// the tiny single-file checkpoint in a ComfyUI-layout models folder.
const NOT_RUN_HERE: &[&str] = &["sd15.yaml"];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            if e.file_name() != "out" {
                copy_dir(&e.path(), &target);
            }
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn every_example_graph_runs_then_comes_from_the_cache() {
    let sb = Sandbox::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_dir(&root.join("graphs"), &sb.path().join("graphs"));
    if root.join("scripts").exists() {
        copy_dir(&root.join("scripts"), &sb.path().join("scripts"));
    }
    let mut names: Vec<String> = std::fs::read_dir(sb.path().join("graphs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && !NOT_RUN_HERE.contains(&n.as_str()))
        .collect();
    names.sort();
    assert!(names.len() >= 3, "{names:?}");
    for name in &names {
        let graph = format!("graphs/{name}");
        let out = sb.flow(&["validate", &graph]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", common::stderr(&out));
        let (code, events) = sb.run_json(&graph, &[]);
        assert_eq!(code, 0, "{name}: {events:#?}");
        assert!(!executed(&events).is_empty(), "{name} ran nothing");
        let (code, events) = sb.run_json(&graph, &[]);
        assert_eq!(code, 0, "{name}");
        assert!(executed(&events).is_empty(), "{name} re-ran {:?}", executed(&events));
    }
}
