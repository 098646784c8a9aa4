//! The model store as the engine's model resolver.

use std::path::Path;
use std::sync::Arc;

use crate::run::ModelResolver;
use crate::value::Value;

use super::{ModelProgress, ModelStore};

/// Reports model fetching and hashing progress.
pub type ProgressSink = Arc<dyn Fn(ModelProgress) + Send + Sync>;

/// Resolves the models of a graph through a [`ModelStore`], reporting
/// download progress to a sink.
pub struct StoreResolver {
    store: Arc<ModelStore>,
    progress: ProgressSink,
}

impl StoreResolver {
    /// A resolver over `store` reporting to `progress`.
    pub fn new(store: Arc<ModelStore>, progress: ProgressSink) -> Self {
        StoreResolver { store, progress }
    }
}

impl ModelResolver for StoreResolver {
    fn resolve(&self, reference: &str, graph_dir: &Path) -> anyhow::Result<Value> {
        let progress = |p: ModelProgress| (self.progress)(p);
        Ok(self.store.resolve_str(reference, graph_dir, &progress)?.into_value())
    }
}
