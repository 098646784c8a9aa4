//! A llama-architecture model run on its GGUF weights as they are stored
//! (Q4_1, Q8_0, k-quants...): the 8-bit activation products of
//! [`crate::kernels::quant`] on the persistent worker pool, fused norm,
//! rotary, gated activation and attention loops, and a KV cache
//! preallocated for the run's context and kept in f16 as llama.cpp keeps
//! it. The weights take what the file takes; nothing is dequantized at load.
//!
//! * `weights`: reading the GGUF tensors into [`QMatrix`]es;
//! * `session`: the KV cache and the forward pass over a batch of tokens;
//! * `attention`, `ops`: attention over the f16 cache, RMSNorm, RoPE, SiLU-gate.

mod attention;
mod ops;
mod session;
mod weights;

pub use session::QSession;
pub use weights::{QLlama, QLlamaConfig};

use crate::kernels::quant::QMatrix;
