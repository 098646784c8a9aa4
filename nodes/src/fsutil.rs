//! File helpers shared by the ops that read files: path resolution, reading
//! with clear errors and content fingerprints. (Ops write their files through
//! `OpContext::write_output`.)

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use flow_engine::{Fingerprint, Inputs};

/// Resolves a path from a graph against the graph file's folder, like
/// `OpContext::resolve_path` (which is not available while fingerprinting).
pub(crate) fn resolve(graph_dir: &Path, path: &str) -> PathBuf {
    flow_engine::files::resolve(graph_dir, Path::new(path))
}

/// Text files (`file.read_text`, each document of `docs.load`) are at most
/// this large: 64 MiB.
pub(crate) const MAX_TEXT_BYTES: u64 = 64 << 20;

/// Reads a whole regular file of at most `limit` bytes (`what` names it in
/// errors); the error names the file and the cause.
pub(crate) fn read(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    flow_engine::files::read_bounded(path, limit, what).map_err(|e| anyhow!("cannot read `{}`: {e}", path.display()))
}

/// The fingerprint of an op whose result depends on the content of the file
/// named by input `port`: the file's blake3 hash. Volatile when the path is
/// not a literal of the graph (it comes from another node) or the file cannot
/// be read; the op then runs and reports the I/O error itself.
pub(crate) fn file_fingerprint(
    literal_inputs: &Inputs,
    port: &str,
    graph_dir: &Path,
) -> Result<Fingerprint> {
    if literal_inputs.get(port).is_none() {
        return Ok(Fingerprint::Volatile(format!(
            "input `{port}` comes from another node, so the file is only known at run time"
        )));
    }
    let path = resolve(graph_dir, literal_inputs.text(port)?);
    let hash = fs::File::open(&path).and_then(|file| {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(file)?;
        Ok(hasher.finalize())
    });
    Ok(match hash {
        Ok(hash) => Fingerprint::Content(format!("blake3:{}", hash.to_hex())),
        Err(e) => Fingerprint::Volatile(format!("cannot read `{}`: {e}", path.display())),
    })
}

/// The file named by the literal input `port`, for `flow watch`; nothing when
/// the path comes from another node.
pub(crate) fn watched_file(literal_inputs: &Inputs, port: &str, graph_dir: &Path) -> Vec<PathBuf> {
    match literal_inputs.opt_text(port) {
        Ok(Some(path)) => vec![resolve(graph_dir, path)],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use flow_engine::Value;

    #[test]
    fn fingerprint_follows_content() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = Inputs::new(BTreeMap::from([("path".to_string(), Value::text("f.txt"))]));
        let missing = file_fingerprint(&inputs, "path", dir.path()).unwrap();
        assert!(
            matches!(&missing, Fingerprint::Volatile(r) if r.contains("f.txt")),
            "{missing:?}"
        );

        fs::write(dir.path().join("f.txt"), "a").unwrap();
        let a = file_fingerprint(&inputs, "path", dir.path()).unwrap();
        fs::write(dir.path().join("f.txt"), "b").unwrap();
        let b = file_fingerprint(&inputs, "path", dir.path()).unwrap();
        assert!(matches!(&a, Fingerprint::Content(h) if h.starts_with("blake3:")));
        assert_ne!(a, b);

        let linked = file_fingerprint(&Inputs::default(), "path", dir.path()).unwrap();
        assert!(matches!(linked, Fingerprint::Volatile(_)));
    }
}
