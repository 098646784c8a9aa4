//! What `flow cluster status` shows: the workers that beat lately (device,
//! resident models, runs in flight), the jobs waiting per subject, and the
//! runs per state.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use futures_util::StreamExt;
use serde::Serialize;

use crate::cluster::Handles;
use crate::names::{JOB_STREAM, JOB_SUBJECTS};
use crate::record::{RunRecord, RunState};
use crate::worker::WorkerInfo;

/// A run a worker holds.
#[derive(Clone, Debug, Serialize)]
pub struct InFlight {
    /// The run id.
    pub id: String,
    /// The worker holding it.
    pub worker: String,
    /// Its attempt.
    pub attempts: u32,
    /// When this attempt started (ms since the epoch).
    pub started_ms: Option<u64>,
}

/// The state of a cluster.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The NATS server.
    pub url: String,
    /// Workers, by name.
    pub workers: Vec<WorkerInfo>,
    /// Job messages on the stream per subject (waiting or being run).
    pub subjects: BTreeMap<String, usize>,
    /// Runs per state (`queued`, `running`, `succeeded`, ...).
    pub runs: BTreeMap<String, usize>,
    /// Runs held by workers.
    pub in_flight: Vec<InFlight>,
}

/// Reads the cluster's state.
pub async fn read(h: &Handles, url: &str) -> Result<Status> {
    let mut workers = Vec::new();
    let mut keys = h.workers.keys().await.map_err(|e| anyhow!("cannot list the workers: {e}"))?;
    while let Some(Ok(key)) = keys.next().await {
        if let Ok(Some(bytes)) = h.workers.get(&key).await {
            if let Ok(info) = serde_json::from_slice::<WorkerInfo>(&bytes) {
                workers.push(info);
            }
        }
    }
    workers.sort_by(|a, b| a.name.cmp(&b.name));
    let stream = h.js.get_stream(JOB_STREAM).await.map_err(|e| anyhow!("cannot open the job stream: {e}"))?;
    let mut subjects = BTreeMap::new();
    let mut info = stream.info_with_subjects(JOB_SUBJECTS).await?;
    while let Some(item) = info.next().await {
        let (subject, n) = item?;
        subjects.insert(subject, n);
    }
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    let mut in_flight = Vec::new();
    let mut keys = h.runs.keys().await.map_err(|e| anyhow!("cannot list the runs: {e}"))?;
    while let Some(Ok(key)) = keys.next().await {
        let Ok(Some(bytes)) = h.runs.get(&key).await else { continue };
        let Ok(r) = serde_json::from_slice::<RunRecord>(&bytes) else { continue };
        *runs.entry(r.state.word().to_string()).or_default() += 1;
        if r.state == RunState::Running {
            in_flight.push(InFlight {
                id: r.job.prompt_id,
                worker: r.worker.unwrap_or_default(),
                attempts: r.attempts,
                started_ms: r.started_ms,
            });
        }
    }
    Ok(Status { url: url.to_string(), workers, subjects, runs, in_flight })
}
