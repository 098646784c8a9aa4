//! Reading graph files: located YAML, the file structure, scalars and references.

pub mod document;
pub mod location;
pub mod refs;
pub mod scalar;
pub mod yaml;

pub use location::Location;
