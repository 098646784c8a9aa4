//! tensor ops.

use flow_engine::Registry;

/// Registers the tensor ops.
pub fn register(_reg: &mut Registry) {}
