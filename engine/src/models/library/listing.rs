//! What a models folder holds: a walk of each library folder that follows
//! symbolic links (as ComfyUI does), never loops, and reports unreadable
//! entries instead of failing.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::LibraryFolder;

/// File extensions listed as models: ComfyUI's (`.ckpt .pt .pt2 .bin .pth
/// .safetensors .pkl .sft`) and the formats flow reads besides them
/// (`.gguf`, ncnn's `.param`, `.onnx`). Other files (sidecar `.yaml`
/// configs, previews, ComfyUI's `put_..._here` markers) are not models.
pub const MODEL_EXTENSIONS: [&str; 11] =
    ["safetensors", "sft", "ckpt", "pt", "pt2", "pth", "bin", "pkl", "gguf", "param", "onnx"];

/// How deep the walk goes below a library folder.
const MAX_DEPTH: usize = 16;

/// One model found in a library folder (or an entry that could not be read).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LibraryEntry {
    /// The folder kind.
    pub folder: LibraryFolder,
    /// Name relative to the folder, `/`-separated (`SD1.5/foo.safetensors`).
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Size in bytes (a diffusers folder: all its files); `None` if unreadable.
    pub size: Option<u64>,
    /// Why the entry could not be read, if it could not.
    pub error: Option<String>,
}

impl LibraryEntry {
    /// The reference a graph writes for it: `ckpt:SD1.5/foo.safetensors`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.folder.scheme(), self.name)
    }
}

/// True for a file name flow lists as a model.
pub fn is_model_file(path: &Path) -> bool {
    let Some(ext) = path.extension().and_then(|e| e.to_str()) else { return false };
    let ext = ext.to_ascii_lowercase();
    if !MODEL_EXTENSIONS.contains(&ext.as_str()) {
        return false;
    }
    // An ncnn pair is listed once, by its `.param`.
    !(ext == "bin" && path.with_extension("param").is_file())
}

/// A folder that is one model (diffusers or Hugging Face layout), not a
/// folder of models.
pub(super) fn is_model_dir(dir: &Path) -> bool {
    dir.join("model_index.json").is_file() || dir.join("config.json").is_file()
}

/// Every entry under `dir` (a library folder of kind `folder`), sorted by name.
pub(super) fn walk(folder: LibraryFolder, dir: &Path) -> Vec<LibraryEntry> {
    let mut out = Vec::new();
    let mut visited = HashSet::new();
    if let Ok(canonical) = fs::canonicalize(dir) {
        visited.insert(canonical);
    }
    walk_into(folder, dir, "", 0, &mut visited, &mut out);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn walk_into(
    folder: LibraryFolder,
    dir: &Path,
    prefix: &str,
    depth: usize,
    visited: &mut HashSet<PathBuf>,
    out: &mut Vec<LibraryEntry>,
) {
    let unreadable = |name: &str, path: &Path, why: String| LibraryEntry {
        folder,
        name: name.to_string(),
        path: path.to_path_buf(),
        size: None,
        error: Some(why),
    };
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            out.push(unreadable(prefix.trim_end_matches('/'), dir, format!("cannot list the folder: {e}")));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.push(unreadable(prefix.trim_end_matches('/'), dir, format!("cannot list the folder: {e}")));
                continue;
            }
        };
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            let path = entry.path();
            let shown = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            out.push(unreadable(&format!("{prefix}{shown}"), &path, "the name is not valid UTF-8".into()));
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        let name = format!("{prefix}{file_name}");
        let path = entry.path();
        // Follows symbolic links, as ComfyUI does.
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                if is_model_file(&path) || fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                    out.push(unreadable(&name, &path, format!("cannot read: {e}")));
                }
                continue;
            }
        };
        if meta.is_file() {
            if is_model_file(&path) {
                out.push(LibraryEntry { folder, name, path, size: Some(meta.len()), error: None });
            }
        } else if meta.is_dir() {
            if is_model_dir(&path) {
                // A diffusers or Hugging Face folder is one model.
                let size = super::super::fsutil::list_files(&path)
                    .map(|files| files.iter().map(|(_, p)| fs::metadata(p).map_or(0, |m| m.len())).sum::<u64>());
                let (size, error) = match size {
                    Ok(s) => (Some(s), None),
                    Err(e) => (None, Some(format!("cannot read: {e}"))),
                };
                out.push(LibraryEntry { folder, name, path, size, error });
                continue;
            }
            let Ok(canonical) = fs::canonicalize(&path) else { continue };
            if depth + 1 >= MAX_DEPTH || !visited.insert(canonical) {
                continue;
            }
            walk_into(folder, &path, &format!("{name}/"), depth + 1, visited, out);
        }
    }
}
