//! What each node's key was made of on the last run of a graph file, kept in
//! the cache folder, so a re-run can say *why* a node runs again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::graph::{Expr, Graph, GraphNode};

use super::keys::KeyParts;

/// Key parts by node id, for one graph file.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Records {
    /// Key parts by node id.
    pub nodes: BTreeMap<String, KeyParts>,
}

/// Where the records of the graph file `file` live under `cache_dir`.
pub fn records_path(cache_dir: &Path, file: &str) -> PathBuf {
    let abs = std::fs::canonicalize(file).unwrap_or_else(|_| PathBuf::from(file));
    let id = blake3::hash(abs.to_string_lossy().as_bytes()).to_hex();
    cache_dir.join("runs").join(format!("{}.json", &id[..32]))
}

impl Records {
    /// Reads records; missing or unreadable records are empty (they only
    /// improve messages).
    pub fn load(path: &Path) -> Records {
        std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Writes records atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        crate::files::write_atomic(path, &serde_json::to_vec(self).map_err(std::io::Error::other)?)
    }
}

/// Explains why `node` has no cache entry for its current key.
/// `upstream_changed(d)` tells whether node `d`'s key changed since the last
/// run, so that an input fed by several nodes names only those that changed.
pub fn why_it_runs(
    graph: &Graph,
    node: &GraphNode,
    now: &KeyParts,
    before: Option<&KeyParts>,
    upstream_changed: &dyn Fn(usize) -> bool,
) -> String {
    let Some(before) = before else {
        return "no cache entry".to_string();
    };
    if before.key == now.key {
        return "cache entry missing (evicted, cleared or not written)".to_string();
    }
    let mut reasons = Vec::new();
    if before.op != now.op {
        reasons.push(format!("op changed ({} -> {})", before.op, now.op));
    }
    for (port, hash) in &now.inputs {
        if before.inputs.get(port) == Some(hash) {
            continue;
        }
        // Of the nodes feeding this input, those whose key changed; none
        // means the input's own literal parts or its links changed.
        let mut changed = Vec::new();
        if let Some(expr) = node.inputs.get(port) {
            expr.for_each_link(&mut |n, _| {
                if upstream_changed(n) {
                    changed.push(graph.nodes[n].id.clone());
                }
            });
        }
        changed.dedup();
        let model = matches!(node.inputs.get(port), Some(Expr::Model { .. }));
        reasons.push(if port == "params" && !node.inputs.contains_key("params") {
            "a param the template names changed".to_string()
        } else if model {
            format!("model `{port}` changed")
        } else if changed.is_empty() {
            format!("input `{port}` changed")
        } else {
            format!("upstream `{}` changed", changed.join("`, `"))
        });
    }
    for port in before.inputs.keys().filter(|p| !now.inputs.contains_key(*p)) {
        reasons.push(format!("input `{port}` removed"));
    }
    if before.fingerprint != now.fingerprint {
        reasons.push(if is_script(&node.op.spec().name) {
            "script changed".to_string()
        } else {
            "content it reads changed".to_string()
        });
    }
    if reasons.is_empty() {
        "no cache entry".to_string()
    } else {
        reasons.join(", ")
    }
}

/// Script ops are named `script.NAME` or by the path of their `.rhai` file.
fn is_script(op: &str) -> bool {
    op.starts_with("script.") || op.ends_with(".rhai")
}
