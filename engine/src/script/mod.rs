//! rhai script ops: a node's code in a `.rhai` file beside the graph.
//!
//! ```rhai
//! fn ports() {
//!     #{ inputs: #{ subject: "text", n: #{ type: "int", default: 3 } },
//!        outputs: #{ prompt: "text" },
//!        doc: "a prompt about the subject" }
//! }
//! fn run(i) { #{ prompt: `a painting of ${i.subject}, ${i.n} times` } }
//! ```
//!
//! - Naming: `op: script.NAME` loads `scripts/NAME.rhai` from the graph's
//!   folder or the closest folder above it that has one; an op name ending
//!   `.rhai` is a path relative to the graph's folder.
//! - Ports: `ports()` returns `#{ inputs, outputs, doc }`; a port is a type
//!   name or `#{ type, default, optional, doc }` (see `ports.rs`). Their types
//!   are checked at validation like those of built-in ops.
//! - Values: plain data maps both ways; tensors, images, latents and
//!   embeddings are the script type `Tensor` (see [`tensor_api`]); domain
//!   objects arrive in their plain form (see `convert.rs`).
//! - Caching: a script's key includes the hash of its source and of every
//!   module it imports ([`crate::op::Fingerprint::Content`]), so editing it
//!   re-runs exactly the nodes that use it.
//! - Sandbox: no file, network or process access, `eval` disabled,
//!   `import` only from the script's own folder, limits on operations, call
//!   depth, expression depth, string, array and map sizes, and a wall-clock
//!   deadline (`FLOW_SCRIPT_TIMEOUT` seconds, 30 by default) that is checked
//!   with Ctrl-C while the script runs (see [`sandbox`]).
//! - Errors are `path:line:col: message`, the path shown like the graph's.

mod compile;
mod convert;
mod errors;
mod modules;
mod op;
mod paths;
mod ports;
pub mod sandbox;
mod source;
pub mod tensor_api;
mod worker;

#[cfg(test)]
mod tests;

pub use source::ScriptSource;
