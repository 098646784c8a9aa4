//! The files a run must not overwrite: the graph file, its scripts, and the
//! files, folders and local models its nodes read. A graph that wrote one of
//! them would destroy its own source or change its own inputs (and, under
//! `flow watch`, re-trigger itself).

use std::path::{Path, PathBuf};

use crate::watch::WatchSet;

/// Paths writers refuse. Paths outside the graph's folder are otherwise
/// allowed: a graph run from the command line may write where its author
/// says.
#[derive(Clone, Debug, Default)]
pub struct WriteGuard {
    graph: WatchSet,
    reads: WatchSet,
}

impl WriteGuard {
    /// A guard for the graph file `graph_file` and the paths it reads
    /// (`reads`: files are protected exactly, folders with everything below).
    pub fn new(graph_file: &Path, reads: &[PathBuf]) -> Self {
        WriteGuard { graph: WatchSet::new(&[graph_file.to_path_buf()]), reads: WatchSet::new(reads) }
    }

    /// An error message if `path` is protected.
    pub fn check(&self, path: &Path) -> Result<(), String> {
        let what = if self.graph.matches(path) {
            "the graph file being run"
        } else if self.reads.matches(path) {
            "read by this graph (a script, an input file or folder, or a model)"
        } else {
            return Ok(());
        };
        Err(format!("refusing to write `{}`: it is {what}; write the output somewhere else", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_graph_its_inputs_and_folders_it_reads_are_protected() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("corpus")).unwrap();
        std::fs::write(d.join("g.yaml"), "").unwrap();
        let guard = WriteGuard::new(&d.join("g.yaml"), &[d.join("in.txt"), d.join("corpus")]);
        assert!(guard.check(&d.join("g.yaml")).unwrap_err().contains("graph file"));
        assert!(guard.check(&d.join("./in.txt")).unwrap_err().contains("read by this graph"));
        assert!(guard.check(&d.join("corpus/new.md")).is_err());
        assert!(guard.check(&d.join("out/in.txt")).is_ok());
        assert!(guard.check(&d.join("other.yaml")).is_ok());
        assert!(WriteGuard::default().check(&d.join("g.yaml")).is_ok());
    }
}
