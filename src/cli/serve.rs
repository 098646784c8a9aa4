//! `flow serve`: ComfyUI's HTTP + WebSocket API over one engine, until Ctrl-C.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use flow_engine::cache::{default_disk_budget, default_memory_budget, default_vram_budget};
use flow_engine::graph::DeviceChoice;
use flow_engine::models::StoreResolver;
use flow_engine::run::default_cpu_slots;
use flow_engine::{Engine, EngineConfig};
use flow_server::ServerConfig;

use super::common::{cache_dir, on_interrupt, registry};
use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};

/// The options of `flow serve`.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address and port to listen on; any address but loopback needs --token.
    #[arg(long, value_name = "ADDR:PORT", default_value = flow_server::config::DEFAULT_LISTEN)]
    pub listen: String,
    /// Models folder in ComfyUI's layout (checkpoints/, vae/, ...) [default: $FLOW_MODELS_DIR].
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Folder of uploads and of the files graphs read (`input/NAME` in a graph).
    #[arg(long, value_name = "DIR", default_value = "input")]
    pub input_dir: PathBuf,
    /// Folder graphs write to (`output/NAME` in a graph).
    #[arg(long, value_name = "DIR", default_value = "output")]
    pub output_dir: PathBuf,
    /// Folder of the rhai scripts graphs may use as `op: script.NAME`
    /// [default: the `serve/scripts` folder of the cache folder].
    #[arg(long, value_name = "DIR")]
    pub scripts_dir: Option<PathBuf>,
    /// Require this token on every request (`Authorization: Bearer T` or `?token=T`).
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
    /// Cache folder; the queue and history live in its `serve/` folder
    /// [default: $FLOW_CACHE_DIR, else $XDG_CACHE_HOME/flow, else ~/.cache/flow].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Prompts executed at once (their heavy nodes share the device lanes).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub runs: usize,
    /// Heavy CPU nodes run at once [default: number of cores, at least 2].
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Device for nodes with `device: auto`: cpu, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Be the front end of a cluster on this NATS server (e.g.
    /// nats://127.0.0.1:4222): prompts are queued there and run by `flow
    /// worker`s; this server only queues, tracks and serves.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
}

/// Serves until Ctrl-C; returns the exit code.
pub fn serve(args: &ServeArgs) -> u8 {
    let listen: SocketAddr = match args.listen.parse() {
        Ok(a) => a,
        Err(_) => {
            errln!("error: --listen {}: expected ADDRESS:PORT, e.g. 127.0.0.1:8188", args.listen);
            return EXIT_INVALID;
        }
    };
    let Some(default_device) = DeviceChoice::parse(&args.device) else {
        errln!("error: --device {}: use cpu, cuda:N or auto", args.device);
        return EXIT_INVALID;
    };
    let cache = cache_dir(&args.cache_dir);
    let mut config = ServerConfig::new(listen, &cache, args.input_dir.clone(), args.output_dir.clone());
    config.token = args.token.clone();
    if let Some(dir) = &args.scripts_dir {
        config.scripts_dir = dir.clone();
    }
    config.concurrent_runs = args.runs;
    if let Err(e) = config.check() {
        errln!("error: {e:#}");
        return EXIT_INVALID;
    }
    let library = match super::models::library(&args.models_dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    config.models_dir = library.as_ref().map(|(l, _)| l.root().to_path_buf());
    let engine = match engine(&cache, &args.cache_dir, &args.models_dir, args.jobs, default_device) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    on_interrupt(move || {
        errln!("\nstopping: running prompts stop at their next step and stay queued (Ctrl-C again to quit now)");
        let _ = tx.send(());
    });
    let shutdown = async move {
        let _ = rx.await;
    };
    let ready = |addr: SocketAddr, problems: &[String]| {
        for p in problems {
            errln!("warning: cannot read a queued or finished prompt: {p}");
        }
        outln!("flow serve: listening on http://{addr}");
        let _ = std::io::stdout().flush();
    };
    let remote: Option<Arc<dyn flow_server::remote::RemoteRuns>> = match &args.nats {
        None => None,
        Some(url) => match flow_cluster::Cluster::connect(url, flow_cluster::Settings::default()) {
            Ok(cluster) => Some(flow_cluster::front::FrontEnd::new(cluster)),
            Err(e) => {
                errln!("error: {e:#}");
                return EXIT_FAILED;
            }
        },
    };
    match flow_server::serve_with(config, engine, remote, ready, shutdown) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            errln!("error: {e:#}");
            EXIT_FAILED
        }
    }
}

/// The engine of a server or worker: the CLI's disk cache and default budgets.
pub fn engine(
    cache: &std::path::Path,
    cache_dir: &Option<PathBuf>,
    models_dir: &Option<PathBuf>,
    jobs: Option<usize>,
    default_device: DeviceChoice,
) -> Result<Engine, u8> {
    let usage = |e: anyhow::Error| {
        errln!("error: {e:#}");
        EXIT_INVALID
    };
    let config = EngineConfig {
        cache_dir: Some(cache.to_path_buf()),
        memory_budget: default_memory_budget(),
        disk_budget: default_disk_budget().map_err(usage)?,
        vram_budget: default_vram_budget().map_err(usage)?,
        cpu_slots: jobs.unwrap_or_else(default_cpu_slots),
        default_device,
    };
    let store = super::models::store_with_library(cache_dir, models_dir)?;
    let resolver = StoreResolver::new(store, super::models::progress_sink(true));
    Engine::new(registry(), Arc::new(resolver), config).map_err(usage)
}
