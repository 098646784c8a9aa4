//! The built-in ops called directly through the registry, as the engine calls
//! them: defaults filled in, outputs checked against the spec.

mod common;
mod core_ops;
mod graphs;
mod image_ops;
mod tensor_ops;
