//! What the commands share: loading a graph with located errors, building
//! the engine from the command-line options.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flow_engine::cache::{default_cache_dir, default_disk_budget, default_memory_budget, default_vram_budget, parse_bytes};
use flow_engine::graph::{self, DeviceChoice, Graph, Override};
use flow_engine::models::StoreResolver;
use flow_engine::run::{default_cpu_slots, PlanOptions};
use flow_engine::{Engine, EngineConfig, Registry};

use crate::GraphArgs;

/// The registry of every built-in op.
pub fn registry() -> Registry {
    flow_nodes::registry()
}

/// Parses `--set K=V` overrides, printing every bad one. `Err` carries the exit code.
pub fn parse_overrides(set: &[String]) -> Result<Vec<Override>, u8> {
    let mut overrides = Vec::new();
    let mut bad = Vec::new();
    for s in set {
        match Override::parse(s) {
            Ok(o) => overrides.push(o),
            Err(e) => bad.push(e),
        }
    }
    if !bad.is_empty() {
        for e in bad {
            errln!("error: {e}");
        }
        return Err(super::EXIT_INVALID);
    }
    Ok(overrides)
}

/// Loads and validates a graph, printing every error. `Err` carries the exit code.
pub fn load_graph(path: &Path, set: &[String], registry: &Registry) -> Result<Graph, u8> {
    let overrides = parse_overrides(set)?;
    if let Some(loaded) = super::import::load_comfy_workflow(path, &overrides, registry) {
        return loaded;
    }
    graph::load(path, &overrides, registry).map_err(|diags| {
        err!("{}", diags.render());
        super::EXIT_INVALID
    })
}

/// The cache folder from `--cache-dir` or the defaults.
pub fn cache_dir(arg: &Option<PathBuf>) -> PathBuf {
    arg.clone().unwrap_or_else(default_cache_dir)
}

/// Builds the engine for the graph options. `Err` carries the exit code.
pub fn engine(args: &GraphArgs, registry: Registry, quiet: bool) -> Result<Engine, u8> {
    let memory_budget = budget("--memory-budget", &args.memory_budget, || Ok(default_memory_budget() as u64))? as usize;
    let disk_budget = budget("--disk-budget", &args.disk_budget, default_disk_budget)?;
    let vram_budget = budget("--vram-budget", &args.vram_budget, default_vram_budget)?;
    let Some(default_device) = DeviceChoice::parse(&args.device) else {
        errln!("error: --device {}: use cpu, cuda:N or auto", args.device);
        return Err(super::EXIT_INVALID);
    };
    let config = EngineConfig {
        cache_dir: Some(cache_dir(&args.cache_dir)),
        memory_budget,
        disk_budget,
        vram_budget,
        cpu_slots: args.jobs.unwrap_or_else(default_cpu_slots),
        default_device,
    };
    let store = super::models::store_with_library(&args.cache_dir, &args.models_dir)?;
    let resolver = StoreResolver::new(store, super::models::progress_sink(quiet));
    // A cache folder that cannot be opened is a usage error, not a failed node.
    Engine::new(registry, Arc::new(resolver), config).map_err(|e| {
        errln!("error: {e:#}");
        super::EXIT_INVALID
    })
}

/// A byte budget from its option (`flag`), else `default()` (which reads
/// its environment variable); an unreadable value is a usage error.
fn budget(flag: &str, arg: &Option<String>, default: impl FnOnce() -> anyhow::Result<u64>) -> Result<u64, u8> {
    let parsed = match arg {
        Some(b) => parse_bytes(b).map(|b| b as u64).map_err(|e| e.context(format!("{flag} {b}"))),
        None => default(),
    };
    parsed.map_err(|e| {
        errln!("error: {e:#}");
        super::EXIT_INVALID
    })
}

/// Plan options from the command line; unknown `--only` nodes are reported.
pub fn plan_options(graph: &Graph, args: &GraphArgs, no_cache: bool) -> Result<PlanOptions, u8> {
    let mut only = Vec::new();
    for id in &args.only {
        match graph.node_index(id) {
            Some(i) => only.push(i),
            None => {
                let help = flow_engine::diagnostics::did_you_mean(id, graph.nodes.iter().map(|n| n.id.as_str()));
                errln!("error: --only {id}: the graph has no node `{id}`{}", help.map(|h| format!("; {h}")).unwrap_or_default());
                return Err(super::EXIT_INVALID);
            }
        }
    }
    Ok(PlanOptions { only, no_cache, probe_only: false })
}

/// A path as the user would write it: relative to the working folder when
/// it lies below it.
pub fn shown(path: &Path) -> String {
    let full = flow_engine::watch::normalize(path);
    let cwd = std::env::current_dir().ok().and_then(|d| d.canonicalize().ok());
    match cwd.as_deref().and_then(|cwd| full.strip_prefix(cwd).ok()) {
        Some(rel) => rel.display().to_string(),
        None => path.display().to_string(),
    }
}

/// Calls `first` on the first Ctrl-C or SIGTERM (a clean stop: the run stops
/// at the next step boundary, finished results stay cached); a second one
/// exits at once with 130.
pub fn on_interrupt(first: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            let Ok(mut signals) = Interrupts::new() else { return };
            if signals.next().await {
                first();
            }
            if signals.next().await {
                std::process::exit(i32::from(super::EXIT_INTERRUPTED));
            }
        });
    });
}

/// Ctrl-C and, on Unix, SIGTERM (what `kill`, service managers and
/// container runtimes send).
struct Interrupts {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> std::io::Result<Self> {
        Ok(Interrupts {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
        })
    }

    /// Waits for the next interrupt; false if signals cannot be received.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        {
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.is_ok(),
                r = self.term.recv() => r.is_some(),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.is_ok()
        }
    }
}
