//! `hf:org/repo[@revision][/file]`: the Hugging Face hub cache (read offline,
//! in the layout `huggingface_hub` and the hf-hub crate share) and the hf-hub
//! downloader.
//!
//! * Cache folder: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//!   `~/.cache/huggingface/hub`. A repo lives in `models--org--repo/` with
//!   `refs/<revision>` (a file holding a commit hash), `snapshots/<commit>/...`
//!   (links into `blobs/`).
//! * A snapshot already in the cache is used as is, without contacting the hub
//!   (fast, and works offline). A revision that is a commit hash is looked up
//!   in `snapshots/` directly.
//! * Otherwise, unless `HF_HUB_OFFLINE` is set (`1`, `true`, `yes`, `on`), the
//!   files are downloaded with hf-hub into the same cache. A whole-repository
//!   reference downloads the repository's files minus obvious duplicates (see
//!   [`wanted_repo_files`]).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::{ModelPhase, ModelProgress};

/// The hub cache folder from the environment (see the module docs).
pub fn default_hub_cache() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("huggingface").join("hub"))
}

/// True when `HF_HUB_OFFLINE` asks not to contact the hub.
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// The folder of `org/repo` in the cache.
pub fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

/// The snapshot folder of `repo` at `revision` if the cache has it (and, when
/// `file` is given, that file in it).
pub fn find_cached(cache: &Path, repo: &str, revision: &str, file: Option<&str>) -> Option<PathBuf> {
    let dir = repo_dir(cache, repo);
    let commit = if is_commit(revision) && dir.join("snapshots").join(revision).is_dir() {
        revision.to_string()
    } else {
        fs::read_to_string(dir.join("refs").join(revision)).ok()?.trim().to_string()
    };
    if commit.is_empty() || commit.contains(['/', '\\']) || commit.contains("..") {
        return None;
    }
    let snap = dir.join("snapshots").join(&commit);
    let wanted = match file {
        Some(f) => snap.join(f),
        None => snap.clone(),
    };
    let ok = match file {
        Some(_) => wanted.is_file(),
        None => wanted.is_dir() && fs::read_dir(&wanted).map(|mut d| d.next().is_some()).unwrap_or(false),
    };
    ok.then_some(snap)
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The files of a repository listing worth downloading for a whole-repository
/// reference: everything except other frameworks' weights (`.onnx`, `.h5`,
/// `.msgpack`, `.ot`, `.tflite`, `onnx/`, `openvino/`, `coreml/`), PyTorch
/// `*pytorch_model*.bin` files where the same folder has `.safetensors`,
/// variants (`x.fp16.safetensors`, `x.non_ema.bin`, ...) whose plain file is
/// listed too, and top-level single-file checkpoints of a diffusers repository.
pub fn wanted_repo_files(all: &[String]) -> Vec<String> {
    let has = |f: &str| all.iter().any(|x| x == f);
    let dir_of = |f: &str| f.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default();
    let diffusers = has("model_index.json");
    all.iter()
        .filter(|f| {
            let lower = f.to_ascii_lowercase();
            let ext = lower.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
            if ["onnx", "onnx_data", "h5", "msgpack", "ot", "tflite", "mlmodel", "pb"].contains(&ext) {
                return false;
            }
            if ["onnx/", "openvino/", "coreml/"].iter().any(|d| lower.starts_with(d) || lower.contains(&format!("/{d}"))) {
                return false;
            }
            let dir = dir_of(f);
            if lower.contains("pytorch_model") && ext == "bin" {
                let sibling_st = all.iter().any(|x| dir_of(x) == dir && x.ends_with(".safetensors"));
                if sibling_st {
                    return false;
                }
            }
            for variant in [".fp16.", ".non_ema.", ".non-ema.", ".ema.", ".fp32."] {
                if let Some(pos) = f.find(variant) {
                    let plain = format!("{}.{}", &f[..pos], &f[pos + variant.len()..]);
                    if has(&plain) {
                        return false;
                    }
                }
            }
            if diffusers && !f.contains('/') && ["ckpt", "safetensors", "bin", "pt", "pth"].contains(&ext) {
                return false;
            }
            true
        })
        .cloned()
        .collect()
}

/// Makes `repo@revision` (or one `file` of it) available in the cache and
/// returns its snapshot folder: from the cache when there, else downloaded
/// (unless `offline`).
pub fn ensure(
    cache: &Path,
    repo: &str,
    revision: &str,
    files: Option<&[String]>,
    offline: bool,
    model: &str,
    progress: &dyn Fn(ModelProgress),
) -> Result<PathBuf> {
    let all_cached = |snap: &Path| files.is_none_or(|fs| fs.iter().all(|f| snap.join(f).is_file()));
    let first = files.and_then(|f| f.first()).map(String::as_str);
    if let Some(snap) = find_cached(cache, repo, revision, first) {
        if all_cached(&snap) {
            return Ok(snap);
        }
    }
    let what = match files {
        Some([f]) => format!("`{f}` of hf:{repo}@{revision}"),
        Some(_) => format!("files of hf:{repo}@{revision}"),
        None => format!("hf:{repo}@{revision}"),
    };
    if offline {
        bail!("{what} is not in the Hugging Face cache at {} and HF_HUB_OFFLINE is set", cache.display());
    }
    download(cache, repo, revision, files, model, progress)
        .with_context(|| format!("cannot download {what} (hub cache: {})", cache.display()))
}

/// Adapts hf-hub's progress trait to the store's callback.
struct HubProgress<'a> {
    model: &'a str,
    file: String,
    done: u64,
    total: u64,
    progress: &'a dyn Fn(ModelProgress),
}

impl hf_hub::api::Progress for HubProgress<'_> {
    fn init(&mut self, size: usize, filename: &str) {
        self.file = filename.to_string();
        self.total = size as u64;
        self.done = 0;
        self.emit();
    }

    fn update(&mut self, size: usize) {
        self.done += size as u64;
        self.emit();
    }

    fn finish(&mut self) {
        self.done = self.total;
        self.emit();
    }
}

impl HubProgress<'_> {
    fn emit(&self) {
        (self.progress)(ModelProgress {
            model: self.model.to_string(),
            phase: ModelPhase::Download,
            item: self.file.clone(),
            done: self.done,
            total: Some(self.total),
        });
    }
}

fn download(
    cache: &Path,
    repo_id: &str,
    revision: &str,
    files: Option<&[String]>,
    model: &str,
    progress: &dyn Fn(ModelProgress),
) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};

    let api = ApiBuilder::from_env()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(false)
        .with_retries(2)
        .build()
        .map_err(|e| anyhow!("{e}"))?;
    let repo = api.repo(Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string()));
    let info = repo.info().map_err(|e| anyhow!("cannot list the repository: {e}"))?;
    let listed: Vec<String> = info.siblings.iter().map(|s| s.rfilename.clone()).collect();
    let wanted = match files {
        Some(fs) => {
            for f in fs {
                if !listed.contains(f) {
                    bail!("the repository has no file `{f}`");
                }
            }
            fs.to_vec()
        }
        None => wanted_repo_files(&listed),
    };
    let snap = repo_dir(cache, repo_id).join("snapshots").join(&info.sha);
    for f in &wanted {
        if snap.join(f).is_file() {
            continue;
        }
        let p = HubProgress { model, file: f.clone(), done: 0, total: 0, progress };
        repo.download_with_progress(f, p).map_err(|e| anyhow!("`{f}`: {e}"))?;
    }
    // Make `refs/<revision>` point at the commit even when nothing was downloaded.
    if !is_commit(revision) || revision != info.sha {
        let r = repo_dir(cache, repo_id).join("refs").join(revision);
        if let Some(parent) = r.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&r, &info.sha)?;
    }
    if !snap.is_dir() {
        bail!("the download left no snapshot at {}", snap.display());
    }
    Ok(snap)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a hub cache entry like huggingface_hub does: blobs named by
    /// content hash, snapshot links to them, a ref to the commit.
    pub(crate) fn fake_hub_repo(cache: &Path, repo: &str, rev: &str, commit: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let dir = repo_dir(cache, repo);
        let snap = dir.join("snapshots").join(commit);
        for (name, bytes) in files {
            let blob_name = super::super::fsutil::hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes));
            let blob = dir.join("blobs").join(&blob_name);
            fs::create_dir_all(blob.parent().unwrap()).unwrap();
            fs::write(&blob, bytes).unwrap();
            let link = snap.join(name);
            fs::create_dir_all(link.parent().unwrap()).unwrap();
            let depth = name.matches('/').count();
            let rel = format!("{}../../blobs/{blob_name}", "../".repeat(depth));
            #[cfg(unix)]
            std::os::unix::fs::symlink(rel, &link).unwrap();
            #[cfg(not(unix))]
            fs::copy(&blob, &link).unwrap();
        }
        fs::create_dir_all(dir.join("refs")).unwrap();
        fs::write(dir.join("refs").join(rev), commit).unwrap();
        snap
    }

    #[test]
    fn finds_snapshots_by_ref_and_by_commit() {
        let cache = tempfile::tempdir().unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let snap = fake_hub_repo(cache.path(), "org/repo", "main", commit, &[("config.json", b"{}"), ("sub/w.bin", b"w")]);
        assert_eq!(find_cached(cache.path(), "org/repo", "main", None).unwrap(), snap);
        assert_eq!(find_cached(cache.path(), "org/repo", commit, None).unwrap(), snap);
        assert_eq!(find_cached(cache.path(), "org/repo", "main", Some("sub/w.bin")).unwrap(), snap);
        assert!(find_cached(cache.path(), "org/repo", "main", Some("missing.bin")).is_none());
        assert!(find_cached(cache.path(), "org/repo", "v2", None).is_none());
        assert!(find_cached(cache.path(), "org/other", "main", None).is_none());
    }

    #[cfg(unix)]
    #[test]
    fn offline_misses_are_clear_errors() {
        let cache = tempfile::tempdir().unwrap();
        let e = ensure(cache.path(), "org/repo", "main", None, true, "hf:org/repo", &|_| {}).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("hf:org/repo@main") && msg.contains("HF_HUB_OFFLINE"), "{msg}");
    }

    #[test]
    fn whole_repo_downloads_skip_duplicates() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let transformers = list(&[
            "config.json",
            "model.safetensors",
            "pytorch_model.bin",
            "onnx/model.onnx",
            "tf_model.h5",
            "x4.param",
            "x4.bin",
            "tokenizer.json",
        ]);
        assert_eq!(
            wanted_repo_files(&transformers),
            list(&["config.json", "model.safetensors", "x4.param", "x4.bin", "tokenizer.json"])
        );
        let diffusers = list(&[
            "model_index.json",
            "v1-5-pruned.ckpt",
            "v1-5-pruned-emaonly.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "vae/diffusion_pytorch_model.fp16.safetensors",
            "text_encoder/pytorch_model.bin",
            "text_encoder/model.safetensors",
        ]);
        assert_eq!(
            wanted_repo_files(&diffusers),
            list(&[
                "model_index.json",
                "unet/diffusion_pytorch_model.safetensors",
                "vae/diffusion_pytorch_model.fp16.safetensors",
                "text_encoder/model.safetensors",
            ])
        );
    }
}
