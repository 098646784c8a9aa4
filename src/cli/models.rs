//! `flow models list | pull NAME | verify`, and the progress display of
//! model downloads shared with `flow run`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use flow_engine::models::{ModelPhase, ModelProgress, ModelStore, ProgressSink};
use indicatif::{ProgressBar, ProgressStyle};

use super::cache::human_bytes;
use super::common::cache_dir;
use super::table::Table;
use super::{EXIT_FAILED, EXIT_OK};

/// The model store, with the built-in tiny models. Models live in the
/// `models/` folder of `$FLOW_MODEL_CACHE` if set (to share downloaded models
/// between cache folders), else of the cache folder.
pub fn store(dir: &Option<PathBuf>) -> Arc<ModelStore> {
    let root = std::env::var_os("FLOW_MODEL_CACHE").filter(|v| !v.is_empty()).map(PathBuf::from);
    let store = ModelStore::new(root.unwrap_or_else(|| cache_dir(dir)));
    flow_nodes::register_tiny_models(&store);
    Arc::new(store)
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

/// Lists catalog models and the tiny kinds.
pub fn list(dir: Option<PathBuf>) -> u8 {
    let store = store(&dir);
    let mut t = Table::new(&["name", "kind", "size", "status", "description"]);
    for m in store.list() {
        let status = if m.installed { "installed" } else { "not installed" };
        t.row(vec![m.name, m.kind, human_bytes(m.size), status.into(), m.description]);
    }
    for (kind, version) in store.tiny_kinds() {
        t.row(vec![format!("tiny:{kind}"), kind.clone(), "-".into(), format!("generated (v{version})"), "random-weight test model of the real architecture".into()]);
    }
    out!("{}", t.render());
    outln!("models folder: {}", store.models_dir().display());
    EXIT_OK
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
