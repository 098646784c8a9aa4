//! Starting and stopping a server: the queue restored from disk, the
//! workers, the listener; on shutdown, no new requests, running prompts
//! stop at their next step and stay queued for the next start.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use flow_engine::Engine;

use crate::config::ServerConfig;
use crate::hub::Hub;
use crate::prepare::Workspace;
use crate::queue::Queue;
use crate::runlog::RunLogs;
use crate::state::AppState;
use crate::store::Store;
use crate::remote::RemoteRuns;
use crate::worker::{Executor, Runner};

/// How long open connections (WebSockets) get to close on shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Runs a server until `shutdown` completes. `on_ready` gets the bound
/// address (the port is chosen when the configuration asks for port 0) and
/// the problems met restoring the queue.
pub fn serve(
    config: ServerConfig,
    engine: Engine,
    on_ready: impl FnOnce(SocketAddr, &[String]),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_with(config, engine, None, on_ready, shutdown)
}

/// [`serve`], with the prompts run by `remote` (a cluster) when given: the
/// engine then only validates them.
pub fn serve_with(
    mut config: ServerConfig,
    engine: Engine,
    remote: Option<Arc<dyn RemoteRuns>>,
    on_ready: impl FnOnce(SocketAddr, &[String]),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.check()?;
    config.prepare_folders()?;
    let hub = Hub::new();
    let (queue, problems) = Queue::restore(Store::open(&config.state_dir)?, hub);
    let queue = Arc::new(queue);
    let workspace = Arc::new(Workspace::new(&config)?);
    let runs = Arc::new(RunLogs::open(&config.state_dir)?);
    let state = AppState {
        config: Arc::new(config),
        engine: Arc::new(engine),
        queue: Arc::clone(&queue),
        workspace,
        runs,
        remote: remote.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flow-http")
        .enable_all()
        .build()
        .context("cannot start the server runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(state.config.listen))
        .with_context(|| format!("cannot listen on {}", state.config.listen))?;
    let addr = listener.local_addr()?;
    if let Some(remote) = &remote {
        remote.attach(Arc::clone(&queue), Arc::clone(&state.runs));
    }
    let executor = Executor {
        engine: Arc::clone(&state.engine),
        workspace: Arc::clone(&state.workspace),
        runs: Arc::clone(&state.runs),
        hub: queue.hub().clone(),
    };
    let runner = Runner { executor, queue: Arc::clone(&queue), remote };
    let workers = runner.spawn(state.config.concurrent_runs);
    on_ready(addr, &problems);
    let app = crate::routes::router(state);
    let stopping = Arc::clone(&queue);
    let served = runtime.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let mut rx = rx;
            let _ = rx.wait_for(|stop| *stop).await;
        });
        tokio::select! {
            r = server => r.context("the server stopped"),
            () = async move {
                shutdown.await;
                stopping.stop();
                let _ = tx.send(true);
                tokio::time::sleep(CLOSE_GRACE).await;
            } => Ok(()),
        }
    });
    queue.stop();
    for w in workers {
        let _ = w.join();
    }
    runtime.shutdown_timeout(Duration::from_millis(100));
    served
}
