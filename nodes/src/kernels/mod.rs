//! Numeric kernels shared by the model families: quantized matrix-vector
//! and matrix products over GGUF block formats ([`quant`]), and the
//! persistent worker pool they run on ([`pool`]).

pub mod pool;
pub mod quant;
