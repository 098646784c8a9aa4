//! The local files a graph's results depend on, for `flow watch`.

use std::path::PathBuf;

use crate::graph::{Expr, Graph};

use super::inputs::literal_inputs;

/// The graph file, every file or folder its nodes read or run (as their ops
/// declare through [`crate::op::Op::watched_paths`]) and the local model
/// files it names; sorted, each once. Relative paths are resolved against the
/// graph's folder.
pub fn watched_paths(graph: &Graph) -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from(&graph.file)];
    let no_models = |_: &str| None;
    for node in &graph.nodes {
        paths.extend(node.op.watched_paths(&literal_inputs(node, &no_models), &graph.dir));
    }
    let inline = graph.nodes.iter().flat_map(|n| n.inputs.values()).filter_map(|e| match e {
        Expr::Model { reference, .. } => Some(reference),
        _ => None,
    });
    for reference in graph.models.values().chain(inline) {
        let local = graph.dir.join(reference);
        if local.exists() {
            paths.push(local);
        }
    }
    paths.sort();
    paths.dedup();
    paths
}
