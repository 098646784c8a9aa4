//! What a running op sees of the engine: its device, progress reporting,
//! token streaming, cancellation and provenance.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use candle_core::Device;

use crate::events::{Event, EventSink};
use crate::effects::{Effects, Shown};
use crate::files::{self, WriteGuard, WrittenFile};
use crate::models::ModelPool;

/// A flag that asks a run to stop at the next step boundary.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Asks everything holding this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// True once [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The error an op returns when it stopped because the run was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Facts about the run that ops record with their outputs (e.g. in PNG text
/// chunks).
#[derive(Clone, Default)]
pub struct Provenance {
    /// Hash of the graph file's content.
    pub graph_hash: String,
    /// The graph's name.
    pub graph_name: String,
    /// Parameter values after `--set`, as JSON.
    pub params: serde_json::Value,
    /// The graph being run (`None` when an op runs outside a graph), for ops
    /// that record where their inputs came from.
    pub graph: Option<Arc<crate::graph::Graph>>,
}

impl std::fmt::Debug for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provenance")
            .field("graph_hash", &self.graph_hash)
            .field("graph_name", &self.graph_name)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// The context of one node's execution. A clone is a second handle on the
/// same node (same device, events and cancellation), e.g. for callbacks that
/// must own what they use.
#[derive(Clone)]
pub struct OpContext {
    node: String,
    device: Device,
    graph_dir: PathBuf,
    cancel: CancelToken,
    sink: EventSink,
    started: Instant,
    provenance: Arc<Provenance>,
    models: Arc<ModelPool>,
    memo_root: Option<PathBuf>,
    memo_reads: bool,
    guard: Arc<WriteGuard>,
    effects: Arc<Mutex<Effects>>,
}

impl OpContext {
    /// A context for node `node` running on `device`; relative paths resolve
    /// against `graph_dir`; `started` is the run's start for event timestamps.
    pub fn new(
        node: impl Into<String>,
        device: Device,
        graph_dir: PathBuf,
        cancel: CancelToken,
        sink: EventSink,
        started: Instant,
        provenance: Arc<Provenance>,
    ) -> Self {
        OpContext {
            node: node.into(),
            device,
            graph_dir,
            cancel,
            sink,
            started,
            provenance,
            models: Arc::new(ModelPool::new(crate::models::pool::DEFAULT_BUDGET)),
            memo_root: None,
            memo_reads: true,
            guard: Arc::new(WriteGuard::default()),
            effects: Arc::new(Mutex::new(Effects::default())),
        }
    }

    /// Refuses writes to the paths `guard` protects (the graph file, its
    /// scripts and inputs).
    pub fn with_guard(mut self, guard: Arc<WriteGuard>) -> Self {
        self.guard = guard;
        self
    }

    /// Writes an output file: `path` as the graph names it (relative to the
    /// graph file's folder, or absolute). The write is atomic, replaces only
    /// a regular file (never a link, FIFO or device: see
    /// [`files::check_target`]), is refused for the files the run reads, and
    /// is recorded with the node's result, so the cached result stands only
    /// while the file holds exactly these bytes. Returns the full path.
    pub fn write_output(&self, path: &str, bytes: &[u8]) -> Result<PathBuf> {
        let full = self.resolve_path(Path::new(path));
        self.guard.check(&full).map_err(|e| anyhow!(e))?;
        files::write_atomic(&full, bytes)?;
        self.effects().written.push(WrittenFile::of(path, bytes));
        Ok(full)
    }

    /// What the node did so far besides computing values (files written,
    /// text shown), taken out: the engine keeps it with the node's outputs.
    pub fn take_effects(&self) -> Effects {
        std::mem::take(&mut *self.effects())
    }

    fn effects(&self) -> std::sync::MutexGuard<'_, Effects> {
        self.effects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets ops keep fine-grained memos under `root` (a folder of the disk
    /// cache); `reads` false (`--no-cache`) means memos are written but not
    /// trusted.
    pub fn with_memos(mut self, root: Option<PathBuf>, reads: bool) -> Self {
        self.memo_root = root;
        self.memo_reads = reads;
        self
    }

    /// The folder for an op's own memo called `name` (e.g. per-text
    /// embeddings, finer than the node's cache entry), inside the disk cache
    /// so `flow cache stats|clear` count and clear it. `None` when the run
    /// keeps no disk cache.
    pub fn memo_dir(&self, name: &str) -> Option<PathBuf> {
        self.memo_root.as_ref().map(|root| root.join(name))
    }

    /// Whether memo entries may be read (false under `--no-cache`).
    pub fn memo_reads(&self) -> bool {
        self.memo_reads
    }

    /// Uses `pool` for loaded models (the engine shares one pool across runs).
    pub fn with_models(mut self, pool: Arc<ModelPool>) -> Self {
        self.models = pool;
        self
    }

    /// The resident model pool: load weights through it so they stay warm.
    pub fn models(&self) -> &ModelPool {
        &self.models
    }

    /// The id of the node being run.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The device the node runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Provenance of the run.
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// Resolves a path from the graph against the graph file's folder.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        files::resolve(&self.graph_dir, path)
    }

    /// Reports `step` of `total` done.
    pub fn progress(&self, step: u64, total: u64) {
        (self.sink)(Event::Progress { node: self.node.clone(), step, total, t_ms: self.t_ms() });
    }

    /// Streams a piece of generated text; it is part of the node's result
    /// and shown again when the result comes from the cache.
    pub fn token(&self, text: &str) {
        self.effects().push_stream(text);
        (self.sink)(Event::Token { node: self.node.clone(), text: text.to_string(), t_ms: self.t_ms() });
    }

    /// Shows text that is part of the node's result (e.g. `debug.print`'s
    /// value): shown again when the result comes from the cache.
    pub fn show(&self, text: &str) {
        self.effects().shown.push(Shown::Message(text.to_string()));
        self.message(text);
    }

    /// Shows a message about the work in progress (not repeated when the
    /// result comes from the cache).
    pub fn message(&self, text: &str) {
        (self.sink)(Event::Message { node: self.node.clone(), text: text.to_string(), t_ms: self.t_ms() });
    }

    /// True if the run was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Returns [`Interrupted`] if the run was asked to stop; call between steps.
    pub fn check_cancelled(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            bail!(Interrupted);
        }
        Ok(())
    }

    fn t_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1e3
    }
}
