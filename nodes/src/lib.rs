//! flow-nodes: the built-in node library. Each family is a folder of small
//! files and registers its ops with [`register_all`].

use std::sync::Arc;

use flow_engine::models::ModelStore;
use flow_engine::script::ScriptSource;
use flow_engine::Registry;

pub mod comfy;
pub mod core;
pub(crate) mod fsutil;
pub mod image;
pub mod kernels;
pub mod llm;
pub mod rag;
pub mod sd;
pub mod tensor;
pub mod upscale;

/// A registry holding every built-in op, and the rhai script ops
/// (`script.NAME`, `path.rhai`) of [`ScriptSource`].
pub fn registry() -> Registry {
    let mut reg = Registry::new();
    register_all(&mut reg);
    reg.register_source(Arc::new(ScriptSource::new()));
    reg
}

/// Registers every built-in op family into `reg`.
pub fn register_all(reg: &mut Registry) {
    core::register(reg);
    tensor::register(reg);
    image::register(reg);
    sd::register(reg);
    upscale::register(reg);
    rag::register(reg);
    llm::register(reg);
}

/// Registers the generators of the `tiny:KIND` test models with a model store.
pub fn register_tiny_models(store: &ModelStore) {
    store.register_tiny("sd", sd::tiny::TINY_SD_VERSION, sd::tiny::generate_tiny_sd);
    store.register_tiny("sd2", sd::tiny::TINY_SD2_VERSION, sd::tiny::generate_tiny_sd2);
    store.register_tiny("llama", llm::TINY_LLAMA_VERSION, llm::generate_tiny_llama);
    store.register_tiny("bert", rag::TINY_BERT_VERSION, rag::generate_tiny_bert);
}
