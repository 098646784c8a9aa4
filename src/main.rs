//! `flow`: run generative-AI pipelines written as node graphs in YAML.
//!
//! This file parses the command line and dispatches; rendering lives in `cli/`.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Run generative-AI pipelines written as node graphs in YAML.
#[derive(Parser)]
#[command(name = "flow", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by the commands that run or plan a graph.
#[derive(clap::Args, Clone, Debug)]
pub struct GraphArgs {
    /// The graph file.
    pub graph: PathBuf,
    /// Override a param: `--set steps=30` (typed like YAML: `7.5` is a float, `'"7"'` text).
    #[arg(long = "set", value_name = "K=V")]
    pub set: Vec<String>,
    /// Cache folder [default: $FLOW_CACHE_DIR, else $XDG_CACHE_HOME/flow, else ~/.cache/flow].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Run only what these nodes need (repeatable).
    #[arg(long = "only", value_name = "NODE")]
    pub only: Vec<String>,
    /// Device for nodes with `device: auto`: cpu, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Byte budget of the in-memory cache, e.g. 512M or 4G [default: $FLOW_MEMORY_BUDGET, else 4G].
    #[arg(long, value_name = "BYTES")]
    pub memory_budget: Option<String>,
    /// Byte budget of the disk cache folder, e.g. 20G; least recently used
    /// entries go first [default: $FLOW_DISK_BUDGET, else 10G].
    #[arg(long, value_name = "BYTES")]
    pub disk_budget: Option<String>,
    /// Bytes kept resident on each GPU between nodes (models, cached outputs), e.g. 6G [default: $FLOW_VRAM_BUDGET, else 8G].
    #[arg(long, value_name = "BYTES")]
    pub vram_budget: Option<String>,
    /// Heavy CPU nodes run at once [default: number of cores, at least 2].
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Models folder in ComfyUI's layout (checkpoints/, vae/, upscale_models/,
    /// loras/, embeddings/) that `ckpt:NAME`, `vae:NAME`, `upscaler:NAME`,
    /// `lora:NAME` and `embedding:NAME` read from [default: $FLOW_MODELS_DIR].
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a graph.
    Run {
        #[command(flatten)]
        args: GraphArgs,
        /// Ignore cached results (results are still written to the cache).
        #[arg(long)]
        no_cache: bool,
        /// Print one JSON event per line instead of progress bars and a table.
        #[arg(long)]
        json: bool,
        /// Run on a running `flow serve` at this URL (e.g. http://127.0.0.1:8188)
        /// instead of here; paths in the graph are the server's.
        #[arg(long, value_name = "URL", conflicts_with = "no_cache")]
        server: Option<String>,
        /// The server's token (with --server).
        #[arg(long, value_name = "T", requires = "server")]
        token: Option<String>,
        /// Run in the cluster on this NATS server (e.g. nats://127.0.0.1:4222)
        /// by one of its `flow worker`s; paths in the graph are the workers'.
        #[arg(long, value_name = "URL", conflicts_with_all = ["no_cache", "server"])]
        nats: Option<String>,
    },
    /// Run a graph, then re-run what changed on every save of the graph, its
    /// scripts and the files it reads, until Ctrl-C.
    Watch {
        #[command(flatten)]
        args: GraphArgs,
        /// Print one JSON event per line instead of progress bars and tables.
        #[arg(long)]
        json: bool,
        /// Milliseconds of quiet after a save before re-running.
        #[arg(long, value_name = "MS", default_value_t = 50)]
        debounce: u64,
        /// Milliseconds that saves may keep cancelling runs; after that the
        /// run in progress finishes before the next one starts.
        #[arg(long, value_name = "MS", default_value_t = 2000)]
        max_wait: u64,
    },
    /// Check graph files; print every error; exit 2 if any.
    Validate {
        /// Graph files.
        #[arg(required = true)]
        graphs: Vec<PathBuf>,
    },
    /// Show what a run would do: order, device, and per node cached or why it runs.
    Plan {
        #[command(flatten)]
        args: GraphArgs,
        /// Plan as if the cache were empty.
        #[arg(long)]
        no_cache: bool,
    },
    /// Print the graph as Graphviz dot or Mermaid.
    Graph {
        /// The graph file.
        graph: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// List the ops with their ports, types, defaults and docs.
    Ops {
        /// Show only this op.
        op: Option<String>,
    },
    /// List, fetch or verify models.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
        /// Cache folder (models live in its `models/` folder).
        #[arg(long, global = true, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Convert a file from another tool into a flow graph.
    Import {
        #[command(subcommand)]
        what: ImportWhat,
    },
    /// Serve ComfyUI's HTTP + WebSocket API (queue, history, uploads) until Ctrl-C.
    Serve(cli::serve::ServeArgs),
    /// Execute a cluster's runs (pulled from NATS JetStream) until SIGTERM, then drain.
    Worker(cli::worker::WorkerArgs),
    /// Look at a cluster.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Inspect or clear the cache.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
        /// Cache folder.
        #[arg(long, global = true, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
}

/// Output formats of `flow graph`.
#[derive(Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz dot.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Catalog models (installed or not), tiny test models, and what the
    /// models folder (ComfyUI's layout) holds.
    List {
        /// Models folder in ComfyUI's layout to list [default: $FLOW_MODELS_DIR].
        #[arg(long, value_name = "DIR")]
        models_dir: Option<PathBuf>,
        /// Print one JSON document instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Fetch a catalog model now, verifying every file.
    Pull {
        /// Catalog name, e.g. `minilm`.
        name: String,
    },
    /// Re-hash every installed catalog model against its pinned sha256.
    Verify,
}

#[derive(Subcommand)]
enum ImportWhat {
    /// A ComfyUI workflow saved in API format, as a readable flow graph.
    Comfy {
        /// The workflow (`workflow_api.json`).
        workflow: PathBuf,
        /// Write the graph here instead of printing it (paths in it are
        /// relative to the workflow's folder: keep the graph beside it).
        #[arg(short, long, value_name = "GRAPH.yaml")]
        output: Option<PathBuf>,
    },
    /// The graph behind a PNG saved by flow, ComfyUI or the AUTOMATIC1111 web UI.
    Png {
        /// The image.
        image: PathBuf,
        /// Write the graph here instead of printing it.
        #[arg(short, long, value_name = "GRAPH.yaml")]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Workers (devices, resident models, runs in flight), queue depth, runs per state.
    Status {
        /// The cluster's NATS server, e.g. nats://127.0.0.1:4222.
        #[arg(long, value_name = "URL")]
        nats: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// Entries and bytes in the cache.
    Stats,
    /// Remove every cache entry.
    Clear,
}

fn main() -> ExitCode {
    // Errors (candle's, anyhow's) capture a backtrace when RUST_BACKTRACE is
    // set, and it would land in every node error message. Backtraces are for
    // panics, which still get them; RUST_LIB_BACKTRACE=1 brings them back
    // for errors. Set before any thread starts.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    flow_engine::allocator::keep_freed_memory();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run { args, json, nats: Some(url), .. } => cli::cluster_run::run(&args, &url, json),
        Command::Run { args, json, server: Some(url), token, .. } => {
            cli::remote::run(&args, &cli::remote::Remote { url, token }, json)
        }
        Command::Run { args, no_cache, json, server: None, .. } => cli::run::run(&args, no_cache, json),
        Command::Watch { args, json, debounce, max_wait } => cli::watch::watch(
            &args,
            json,
            Duration::from_millis(debounce),
            Duration::from_millis(max_wait),
        ),
        Command::Validate { graphs } => cli::inspect::validate(&graphs),
        Command::Plan { args, no_cache } => cli::inspect::plan(&args, no_cache),
        Command::Graph { graph, format } => cli::inspect::graph(&graph, format),
        Command::Ops { op } => cli::inspect::ops(op.as_deref()),
        Command::Models { action: ModelsAction::List { models_dir, json }, cache_dir } => {
            cli::models::list(cache_dir, models_dir, json)
        }
        Command::Models { action: ModelsAction::Pull { name }, cache_dir } => cli::models::pull(&name, cache_dir),
        Command::Models { action: ModelsAction::Verify, cache_dir } => cli::models::verify(cache_dir),
        Command::Import { what: ImportWhat::Comfy { workflow, output } } => cli::import::comfy(&workflow, output.as_ref()),
        Command::Import { what: ImportWhat::Png { image, output } } => cli::import_png::png(&image, output.as_ref()),
        Command::Serve(args) => cli::serve::serve(&args),
        Command::Worker(args) => cli::worker::worker(&args),
        Command::Cluster { action: ClusterAction::Status { nats, json } } => cli::cluster::status(&nats, json),
        Command::Cache { action: CacheAction::Stats, cache_dir } => cli::cache::stats(cache_dir),
        Command::Cache { action: CacheAction::Clear, cache_dir } => cli::cache::clear(cache_dir),
    };
    ExitCode::from(code)
}
