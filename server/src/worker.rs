//! The threads that take prompts from the queue and run them on the
//! server's one engine. Runs execute side by side (their heavy nodes share
//! the engine's device lanes); a failing run ends with its history entry
//! like any other and never holds up the queue.

use std::sync::Arc;
use std::thread::JoinHandle;

use flow_engine::run::PlanOptions;
use flow_engine::{CancelToken, Engine};
use serde_json::{json, Map};

use crate::job::{HistoryEntry, Job, RunStatus};
use crate::prepare::{prepare, Workspace};
use crate::queue::Queue;
use crate::reporter::{timestamp, Reporter};
use crate::runlog::{graph_info, RunLogs};

/// What a worker needs.
#[derive(Clone)]
pub struct Runner {
    /// The server's engine.
    pub engine: Arc<Engine>,
    /// The queue to take prompts from.
    pub queue: Arc<Queue>,
    /// The folder graphs run in.
    pub workspace: Arc<Workspace>,
    /// Where each run's events and node states are kept.
    pub runs: Arc<RunLogs>,
}

impl Runner {
    /// Starts `n` worker threads; they end once the queue stops.
    pub fn spawn(&self, n: usize) -> Vec<JoinHandle<()>> {
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
        while let Some((job, cancel)) = self.queue.take() {
            let (entry, interrupted) = self.run(&job, cancel);
            // The run's record, then its history, are in place before the
            // client hears the run ended (clients read it on `executing {node: null}`).
            let shut_down = interrupted && self.queue.stopping();
            if !shut_down {
                if let Err(e) = self.runs.save(&job.prompt_id) {
                    eprintln!("flow serve: {e:#}");
                }
            }
            if let Err(e) = self.queue.record(&job.prompt_id, entry, interrupted) {
                eprintln!("flow serve: {e:#}");
            }
            let hub = self.queue.hub();
            hub.send("executing", json!({ "node": null, "prompt_id": job.prompt_id }), job.client_id.as_deref());
            self.queue.release(&job.prompt_id);
            self.runs.release(&job.prompt_id);
        }
    }

    /// Runs one prompt; returns its history entry and whether it was interrupted.
    pub fn run(&self, job: &Job, cancel: CancelToken) -> (HistoryEntry, bool) {
        let prepared = match prepare(job, &self.workspace, self.engine.registry(), true) {
            Ok(p) => p,
            Err(rejection) => {
                self.runs.start(&job.prompt_id, Vec::new()).fail(&rejection.message(), false);
                return self.refused(job, rejection.message());
            }
        };
        let log = self.runs.start(&job.prompt_id, graph_info(&prepared.graph));
        let reporter = Reporter::new(self.queue.hub().clone(), job, &prepared, Arc::clone(&self.workspace));
        let options = PlanOptions { only: Vec::new(), no_cache: false, probe_only: false };
        // Nodes the run does not need because what they feed is cached count
        // as cached, as in ComfyUI.
        let plan = self.engine.plan(&prepared.graph, &options);
        let unneeded =
            plan.nodes.iter().zip(&prepared.graph.nodes).filter(|(p, _)| p.is_none()).map(|(_, n)| n.id.clone());
        reporter.count_as_cached(unneeded.collect());
        let engine = Arc::clone(&self.engine);
        let (to_client, to_log) = (reporter.sink(), log.sink());
        let sink: flow_engine::EventSink = Arc::new(move |event: flow_engine::Event| {
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
                return self.refused(job, "the run stopped on an internal error".into());
            }
        }
        reporter.entry(job)
    }

    /// A prompt that could not start (it was valid when queued, but e.g. a
    /// model file is gone since).
    fn refused(&self, job: &Job, message: String) -> (HistoryEntry, bool) {
        let hub = self.queue.hub();
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
}
