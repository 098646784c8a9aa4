//! Numeric kernels shared by the model families: quantized matrix-vector
//! and matrix products over GGUF block formats ([`quant`]), Winograd 3x3
//! convolutions ([`winograd`]), the SIMD abstraction of the f32 kernels
//! ([`simd`]), and the persistent worker pool they run on ([`pool`],
//! [`parallel`]).

pub(crate) mod parallel;
pub mod pool;
pub mod quant;
pub(crate) mod simd;
pub(crate) mod winograd;
