//! tensor ops: safetensors files, seeded random tensors and basic arithmetic;
//! the random streams ops draw from ([`generator`]: flow's SplitMix64 and
//! torch's CPU generator, bit for bit).

use flow_engine::Registry;

mod arith;
pub mod generator;
mod matmul;
pub mod mt19937;
mod random;
pub mod rng;
pub mod torch_rng;
mod safetensors_io;

/// Registers the tensor ops.
pub fn register(reg: &mut Registry) {
    reg.register(safetensors_io::Load::new());
    reg.register(safetensors_io::Save::new());
    reg.register(random::Random::new());
    reg.register(arith::Add::new());
    reg.register(arith::Scale::new());
    reg.register(matmul::MatMul::new());
}
