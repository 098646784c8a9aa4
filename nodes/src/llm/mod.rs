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
//! candle's Q4_1 kernels quantize the activations to 8 bits; on SmolLM2's
//! reference prompt that flips the near-tied first token ("L'Étoile, la
//! Marseillaise, ..." instead of "The capital of France is Paris.", see
//! `tests/fixtures/smollm2/README.md`). Weights dequantized to f32 at load
//! reproduce transformers' logits (within 6e-5) and answer. Measured on
//! SmolLM2-135M-Instruct Q4_1, release build, 2-core AMD EPYC (AVX-512), with
//! `cargo bench --bench llm` (prefill = a 128-token chat prompt; decode = 32
//! single-token steps after it):
//!
//! | precision | threads | prefill tok/s | decode tok/s | answer |
//! |---|---|---|---|---|
//! | f32 | 1 | 338 | 34 - 40 | The capital of France is Paris. |
//! | f32 | 2 | 399 | 36 | same |
//! | quantized | 1 | 15 | 13.5 | L'Étoile, la Marseillaise, la femme, ... |
//! | quantized | 2 | 29 | 25 | same |
//!
//! (llama.cpp decodes 42 tok/s on one thread and 71 on two.) candle 0.11
//! has no SIMD kernel for Q4_1 (`vec_dot_unopt` is 80% of the quantized
//! profile), so f32 wins on speed as well as on quality while the f32
//! weights are small: [`Precision::Auto`] picks f32 up to
//! [`AUTO_F32_MAX_BYTES`] (2 GiB, about 500M parameters) and the quantized
//! kernels beyond, where f32 would not fit comfortably in memory.

mod chat;
mod generate;
mod model;
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
