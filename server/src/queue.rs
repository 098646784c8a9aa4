//! The queue of prompts: pending ones in order of their number, running
//! ones each with its own cancel token, and the history of finished runs.
//! Every change is persisted (see [`crate::store`]) and announced to the
//! WebSocket clients as `status {queue_remaining}`; a run counts as
//! remaining until its last message has been sent.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use anyhow::Result;
use flow_engine::CancelToken;
use serde_json::{Map, Value};

use crate::hub::Hub;
use crate::job::{HistoryEntry, Job};
use crate::store::Store;

/// Finished runs kept (the oldest go first), as ComfyUI keeps.
pub const MAX_HISTORY: usize = 10_000;

struct Running {
    job: Job,
    cancel: CancelToken,
    /// Handed to a cluster and not started by a worker yet: shown as queued.
    waiting: bool,
}

#[derive(Default)]
struct Inner {
    /// Sorted by (number, arrival).
    pending: Vec<(Job, u64)>,
    running: BTreeMap<String, Running>,
    /// seq → (id, entry), oldest first.
    history: BTreeMap<u64, (String, HistoryEntry)>,
    history_seq: HashMap<String, u64>,
    next_number: f64,
    next_seq: u64,
    stopping: bool,
}

impl Inner {
    fn remaining(&self) -> usize {
        self.pending.len() + self.running.len()
    }

    fn knows(&self, id: &str) -> bool {
        self.running.contains_key(id)
            || self.history_seq.contains_key(id)
            || self.pending.iter().any(|(j, _)| j.prompt_id == id)
    }

    fn insert(&mut self, job: Job) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let at = self.pending.partition_point(|(j, s)| (j.number, *s) <= (job.number, seq));
        self.pending.insert(at, (job, seq));
    }
}

/// Why a prompt was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Another prompt has this id (queued, running or in the history).
    DuplicateId,
    /// The server is shutting down.
    Stopping,
}

/// Where a run is.
#[derive(Clone, Debug)]
pub enum Phase {
    /// Waiting in the queue.
    Queued,
    /// Taken by a worker (until its last message is sent).
    Running,
    /// In the history.
    Finished(HistoryEntry),
}

/// A run as [`Queue::find`] and [`Queue::list`] see it.
#[derive(Clone, Debug)]
pub struct Listed {
    /// The run's (prompt's) id.
    pub id: String,
    /// The job, while it is queued or running.
    pub job: Option<Job>,
    /// Where it is.
    pub phase: Phase,
}

/// The queue, shared by the routes and the workers.
pub struct Queue {
    inner: Mutex<Inner>,
    ready: Condvar,
    store: Store,
    hub: Hub,
}

impl Queue {
    /// A queue restored from `store`: queued prompts resume, the history is kept.
    /// Returns the queue and the problems met reading the folder.
    pub fn restore(store: Store, hub: Hub) -> (Self, Vec<String>) {
        let loaded = store.load();
        let mut inner = Inner { next_number: 0.0, ..Inner::default() };
        for (seq, id, entry) in loaded.history {
            inner.history_seq.insert(id.clone(), seq);
            inner.history.insert(seq, (id, entry));
            inner.next_seq = inner.next_seq.max(seq + 1);
        }
        let mut jobs = loaded.jobs;
        jobs.sort_by(|a, b| a.number.total_cmp(&b.number));
        for job in jobs {
            inner.next_number = inner.next_number.max(job.number.abs() + 1.0);
            inner.insert(job);
        }
        for (_, entry) in inner.history.values() {
            if let Some(n) = entry.prompt.get(0).and_then(Value::as_f64) {
                inner.next_number = inner.next_number.max(n.abs() + 1.0);
            }
        }
        (Queue { inner: Mutex::new(inner), ready: Condvar::new(), store, hub }, loaded.problems)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The WebSocket hub the queue announces changes on.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Prompts queued or running.
    pub fn remaining(&self) -> usize {
        self.lock().remaining()
    }

    /// The number the next prompt gets (negated for `front`).
    pub fn next_number(&self, front: bool) -> f64 {
        let mut inner = self.lock();
        let n = inner.next_number;
        inner.next_number += 1.0;
        if front {
            -n
        } else {
            n
        }
    }

    /// Whether a prompt with this id exists (queued, running or finished).
    pub fn knows(&self, id: &str) -> bool {
        self.lock().knows(id)
    }

    /// Queues a prompt (persisted before it is acknowledged).
    pub fn submit(&self, job: Job) -> Result<Result<(), Refused>> {
        let mut inner = self.lock();
        if inner.stopping {
            return Ok(Err(Refused::Stopping));
        }
        if inner.knows(&job.prompt_id) {
            return Ok(Err(Refused::DuplicateId));
        }
        self.store.save_job(&job)?;
        inner.insert(job);
        self.hub.status(inner.remaining());
        drop(inner);
        self.ready.notify_one();
        Ok(Ok(()))
    }

    /// Waits for the next prompt and marks it running; `None` once the
    /// server stops.
    pub fn take(&self) -> Option<(Job, CancelToken)> {
        let mut inner = self.lock();
        loop {
            if inner.stopping {
                return None;
            }
            if !inner.pending.is_empty() {
                let (job, _) = inner.pending.remove(0);
                let cancel = CancelToken::new();
                inner.running.insert(job.prompt_id.clone(), Running { job: job.clone(), cancel: cancel.clone(), waiting: false });
                self.hub.status(inner.remaining());
                return Some((job, cancel));
            }
            inner = self.ready.wait(inner).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Records a finished run: its history entry is persisted and the
    /// prompt leaves the queue folder; it still counts as remaining until
    /// [`Queue::release`] (its last message is not sent yet). A run
    /// interrupted because the server stops stays queued (it resumes on the
    /// next start) and gets no history entry.
    pub fn record(&self, id: &str, entry: HistoryEntry, interrupted: bool) -> Result<()> {
        let mut inner = self.lock();
        if inner.stopping && interrupted {
            return Ok(());
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let saved = self.store.save_history(seq, id, &entry);
        inner.history_seq.insert(id.to_string(), seq);
        inner.history.insert(seq, (id.to_string(), entry));
        while inner.history.len() > MAX_HISTORY {
            if let Some((_, (old, _))) = inner.history.pop_first() {
                inner.history_seq.remove(&old);
                self.store.remove_history(&old);
            }
        }
        saved
    }

    /// Ends a run once its last message was sent.
    pub fn release(&self, id: &str) {
        let mut inner = self.lock();
        inner.running.remove(id);
        self.hub.status(inner.remaining());
    }

    /// Marks a taken prompt as waiting for a cluster's worker (shown as
    /// queued), or as started.
    pub fn set_waiting(&self, id: &str, waiting: bool) {
        if let Some(r) = self.lock().running.get_mut(id) {
            r.waiting = waiting;
        }
    }

    /// Removes pending prompts by id (running ones are not touched: use
    /// [`Queue::interrupt`]).
    pub fn delete(&self, ids: &[String]) {
        let mut inner = self.lock();
        let before = inner.pending.len();
        inner.pending.retain(|(j, _)| !ids.contains(&j.prompt_id));
        if inner.pending.len() != before {
            for id in ids {
                self.store.remove_job(id);
            }
            self.hub.status(inner.remaining());
        }
    }

    /// Removes every pending prompt.
    pub fn clear(&self) {
        let mut inner = self.lock();
        for (job, _) in std::mem::take(&mut inner.pending) {
            self.store.remove_job(&job.prompt_id);
        }
        self.hub.status(inner.remaining());
    }

    /// Asks running prompts to stop: the one called `id`, or all of them.
    /// Returns how many were asked.
    pub fn interrupt(&self, id: Option<&str>) -> usize {
        let inner = self.lock();
        let mut n = 0;
        for (rid, r) in &inner.running {
            if id.is_none_or(|id| id == rid) {
                r.cancel.cancel();
                n += 1;
            }
        }
        n
    }

    /// Stops handing out prompts and interrupts the running ones; they stay
    /// queued on disk and resume on the next start.
    pub fn stop(&self) {
        let mut inner = self.lock();
        inner.stopping = true;
        for r in inner.running.values() {
            r.cancel.cancel();
        }
        drop(inner);
        self.ready.notify_all();
    }

    /// One run by id: queued, running or finished.
    pub fn find(&self, id: &str) -> Option<Listed> {
        let inner = self.lock();
        if let Some(r) = inner.running.get(id) {
            let phase = if r.waiting { Phase::Queued } else { Phase::Running };
            return Some(Listed { id: id.to_string(), job: Some(r.job.clone()), phase });
        }
        if let Some((j, _)) = inner.pending.iter().find(|(j, _)| j.prompt_id == id) {
            return Some(Listed { id: id.to_string(), job: Some(j.clone()), phase: Phase::Queued });
        }
        let (_, entry) = inner.history_seq.get(id).and_then(|s| inner.history.get(s))?;
        Some(Listed { id: id.to_string(), job: None, phase: Phase::Finished(entry.clone()) })
    }

    /// Every run, newest first: pending (last to run first), running, then
    /// the history from its newest entry.
    pub fn list(&self) -> Vec<Listed> {
        let inner = self.lock();
        let pending = inner.pending.iter().rev().map(|(j, _)| Listed {
            id: j.prompt_id.clone(),
            job: Some(j.clone()),
            phase: Phase::Queued,
        });
        let running = inner.running.iter().map(|(id, r)| Listed {
            id: id.clone(),
            job: Some(r.job.clone()),
            phase: if r.waiting { Phase::Queued } else { Phase::Running },
        });
        let finished = inner.history.values().rev().map(|(id, e)| Listed {
            id: id.clone(),
            job: None,
            phase: Phase::Finished(e.clone()),
        });
        pending.chain(running).chain(finished).collect()
    }

    /// Whether the server is shutting down.
    pub fn stopping(&self) -> bool {
        self.lock().stopping
    }

    /// ComfyUI's `GET /queue`: running and pending queue items.
    pub fn snapshot(&self) -> (Vec<Value>, Vec<Value>) {
        let inner = self.lock();
        let waiting = inner.running.values().filter(|r| r.waiting).map(|r| r.job.queue_item());
        (
            inner.running.values().filter(|r| !r.waiting).map(|r| r.job.queue_item()).collect(),
            waiting.chain(inner.pending.iter().map(|(j, _)| j.queue_item())).collect(),
        )
    }

    /// ComfyUI's `GET /history`: the last `max_items` (all when `None`)
    /// entries from `offset` (counted from the oldest; negative: the last ones).
    pub fn history(&self, max_items: Option<usize>, offset: Option<i64>) -> Map<String, Value> {
        let inner = self.lock();
        let len = inner.history.len();
        let start = match (offset, max_items) {
            (Some(o), _) if o >= 0 => o as usize,
            (_, Some(m)) => len.saturating_sub(m),
            _ => 0,
        };
        inner
            .history
            .values()
            .skip(start)
            .take(max_items.unwrap_or(usize::MAX))
            .map(|(id, e)| (id.clone(), serde_json::to_value(e).unwrap_or_default()))
            .collect()
    }

    /// One history entry, as `{id: entry}` (empty when unknown).
    pub fn history_of(&self, id: &str) -> Map<String, Value> {
        let inner = self.lock();
        let mut out = Map::new();
        if let Some((_, e)) = inner.history_seq.get(id).and_then(|s| inner.history.get(s)) {
            out.insert(id.to_string(), serde_json::to_value(e).unwrap_or_default());
        }
        out
    }

    /// Forgets history entries: the ones named, or all.
    pub fn forget(&self, ids: Option<&[String]>) {
        let mut inner = self.lock();
        let doomed: Vec<String> = match ids {
            Some(ids) => ids.iter().filter(|id| inner.history_seq.contains_key(*id)).cloned().collect(),
            None => inner.history_seq.keys().cloned().collect(),
        };
        for id in doomed {
            if let Some(seq) = inner.history_seq.remove(&id) {
                inner.history.remove(&seq);
            }
            self.store.remove_history(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::job::RunStatus;

    fn job(id: &str, number: f64) -> Job {
        Job {
            number,
            prompt_id: id.into(),
            prompt: json!({}),
            extra_data: Map::new(),
            client_id: None,
            params: Default::default(),
            outputs_to_execute: vec![],
        }
    }

    fn entry(id: &str) -> HistoryEntry {
        HistoryEntry {
            prompt: job(id, 0.0).queue_item(),
            outputs: Map::new(),
            status: RunStatus { status_str: "success".into(), completed: true, messages: vec![] },
            meta: Map::new(),
        }
    }

    #[test]
    fn order_duplicates_interrupts_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = Queue::restore(Store::open(dir.path()).unwrap(), Hub::new());
        let mut rx = q.hub().subscribe();
        q.submit(job("a", 1.0)).unwrap().unwrap();
        q.submit(job("b", 2.0)).unwrap().unwrap();
        q.submit(job("front", -3.0)).unwrap().unwrap();
        assert_eq!(q.submit(job("a", 9.0)).unwrap(), Err(Refused::DuplicateId));
        let (first, cancel) = q.take().unwrap();
        assert_eq!(first.prompt_id, "front");
        assert_eq!(q.interrupt(Some("a")), 0);
        assert_eq!(q.interrupt(Some("front")), 1);
        assert!(cancel.is_cancelled());
        q.delete(&["b".to_string()]);
        q.record("front", entry("front"), true).unwrap();
        q.release("front");
        assert_eq!(q.remaining(), 1);
        let counts: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|f| {
                serde_json::from_str::<Value>(&f.text).unwrap()["data"]["status"]["exec_info"]["queue_remaining"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(counts, [1, 2, 3, 3, 2, 1]);
        // A restart finds `a` queued and `front` finished.
        let (q2, problems) = Queue::restore(Store::open(dir.path()).unwrap(), Hub::new());
        assert!(problems.is_empty());
        assert_eq!(q2.snapshot().1.len(), 1);
        assert_eq!(q2.history(None, None).keys().collect::<Vec<_>>(), ["front"]);
        assert!(q2.knows("front") && q2.knows("a") && !q2.knows("b"));
        assert!(q2.next_number(false) >= 2.0);
    }

    #[test]
    fn a_run_stopped_by_shutdown_stays_queued() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = Queue::restore(Store::open(dir.path()).unwrap(), Hub::new());
        q.submit(job("a", 1.0)).unwrap().unwrap();
        let (_, cancel) = q.take().unwrap();
        q.stop();
        assert!(cancel.is_cancelled() && q.take().is_none());
        q.record("a", entry("a"), true).unwrap();
        q.release("a");
        let (q2, _) = Queue::restore(Store::open(dir.path()).unwrap(), Hub::new());
        assert_eq!(q2.snapshot().1.len(), 1);
        assert!(q2.history(None, None).is_empty());
    }

    #[test]
    fn a_run_waiting_for_a_cluster_worker_shows_as_queued() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = Queue::restore(Store::open(dir.path()).unwrap(), Hub::new());
        q.submit(job("a", 1.0)).unwrap().unwrap();
        q.submit(job("b", 2.0)).unwrap().unwrap();
        let (a, _) = q.take().unwrap();
        q.set_waiting(&a.prompt_id, true);
        let (running, pending) = q.snapshot();
        assert_eq!((running.len(), pending.len()), (0, 2));
        assert!(matches!(q.find("a").unwrap().phase, Phase::Queued));
        q.set_waiting("a", false);
        assert!(matches!(q.find("a").unwrap().phase, Phase::Running));
        assert_eq!(q.snapshot().0.len(), 1);
        assert_eq!(q.remaining(), 2);
    }

    #[test]
    fn history_windows() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = Queue::restore(Store::open(dir.path()).unwrap(), Hub::new());
        for id in ["a", "b", "c"] {
            q.submit(job(id, 0.0)).unwrap().unwrap();
            let (j, _) = q.take().unwrap();
            q.record(&j.prompt_id, entry(id), false).unwrap();
            q.release(&j.prompt_id);
        }
        let keys = |m: Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(q.history(Some(2), None)), ["b", "c"]);
        assert_eq!(keys(q.history(Some(1), Some(0))), ["a"]);
        assert_eq!(keys(q.history_of("b")), ["b"]);
        q.forget(Some(&["b".to_string()]));
        assert_eq!(keys(q.history(None, None)), ["a", "c"]);
        q.forget(None);
        assert!(q.history(None, None).is_empty());
    }
}
