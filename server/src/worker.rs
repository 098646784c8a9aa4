//! Running prompts. An [`Executor`] runs one prompt on an engine (a
//! server's, or a cluster worker's); the [`Runner`]'s threads take prompts
//! from the queue and run them there, or hand them to a cluster
//! ([`crate::remote`]). Runs execute side by side (their heavy nodes share
//! the engine's device lanes); a failing run ends with its history entry
//! like any other and never holds up the queue.

use std::sync::Arc;
use std::thread::JoinHandle;

use flow_engine::run::PlanOptions;
use flow_engine::{CancelToken, Engine, Event};
use serde_json::{json, Map};

use crate::hub::Hub;
use crate::job::{HistoryEntry, Job, RunStatus};
use crate::prepare::{prepare, Prepared, Workspace};
use crate::queue::Queue;
use crate::remote::{RemoteRuns, RunListener};
use crate::reporter::{timestamp, Reporter};
use crate::runlog::{graph_info, RunLogs};

/// Runs prompts on one engine, in one workspace.
#[derive(Clone)]
pub struct Executor {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The folder graphs run in.
    pub workspace: Arc<Workspace>,
    /// Where each run's events and node states are kept.
    pub runs: Arc<RunLogs>,
    /// Where the runs' ComfyUI messages go.
    pub hub: Hub,
}

impl Executor {
    /// Runs one prompt; returns its history entry and whether it was
    /// interrupted. `tap`, if given, hears the run's graph, the nodes the
    /// run does not need and every engine event (a cluster worker forwards them).
    pub fn run(&self, job: &Job, cancel: CancelToken, tap: Option<Arc<dyn RunListener>>) -> (HistoryEntry, bool) {
        let prepared = match self.prepare(job, true) {
            Ok(p) => p,
            Err(ended) => return ended,
        };
        let log = self.runs.start(&job.prompt_id, graph_info(&prepared.graph));
        let reporter = Reporter::new(self.hub.clone(), job, &prepared, Arc::clone(&self.workspace));
        let options = PlanOptions { only: Vec::new(), no_cache: false, probe_only: false };
        // Nodes the run does not need because what they feed is cached count
        // as cached, as in ComfyUI.
        let plan = self.engine.plan(&prepared.graph, &options);
        let unneeded: Vec<String> = plan
            .nodes
            .iter()
            .zip(&prepared.graph.nodes)
            .filter(|(p, _)| p.is_none())
            .map(|(_, n)| n.id.clone())
            .collect();
        if let Some(tap) = &tap {
            tap.prepared(&prepared.graph);
            tap.unneeded(unneeded.clone());
        }
        reporter.count_as_cached(unneeded);
        let engine = Arc::clone(&self.engine);
        let (to_client, to_log) = (reporter.sink(), log.sink());
        let sink: flow_engine::EventSink = Arc::new(move |event: Event| {
            if let Some(tap) = &tap {
                tap.event(event.clone());
            }
            to_log(event.clone());
            to_client(event);
        });
        let graph = Arc::clone(&prepared.graph);
        // A panic inside a run must not take the worker (and the queue) down.
        let ran =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || engine.run(graph, &options, sink, cancel)));
        match ran {
            Ok(report) => log.finish(&self.workspace, &report),
            Err(_) => {
                log.fail("the run stopped on an internal error", false);
                return refused(&self.hub, job, "the run stopped on an internal error".into());
            }
        }
        reporter.entry(job)
    }

    /// The job's graph; a job that cannot be prepared (any more) ends here,
    /// with its record and history entry saying why.
    pub fn prepare(&self, job: &Job, for_run: bool) -> Result<Prepared, (HistoryEntry, bool)> {
        prepare(job, &self.workspace, self.engine.registry(), for_run).map_err(|rejection| {
            self.runs.start(&job.prompt_id, Vec::new()).fail(&rejection.message(), false);
            refused(&self.hub, job, rejection.message())
        })
    }
}

/// A prompt that could not start (it was valid when queued, but e.g. a
/// model file is gone since), or stopped on an internal error.
pub fn refused(hub: &Hub, job: &Job, message: String) -> (HistoryEntry, bool) {
    let sid = job.client_id.as_deref();
    let start = json!({ "prompt_id": job.prompt_id, "timestamp": timestamp() });
    let error = json!({
        "prompt_id": job.prompt_id, "node_id": null, "node_type": null, "executed": [],
        "exception_message": message, "exception_type": "flow.InvalidPrompt",
        "traceback": [], "current_inputs": {}, "current_outputs": {}, "timestamp": timestamp(),
    });
    hub.send("execution_start", start.clone(), sid);
    hub.send("execution_error", error.clone(), sid);
    let status = RunStatus {
        status_str: "error".into(),
        completed: false,
        messages: vec![("execution_start".into(), start), ("execution_error".into(), error)],
    };
    (HistoryEntry { prompt: job.queue_item(), outputs: Map::new(), status, meta: Map::new() }, false)
}

/// Takes prompts from the queue and runs them: on the executor's engine, or
/// in a cluster when `remote` is set.
#[derive(Clone)]
pub struct Runner {
    /// Runs prompts here.
    pub executor: Executor,
    /// The queue to take prompts from.
    pub queue: Arc<Queue>,
    /// Where prompts run instead, when the server is a cluster's front end.
    pub remote: Option<Arc<dyn RemoteRuns>>,
}

impl Runner {
    /// Starts `n` threads taking prompts; they end once the queue stops.
    /// With a cluster, one thread hands every prompt to it at once (the
    /// cluster's workers pull them) and follows each on its own thread.
    pub fn spawn(&self, n: usize) -> Vec<JoinHandle<()>> {
        let n = if self.remote.is_some() { 1 } else { n };
        (0..n)
            .map(|i| {
                let me = self.clone();
                std::thread::Builder::new()
                    .name(format!("flow-serve-{i}"))
                    .spawn(move || me.work())
                    .expect("cannot start a worker thread")
            })
            .collect()
    }

    fn work(&self) {
        let mut following: Vec<JoinHandle<()>> = Vec::new();
        while let Some((job, cancel)) = self.queue.take() {
            match &self.remote {
                None => self.finish(&job, self.executor.run(&job, cancel, None)),
                Some(remote) => {
                    following.retain(|h| !h.is_finished());
                    let (me, remote) = (self.clone(), Arc::clone(remote));
                    let spawned = std::thread::Builder::new()
                        .name("flow-serve-follow".into())
                        .stack_size(256 << 10)
                        .spawn(move || {
                            let outcome = crate::remote::follow(&me.executor, remote.as_ref(), &me.queue, &job, &cancel);
                            me.finish(&job, outcome);
                        });
                    match spawned {
                        Ok(h) => following.push(h),
                        Err(e) => eprintln!("flow serve: cannot follow a run: {e}"),
                    }
                }
            }
        }
        for h in following {
            let _ = h.join();
        }
    }

    /// Records a run's end: its record, then its history, are in place
    /// before the client hears the run ended (clients read it on
    /// `executing {node: null}`).
    fn finish(&self, job: &Job, (entry, interrupted): (HistoryEntry, bool)) {
        let shut_down = interrupted && self.queue.stopping();
        let runs = &self.executor.runs;
        if !shut_down {
            if let Err(e) = runs.save(&job.prompt_id) {
                eprintln!("flow serve: {e:#}");
            }
        }
        if let Err(e) = self.queue.record(&job.prompt_id, entry, interrupted) {
            eprintln!("flow serve: {e:#}");
        }
        let hub = self.queue.hub();
        hub.send("executing", json!({ "node": null, "prompt_id": job.prompt_id }), job.client_id.as_deref());
        self.queue.release(&job.prompt_id);
        runs.release(&job.prompt_id);
    }
}
