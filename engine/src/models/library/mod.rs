//! A models folder in ComfyUI's layout (`--models-dir DIR`, `FLOW_MODELS_DIR`):
//! `checkpoints/`, `vae/`, `upscale_models/`, `loras/`, `embeddings/`, each
//! possibly with subfolders. Graphs name a file there by scheme and name
//! (`ckpt:SD1.5/foo.safetensors`, `upscaler:RealESRGAN_x4plus.pth`), the
//! name being what ComfyUI's loaders list. An existing ComfyUI `models/`
//! folder works unchanged, and so does AUTOMATIC1111's `models/` (its
//! `Stable-diffusion/`, `VAE/`, `Lora/`, `ESRGAN/` folders are looked in too).
//!
//! This is not flow's own model store ([`super::ModelStore::models_dir`],
//! where catalog downloads and tiny models land): flow only reads it.

mod folder;
mod listing;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::diagnostics::closest;

pub use folder::{normalize_name, LibraryFolder};
use listing::is_model_dir;
pub use listing::{is_model_file, LibraryEntry, MODEL_EXTENSIONS};

/// The environment variable that names the models folder when
/// `--models-dir` is not given.
pub const LIBRARY_DIR_ENV: &str = "FLOW_MODELS_DIR";

/// How many names a "not found" error lists.
const SHOWN_NAMES: usize = 12;

/// A models folder in ComfyUI's layout. Read only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelLibrary {
    root: PathBuf,
}

impl ModelLibrary {
    /// The models folder at `root` (made absolute against the working folder).
    pub fn new(root: PathBuf) -> Self {
        let root = std::path::absolute(&root).unwrap_or(root);
        ModelLibrary { root }
    }

    /// The models folder from the command line's `--models-dir` if given,
    /// else from `$FLOW_MODELS_DIR` (ignored when empty); `None` when neither
    /// names one.
    pub fn from_flag_or_env(flag: Option<PathBuf>) -> Option<ModelLibrary> {
        flag.or_else(|| std::env::var_os(LIBRARY_DIR_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
            .map(ModelLibrary::new)
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An error unless the folder exists and is a folder.
    pub fn check(&self) -> Result<()> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => bail!("{} is not a folder", self.root.display()),
            Err(e) => bail!("cannot open {}: {e}", self.root.display()),
        }
    }

    /// The existing folders of kind `folder`, in lookup order.
    pub fn dirs(&self, folder: LibraryFolder) -> Vec<PathBuf> {
        let mut seen: Vec<PathBuf> = Vec::new();
        let mut out = Vec::new();
        for name in folder.dir_names() {
            let dir = self.root.join(name);
            // On case-insensitive file systems `vae` and `VAE` are one folder.
            match fs::canonicalize(&dir) {
                Ok(c) if dir.is_dir() && !seen.contains(&c) => {
                    seen.push(c);
                    out.push(dir);
                }
                _ => {}
            }
        }
        out
    }

    /// The file (or diffusers folder) `name` of kind `folder`, canonical.
    /// `name` is checked with [`normalize_name`]. Not found: an error saying
    /// where flow looked, with a did-you-mean and what the folder holds.
    pub fn find(&self, folder: LibraryFolder, name: &str) -> Result<PathBuf> {
        let name = normalize_name(name).map_err(anyhow::Error::msg)?;
        let dirs = self.dirs(folder);
        for dir in &dirs {
            let candidate = dir.join(&name);
            if candidate.is_dir() && !is_model_dir(&candidate) {
                let inside: Vec<String> = self
                    .entries(folder)
                    .into_iter()
                    .filter(|e| e.error.is_none() && e.name.starts_with(&format!("{name}/")))
                    .take(SHOWN_NAMES)
                    .map(|e| e.reference())
                    .collect();
                let listed = if inside.is_empty() {
                    "it holds no models".to_string()
                } else {
                    format!("e.g. {}", inside.join(", "))
                };
                bail!("`{name}` is a folder of models, not a model; name a file in it ({listed})");
            }
            if candidate.exists() {
                return fs::canonicalize(&candidate)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", candidate.display()));
            }
        }
        if dirs.is_empty() {
            bail!("{}", self.no_folder_message(folder));
        }
        let entries = self.entries(folder);
        let names: Vec<&str> = entries.iter().filter(|e| e.error.is_none()).map(|e| e.name.as_str()).collect();
        let looked: Vec<String> = dirs.iter().map(|d| format!("{}/", d.display())).collect();
        let mut msg = format!("no `{name}` in {}", looked.join(" or "));
        if let Some(best) = suggestion(&name, &names) {
            msg.push_str(&format!("; did you mean `{}:{best}`?", folder.scheme()));
        }
        if names.is_empty() {
            msg.push_str(&format!("; the folder holds no models (files ending in .{})", MODEL_EXTENSIONS.join(", .")));
        } else {
            let shown: Vec<&str> = names.iter().take(SHOWN_NAMES).copied().collect();
            msg.push_str(&format!("; it holds {}", shown.join(", ")));
            if names.len() > SHOWN_NAMES {
                msg.push_str(&format!(" and {} more (`flow models list` shows them all)", names.len() - SHOWN_NAMES));
            }
        }
        bail!("{msg}")
    }

    /// The models of kind `folder`, sorted by name (first folder first when
    /// ComfyUI's and AUTOMATIC1111's folders both exist).
    pub fn entries(&self, folder: LibraryFolder) -> Vec<LibraryEntry> {
        self.dirs(folder).iter().flat_map(|d| listing::walk(folder, d)).collect()
    }

    /// Every model in the folder, by folder kind then name.
    pub fn list(&self) -> Vec<LibraryEntry> {
        LibraryFolder::ALL.into_iter().flat_map(|f| self.entries(f)).collect()
    }

    /// True when the folder has at least one of the known subfolders.
    pub fn has_layout(&self) -> bool {
        LibraryFolder::ALL.into_iter().any(|f| !self.dirs(f).is_empty())
    }

    /// Why there is nothing of kind `folder`: the folder is missing, and a
    /// hint when the root looks like a ComfyUI install rather than its
    /// `models/` folder.
    fn no_folder_message(&self, folder: LibraryFolder) -> String {
        let mut msg = format!("the models folder {} has no `{}/` folder", self.root.display(), folder.dir_name());
        let nested = ModelLibrary::new(self.root.join("models"));
        if !self.has_layout() && nested.has_layout() {
            msg.push_str(&format!(
                "; {} is in ComfyUI's layout: point --models-dir (or {LIBRARY_DIR_ENV}) there",
                nested.root.display()
            ));
        } else if !self.has_layout() {
            msg.push_str(&format!(
                "; a models folder in ComfyUI's layout holds {}",
                LibraryFolder::ALL.map(|f| format!("{}/", f.dir_name())).join(", ")
            ));
        }
        msg
    }
}

/// The closest name to `wanted`: same name without its extension or
/// subfolder first (`foo` or `foo.safetensors` for `SD1.5/foo.safetensors`),
/// then the closest spelling.
fn suggestion<'a>(wanted: &str, names: &[&'a str]) -> Option<&'a str> {
    let lower = wanted.to_lowercase();
    let base = |n: &str| n.rsplit('/').next().unwrap_or(n).to_lowercase();
    let stem = |n: &str| {
        let b = base(n);
        match b.rsplit_once('.') {
            Some((s, _)) if !s.is_empty() => s.to_string(),
            _ => b,
        }
    };
    if let Some(n) = names.iter().find(|n| n.to_lowercase() == lower || base(n) == base(&lower)) {
        return Some(n);
    }
    if let Some(n) = names.iter().find(|n| stem(n) == stem(&lower)) {
        return Some(n);
    }
    closest(wanted, names.iter().copied())
}

#[cfg(test)]
mod tests;
