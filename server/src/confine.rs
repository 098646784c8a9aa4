//! Confinement of graphs submitted over HTTP: they read files only inside
//! the server's input, output, temp, scripts and models folders, and write
//! only inside its output and temp folders.
//!
//! Every file an op touches is named by an input called `path` (or ending in
//! `_path`) or listed by the op's watched paths (folders, globs, scripts),
//! and models by their references. The check is made on the validated graph
//! before it runs: such inputs must be literal text (a path computed by
//! another node could not be checked), and each path, with its symbolic
//! links resolved, must lie inside an allowed folder.

use std::path::{Component, Path, PathBuf};

use flow_engine::graph::{Expr, Graph};
use flow_engine::models::ModelRef;
use flow_engine::Value;

/// The folders a served graph may use (canonical paths).
#[derive(Clone, Debug)]
pub struct Roots {
    /// Files may be read below these.
    pub read: Vec<PathBuf>,
    /// Files may be written below these.
    pub write: Vec<PathBuf>,
    /// rhai scripts (and what they import) are read only below these.
    pub scripts: Vec<PathBuf>,
}

/// `path` made absolute with every symbolic link resolved: the whole path
/// when it exists, else its deepest existing folder plus the rest. `None`
/// when the part that does not exist yet climbs with `..`.
pub fn resolved(path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    if let Ok(full) = absolute.canonicalize() {
        return Some(full);
    }
    let mut rest = Vec::new();
    let mut base = absolute.as_path();
    loop {
        let name = base.file_name()?;
        rest.push(name.to_os_string());
        base = base.parent()?;
        if let Ok(canonical) = base.canonicalize() {
            let mut out = canonical;
            for part in rest.iter().rev() {
                out.push(part);
            }
            let climbs = Path::new(&out).components().any(|c| c == Component::ParentDir);
            return if climbs { None } else { Some(out) };
        }
    }
}

/// Whether `path` (resolved) lies inside one of `roots`.
pub fn inside(path: &Path, roots: &[PathBuf]) -> bool {
    resolved(path).is_some_and(|p| roots.iter().any(|r| p.starts_with(r)))
}

fn is_path_port(port: &str) -> bool {
    port == "path" || port.ends_with("_path")
}

/// Every way `graph` would reach outside `roots`, as messages (empty: none).
pub fn check_graph(graph: &Graph, roots: &Roots) -> Vec<String> {
    let mut problems = Vec::new();
    for node in &graph.nodes {
        let name = &node.op.spec().name;
        if name.starts_with("script.") || name.ends_with(".rhai") {
            for file in node.op.watched_paths(&flow_engine::Inputs::default(), &graph.dir) {
                if !inside(&file, &roots.scripts) {
                    problems.push(format!(
                        "node `{}`: the script `{}` is not in the server's scripts folder (use `op: script.NAME`)",
                        node.id,
                        file.display()
                    ));
                }
            }
        }
        let writes = node.op.spec().output;
        for (port, expr) in &node.inputs {
            if !is_path_port(port) {
                continue;
            }
            let Expr::Literal(Value::Text(text)) = expr else {
                problems.push(format!(
                    "node `{}`: input `{port}` must be a literal path on this server (a path computed by another node cannot be checked)",
                    node.id
                ));
                continue;
            };
            let full = flow_engine::files::resolve(&graph.dir, Path::new(&**text));
            let (allowed, what) = if writes { (&roots.write, "write") } else { (&roots.read, "read") };
            if !inside(&full, allowed) {
                let folders = if writes { "output/ or temp/" } else { "input/, output/ or temp/" };
                problems.push(format!(
                    "node `{}`: `{text}` is outside the folders this server lets graphs {what} ({folders})",
                    node.id
                ));
            }
        }
    }
    for path in flow_engine::run::watched_paths(graph) {
        if path == Path::new(&graph.file) {
            continue;
        }
        if !inside(&path, &roots.read) {
            problems.push(format!("`{}` is outside the folders this server lets graphs read", path.display()));
        }
    }
    let inline = graph.nodes.iter().flat_map(|n| n.inputs.values()).filter_map(|e| match e {
        Expr::Model { reference, .. } => Some(reference),
        _ => None,
    });
    for reference in graph.models.values().chain(inline) {
        if let Ok(ModelRef::Path(p)) = ModelRef::parse(reference) {
            let full = flow_engine::files::resolve(&graph.dir, &p);
            if p.starts_with("~") || !inside(&full, &roots.read) {
                problems.push(format!(
                    "model `{reference}`: a model file must be in the models folder (`ckpt:NAME`, `vae:NAME`, ...) on this server"
                ));
            }
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_climbs_are_resolved_before_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let out = root.join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(root.join("secret"), "x").unwrap();
        let roots = [out.clone()];
        assert!(inside(&out.join("a.png"), &roots));
        assert!(inside(&out.join("new/sub/a.png"), &roots));
        assert!(!inside(&out.join("../secret"), &roots));
        assert!(!inside(&out.join("new/../../secret"), &roots));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.join("secret"), out.join("link")).unwrap();
            assert!(!inside(&out.join("link"), &roots));
            std::os::unix::fs::symlink(&root, out.join("up")).unwrap();
            assert!(!inside(&out.join("up/secret"), &roots));
            assert!(!inside(&out.join("up/new.png"), &roots));
        }
    }
}
