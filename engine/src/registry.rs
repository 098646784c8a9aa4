//! The registry of ops and of decoders for domain objects. Node libraries
//! register into it; the engine only knows the traits.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::{anyhow, Result};

use crate::op::{Op, OpRef};
use crate::value::Value;

/// Turns the plain form of a domain object (see [`crate::value::Object::to_plain`])
/// back into the object.
pub type ObjectDecoder = fn(&Value) -> Result<Value>;

/// All ops a graph may use, by name, and the decoders of cached objects.
#[derive(Default, Clone)]
pub struct Registry {
    ops: BTreeMap<String, OpRef>,
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
