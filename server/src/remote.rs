//! A server whose prompts run elsewhere: the front end of a cluster
//! (`flow serve --nats`). The cluster implements [`RemoteRuns`]; the server
//! keeps its queue, history, WebSocket messages and native API exactly as
//! when it runs prompts itself, fed by the events the cluster forwards and
//! closed with the record and history entry the cluster's worker made.

use std::sync::Arc;

use flow_engine::graph::Graph;
use flow_engine::{CancelToken, Event};

use crate::job::{HistoryEntry, Job};
use crate::queue::Queue;
use crate::reporter::Reporter;
use crate::runlog::{graph_info, Record, RunLogs};
use crate::worker::Executor;

/// Hears a run as it goes: the nodes it does not need (they count as
/// cached), then its engine events.
pub trait RunListener: Send + Sync {
    /// The run's graph, before anything runs (a cluster worker fetches the
    /// inputs it reads).
    fn prepared(&self, _graph: &Graph) {}
    /// Nodes the run does not need because what they feed is cached.
    fn unneeded(&self, nodes: Vec<String>);
    /// One engine event.
    fn event(&self, event: Event);
}

/// How a run executed elsewhere ended.
pub struct Finished {
    /// Its history entry, as the worker made it.
    pub entry: HistoryEntry,
    /// Its native-API record (graph, events, outputs), as the worker made it.
    pub record: Record,
    /// Whether it was interrupted.
    pub interrupted: bool,
}

/// Where a front end's prompts run.
pub trait RemoteRuns: Send + Sync {
    /// Called once when the server starts, with its queue and run records:
    /// runs the cluster knows and the queue does not (submitted elsewhere,
    /// or while this front end was down) can be added to them.
    fn attach(&self, queue: Arc<Queue>, runs: Arc<RunLogs>);
    /// Executes `job` (prepared as `graph`) elsewhere and waits for its end, telling `listener`
    /// what happens on the way (at most once: events may be missed).
    /// `cancel` asks the run to stop; when it fires because the server
    /// stops (`stopping()`), the run goes on in the cluster and `None` is
    /// returned (it is followed again on the next start).
    fn execute(
        &self,
        job: &Job,
        graph: &Graph,
        listener: Arc<dyn RunListener>,
        cancel: &CancelToken,
        stopping: &(dyn Fn() -> bool + Sync),
    ) -> Option<Finished>;
    /// The bytes of a file the workers wrote (`kind` is `output` or `temp`)
    /// or an input shared with them, when the local folder lacks it.
    fn fetch_file(&self, kind: &str, subfolder: &str, name: &str) -> Option<Vec<u8>>;
    /// Shares an uploaded input file with the workers.
    fn share_input(&self, subfolder: &str, name: &str, bytes: &[u8]);
}

/// Feeds a run's reporter (ComfyUI messages) and live log (native API);
/// the run counts as queued until a worker starts it.
struct Forward {
    reporter: Arc<Reporter>,
    log: Arc<crate::runlog::RunLog>,
    to_client: flow_engine::EventSink,
    queue: Arc<Queue>,
    id: String,
}

impl RunListener for Forward {
    fn unneeded(&self, nodes: Vec<String>) {
        self.reporter.count_as_cached(nodes);
    }

    fn event(&self, event: Event) {
        if matches!(event, Event::RunStarted { .. }) {
            self.queue.set_waiting(&self.id, false);
        }
        // The run's `run_finished` comes with the worker's record.
        if !matches!(event, Event::RunFinished { .. }) {
            self.log.push(&event);
        }
        (self.to_client)(event);
    }
}

/// Runs `job` in the cluster and follows it; returns its history entry and
/// whether it was interrupted, as [`Executor::run`] does for a local run.
pub fn follow(
    executor: &Executor,
    remote: &dyn RemoteRuns,
    queue: &Arc<Queue>,
    job: &Job,
    cancel: &CancelToken,
) -> (HistoryEntry, bool) {
    let prepared = match executor.prepare(job, false) {
        Ok(p) => p,
        Err(ended) => return ended,
    };
    let log = executor.runs.start(&job.prompt_id, graph_info(&prepared.graph));
    let reporter = Reporter::new(executor.hub.clone(), job, &prepared, Arc::clone(&executor.workspace));
    let to_client = reporter.sink();
    queue.set_waiting(&job.prompt_id, true);
    let forward = Arc::new(Forward {
        reporter: Arc::clone(&reporter),
        log: Arc::clone(&log),
        to_client,
        queue: Arc::clone(queue),
        id: job.prompt_id.clone(),
    });
    let stopping = || queue.stopping();
    let Some(finished) = remote.execute(job, &prepared.graph, forward.clone(), cancel, &stopping) else {
        // The server stops: the run stays queued here and goes on in the cluster.
        return (reporter.entry(job).0, true);
    };
    // The worker's `run_finished` closes the client's messages if the event was missed.
    if !reporter.saw_end() {
        if let Some(end) = finished.record.events.iter().rev().find_map(|l| match Event::from_json_line(l) {
            Ok(e @ Event::RunFinished { .. }) => Some(e),
            _ => None,
        }) {
            (forward.to_client)(end);
        }
    }
    log.adopt(finished.record);
    (finished.entry, finished.interrupted)
}
