//! What every request handler shares.

use std::sync::Arc;

use flow_engine::Engine;

use crate::config::ServerConfig;
use crate::prepare::Workspace;
use crate::queue::Queue;
use crate::remote::RemoteRuns;
use crate::runlog::RunLogs;

/// The server's state: its settings, its one engine, the queue and the
/// folder graphs run in.
#[derive(Clone)]
pub struct AppState {
    /// Settings (folders canonical).
    pub config: Arc<ServerConfig>,
    /// The engine every run uses (model pool, memory cache, disk cache).
    pub engine: Arc<Engine>,
    /// Queue and history.
    pub queue: Arc<Queue>,
    /// Where graphs run.
    pub workspace: Arc<Workspace>,
    /// Each run's graph, events and node states (the native API's view).
    pub runs: Arc<RunLogs>,
    /// The cluster prompts run in, when the server is its front end.
    pub remote: Option<Arc<dyn RemoteRuns>>,
}
