//! Submitting a run to the cluster and following it to its end: the run's
//! record is created in the runs bucket (or found there), its job queued
//! while it is still queued, the workers woken; then its events (core
//! subject, at most once) go to a listener until the record says it ended.
//! Used by the front end (`flow serve --nats`) and by `flow run --nats`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use async_nats::HeaderMap;
use flow_engine::Event;
use flow_server::job::Job;
use flow_server::remote::RunListener;
use futures_util::StreamExt;

use crate::cluster::Handles;
use crate::jobs::{publish, Placement};
use crate::names::{cancel_subject, events_subject, run_key, WAKE};
use crate::record::{RunRecord, RunState};
use crate::runs::{self, Created};
use crate::watcher::{Following, RunWatcher};

/// Header of event messages saying what they hold.
pub const KIND_HEADER: &str = "Flow-Kind";
/// [`KIND_HEADER`] of the message listing the nodes a run does not need.
pub const KIND_UNNEEDED: &str = "unneeded";

/// How long writes to the cluster are retried while the NATS server is
/// unreachable (it restarts) before giving up.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Queues `job` unless the cluster knows it: returns its record as found or
/// created.
pub async fn submit(h: &Handles, job: &Job, placement: &Placement) -> Result<RunRecord> {
    let key = run_key(&job.prompt_id);
    let record = RunRecord::queued(job.clone(), placement.subject());
    let created = runs::retry(PATIENCE, || runs::create(&h.runs, &key, &record, h.max_payload)).await?;
    let record = match created {
        Created::New(_) => record,
        Created::Exists(existing, _) => *existing,
    };
    // Queued (again, if a front end stopped before the job was published:
    // a second copy is dropped by the stream, or by the worker that finds
    // the run taken).
    if record.state == RunState::Queued {
        runs::retry(PATIENCE, || publish(&h.js, record.subject.clone(), &key)).await?;
        let _ = h.client.publish(WAKE, key.clone().into()).await;
    }
    Ok(record)
}

/// Asks run `key` to stop: a queued run ends at once, a running one is told
/// through its cancel subject (and the flag in its record, for a worker
/// that takes it over).
pub async fn request_cancel(h: &Handles, key: &str) -> Result<()> {
    runs::update(&h.runs, key, h.max_payload, PATIENCE, |r| {
        let mut next = r.clone();
        match r.state {
            s if s.is_terminal() => return None,
            RunState::Queued => next.end_unrun(RunState::Interrupted, "cancelled before it started"),
            _ if r.cancel_requested => return None,
            _ => next.cancel_requested = true,
        }
        Some(next)
    })
    .await?;
    let _ = h.client.publish(cancel_subject(key), "".into()).await;
    let _ = h.client.flush().await;
    Ok(())
}

/// What to do while following.
pub struct Watch<'a> {
    /// Hears the run's events.
    pub listener: Option<Arc<dyn RunListener>>,
    /// The process's shared watch of the runs bucket, if it has one (else
    /// the run gets a watch of its own).
    pub shared: Option<&'a Arc<RunWatcher>>,
    /// True once the run should be cancelled.
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
    /// True when the follower stops (the run goes on): following ends with `None`.
    pub stopping: &'a (dyn Fn() -> bool + Sync),
}

/// Submits `job` and follows it to its end: the final record, or `None`
/// when `stopping` said so first.
pub async fn run(h: &Handles, job: &Job, placement: &Placement, watch: Watch<'_>) -> Result<Option<RunRecord>> {
    let key = run_key(&job.prompt_id);
    // Subscribed before the job is queued, so nothing is missed for want of it.
    let mut events = h.client.subscribe(events_subject(&key)).await?;
    let mut updates = match watch.shared {
        Some(watcher) => Updates::Shared(watcher.follow(&key)),
        None => Updates::Own(h.runs.watch_with_history(&key).await.ok().map(Box::new)),
    };
    let mut record = submit(h, job, placement).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut ticks = 0u64;
    let mut cancel_sent = false;
    let mut saw_end = false;
    while !record.state.is_terminal() {
        tokio::select! {
            Some(message) = events.next() => {
                saw_end |= deliver(&watch, &message.headers, &message.payload);
            }
            Some(r) = updates.next() => record = r,
            _ = tick.tick() => {
                ticks += 1;
                if (watch.cancelled)() && !cancel_sent {
                    if (watch.stopping)() {
                        return Ok(None);
                    }
                    cancel_sent = true;
                    request_cancel(h, &key).await?;
                }
                // A watch may have ended (the NATS server restarted): read, and watch again.
                let lost = matches!(updates, Updates::Own(None));
                if ticks.is_multiple_of(20) || lost && ticks.is_multiple_of(5) {
                    if let Ok(Some((r, _))) = runs::read(&h.runs, &key).await {
                        record = r;
                    }
                    if lost {
                        updates = Updates::Own(h.runs.watch_with_history(&key).await.ok().map(Box::new));
                    }
                }
            }
        }
    }
    // The worker publishes its last events before it ends the run; they may
    // still be on their way.
    if watch.listener.is_some() && !saw_end {
        let deadline = tokio::time::sleep(Duration::from_millis(300));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                Some(message) = events.next() => {
                    if deliver(&watch, &message.headers, &message.payload) {
                        break;
                    }
                }
                _ = &mut deadline => break,
            }
        }
    }
    Ok(Some(record))
}

/// Where a follower hears of changes to its run's record.
enum Updates {
    /// A watch of its own (none while it cannot be made).
    Own(Option<Box<async_nats::jetstream::kv::Watch>>),
    /// The process's shared watch.
    Shared(Following),
}

impl Updates {
    /// The next record; never returns `None` but when a watch of its own
    /// ended (it is then dropped, to be made again).
    async fn next(&mut self) -> Option<RunRecord> {
        loop {
            match self {
                Updates::Own(Some(w)) => match w.next().await {
                    Some(Ok(entry)) => {
                        if let Ok(r) = serde_json::from_slice::<RunRecord>(&entry.value) {
                            return Some(r);
                        }
                    }
                    _ => {
                        *self = Updates::Own(None);
                        return None;
                    }
                },
                Updates::Own(None) => std::future::pending::<()>().await,
                Updates::Shared(f) => {
                    if f.records.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    if let Some(r) = f.records.borrow_and_update().clone() {
                        return Some(r);
                    }
                }
            }
        }
    }
}

/// Hands one event message to the listener; true when it was the run's end.
fn deliver(watch: &Watch<'_>, headers: &Option<HeaderMap>, payload: &[u8]) -> bool {
    let Some(listener) = &watch.listener else {
        return false;
    };
    let kind = headers.as_ref().and_then(|h| h.get(KIND_HEADER)).map(|v| v.as_str().to_string());
    if kind.as_deref() == Some(KIND_UNNEEDED) {
        if let Ok(nodes) = serde_json::from_slice::<Vec<String>>(payload) {
            listener.unneeded(nodes);
        }
        return false;
    }
    let Ok(line) = std::str::from_utf8(payload) else {
        return false;
    };
    match Event::from_json_line(line) {
        Ok(event) => {
            let end = matches!(event, Event::RunFinished { .. });
            listener.event(event);
            end
        }
        Err(_) => false,
    }
}
