//! Language models: the `llm.generate` op, model loading (GGUF llama,
//! Hugging Face llama and qwen2), tokenizers (including the one embedded in
//! GGUF files), chat templates, sampling, and the `tiny:llama` generator.
//!
//! Pieces:
//! * [`LanguageModel`] loads a model and opens [`Session`]s (a KV cache each);
//! * [`generate`] runs the sampling loop with streaming and stop strings;
//! * [`TextTokenizer`], [`ChatTemplate`], [`Sampler`], [`StopStrings`] are the
//!   parts it is made of;
//! * [`generate_tiny_llama`] writes the `tiny:llama` test model.
//!
//! # GGUF precision (`precision` input)
//!
//! `quantized` (and `auto`): the weights stay in their GGUF format and run on
//! [`crate::kernels::quant`] with 8-bit activations, as llama.cpp runs them
//! ([`quantized`]); on SmolLM2's reference prompt the greedy tokens equal
//! llama.cpp's. `f32`: dequantized at load, candle's `quantized_llama` on f32
//! tensors, transformers' numerics. See the README for the measured speeds
//! against llama.cpp (`benches/compare/llm.py`).

mod chat;
mod generate;
mod model;
pub mod prefix;
pub mod quantized;
mod sampling;
mod tiny;
mod tokenizer;

#[cfg(test)]
mod tests;

use flow_engine::Registry;

pub use chat::{ChatTemplate, Message};
pub use generate::{generate, FinishReason, GenerateOptions, Generation};
pub use model::{LanguageModel, LoadPlan, Precision, Session};
pub use sampling::{apply_repeat_penalty, argmax, candidates, Released, Sampler, SamplingParams, StopStrings};
pub use tiny::{generate_tiny_llama, TINY_LLAMA_VERSION};
pub use tokenizer::{TextTokenizer, TokenStream};

/// Registers `llm.generate`.
pub fn register(reg: &mut Registry) {
    reg.register(generate::Generate::new());
}
