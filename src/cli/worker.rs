//! `flow worker --nats URL`: executes a cluster's runs on this machine
//! until SIGTERM or Ctrl-C, then drains (finishes or hands back its runs).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flow_cluster::shared_cache::NatsCache;
use flow_cluster::worker::{host_name, WorkerOptions};
use flow_cluster::{Cluster, Settings};
use flow_engine::cache::parse_bytes;
use flow_engine::graph::DeviceChoice;
use flow_server::hub::Hub;
use flow_server::prepare::Workspace;
use flow_server::runlog::RunLogs;
use flow_server::worker::Executor;
use flow_server::ServerConfig;

use super::common::{cache_dir, on_interrupt};
use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};

/// The options of `flow worker`.
#[derive(clap::Args, Clone, Debug)]
pub struct WorkerArgs {
    /// The cluster's NATS server, e.g. nats://127.0.0.1:4222 (JetStream enabled).
    #[arg(long, value_name = "URL")]
    pub nats: String,
    /// Device for nodes with `device: auto`: cpu, cuda:N or auto; a CUDA
    /// worker also takes the jobs that ask for CUDA.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Models folder in ComfyUI's layout (checkpoints/, vae/, ...) [default: $FLOW_MODELS_DIR].
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Runs executed at once (their heavy nodes share the device lanes).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub slots: usize,
    /// This worker's name in the cluster [default: HOST-PID].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Cache folder (the worker's own files live in its `worker/` folder)
    /// [default: $FLOW_CACHE_DIR, else $XDG_CACHE_HOME/flow, else ~/.cache/flow].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Heavy CPU nodes run at once [default: number of cores, at least 2].
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Seconds a job may go unacknowledged before another worker gets it
    /// (this worker keeps its jobs alive while they run); set by the first
    /// worker that opens a job subject.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub ack_wait: f64,
    /// Worker starts of one run before it fails for good.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_attempts: u32,
    /// On SIGTERM, seconds running runs may go on before they are handed back.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Byte budget of the cluster's shared cache (its object store), e.g.
    /// 100G, set when the first worker creates it [default: unlimited].
    #[arg(long, value_name = "BYTES")]
    pub shared_cache_budget: Option<String>,
}

/// Works until SIGTERM or Ctrl-C; returns the exit code.
pub fn worker(args: &WorkerArgs) -> u8 {
    let Some(device) = DeviceChoice::parse(&args.device) else {
        errln!("error: --device {}: use cpu, cuda:N or auto", args.device);
        return EXIT_INVALID;
    };
    if !(args.ack_wait > 0.0 && args.drain_timeout >= 0.0) || args.slots == 0 || args.max_attempts == 0 {
        errln!("error: --ack-wait must be above 0, --drain-timeout at least 0, --slots and --max-attempts at least 1");
        return EXIT_INVALID;
    }
    let budget = match args.shared_cache_budget.as_deref().map(parse_bytes).transpose() {
        Ok(b) => b.map(|b| b as u64),
        Err(e) => {
            errln!("error: --shared-cache-budget: {e:#}");
            return EXIT_INVALID;
        }
    };
    let settings = Settings {
        ack_wait: Duration::from_secs_f64(args.ack_wait),
        max_attempts: args.max_attempts,
        ..Settings::default()
    };
    let cluster = match Cluster::connect(&args.nats, settings) {
        Ok(c) => c,
        Err(e) => {
            errln!("error: {e:#}");
            return EXIT_FAILED;
        }
    };
    let shared = match NatsCache::open_with_budget(&cluster, budget) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e:#}");
            return EXIT_FAILED;
        }
    };
    let cache = cache_dir(&args.cache_dir);
    let engine = match super::serve::engine(&cache, &args.cache_dir, &args.models_dir, args.jobs, device) {
        Ok(e) => e.with_shared_cache(shared),
        Err(code) => return code,
    };
    let executor = match executor(args, &cache, &cluster, engine) {
        Ok(e) => e,
        Err(e) => {
            errln!("error: {e:#}");
            return EXIT_FAILED;
        }
    };
    let name = args.name.clone().unwrap_or_else(|| format!("{}-{}", host_name(), std::process::id()));
    let options =
        WorkerOptions { name, device, slots: args.slots, drain_timeout: Duration::from_secs_f64(args.drain_timeout) };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    on_interrupt(move || {
        errln!("\nstopping: no new jobs; running ones finish or are handed back (Ctrl-C again to quit now)");
        let _ = tx.send(());
    });
    let ready = |info: &flow_cluster::worker::WorkerInfo| {
        outln!("flow worker {} ({}): pulling jobs from {}", info.name, info.device, args.nats);
        let _ = std::io::stdout().flush();
    };
    let shutdown = async move {
        let _ = rx.await;
    };
    match flow_cluster::worker::run(cluster, executor, options, ready, shutdown) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            errln!("error: {e:#}");
            EXIT_FAILED
        }
    }
}

/// Where the worker's runs happen: its own folders under `CACHE/worker/`
/// (inputs come from the cluster, outputs go to it), SaveImage numbers
/// shared with the cluster.
fn executor(args: &WorkerArgs, cache: &std::path::Path, cluster: &Arc<Cluster>, engine: flow_engine::Engine) -> anyhow::Result<Executor> {
    let root = cache.join("worker");
    let listen: SocketAddr = flow_server::config::DEFAULT_LISTEN.parse()?;
    let mut config = ServerConfig::new(listen, cache, root.join("input"), root.join("output"));
    config.state_dir = root.clone();
    config.temp_dir = root.join("temp");
    config.scripts_dir = root.join("scripts");
    if let Some((library, _)) = super::models::library(&args.models_dir).map_err(|_| anyhow::anyhow!("bad --models-dir"))? {
        config.models_dir = Some(library.root().to_path_buf());
    }
    config.prepare_folders()?;
    let counters = Arc::clone(cluster);
    let workspace = Workspace::new(&config)?.with_shared_counter(Arc::new(move |prefix: &str, at_least: u64| {
        let store = counters.handles.counters.clone();
        let prefix = prefix.to_string();
        counters
            .call(async move {
                flow_cluster::files::next_counter(&store, &prefix, at_least, flow_cluster::follow::PATIENCE).await
            })
            .unwrap_or(at_least)
    }));
    Ok(Executor {
        engine: Arc::new(engine),
        workspace: Arc::new(workspace),
        runs: Arc::new(RunLogs::open(&root)?),
        hub: Hub::new(),
    })
}
