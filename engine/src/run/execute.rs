//! The scheduler: runs each node as soon as its inputs are ready. Light ops
//! run inline; heavy ops run on the blocking pool, each holding a slot of its
//! device's lane. A failed node skips only its descendants. Cancellation
//! stops dispatching and lets running nodes stop at their next step.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tokio::sync::mpsc;

use crate::cache::Cache;
use crate::models::Residence;
use crate::context::{CancelToken, Interrupted, OpContext, Provenance};
use crate::effects::Shown;
use crate::events::{Event, EventSink, NodeStatus};
use crate::files::WriteGuard;
use crate::graph::Graph;
use crate::models::ModelPool;
use crate::op::{Cost, Inputs, Outputs};

use super::devices::{Devices, Lane};
use super::inputs::materialize;
use super::plan::{Decision, Plan};
use super::report::{NodeReport, RunReport};

/// What the scheduler needs besides the graph and the plan.
pub struct Execution {
    /// The cache results are written to.
    pub cache: Arc<Cache>,
    /// Devices and their lanes.
    pub devices: Arc<Devices>,
    /// Where events go.
    pub sink: EventSink,
    /// Set to stop the run.
    pub cancel: CancelToken,
    /// When the run started (event timestamps are relative to it).
    pub started: Instant,
    /// Provenance for ops that record it.
    pub provenance: Arc<Provenance>,
    /// Loaded models, shared across runs.
    pub models: Arc<ModelPool>,
    /// Where ops keep their own memos (see [`OpContext::memo_dir`]).
    pub memo_root: Option<PathBuf>,
    /// False under `--no-cache`: memos are written, not read.
    pub memo_reads: bool,
    /// Paths the run's writers must not touch.
    pub guard: Arc<WriteGuard>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    NotNeeded,
    Waiting,
    Done,
    Failed,
    Skipped,
}

struct Completion {
    node: usize,
    result: Result<Outputs, String>,
    interrupted: bool,
    elapsed: Duration,
}

struct Scheduler<'a> {
    graph: &'a Arc<Graph>,
    plan: &'a Plan,
    exec: &'a Execution,
    state: Vec<State>,
    remaining: Vec<usize>,
    uses_left: Vec<usize>,
    consumers: Vec<Vec<usize>>,
    values: Vec<Option<Outputs>>,
    reports: Vec<Option<NodeReport>>,
    ready: VecDeque<usize>,
    is_target: Vec<bool>,
    interrupted: bool,
}

/// Runs the plan to completion (or interruption) and reports every needed node.
pub async fn execute(graph: Arc<Graph>, plan: Plan, exec: &Execution) -> RunReport {
    let n = graph.nodes.len();
    let mut s = Scheduler {
        graph: &graph,
        plan: &plan,
        exec,
        state: vec![State::NotNeeded; n],
        remaining: vec![0; n],
        uses_left: vec![0; n],
        consumers: vec![Vec::new(); n],
        values: vec![None; n],
        reports: vec![None; n],
        ready: VecDeque::new(),
        is_target: vec![false; n],
        interrupted: false,
    };
    for &t in &plan.targets {
        s.is_target[t] = true;
    }
    s.init();
    let (tx, mut rx) = mpsc::unbounded_channel::<Completion>();
    let mut in_flight = 0usize;
    loop {
        while let Some(i) = s.ready.pop_front() {
            if exec.cancel.is_cancelled() {
                s.interrupted = true;
                s.skip(i, "interrupted".into());
                continue;
            }
            match s.start(i, &tx) {
                Some(done) => s.complete(done),
                None => in_flight += 1,
            }
        }
        if in_flight == 0 {
            break;
        }
        match rx.recv().await {
            Some(done) => {
                in_flight -= 1;
                s.complete(done);
            }
            None => break,
        }
    }
    s.finish()
}

impl Scheduler<'_> {
    fn t_ms(&self) -> f64 {
        self.exec.started.elapsed().as_secs_f64() * 1e3
    }

    fn emit(&self, e: Event) {
        (self.exec.sink)(e);
    }

    fn init(&mut self) {
        let graph = self.graph;
        for &i in &graph.order {
            let Some(plan) = &self.plan.nodes[i] else { continue };
            let node = &graph.nodes[i];
            let op = node.op.spec().name.clone();
            match &plan.decision {
                Decision::Cached(_) => {
                    self.state[i] = State::Done;
                    self.values[i] = plan.cached.clone();
                    self.emit(Event::NodeCached { node: node.id.clone(), op: op.clone(), t_ms: self.t_ms() });
                    self.replay_shown(i);
                    let mut r = NodeReport::new(node, NodeStatus::Cached, crate::engine::decision_text(&plan.decision));
                    r.files = self.announce_files(i);
                    self.reports[i] = Some(r);
                }
                Decision::Skip(cause) => self.skip(i, cause.clone()),
                Decision::Fail(error) => {
                    self.state[i] = State::Failed;
                    self.emit(Event::NodeFailed { node: node.id.clone(), op, error: error.clone(), ms: 0.0, t_ms: self.t_ms() });
                    let mut r = NodeReport::new(node, NodeStatus::Failed, "planning failed".into());
                    r.error = Some(error.clone());
                    self.reports[i] = Some(r);
                }
                Decision::Run(_) => {
                    self.state[i] = State::Waiting;
                    let mut blocked_by = None;
                    for &d in &node.deps {
                        self.consumers[d].push(i);
                        self.uses_left[d] += 1;
                        match self.state[d] {
                            State::Waiting => self.remaining[i] += 1,
                            State::Failed | State::Skipped => blocked_by = Some(d),
                            State::Done | State::NotNeeded => {}
                        }
                    }
                    if let Some(d) = blocked_by {
                        let cause = format!("upstream `{}` did not run", graph.nodes[d].id);
                        self.skip(i, cause);
                    } else if self.remaining[i] == 0 {
                        self.ready.push_back(i);
                    }
                }
            }
        }
    }

    /// Starts node `i`: light ops complete inline (returned), heavy ops are
    /// spawned and report on `tx`.
    fn start(&mut self, i: usize, tx: &mpsc::UnboundedSender<Completion>) -> Option<Completion> {
        let graph = self.graph;
        let node = &graph.nodes[i];
        let values = &self.values;
        let models = &self.plan.models;
        let inputs = materialize(node, &|d| values[d].clone(), &|name| models.get(name).cloned());
        let lane = self.exec.devices.lane(node.device);
        let reason = match &self.plan.nodes[i].as_ref().map(|p| &p.decision) {
            Some(Decision::Run(r)) => r.clone(),
            _ => String::new(),
        };
        let (inputs, lane) = match (inputs, lane) {
            (Ok(inputs), Ok(lane)) => (inputs, lane),
            (Err(e), _) | (_, Err(e)) => {
                return Some(Completion { node: i, result: Err(format!("{e:#}")), interrupted: false, elapsed: Duration::ZERO })
            }
        };
        let job = Job {
            graph: Arc::clone(graph),
            node: i,
            inputs,
            lane: lane.clone(),
            reason,
            sink: Arc::clone(&self.exec.sink),
            cancel: self.exec.cancel.clone(),
            started: self.exec.started,
            provenance: Arc::clone(&self.exec.provenance),
            models: Arc::clone(&self.exec.models),
            cache: Arc::clone(&self.exec.cache),
            memo_root: self.exec.memo_root.clone(),
            memo_reads: self.exec.memo_reads,
            guard: Arc::clone(&self.exec.guard),
        };
        if node.op.spec().cost == Cost::Light {
            return Some(job.run());
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let permit = lane.slots.clone().acquire_owned().await;
            let node = job.node;
            let done = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                job.run()
            })
            .await
            .unwrap_or_else(|e| Completion {
                node,
                result: Err(format!("the node's task failed: {e}")),
                interrupted: false,
                elapsed: Duration::ZERO,
            });
            let _ = tx.send(done);
        });
        None
    }

    fn complete(&mut self, done: Completion) {
        let i = done.node;
        let graph = self.graph;
        let node = &graph.nodes[i];
        let op = node.op.spec().name.clone();
        let ms = done.elapsed.as_secs_f64() * 1e3;
        let reason = match self.plan.nodes[i].as_ref().map(|p| &p.decision) {
            Some(Decision::Run(r)) => r.clone(),
            _ => String::new(),
        };
        let result = done
            .result
            .and_then(|out| out.check_against(node.op.spec()).map(|()| out).map_err(|e| format!("{e:#}")))
            .and_then(|out| crate::finite::check_outputs(&out, &node.op.spec().name).map(|()| out));
        match result {
            Ok(outputs) => {
                if node.cache {
                    if let Some(key) = self.plan.nodes[i].as_ref().and_then(|p| p.key) {
                        self.exec.cache.put(key, outputs.clone(), done.elapsed);
                    }
                }
                self.state[i] = State::Done;
                self.values[i] = Some(outputs);
                let mut r = NodeReport::new(node, NodeStatus::Ran, reason);
                r.ms = ms;
                r.files = self.announce_files(i);
                self.reports[i] = Some(r);
                self.emit(Event::NodeFinished { node: node.id.clone(), op, status: NodeStatus::Ran, ms, t_ms: self.t_ms() });
                for c in self.consumers[i].clone() {
                    if self.state[c] == State::Waiting {
                        self.remaining[c] -= 1;
                        if self.remaining[c] == 0 {
                            self.ready.push_back(c);
                        }
                    }
                }
                if self.uses_left[i] == 0 && !self.is_target[i] {
                    self.values[i] = None;
                }
            }
            Err(_) if done.interrupted => {
                self.interrupted = true;
                self.skip(i, "interrupted".into());
            }
            Err(error) => {
                self.emit(Event::NodeFailed { node: node.id.clone(), op, error: error.clone(), ms, t_ms: self.t_ms() });
                let mut r = NodeReport::new(node, NodeStatus::Failed, reason);
                r.ms = ms;
                r.error = Some(error);
                self.reports[i] = Some(r);
                self.state[i] = State::Failed;
                self.skip_descendants(i);
            }
        }
        // Inputs consumed: release values nobody needs any more.
        for &d in &node.deps {
            if self.uses_left[d] > 0 {
                self.uses_left[d] -= 1;
                if self.uses_left[d] == 0 && !self.is_target[d] {
                    self.values[d] = None;
                }
            }
        }
    }

    /// What a node served from the cache showed when it ran, shown again.
    fn replay_shown(&self, i: usize) {
        let node = &self.graph.nodes[i].id;
        let Some(outputs) = &self.values[i] else { return };
        for shown in &outputs.effects().shown {
            self.emit(match shown {
                Shown::Message(text) => Event::Message { node: node.clone(), text: text.clone(), t_ms: self.t_ms() },
                Shown::Stream(text) => Event::Token { node: node.clone(), text: text.clone(), t_ms: self.t_ms() },
            });
        }
    }

    /// The files node `i`'s value stands for (written now, or by the run
    /// its cached result comes from), each announced by an `output` event.
    fn announce_files(&self, i: usize) -> Vec<PathBuf> {
        let node = &self.graph.nodes[i];
        let Some(outputs) = &self.values[i] else { return Vec::new() };
        let mut files = Vec::new();
        for w in &outputs.effects().written {
            let path = w.location(&self.graph.dir);
            self.emit(Event::Output {
                node: node.id.clone(),
                path: path.display().to_string(),
                size: w.size,
                blake3: w.blake3.clone(),
                t_ms: self.t_ms(),
            });
            files.push(path);
        }
        files
    }

    fn skip(&mut self, i: usize, cause: String) {
        let node = &self.graph.nodes[i];
        self.state[i] = State::Skipped;
        self.emit(Event::NodeSkipped { node: node.id.clone(), op: node.op.spec().name.clone(), cause: cause.clone(), t_ms: self.t_ms() });
        self.reports[i] = Some(NodeReport::new(node, NodeStatus::Skipped, cause));
        self.skip_descendants(i);
    }

    /// Skips every waiting node downstream of `i` (iteratively).
    fn skip_descendants(&mut self, i: usize) {
        let root = self.graph.nodes[i].id.clone();
        let mut stack = self.consumers[i].clone();
        while let Some(c) = stack.pop() {
            if self.state[c] != State::Waiting {
                continue;
            }
            let node = &self.graph.nodes[c];
            self.state[c] = State::Skipped;
            let cause = format!("upstream `{root}` did not run");
            self.emit(Event::NodeSkipped { node: node.id.clone(), op: node.op.spec().name.clone(), cause: cause.clone(), t_ms: self.t_ms() });
            self.reports[c] = Some(NodeReport::new(node, NodeStatus::Skipped, cause));
            stack.extend(self.consumers[c].iter().copied());
        }
    }

    fn finish(self) -> RunReport {
        let mut outputs = Vec::new();
        for &t in &self.plan.targets {
            if let Some(v) = self.values[t].clone() {
                outputs.push((self.graph.nodes[t].id.clone(), v));
            }
        }
        let nodes: Vec<NodeReport> = self.graph.order.iter().filter_map(|&i| self.reports[i].clone()).collect();
        RunReport::new(nodes, outputs, self.interrupted, self.exec.started.elapsed())
    }
}

/// One node's execution, movable to the blocking pool.
struct Job {
    graph: Arc<Graph>,
    node: usize,
    inputs: Inputs,
    lane: Lane,
    reason: String,
    sink: EventSink,
    cancel: CancelToken,
    started: Instant,
    provenance: Arc<Provenance>,
    models: Arc<ModelPool>,
    cache: Arc<Cache>,
    memo_root: Option<PathBuf>,
    memo_reads: bool,
    guard: Arc<WriteGuard>,
}

impl Job {
    fn run(self) -> Completion {
        let node = &self.graph.nodes[self.node];
        if self.cancel.is_cancelled() {
            return Completion { node: self.node, result: Err("interrupted".into()), interrupted: true, elapsed: Duration::ZERO };
        }
        let t_ms = self.started.elapsed().as_secs_f64() * 1e3;
        (self.sink)(Event::NodeStarted {
            node: node.id.clone(),
            op: node.op.spec().name.clone(),
            device: self.lane.name.clone(),
            reason: self.reason.clone(),
            t_ms,
        });
        let ctx = OpContext::new(
            node.id.clone(),
            self.lane.device.clone(),
            self.graph.dir.clone(),
            self.cancel.clone(),
            Arc::clone(&self.sink),
            self.started,
            Arc::clone(&self.provenance),
        )
        .with_models(Arc::clone(&self.models))
        .with_memos(self.memo_root.clone(), self.memo_reads)
        .with_guard(Arc::clone(&self.guard));
        let t0 = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| node.op.run(&self.inputs, &ctx)))
            .unwrap_or_else(|panic| Err(anyhow!("the op panicked: {}", panic_message(&panic))))
            .map(|mut outputs| {
                outputs.set_effects(ctx.take_effects());
                outputs
            });
        let elapsed = t0.elapsed();
        let result = result.map_err(|e| self.out_of_memory(e));
        let interrupted = matches!(&result, Err(e) if e.downcast_ref::<Interrupted>().is_some());
        Completion { node: self.node, result: result.map_err(|e| format!("{e:#}")), interrupted, elapsed }
    }
}

impl Job {
    /// An error that says the node's GPU ran out of memory gets what flow
    /// held there and what to do; the models and cached outputs flow kept on
    /// that GPU are released, so the next node or run starts with room.
    fn out_of_memory(&self, e: anyhow::Error) -> anyhow::Error {
        if self.lane.device.is_cpu() || !is_out_of_memory(&format!("{e:#}")) {
            return e;
        }
        let residence = Residence::of(&self.lane.device);
        let (models, bytes) = self.models.release(residence);
        let outputs = self.cache.release_vram();
        let budget = self.models.stats().vram_budget;
        e.context(out_of_memory_note(&self.lane.name, models, bytes, outputs, budget))
    }
}

/// True if an error's text says a GPU allocation failed.
fn is_out_of_memory(text: &str) -> bool {
    text.contains("OUT_OF_MEMORY") || text.to_ascii_lowercase().contains("out of memory")
}

/// What an out-of-memory error of a node on `device` adds.
fn out_of_memory_note(device: &str, models: usize, model_bytes: u64, outputs: usize, budget: u64) -> String {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    format!(
        "{device} ran out of memory; flow held {models} model(s) ({:.2} GiB, model budget {:.2} GiB of \
         --vram-budget) and {outputs} cached output(s) there, now released. Run fewer nodes at once \
         (--jobs), lower --vram-budget to leave the nodes more room, or use smaller images or batches",
        gib(model_bytes),
        gib(budget)
    )
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_out_of_memory_errors_are_recognised_and_explained() {
        assert!(is_out_of_memory("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"));
        assert!(is_out_of_memory("Metal: Out of memory allocating a buffer"));
        assert!(!is_out_of_memory("cannot read model.safetensors: no such file"));
        let note = out_of_memory_note("cuda:0", 2, 3 << 30, 5, 6 << 30);
        assert!(note.starts_with("cuda:0 ran out of memory"), "{note}");
        assert!(note.contains("2 model(s) (3.00 GiB, model budget 6.00 GiB"), "{note}");
        assert!(note.contains("5 cached output(s)") && note.contains("--vram-budget"), "{note}");
    }
}
