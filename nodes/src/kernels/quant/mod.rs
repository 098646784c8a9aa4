//! Matrix products over weights kept in their GGUF block format, with the
//! activations quantized to 8 bits per block as llama.cpp does: a 135M
//! parameter Q4_1 model stays a 90 MB model in memory, and each product
//! reads the packed bytes instead of four times as many f32 values.
//!
//! * [`formats`]: the block layouts and the reference dequantization;
//! * [`act`]: activation quantization (Q8_0/Q8_1 and Q8_K);
//! * [`scalar`], `x86`: the dot products (AVX2, AVX-512 VNNI), chosen at
//!   run time by [`kernels`];
//! * [`matrix`]: [`QMatrix`] and its products on the worker pool.

pub mod act;
pub mod formats;
pub mod kernels;
pub mod matrix;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

pub use act::{Q8Block, Q8KBlock};
pub use formats::Format;
pub use kernels::Isa;
pub use matrix::{Acts, QMatrix};
