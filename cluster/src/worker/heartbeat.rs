//! Workers announce themselves in the workers bucket: who, on which
//! device, with which models, running what. An entry lives a few
//! heartbeats; a worker that stops beating disappears from it.

use serde::{Deserialize, Serialize};

/// What a worker says about itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkerInfo {
    /// Its name (`--name`, else host and process id).
    pub name: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Its device (`cpu`, `cuda:0`, ...).
    pub device: String,
    /// Runs it executes at once.
    pub slots: usize,
    /// Runs it executes now.
    pub running: Vec<String>,
    /// Model families it ran lately, most recent first (their jobs come to it first).
    pub families: Vec<String>,
    /// Models resident in its pool, most recently used first.
    pub models: Vec<String>,
    /// Runs it finished since it started.
    pub finished: u64,
    /// Started, in ms since the epoch.
    pub started_ms: u64,
    /// Last heartbeat, in ms since the epoch.
    pub beat_ms: u64,
    /// It stopped taking jobs and finishes or hands back its runs.
    pub draining: bool,
}

/// The host name (`$HOSTNAME`, `/etc/hostname`, else `localhost`).
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
