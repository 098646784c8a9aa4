//! What an output node wrote, kept with its cache entry: a cached result of
//! a writer stands only while every file it wrote still holds exactly the
//! bytes it wrote.

use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One file written by a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenFile {
    /// The path as the node named it: relative to the graph file's folder,
    /// or absolute. A cache entry can serve another graph with the same key,
    /// so the path is resolved against the folder of the graph being run.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the content, hex.
    pub blake3: String,
}

/// Why a written file no longer stands for a cached result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Staleness {
    /// The file is gone.
    Missing(String),
    /// The file holds something else than what was written.
    Changed(String),
}

impl fmt::Display for Staleness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Staleness::Missing(p) => write!(f, "output file `{p}` is missing"),
            Staleness::Changed(p) => write!(f, "output file `{p}` changed"),
        }
    }
}

/// `path` as named in a graph, resolved against the graph file's folder.
pub fn resolve(graph_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        graph_dir.join(path)
    }
}

impl WrittenFile {
    /// The record of `bytes` written to `path` (as the node named it).
    pub fn of(path: &str, bytes: &[u8]) -> Self {
        WrittenFile { path: path.to_string(), size: bytes.len() as u64, blake3: blake3::hash(bytes).to_hex().to_string() }
    }

    /// Where the file is for a graph in `graph_dir`.
    pub fn location(&self, graph_dir: &Path) -> PathBuf {
        resolve(graph_dir, Path::new(&self.path))
    }

    /// `None` while the file at this path (for a graph in `graph_dir`) is a
    /// regular file holding exactly the recorded bytes; else why not. The
    /// size is compared first, then the content is hashed: a same-size edit
    /// with its old modification time restored is still seen.
    pub fn staleness(&self, graph_dir: &Path) -> Option<Staleness> {
        let path = self.location(graph_dir);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(_) => return Some(Staleness::Missing(self.path.clone())),
        };
        let changed = || Some(Staleness::Changed(self.path.clone()));
        if !meta.file_type().is_file() || meta.len() != self.size {
            return changed();
        }
        let hash = File::open(&path).and_then(|file| {
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(file.take(self.size + 1))?;
            Ok(hasher.finalize())
        });
        match hash {
            Ok(h) if h.to_hex().as_str() == self.blake3 => None,
            Ok(_) => changed(),
            Err(_) => Some(Staleness::Missing(self.path.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stands_while_the_bytes_are_the_same() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("out")).unwrap();
        fs::write(dir.path().join("out/a.txt"), "alice").unwrap();
        let rec = WrittenFile::of("out/a.txt", b"alice");
        assert_eq!(rec.staleness(dir.path()), None);
        // Same size, other content.
        fs::write(dir.path().join("out/a.txt"), "carol").unwrap();
        assert_eq!(rec.staleness(dir.path()), Some(Staleness::Changed("out/a.txt".into())));
        fs::write(dir.path().join("out/a.txt"), "bob").unwrap();
        assert_eq!(rec.staleness(dir.path()).unwrap().to_string(), "output file `out/a.txt` changed");
        fs::remove_file(dir.path().join("out/a.txt")).unwrap();
        assert_eq!(rec.staleness(dir.path()).unwrap().to_string(), "output file `out/a.txt` is missing");
        // A folder in its place is not the file.
        fs::create_dir(dir.path().join("out/a.txt")).unwrap();
        assert!(matches!(rec.staleness(dir.path()), Some(Staleness::Changed(_))));
    }

    #[test]
    fn paths_resolve_against_the_graph_being_run() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        fs::write(a.path().join("x.txt"), "hi").unwrap();
        let rec = WrittenFile::of("x.txt", b"hi");
        assert_eq!(rec.staleness(a.path()), None);
        assert!(matches!(rec.staleness(b.path()), Some(Staleness::Missing(_))));
        let abs = a.path().join("x.txt");
        let rec = WrittenFile::of(abs.to_str().unwrap(), b"hi");
        assert_eq!(rec.staleness(b.path()), None);
    }
}
