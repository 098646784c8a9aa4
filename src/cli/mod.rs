//! The commands of the `flow` binary.

#[macro_use]
mod console;

pub mod cache;
pub mod cluster;
pub mod cluster_run;
pub mod common;
pub mod import;
pub mod import_png;
pub mod inspect;
pub mod models;
pub mod remote;
pub mod render;
pub mod run;
pub mod serve;
pub mod table;
pub mod watch;
pub mod watch_output;
pub mod worker;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a node failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: invalid graph or usage.
pub const EXIT_INVALID: u8 = 2;
/// Exit code: interrupted (Ctrl-C).
pub const EXIT_INTERRUPTED: u8 = 130;
