//! image ops.

use flow_engine::Registry;

/// Registers the image ops.
pub fn register(_reg: &mut Registry) {}
