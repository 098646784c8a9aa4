//! The registry of ops and of decoders for domain objects. Node libraries
//! register into it; the engine only knows the traits.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Result};

use crate::op::{Op, OpRef};
use crate::value::Value;

/// Turns the plain form of a domain object (see [`crate::value::Object::to_plain`])
/// back into the object.
pub type ObjectDecoder = fn(&Value) -> Result<Value>;

/// Ops made on demand from files beside a graph (e.g. rhai scripts) rather
/// than registered up front. Loaded anew each time a graph is validated, so
/// an edited file is picked up by the next validation.
pub trait OpSource: Send + Sync {
    /// Whether the op name `name` is this source's to load.
    fn claims(&self, name: &str) -> bool;

    /// Loads the op `name` for a graph in `graph_dir`. The error is shown at
    /// the node's `op:` and may carry a location of its own
    /// (`path:line:col: message`).
    fn load(&self, name: &str, graph_dir: &Path) -> std::result::Result<OpRef, String>;

    /// The op names this source offers to graphs in `graph_dir`.
    fn available(&self, graph_dir: &Path) -> Vec<String>;
}

/// All ops a graph may use, by name, and the decoders of cached objects.
#[derive(Default, Clone)]
pub struct Registry {
    ops: BTreeMap<String, OpRef>,
    sources: Vec<Arc<dyn OpSource>>,
    decoders: HashMap<&'static str, ObjectDecoder>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers an op under its spec's name, replacing any op of that name.
    pub fn register(&mut self, op: impl Op) {
        let op: OpRef = Arc::new(op);
        self.ops.insert(op.spec().name.clone(), op);
    }

    /// Registers a shared op.
    pub fn register_shared(&mut self, op: OpRef) {
        self.ops.insert(op.spec().name.clone(), op);
    }

    /// Registers a source of ops loaded on demand.
    pub fn register_source(&mut self, source: Arc<dyn OpSource>) {
        self.sources.push(source);
    }

    /// The op called `name` for a graph in `graph_dir`: a registered op, or
    /// one a source loads. `Ok(None)` if nothing knows the name.
    pub fn resolve(&self, name: &str, graph_dir: &Path) -> std::result::Result<Option<OpRef>, String> {
        if let Some(op) = self.ops.get(name) {
            return Ok(Some(Arc::clone(op)));
        }
        match self.sources.iter().find(|s| s.claims(name)) {
            Some(source) => source.load(name, graph_dir).map(Some),
            None => Ok(None),
        }
    }

    /// Registered op names and those the sources offer in `graph_dir`, sorted.
    pub fn names_for(&self, graph_dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = self.ops.keys().cloned().collect();
        names.extend(self.sources.iter().flat_map(|s| s.available(graph_dir)));
        names.sort();
        names.dedup();
        names
    }

    /// Registers the decoder for objects tagged `tag`.
    pub fn register_decoder(&mut self, tag: &'static str, decoder: ObjectDecoder) {
        self.decoders.insert(tag, decoder);
    }

    /// The op called `name`.
    pub fn get(&self, name: &str) -> Option<&OpRef> {
        self.ops.get(name)
    }

    /// All ops, sorted by name.
    pub fn ops(&self) -> impl Iterator<Item = &OpRef> {
        self.ops.values()
    }

    /// All op names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.ops.keys().map(String::as_str)
    }

    /// Rebuilds an object from its plain form.
    pub fn decode_object(&self, tag: &str, plain: &Value) -> Result<Value> {
        let decoder = self
            .decoders
            .get(tag)
            .ok_or_else(|| anyhow!("no decoder registered for cached object `{tag}`"))?;
        decoder(plain)
    }
}
