//! flow-engine: the graph file format, validation, planning, the parallel
//! scheduler, the content-addressed cache and the events of a run.
//!
//! The engine knows nothing of particular ops: node libraries register
//! [`op::Op`] implementations into a [`registry::Registry`].

pub mod allocator;
pub mod cache;
pub mod context;
pub mod diagnostics;
pub mod effects;
pub mod engine;
pub mod events;
pub mod files;
pub mod finite;
pub mod graph;
pub mod limits;
pub mod models;
pub mod op;
pub mod registry;
pub mod run;
pub mod script;
pub mod source;
pub mod types;
pub mod value;
pub mod watch;

pub use engine::{Engine, EngineConfig};
pub use context::{CancelToken, Interrupted, OpContext, Provenance};
pub use events::{Event, EventSink, NodeStatus};
pub use op::{Cost, Fingerprint, Inputs, Op, OpRef, OpSpec, Outputs, PortSpec};
pub use registry::Registry;
pub use types::ValueType;
pub use value::{Object, TensorValue, Value};
