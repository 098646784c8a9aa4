//! The engine: a registry of ops, a cache, a model resolver and devices,
//! kept together so that `flow watch` re-runs share warm state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cache::{Cache, DiskTier, Tier};
use crate::context::{CancelToken, Provenance};
use crate::events::{Event, EventSink, NodeStatus};
use crate::files::WriteGuard;
use crate::graph::{DeviceChoice, Graph};
use crate::models::ModelPool;
use crate::registry::Registry;
use crate::run::{
    execute, make_plan, records_path, watched_paths, Decision, Devices, Execution, Plan, PlanOptions, Records,
    ResolverRef, RunReport,
};

/// The folder of ops' own memos inside the disk tier's folder.
pub const MEMO_FOLDER: &str = "memo";

/// How an engine is set up.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Folder of the persistent cache; `None` keeps the cache in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Byte budget of the in-memory cache tier.
    pub memory_budget: usize,
    /// Byte budget of the disk cache folder (entries and memos).
    pub disk_budget: u64,
    /// Bytes flow keeps resident on each GPU between nodes: three quarters
    /// for models in the pool, a quarter for cached outputs.
    pub vram_budget: u64,
    /// Heavy nodes the CPU runs at once.
    pub cpu_slots: usize,
    /// What `device: auto` means.
    pub default_device: DeviceChoice,
}

impl Default for EngineConfig {
    /// No disk cache, the default budgets, two CPU slots, `auto` devices.
    fn default() -> Self {
        EngineConfig {
            cache_dir: None,
            memory_budget: crate::cache::DEFAULT_MEMORY_BUDGET,
            disk_budget: crate::cache::DEFAULT_DISK_BUDGET,
            vram_budget: crate::cache::DEFAULT_VRAM_BUDGET,
            cpu_slots: 2,
            default_device: DeviceChoice::Auto,
        }
    }
}

/// Runs graphs against one registry, cache and set of devices.
pub struct Engine {
    registry: Arc<Registry>,
    cache: Arc<Cache>,
    resolver: ResolverRef,
    devices: Arc<Devices>,
    runtime: tokio::runtime::Runtime,
    cache_dir: Option<PathBuf>,
    models: Arc<ModelPool>,
}

impl Engine {
    /// An engine with its own tokio runtime.
    pub fn new(mut registry: Registry, resolver: ResolverRef, config: EngineConfig) -> Result<Self> {
        crate::models::register_decoders(&mut registry);
        let models = Arc::new(ModelPool::from_env()?.with_vram_budget(config.vram_budget / 4 * 3));
        let disk = match &config.cache_dir {
            Some(dir) => Some(
                DiskTier::open(dir.join("v1"))
                    .with_context(|| format!("cannot open the cache folder {}", dir.display()))?
                    .with_budget(config.disk_budget),
            ),
            None => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flow-sched")
            .enable_all()
            .build()
            .context("cannot start the scheduler runtime")?;
        Ok(Engine {
            registry: Arc::new(registry),
            cache: Arc::new(
                Cache::new(config.memory_budget, disk).with_vram_budget((config.vram_budget / 4) as usize),
            ),
            resolver,
            devices: Arc::new(Devices::new(config.cpu_slots, config.default_device)),
            runtime,
            cache_dir: config.cache_dir,
            models,
        })
    }

    /// The ops this engine knows.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The resident model pool.
    pub fn models(&self) -> &ModelPool {
        &self.models
    }

    /// The concrete device `device: auto` (or any choice) runs on.
    pub fn resolve_device(&self, choice: DeviceChoice) -> DeviceChoice {
        self.devices.resolve(choice)
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    fn records_file(&self, graph: &Graph) -> Option<PathBuf> {
        self.cache_dir.as_ref().map(|dir| records_path(dir, &graph.file))
    }

    /// What a run would do, without loading cached values (for `flow plan`).
    pub fn plan(&self, graph: &Graph, options: &PlanOptions) -> Plan {
        let records = self.records_file(graph).map(|p| Records::load(&p)).unwrap_or_default();
        let options = PlanOptions { probe_only: true, ..options.clone() };
        make_plan(graph, &self.registry, &self.cache, self.resolver.as_ref(), &records, &options)
    }

    /// Plans and runs `graph`, sending events to `sink`. Blocks until done or
    /// interrupted through `cancel`.
    pub fn run(&self, graph: Arc<Graph>, options: &PlanOptions, sink: EventSink, cancel: CancelToken) -> RunReport {
        let started = Instant::now();
        let records_file = self.records_file(&graph);
        let mut records = records_file.as_ref().map(|p| Records::load(p)).unwrap_or_default();
        let plan = make_plan(&graph, &self.registry, &self.cache, self.resolver.as_ref(), &records, options);
        let t_ms = || started.elapsed().as_secs_f64() * 1e3;
        for w in &plan.warnings {
            sink(Event::Warning { message: w.clone(), t_ms: t_ms() });
        }
        sink(Event::RunStarted {
            graph: graph.name.clone(),
            nodes: plan.nodes.iter().flatten().count(),
            to_run: plan.to_run(),
            t_ms: t_ms(),
        });
        for (i, p) in plan.nodes.iter().enumerate() {
            if let Some(parts) = p.as_ref().and_then(|p| p.parts.clone()) {
                records.nodes.insert(graph.nodes[i].id.clone(), parts);
            }
        }
        let exec = Execution {
            cache: Arc::clone(&self.cache),
            devices: Arc::clone(&self.devices),
            sink: Arc::clone(&sink),
            cancel,
            started,
            provenance: Arc::new(Provenance {
                graph_hash: graph.source_hash.clone(),
                graph_name: graph.name.clone(),
                params: serde_json::Value::Object(graph.params.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
                graph: Some(Arc::clone(&graph)),
            }),
            models: Arc::clone(&self.models),
            memo_root: self.cache.disk().map(|d| d.dir().join(MEMO_FOLDER)),
            memo_reads: !options.no_cache,
            guard: Arc::new(WriteGuard::new(Path::new(&graph.file), &watched_paths(&graph))),
        };
        let mut warnings = plan.warnings.clone();
        let mut report = self.runtime.block_on(execute(Arc::clone(&graph), plan, &exec));
        let mut flushed = self.cache.flush();
        if report.count(NodeStatus::Ran) > 0 {
            if let Some(Err(e)) = self.cache.disk().map(DiskTier::enforce_budget) {
                flushed.push(format!("cannot keep the disk cache within its budget: {e}"));
            }
        }
        for w in flushed {
            sink(Event::Warning { message: w.clone(), t_ms: t_ms() });
            warnings.push(w);
        }
        if let Some(path) = &records_file {
            if let Err(e) = records.save(path) {
                warnings.push(format!("cannot save run records: {e}"));
            }
        }
        report.warnings = warnings;
        report.elapsed = started.elapsed();
        sink(Event::RunFinished {
            ok: report.ok(),
            interrupted: report.interrupted,
            ran: report.count(NodeStatus::Ran),
            cached: report.count(NodeStatus::Cached),
            failed: report.count(NodeStatus::Failed),
            skipped: report.count(NodeStatus::Skipped),
            ms: report.elapsed.as_secs_f64() * 1e3,
            t_ms: t_ms(),
        });
        report
    }
}

/// The word for a cache tier in summaries.
pub fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Memory => "memory",
        Tier::Disk => "disk",
    }
}

/// The reason shown for a planned node.
pub fn decision_text(decision: &Decision) -> String {
    match decision {
        Decision::Cached(tier) => format!("cached ({})", tier_name(*tier)),
        Decision::Run(reason) => reason.clone(),
        Decision::Fail(error) => format!("cannot run: {error}"),
        Decision::Skip(cause) => format!("skipped: {cause}"),
    }
}
