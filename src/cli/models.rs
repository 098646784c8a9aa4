//! `flow models list | pull NAME | verify`, the models folder in ComfyUI's
//! layout (`--models-dir`), and the progress display of model downloads
//! shared with `flow run`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use flow_engine::models::library::LIBRARY_DIR_ENV;
use flow_engine::models::{LibraryEntry, LibraryFolder, ModelLibrary, ModelPhase, ModelProgress, ModelStore, ProgressSink};
use indicatif::{ProgressBar, ProgressStyle};

use super::cache::human_bytes;
use super::common::cache_dir;
use super::table::Table;
use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};

/// The model store, with the built-in tiny models. Models live in the
/// `models/` folder of `$FLOW_MODEL_CACHE` if set (to share downloaded models
/// between cache folders), else of the cache folder.
pub fn store(dir: &Option<PathBuf>) -> Arc<ModelStore> {
    Arc::new(new_store(dir))
}

fn new_store(dir: &Option<PathBuf>) -> ModelStore {
    let root = std::env::var_os("FLOW_MODEL_CACHE").filter(|v| !v.is_empty()).map(PathBuf::from);
    let store = ModelStore::new(root.unwrap_or_else(|| cache_dir(dir)));
    flow_nodes::register_tiny_models(&store);
    store
}

/// The store of [`store`], reading `ckpt:`-style references from the models
/// folder of [`library`]. `Err` carries the exit code.
pub fn store_with_library(cache_dir: &Option<PathBuf>, models_dir: &Option<PathBuf>) -> Result<Arc<ModelStore>, u8> {
    let store = new_store(cache_dir);
    Ok(Arc::new(match library(models_dir)? {
        Some((library, _)) => store.with_library(library),
        None => store,
    }))
}

/// The models folder in ComfyUI's layout: `--models-dir` if given, else
/// `$FLOW_MODELS_DIR` if set and not empty, with where it came from. A
/// folder that cannot be opened is a usage error (`Err` carries the exit code).
pub fn library(flag: &Option<PathBuf>) -> Result<Option<(ModelLibrary, String)>, u8> {
    let (dir, source) = match flag {
        Some(d) => (d.clone(), "--models-dir".to_string()),
        None => match std::env::var_os(LIBRARY_DIR_ENV).filter(|v| !v.is_empty()) {
            Some(d) => (PathBuf::from(d), LIBRARY_DIR_ENV.to_string()),
            None => return Ok(None),
        },
    };
    let library = ModelLibrary::new(dir.clone());
    match library.check() {
        Ok(()) => Ok(Some((library, source))),
        Err(e) => {
            errln!("error: {source} {}: {e:#}", dir.display());
            Err(EXIT_INVALID)
        }
    }
}

fn phase_word(p: ModelPhase) -> &'static str {
    match p {
        ModelPhase::Download => "downloading",
        ModelPhase::Verify => "verifying",
        ModelPhase::Extract => "extracting",
        ModelPhase::Generate => "generating",
        ModelPhase::Fingerprint => "fingerprinting",
        ModelPhase::Done => "ready",
    }
}

/// A progress bar per model being fetched, on stderr (hidden when stderr is
/// not a terminal). `quiet` shows nothing (for `--json`).
pub fn progress_sink(quiet: bool) -> ProgressSink {
    if quiet {
        return Arc::new(|_| {});
    }
    let bars: Mutex<HashMap<String, ProgressBar>> = Mutex::new(HashMap::new());
    Arc::new(move |p: ModelProgress| {
        let Ok(mut bars) = bars.lock() else { return };
        if p.phase == ModelPhase::Done {
            if let Some(bar) = bars.remove(&p.model) {
                bar.finish_and_clear();
            }
            errln!("model {}: ready", p.model);
            return;
        }
        let bar = bars.entry(p.model.clone()).or_insert_with(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{prefix:.bold} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("model {}", p.model));
            bar
        });
        bar.set_message(format!("{} {}", phase_word(p.phase), p.item));
        bar.set_length(p.total.unwrap_or(p.done));
        bar.set_position(p.done);
    })
}

/// Lists catalog models, the tiny kinds and what the models folder holds;
/// `json` prints one JSON document instead.
pub fn list(dir: Option<PathBuf>, models_dir: Option<PathBuf>, json: bool) -> u8 {
    let store = store(&dir);
    let library = match library(&models_dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let folder = library.as_ref().map(|(lib, source)| FolderListing::of(lib, source));
    if json {
        return list_json(&store, folder.as_ref());
    }
    let mut t = Table::new(&["name", "kind", "size", "status", "description"]);
    for m in store.list() {
        let status = if m.installed { "installed" } else { "not installed" };
        t.row(vec![m.name, m.kind, human_bytes(m.size), status.into(), m.description]);
    }
    for (kind, version) in store.tiny_kinds() {
        t.row(vec![format!("tiny:{kind}"), kind.clone(), "-".into(), format!("generated (v{version})"), "random-weight test model of the real architecture".into()]);
    }
    out!("{}", t.render());
    outln!("model store: {}", store.models_dir().display());
    match &folder {
        Some(f) => print_folder(f),
        None => outln!(
            "no models folder: pass --models-dir DIR or set {LIBRARY_DIR_ENV} to list a folder in ComfyUI's layout (checkpoints/, vae/, ...)"
        ),
    }
    EXIT_OK
}

/// What the models folder holds, as listed.
struct FolderListing {
    /// The folder.
    path: PathBuf,
    /// `--models-dir` or `FLOW_MODELS_DIR`.
    source: String,
    /// False when it has none of the known subfolders.
    has_layout: bool,
    /// Its models.
    models: Vec<FolderModel>,
}

/// One model of the models folder.
struct FolderModel {
    /// As a graph writes it: `ckpt:SD1.5/foo.safetensors`.
    reference: String,
    entry: LibraryEntry,
    /// For a checkpoint: what flow makes of it (summary, details), or why
    /// it cannot read it.
    checkpoint: Option<Result<(String, String), String>>,
}

impl FolderListing {
    fn of(library: &ModelLibrary, source: &str) -> Self {
        let models = library
            .list()
            .into_iter()
            .map(|entry| {
                let checkpoint = (entry.folder == LibraryFolder::Checkpoints && entry.error.is_none())
                    .then(|| checkpoint_summary(&entry.path));
                FolderModel { reference: entry.reference(), entry, checkpoint }
            })
            .collect();
        FolderListing {
            path: library.root().to_path_buf(),
            source: source.to_string(),
            has_layout: library.has_layout(),
            models,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let models: Vec<serde_json::Value> = self
            .models
            .iter()
            .map(|m| {
                let mut v = serde_json::to_value(&m.entry).unwrap_or_default();
                v["reference"] = m.reference.clone().into();
                v["checkpoint"] = match &m.checkpoint {
                    None => serde_json::Value::Null,
                    Some(Ok((summary, details))) => serde_json::json!({ "summary": summary, "details": details }),
                    Some(Err(e)) => serde_json::json!({ "error": e }),
                };
                v
            })
            .collect();
        serde_json::json!({ "path": self.path, "source": self.source, "has_layout": self.has_layout, "models": models })
    }
}

/// What flow makes of a checkpoint: a one-line summary (family, dtype,
/// prediction type and where that came from) and the full description, or
/// why flow cannot read it.
fn checkpoint_summary(path: &std::path::Path) -> Result<(String, String), String> {
    if path.is_dir() {
        let kind = flow_engine::models::resolved::guess_kind(path).unwrap_or_else(|| "model".into());
        return Ok((format!("{kind} folder"), format!("a {kind} folder")));
    }
    match flow_nodes::sd::single_file::describe(path) {
        Ok(info) => {
            let dtypes: Vec<&str> = info.dtypes.iter().map(|(d, _)| d.as_str()).collect();
            let summary = format!("{}, {}, {} ({})", info.family, dtypes.join("+"), info.prediction, info.prediction_source);
            Ok((summary, info.to_string()))
        }
        Err(e) => Err(format!("{e:#}")),
    }
}

fn print_folder(f: &FolderListing) {
    outln!();
    outln!("models folder ({}): {}", f.source, f.path.display());
    if !f.has_layout {
        outln!(
            "  it has none of {}; point it at a folder in ComfyUI's layout (ComfyUI's `models/`)",
            LibraryFolder::ALL.map(|d| format!("{}/", d.dir_name())).join(", ")
        );
        return;
    }
    if f.models.is_empty() {
        outln!("  no models");
        return;
    }
    let mut t = Table::new(&["reference", "size", "about"]);
    for m in &f.models {
        let size = m.entry.size.map_or_else(|| "-".to_string(), human_bytes);
        let about = match (&m.entry.error, &m.checkpoint) {
            (Some(e), _) => format!("unreadable: {e}"),
            (None, Some(Ok((summary, _)))) => summary.clone(),
            (None, Some(Err(e))) => format!("not a checkpoint flow reads: {e}"),
            (None, None) => String::new(),
        };
        t.row(vec![m.reference.clone(), size, about]);
    }
    out!("{}", t.render());
}

fn list_json(store: &ModelStore, folder: Option<&FolderListing>) -> u8 {
    let tiny: Vec<serde_json::Value> = store
        .tiny_kinds()
        .into_iter()
        .map(|(kind, version)| serde_json::json!({ "name": format!("tiny:{kind}"), "kind": kind, "version": version }))
        .collect();
    let doc = serde_json::json!({
        "store": store.models_dir(),
        "catalog": store.list(),
        "tiny": tiny,
        "models_dir": folder.map(FolderListing::to_json),
    });
    match serde_json::to_string_pretty(&doc) {
        Ok(text) => {
            outln!("{text}");
            EXIT_OK
        }
        Err(e) => {
            errln!("error: {e}");
            EXIT_FAILED
        }
    }
}

/// Fetches and verifies one model.
pub fn pull(name: &str, dir: Option<PathBuf>) -> u8 {
    let store = store(&dir);
    let progress = progress_sink(false);
    match store.pull(name, &|p| progress(p)) {
        Ok(m) => {
            outln!("{name}: {} (fingerprint {})", m.path.display(), &m.fingerprint[..m.fingerprint.len().min(16)]);
            EXIT_OK
        }
        Err(e) => {
            errln!("error: {e:#}");
            EXIT_FAILED
        }
    }
}

/// Re-hashes every installed catalog model.
pub fn verify(dir: Option<PathBuf>) -> u8 {
    let store = store(&dir);
    let progress = progress_sink(false);
    match store.verify(&|p| progress(p)) {
        Ok(report) => {
            let mut bad = 0;
            for m in &report.models {
                if m.problems.is_empty() {
                    outln!("{}: ok ({} files)", m.name, m.files_checked);
                } else {
                    bad += 1;
                    for p in &m.problems {
                        outln!("{}: BAD {p}", m.name);
                    }
                }
            }
            for name in &report.not_installed {
                outln!("{name}: not installed");
            }
            if bad == 0 {
                EXIT_OK
            } else {
                errln!("{bad} model(s) failed verification; they will be fetched again on next use");
                EXIT_FAILED
            }
        }
        Err(e) => {
            errln!("error: {e:#}");
            EXIT_FAILED
        }
    }
}
