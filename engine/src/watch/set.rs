//! The set of paths a watch session cares about, normalised so that the
//! paths the operating system reports match the paths a graph names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Files (matched exactly) and folders (anything below them matches).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchSet {
    files: BTreeSet<PathBuf>,
    trees: BTreeSet<PathBuf>,
}

impl WatchSet {
    /// The set for these paths: existing folders are watched as trees,
    /// everything else (files, and paths that do not exist yet) as files.
    pub fn new(paths: &[PathBuf]) -> Self {
        let mut set = WatchSet::default();
        for path in paths {
            let normal = normalize(path);
            if normal.is_dir() {
                set.trees.insert(normal);
            } else {
                set.files.insert(normal);
            }
        }
        set
    }

    /// Whether a change to `path` (as the operating system reports it)
    /// concerns this set.
    pub fn matches(&self, path: &Path) -> bool {
        let path = normalize(path);
        self.files.contains(&path) || self.trees.iter().any(|t| path.starts_with(t))
    }

    /// The folders to register with the operating system: each file's parent
    /// (non-recursively) and each tree (recursively, flagged `true`).
    pub fn registrations(&self) -> BTreeSet<(PathBuf, bool)> {
        let mut out = BTreeSet::new();
        for file in &self.files {
            if let Some(parent) = file.parent() {
                if parent.is_dir() && !self.trees.iter().any(|t| parent.starts_with(t)) {
                    out.insert((parent.to_path_buf(), false));
                }
            }
        }
        for tree in &self.trees {
            if !self.trees.iter().any(|t| t != tree && tree.starts_with(t)) {
                out.insert((tree.clone(), true));
            }
        }
        out
    }

    /// Every watched file and folder, for display.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().chain(&self.trees).map(PathBuf::as_path)
    }
}

/// An absolute path with its folder's symlinks resolved, so that a path
/// named by a graph and the path the operating system reports are equal. The
/// last component is kept as is: a file may be absent mid-save.
pub fn normalize(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if let Ok(full) = absolute.canonicalize() {
        if full.is_dir() {
            return full;
        }
    }
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => match parent.canonicalize() {
            Ok(parent) => parent.join(name),
            Err(_) => absolute,
        },
        _ => absolute,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_match_exactly_and_trees_match_below() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("graph.yaml");
        std::fs::write(&file, "x").unwrap();
        let corpus = dir.path().join("corpus");
        std::fs::create_dir(&corpus).unwrap();
        let set = WatchSet::new(&[file.clone(), corpus.clone()]);
        assert!(set.matches(&file));
        assert!(set.matches(&dir.path().join("./graph.yaml")));
        assert!(set.matches(&corpus.join("new.md")));
        assert!(!set.matches(&dir.path().join("graph.yaml.swp")));
        assert!(!set.matches(&dir.path().join("out.png")));
        let regs = set.registrations();
        assert!(regs.contains(&(dir.path().canonicalize().unwrap(), false)));
        assert!(regs.contains(&(corpus.canonicalize().unwrap(), true)));
    }

    #[test]
    fn a_file_that_does_not_exist_yet_still_matches() {
        let dir = tempfile::tempdir().unwrap();
        let later = dir.path().join("later.txt");
        let set = WatchSet::new(std::slice::from_ref(&later));
        std::fs::write(&later, "now").unwrap();
        assert!(set.matches(&later));
    }
}
