//! File helpers shared by the ops that read and write files: path
//! resolution, reading with clear errors, atomic writes, content fingerprints
//! and the check that written outputs are still on disk.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, Result};
use flow_engine::{Fingerprint, Inputs, Outputs, Value};

/// Resolves a path from a graph against the graph file's folder, like
/// `OpContext::resolve_path` (which is not available while fingerprinting).
pub(crate) fn resolve(graph_dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        graph_dir.join(path)
    }
}

/// Reads a whole file; the error names the file and the cause.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| anyhow!("cannot read `{}`: {e}", path.display()))
}

/// Writes `bytes` to `path` atomically (see [`write_atomic_with`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        fs::write(tmp, bytes).map_err(|e| anyhow!("cannot write `{}`: {e}", tmp.display()))
    })
}

/// Writes a file atomically: `write` fills a temporary file in the same
/// folder, which is flushed to disk and then renamed over `path`, so readers
/// see the old file or the new one, never a part. Missing parent folders are
/// created. On failure the temporary file is removed and `path` is untouched.
pub(crate) fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let Some(file_name) = path.file_name() else {
        bail!(
            "cannot write to `{}`: the path does not name a file",
            path.display()
        );
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)
        .map_err(|e| anyhow!("cannot create folder `{}`: {e}", dir.display()))?;

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.{}-{unique}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));

    let result = write(&tmp)
        .and_then(|()| {
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| anyhow!("cannot flush `{}` to disk: {e}", tmp.display()))
        })
        .and_then(|()| {
            fs::rename(&tmp, path).map_err(|e| anyhow!("cannot write `{}`: {e}", path.display()))
        });
    if result.is_err() {
        // Best effort: the write may have failed before creating the file.
        let _ = fs::remove_file(&tmp);
    }
    result
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

/// For output ops: true if every file named by output `port` (a path, or a
/// list of paths) still exists.
pub(crate) fn written_files_exist(outputs: &Outputs, port: &str, graph_dir: &Path) -> bool {
    fn exists(value: &Value, graph_dir: &Path) -> bool {
        match value {
            Value::Text(p) => resolve(graph_dir, p).is_file(),
            Value::List(items) => items.iter().all(|v| exists(v, graph_dir)),
            _ => false,
        }
    }
    outputs.get(port).is_some_and(|v| exists(v, graph_dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn atomic_write_creates_parents_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(entries(&dir.path().join("a/b")), ["out.txt"]);
    }

    #[test]
    fn failed_write_removes_temp_file_and_keeps_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |tmp| {
            fs::write(tmp, b"partial").unwrap();
            bail!("encoder failed")
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "encoder failed");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["out.txt"]);
    }

    #[test]
    fn writing_to_a_folder_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomic(Path::new("/"), b"x").unwrap_err();
        assert!(err.to_string().contains("does not name a file"), "{err}");
        fs::create_dir(dir.path().join("sub")).unwrap();
        let err = write_atomic(&dir.path().join("sub"), b"x").unwrap_err();
        assert!(err.to_string().contains("sub"), "{err}");
        assert_eq!(entries(dir.path()), ["sub"]);
    }

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

    #[test]
    fn written_files_exist_checks_paths_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "").unwrap();
        let one = Outputs::single("path", "a");
        assert!(written_files_exist(&one, "path", dir.path()));
        let two = Outputs::single("paths", Value::list(vec!["a".into(), "b".into()]));
        assert!(!written_files_exist(&two, "paths", dir.path()));
        fs::write(dir.path().join("b"), "").unwrap();
        assert!(written_files_exist(&two, "paths", dir.path()));
        assert!(!written_files_exist(&one, "other", dir.path()));
    }
}
