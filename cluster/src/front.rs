//! The front end of a cluster (`flow serve --nats`): the server's queue
//! hands every prompt to the cluster, follows it through its events and
//! record, and serves the files the workers stored. Runs the cluster
//! knows and the server does not (submitted by `flow run --nats`, or while
//! this front end was down) join its queue or history. One watch of the
//! runs bucket serves all of this: it adopts unknown runs and tells each
//! follower of its run's changes.

use std::sync::Arc;

use flow_engine::graph::Graph;
use flow_engine::CancelToken;
use flow_server::job::Job;
use flow_server::queue::Queue;
use flow_server::remote::{Finished, RemoteRuns, RunListener};
use flow_server::runlog::RunLogs;
use futures_util::StreamExt;

use crate::cluster::Cluster;
use crate::files;
use crate::follow::{self, Watch, PATIENCE};
use crate::jobs::Placement;
use crate::record::{RunRecord, RunState};
use crate::runs;
use crate::watcher::RunWatcher;

/// A server's link to its cluster.
pub struct FrontEnd {
    cluster: Arc<Cluster>,
    /// The one watch of the runs bucket its followers share.
    watcher: Arc<RunWatcher>,
}

impl FrontEnd {
    /// A front end of `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Arc<FrontEnd> {
        Arc::new(FrontEnd { cluster, watcher: RunWatcher::new() })
    }
}

/// A run's end as the server records it.
fn finished(mut record: RunRecord) -> Finished {
    if record.entry.is_none() {
        record.end_unrun(RunState::Failed, "the run ended without a history entry");
    }
    let interrupted = record.state == RunState::Interrupted;
    let entry = record.entry.expect("an ended run has a history entry");
    Finished { entry, record: record.record.unwrap_or_default(), interrupted }
}

impl RemoteRuns for FrontEnd {
    fn attach(&self, queue: Arc<Queue>, logs: Arc<RunLogs>) {
        let runs = self.cluster.handles.runs.clone();
        let watcher = Arc::clone(&self.watcher);
        self.cluster.spawn(async move {
            loop {
                let Ok(mut all) = runs.watch_with_history(">").await else {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                };
                while let Some(Ok(entry)) = all.next().await {
                    let Ok(record) = serde_json::from_slice::<RunRecord>(&entry.value) else { continue };
                    watcher.changed(&entry.key, &record);
                    adopt(&queue, &logs, record);
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
    }

    fn execute(
        &self,
        job: &Job,
        graph: &Graph,
        listener: Arc<dyn RunListener>,
        cancel: &CancelToken,
        stopping: &(dyn Fn() -> bool + Sync),
    ) -> Option<Finished> {
        let placement = Placement::of(graph);
        let cancelled = || cancel.is_cancelled();
        let watch = Watch { listener: Some(listener), shared: Some(&self.watcher), cancelled: &cancelled, stopping };
        let h = self.cluster.handles.clone();
        match self.cluster.block_on(follow::run(&h, job, &placement, watch)) {
            Ok(Some(record)) => Some(finished(record)),
            Ok(None) => None,
            Err(e) => {
                let mut record = RunRecord::queued(job.clone(), placement.subject());
                record.end_unrun(RunState::Failed, &format!("the cluster could not run it: {e:#}"));
                Some(finished(record))
            }
        }
    }

    fn fetch_file(&self, kind: &str, subfolder: &str, name: &str) -> Option<Vec<u8>> {
        let store = self.cluster.handles.files.clone();
        let object = files::object_name(kind, subfolder, name);
        self.cluster.call(async move { files::get(&store, &object).await }).ok().flatten()
    }

    fn share_input(&self, subfolder: &str, name: &str, bytes: &[u8]) {
        let store = self.cluster.handles.files.clone();
        let object = files::object_name("input", subfolder, name);
        let bytes = bytes.to_vec();
        let stored = self.cluster.call(async move { runs::retry(PATIENCE, || files::put(&store, &object, &bytes)).await });
        if let Err(e) = stored {
            eprintln!("flow serve: {e:#}");
        }
    }
}

/// A run the queue does not know joins it: ended ones go to the history
/// (with their record), the others are queued to be followed.
fn adopt(queue: &Queue, logs: &RunLogs, record: RunRecord) {
    let id = record.job.prompt_id.clone();
    if queue.knows(&id) {
        return;
    }
    if record.state.is_terminal() {
        let Some(entry) = record.entry.clone() else { return };
        if let Some(r) = record.record.clone() {
            logs.live_log(&id).adopt(r);
            let _ = logs.save(&id);
            logs.release(&id);
        }
        let interrupted = record.state == RunState::Interrupted;
        if let Err(e) = queue.record(&id, entry, interrupted) {
            eprintln!("flow serve: {e:#}");
        }
    } else if let Err(e) = queue.submit(record.job) {
        eprintln!("flow serve: {e:#}");
    }
}
