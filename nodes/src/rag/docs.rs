//! `docs.load`: text documents from a file, a folder or a glob pattern.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use flow_engine::{Cost, Fingerprint, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, ValueType};

use super::glob;
use super::values::{Docs, Document};
use crate::fsutil;

/// File extensions that folders and patterns pick up (case-insensitive).
const TEXT_EXTENSIONS: [&str; 2] = ["txt", "md"];

pub(crate) struct DocsLoad {
    spec: OpSpec,
}

impl DocsLoad {
    pub(crate) fn new() -> Self {
        DocsLoad {
            spec: OpSpec {
                name: "docs.load".into(),
                version: 1,
                doc: "Loads UTF-8 text documents. `path` names a file (read whatever its \
                      extension), a folder (every .txt and .md file below it, recursively), or a \
                      pattern where `*` matches within a path component, `?` one character and \
                      `**` any number of folders (`notes/**/*.md`); folders and patterns pick .txt \
                      and .md files only and skip hidden names (starting with `.`). Documents come \
                      sorted by path. The cache key covers every matched file's path and content, \
                      so adding, removing or editing a file re-runs the node."
                    .into(),
                inputs: vec![PortSpec::new(
                    "path",
                    ValueType::Text,
                    "a file, a folder or a glob pattern, relative to the graph file's folder",
                )],
                outputs: vec![PortSpec::new(
                    "docs",
                    ValueType::Docs,
                    "the documents: each keeps its path (relative to the graph file's folder when \
                     inside it) and its text",
                )],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for DocsLoad {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let graph_dir = ctx.resolve_path(Path::new(""));
        let files = find_documents(&graph_dir, inputs.text("path")?)?;
        let total = files.len() as u64;
        let mut docs = Vec::with_capacity(files.len());
        for (i, (file, path)) in files.into_iter().enumerate() {
            ctx.check_cancelled()?;
            let text = String::from_utf8(fsutil::read(&file, fsutil::MAX_TEXT_BYTES, "document")?).map_err(|e| {
                anyhow!(
                    "`{}` is not UTF-8 text: invalid byte at offset {}",
                    file.display(),
                    e.utf8_error().valid_up_to()
                )
            })?;
            let text = match text.strip_prefix('\u{feff}') {
                Some(rest) => rest.to_string(),
                None => text,
            };
            docs.push(Document { path, text });
            ctx.progress(i as u64 + 1, total);
        }
        Ok(Outputs::single("docs", Docs { docs }.into_value()))
    }

    fn watched_paths(&self, literal_inputs: &Inputs, graph_dir: &Path) -> Vec<PathBuf> {
        let Ok(Some(path)) = literal_inputs.opt_text("path") else { return Vec::new() };
        // A glob is watched through the folder before its first wildcard.
        let literal = match path.find(['*', '?', '[']) {
            Some(wild) => path[..wild].rsplit_once('/').map_or(".", |(dir, _)| dir),
            None => path,
        };
        vec![fsutil::resolve(graph_dir, literal)]
    }

    fn fingerprint(&self, literal_inputs: &Inputs, graph_dir: &Path) -> Result<Fingerprint> {
        let Some(path) = literal_inputs.opt_text("path")? else {
            return Ok(Fingerprint::Volatile(
                "input `path` comes from another node, so the files are only known at run time".into(),
            ));
        };
        let files = match find_documents(graph_dir, path) {
            Ok(files) => files,
            Err(e) => return Ok(Fingerprint::Volatile(e.to_string())),
        };
        let mut hasher = blake3::Hasher::new();
        for (file, shown) in &files {
            let content = match std::fs::File::open(file).and_then(|f| {
                let mut h = blake3::Hasher::new();
                h.update_reader(f)?;
                Ok(h.finalize())
            }) {
                Ok(hash) => hash,
                Err(e) => return Ok(Fingerprint::Volatile(format!("cannot read `{}`: {e}", file.display()))),
            };
            hasher.update(&(shown.len() as u64).to_le_bytes());
            hasher.update(shown.as_bytes());
            hasher.update(content.as_bytes());
        }
        Ok(Fingerprint::Content(format!("blake3:{}", hasher.finalize().to_hex())))
    }
}

/// The files `path` names (see the op's documentation), each with the path
/// shown for it, sorted by that path. Finding nothing is an error.
pub(crate) fn find_documents(graph_dir: &Path, path: &str) -> Result<Vec<(PathBuf, String)>> {
    let is_text = |p: &PathBuf| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| TEXT_EXTENSIONS.iter().any(|t| e.eq_ignore_ascii_case(t)))
    };
    let files: Vec<PathBuf> = if glob::is_pattern(path) {
        let (base, rest) = glob::split_pattern(path);
        let base = fsutil::resolve(graph_dir, &base.to_string_lossy());
        let files: Vec<PathBuf> = glob::find_files(&base, &rest)?.into_iter().filter(is_text).collect();
        if files.is_empty() {
            bail!("the pattern `{path}` matches no .txt or .md file (looked in `{}`)", base.display());
        }
        files
    } else {
        let full = fsutil::resolve(graph_dir, path);
        if full.is_dir() {
            let files: Vec<PathBuf> =
                glob::find_files(&full, &["**".into(), "*".into()])?.into_iter().filter(is_text).collect();
            if files.is_empty() {
                bail!("the folder `{}` holds no .txt or .md file", full.display());
            }
            files
        } else if full.is_file() {
            vec![full]
        } else {
            bail!("`{}` does not exist", full.display());
        }
    };
    let mut named: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|f| {
            let shown = shown_path(graph_dir, &f);
            (f, shown)
        })
        .collect();
    named.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(named)
}

/// `file` relative to `graph_dir` with `/` separators when it lies inside,
/// else as it is.
fn shown_path(graph_dir: &Path, file: &Path) -> String {
    match file.strip_prefix(graph_dir) {
        Ok(rel) => rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"),
        Err(_) => file.to_string_lossy().into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in ["corpus/b.md", "corpus/a.txt", "corpus/sub/c.MD", "corpus/skip.rst", "corpus/.git/x.md", "one.rst"] {
            let p = dir.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, f).unwrap();
        }
        dir
    }

    fn shown(dir: &Path, path: &str) -> Vec<String> {
        find_documents(dir, path).unwrap().into_iter().map(|(_, s)| s).collect()
    }

    #[test]
    fn folders_files_and_patterns_are_found_sorted() {
        let dir = tree();
        let d = dir.path();
        assert_eq!(shown(d, "corpus"), ["corpus/a.txt", "corpus/b.md", "corpus/sub/c.MD"]);
        assert_eq!(shown(d, "corpus/*"), ["corpus/a.txt", "corpus/b.md"]);
        assert_eq!(shown(d, "corpus/**/*.md"), ["corpus/b.md"]);
        assert_eq!(shown(d, "**/?.*"), ["corpus/a.txt", "corpus/b.md", "corpus/sub/c.MD"]);
        assert_eq!(shown(d, "one.rst"), ["one.rst"], "a named file is read whatever its extension");
        let abs = d.join("corpus/a.txt");
        assert_eq!(shown(Path::new("/elsewhere"), &abs.to_string_lossy()), [abs.to_string_lossy()]);
    }

    #[test]
    fn finding_nothing_is_an_error() {
        let dir = tree();
        let err = find_documents(dir.path(), "corpus/*.rst").unwrap_err().to_string();
        assert!(err.contains("matches no .txt or .md"), "{err}");
        let err = find_documents(dir.path(), "nope").unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        fs::create_dir(dir.path().join("empty")).unwrap();
        let err = find_documents(dir.path(), "empty").unwrap_err().to_string();
        assert!(err.contains("holds no .txt or .md"), "{err}");
    }

    #[test]
    fn fingerprint_changes_when_a_file_is_added_or_edited() {
        let dir = tree();
        let op = DocsLoad::new();
        let inputs = Inputs::new([("path".to_string(), flow_engine::Value::text("corpus"))].into());
        let fp = || op.fingerprint(&inputs, dir.path()).unwrap();
        let first = fp();
        assert!(matches!(&first, Fingerprint::Content(h) if h.starts_with("blake3:")));
        assert_eq!(fp(), first);
        fs::write(dir.path().join("corpus/new.md"), "new").unwrap();
        let added = fp();
        assert_ne!(added, first);
        fs::write(dir.path().join("corpus/a.txt"), "edited").unwrap();
        assert_ne!(fp(), added);
        fs::write(dir.path().join("corpus/skip.rst"), "ignored").unwrap();
        let unrelated = fp();
        fs::write(dir.path().join("corpus/skip.rst"), "ignored again").unwrap();
        assert_eq!(fp(), unrelated, "files the op does not read leave the key alone");
        assert!(matches!(op.fingerprint(&Inputs::default(), dir.path()).unwrap(), Fingerprint::Volatile(_)));
    }
}
