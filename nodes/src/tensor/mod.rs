//! tensor ops: safetensors files, seeded random tensors and basic arithmetic.

use flow_engine::Registry;

mod arith;
mod matmul;
mod random;
pub mod rng;
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
