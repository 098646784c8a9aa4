//! core ops.

use flow_engine::Registry;

/// Registers the core ops.
pub fn register(_reg: &mut Registry) {}
