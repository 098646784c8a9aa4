//! The engine: a registry of ops, a cache, a model resolver and devices,
//! kept together so that `flow watch` re-runs share warm state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cache::{Cache, DiskTier, SharedTier, Tier};
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

    /// The same engine with `tier` as the third tier of its cache, behind
    /// memory and disk (DESIGN.md §12): lookups that miss locally ask it,
    /// and every node's outputs are written to it in the background as the
    /// node finishes ([`Engine::run`] waits for those writes before it
    /// returns). Call it before running anything: cached values held in
    /// memory may be dropped.
    pub fn with_shared_cache(mut self, tier: Arc<dyn SharedTier>) -> Self {
        self.cache = match Arc::try_unwrap(self.cache) {
            Ok(cache) => Arc::new(cache.with_shared(tier)),
            // Still held by a run's leftover task: start a fresh memory tier
            // over the same disk tier rather than wait for it.
            Err(cache) => Arc::new(cache.sibling_with_shared(tier)),
        };
        self
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
        // Entries fetched from the shared tier are written to disk too.
        let fetched = plan.nodes.iter().flatten().any(|p| matches!(p.decision, Decision::Cached(Tier::Shared)));
        let mut report = self.runtime.block_on(execute(Arc::clone(&graph), plan, &exec));
        let mut flushed = self.cache.flush();
        if report.count(NodeStatus::Ran) > 0 || fetched {
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
        Tier::Shared => "shared",
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::cache::tests::MapTier;
    use crate::events::Event;
    use crate::op::{Cost, Inputs, Op, OpSpec, Outputs, PortSpec};
    use crate::run::{NoModels, PlanOptions};
    use crate::types::ValueType;
    use crate::value::Value;
    use crate::OpContext;

    /// `out = n + add`, counting its runs. With `wait_for`, it first waits
    /// until that shared tier holds an entry (its upstream's).
    struct Count {
        spec: OpSpec,
        runs: Arc<AtomicUsize>,
        wait_for: Option<Arc<MapTier>>,
    }

    impl Count {
        fn new(name: &str, runs: &Arc<AtomicUsize>, wait_for: Option<Arc<MapTier>>) -> Count {
            let spec = OpSpec {
                name: name.into(),
                version: 1,
                doc: "adds".into(),
                inputs: vec![
                    PortSpec::new("n", ValueType::Int, "a number"),
                    PortSpec::with_default("add", ValueType::Int, 0i64, "added"),
                ],
                outputs: vec![PortSpec::new("out", ValueType::Int, "the sum")],
                output: false,
                cost: Cost::Heavy,
            };
            Count { spec, runs: Arc::clone(runs), wait_for }
        }
    }

    impl Op for Count {
        fn spec(&self) -> &OpSpec {
            &self.spec
        }

        fn run(&self, inputs: &Inputs, _ctx: &OpContext) -> anyhow::Result<Outputs> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            if let Some(tier) = &self.wait_for {
                let deadline = Instant::now() + Duration::from_secs(30);
                while tier.entries.lock().unwrap().is_empty() {
                    anyhow::ensure!(Instant::now() < deadline, "the upstream output never reached the shared tier");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok(Outputs::single("out", Value::Int(inputs.int("n")? + inputs.int("add")?)))
        }
    }

    struct Setup {
        runs: Arc<AtomicUsize>,
        tier: Arc<MapTier>,
    }

    impl Setup {
        fn new() -> Setup {
            Setup { runs: Arc::new(AtomicUsize::new(0)), tier: MapTier::new() }
        }

        /// An engine with its own (empty) disk cache in `dir` and the shared tier.
        fn engine(&self, dir: &Path) -> Engine {
            let mut registry = Registry::new();
            registry.register(Count::new("test.count", &self.runs, None));
            registry.register(Count::new("test.after", &self.runs, Some(Arc::clone(&self.tier))));
            let config = EngineConfig { cache_dir: Some(dir.to_path_buf()), ..EngineConfig::default() };
            Engine::new(registry, Arc::new(NoModels), config)
                .unwrap()
                .with_shared_cache(Arc::clone(&self.tier) as Arc<dyn SharedTier>)
        }

        fn runs(&self) -> usize {
            self.runs.load(Ordering::SeqCst)
        }
    }

    /// `a` feeds `b`; `b` adds `add`.
    fn graph(engine: &Engine, dir: &Path, add: i64) -> Arc<Graph> {
        let text = format!(
            "flow: 1\nname: shared\nnodes:\n  a:\n    op: test.count\n    in: {{ n: 3 }}\n\
             \x20 b:\n    op: test.after\n    in: {{ n: $a, add: {add} }}\n"
        );
        let graph = crate::graph::from_bytes("shared.yaml", dir, text.as_bytes(), &[], engine.registry())
            .unwrap_or_else(|d| panic!("{}", d.render()));
        Arc::new(graph)
    }

    fn run(engine: &Engine, graph: &Arc<Graph>) -> (RunReport, Vec<String>) {
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&events);
        let sink: EventSink = Arc::new(move |e: Event| {
            if let Event::NodeCached { node, .. } = e {
                seen.lock().unwrap().push(node);
            }
        });
        let report = engine.run(Arc::clone(graph), &PlanOptions::default(), sink, CancelToken::new());
        assert!(report.ok(), "{report:?}");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let cached = events.lock().unwrap().clone();
        (report, cached)
    }

    fn reason(report: &RunReport, node: &str) -> String {
        report.nodes.iter().find(|n| n.id == node).map(|n| n.reason.clone()).unwrap_or_default()
    }

    fn output(report: &RunReport) -> i64 {
        match report.outputs[0].1.get("out") {
            Some(Value::Int(n)) => *n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_second_engine_is_served_from_the_shared_tier() {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup::new();

        // First machine: both nodes run; `b` only finishes once `a`'s output
        // is in the shared tier, so outputs get there while the run goes on.
        let first = setup.engine(&dir.path().join("one"));
        let g = graph(&first, dir.path(), 1);
        let (report, _) = run(&first, &g);
        assert_eq!(report.count(NodeStatus::Ran), 2);
        assert_eq!(output(&report), 4);
        assert_eq!(setup.runs(), 2);
        // When the run returns, its outputs are in the shared tier.
        assert_eq!(setup.tier.entries.lock().unwrap().len(), 2);

        // Second machine, empty memory and disk: `b` comes from the shared tier.
        let second_dir = dir.path().join("two");
        let second = setup.engine(&second_dir);
        let g = graph(&second, dir.path(), 1);
        let plan = second.plan(&g, &PlanOptions::default());
        let b = g.node_index("b").unwrap();
        assert!(matches!(plan.nodes[b].as_ref().unwrap().decision, Decision::Cached(Tier::Shared)));
        let (report, cached) = run(&second, &g);
        assert_eq!(setup.runs(), 2, "nothing is recomputed");
        assert_eq!(report.count(NodeStatus::Cached), 1);
        assert_eq!(reason(&report, "b"), "cached (shared)");
        assert_eq!(cached, ["b"]);
        assert_eq!(output(&report), 4);
        // Promoted: the next run is served from memory, and the disk holds it.
        let (report, _) = run(&second, &g);
        assert_eq!(reason(&report, "b"), "cached (memory)");
        assert_eq!(second.cache().disk().unwrap().stats().entries, 1);
        assert_eq!(setup.runs(), 2);

        // Third machine, changed `b`: only `b` runs, on `a`'s shared output.
        let third = setup.engine(&dir.path().join("three"));
        let g = graph(&third, dir.path(), 10);
        let (report, _) = run(&third, &g);
        assert_eq!(setup.runs(), 3);
        assert_eq!(reason(&report, "a"), "cached (shared)");
        assert_eq!(report.count(NodeStatus::Ran), 1);
        assert_eq!(output(&report), 13);
        assert_eq!(setup.tier.entries.lock().unwrap().len(), 3);
    }
}
