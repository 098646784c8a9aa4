//! What the runs bucket holds for each run: the job, where it is, who runs
//! it until when, and once it ended its history entry and record. Every
//! change is a compare-and-swap on the key's revision (see [`crate::runs`]).

use flow_engine::Event;
use flow_server::job::{HistoryEntry, Job, RunStatus};
use flow_server::reporter::timestamp;
use flow_server::runlog::Record;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map};

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// On the job stream, waiting for a worker.
    Queued,
    /// A worker holds it (until its lease ends).
    Running,
    /// Finished without error.
    Succeeded,
    /// Finished with an error, or gave up.
    Failed,
    /// Cancelled.
    Interrupted,
}

impl RunState {
    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Succeeded | RunState::Failed | RunState::Interrupted)
    }

    /// The word shown by `flow cluster status`.
    pub fn word(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Interrupted => "interrupted",
        }
    }
}

/// One run in the runs bucket.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// The job as submitted.
    pub job: Job,
    /// Where it is.
    pub state: RunState,
    /// The job subject it was queued on.
    pub subject: String,
    /// The worker holding it (running), or that ended it.
    pub worker: Option<String>,
    /// How many times a worker started it.
    pub attempts: u32,
    /// While running: the holder's lease ends then (ms since the epoch)
    /// unless renewed; another worker may take the run over after it.
    pub lease_until_ms: u64,
    /// Someone asked to cancel it.
    pub cancel_requested: bool,
    /// Milliseconds since the epoch.
    pub submitted_ms: u64,
    /// When the current attempt started.
    pub started_ms: Option<u64>,
    /// When it ended.
    pub finished_ms: Option<u64>,
    /// Why it failed as a whole (gave up, could not start).
    pub error: Option<String>,
    /// Once ended: its history entry (ComfyUI's form).
    pub entry: Option<HistoryEntry>,
    /// Once ended: its native-API record.
    pub record: Option<Record>,
}

impl RunRecord {
    /// A run just queued on `subject`.
    pub fn queued(job: Job, subject: String) -> Self {
        RunRecord {
            job,
            state: RunState::Queued,
            subject,
            worker: None,
            attempts: 0,
            lease_until_ms: 0,
            cancel_requested: false,
            submitted_ms: timestamp(),
            started_ms: None,
            finished_ms: None,
            error: None,
            entry: None,
            record: None,
        }
    }

    /// Whether `worker` may take the run now: nobody holds it, or its
    /// holder's lease ran out.
    pub fn is_free_for(&self, worker: &str, now_ms: u64) -> bool {
        self.state == RunState::Queued || self.worker.as_deref() == Some(worker) || now_ms >= self.lease_until_ms
    }

    /// Ends the run without it running (cancelled while queued, gave up):
    /// a history entry and record that say why.
    pub fn end_unrun(&mut self, state: RunState, message: &str) {
        let interrupted = state == RunState::Interrupted;
        let kind = if interrupted { "execution_interrupted" } else { "execution_error" };
        let mut data = json!({ "prompt_id": self.job.prompt_id, "timestamp": timestamp(), "executed": [] });
        if !interrupted {
            data["exception_message"] = json!(message);
            data["exception_type"] = json!("flow.ClusterError");
            data["node_id"] = json!(null);
            data["node_type"] = json!(null);
            data["traceback"] = json!([]);
            data["current_inputs"] = json!({});
            data["current_outputs"] = json!({});
        }
        let status = RunStatus { status_str: "error".into(), completed: false, messages: vec![(kind.into(), data)] };
        self.entry = Some(HistoryEntry { prompt: self.job.queue_item(), outputs: Map::new(), status, meta: Map::new() });
        let lines = [
            Event::Warning { message: message.to_string(), t_ms: 0.0 },
            Event::RunFinished { ok: false, interrupted, ran: 0, cached: 0, failed: 0, skipped: 0, ms: 0.0, t_ms: 0.0 },
        ];
        let now = timestamp();
        self.record = Some(Record {
            events: lines.iter().map(Event::to_json_line).collect(),
            error: Some(message.to_string()),
            started_at: Some(now),
            finished_at: Some(now),
            finished: true,
            ..self.record.take().unwrap_or_default()
        });
        self.error = Some(message.to_string());
        self.state = state;
        self.finished_ms = Some(now);
    }

    /// The JSON stored, made to fit in `limit` bytes: chatty event lines
    /// (progress, tokens, messages) of the record are dropped first.
    pub fn to_bytes(&self, limit: usize) -> anyhow::Result<Vec<u8>> {
        let bytes = serde_json::to_vec(self)?;
        if bytes.len() <= limit {
            return Ok(bytes);
        }
        let mut slim = self.clone();
        if let Some(record) = &mut slim.record {
            let before = record.events.len();
            record.events.retain(|l| {
                !matches!(Event::from_json_line(l), Ok(Event::Progress { .. } | Event::Token { .. } | Event::Message { .. }))
            });
            record.dropped += before - record.events.len();
        }
        let bytes = serde_json::to_vec(&slim)?;
        anyhow::ensure!(
            bytes.len() <= limit,
            "the run's state ({} bytes) is larger than the NATS server's message limit ({limit} bytes)",
            bytes.len()
        );
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            number: 1.0,
            prompt_id: "r1".into(),
            prompt: json!("flow: 1"),
            extra_data: Map::new(),
            client_id: None,
            params: Default::default(),
            outputs_to_execute: vec![],
        }
    }

    #[test]
    fn leases_and_unrun_endings() {
        let mut r = RunRecord::queued(job(), "flow.jobs.any.none".into());
        assert!(r.is_free_for("a", 0));
        r.state = RunState::Running;
        r.worker = Some("a".into());
        r.lease_until_ms = 1000;
        assert!(r.is_free_for("a", 10) && !r.is_free_for("b", 999) && r.is_free_for("b", 1000));
        r.end_unrun(RunState::Failed, "gave up");
        assert!(r.state.is_terminal());
        assert_eq!(r.entry.as_ref().unwrap().status.status_str, "error");
        assert!(r.record.as_ref().unwrap().finished);
    }

    #[test]
    fn big_records_drop_progress_first() {
        let mut r = RunRecord::queued(job(), "s".into());
        let progress = Event::Progress { node: "n".into(), step: 1, total: 2, t_ms: 0.0 }.to_json_line();
        r.record = Some(Record { events: vec![progress; 5000], ..Record::default() });
        let full = serde_json::to_vec(&r).unwrap().len();
        let fitted = r.to_bytes(full / 2).unwrap();
        let back: RunRecord = serde_json::from_slice(&fitted).unwrap();
        assert_eq!(back.record.unwrap().dropped, 5000);
        assert!(r.to_bytes(10).is_err());
    }
}
