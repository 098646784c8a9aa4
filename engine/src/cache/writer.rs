//! The background thread that writes entries to the disk tier and the shared
//! tier, so that a run waits for neither.
//!
//! Entries are written one at a time, in the order they were queued, as soon
//! as they are queued (nodes' outputs reach the shared tier while the run
//! goes on, not at its end). Each entry is encoded once for both tiers.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use super::codec;
use super::disk::DiskTier;
use super::key::CacheKey;
use super::shared::SharedTier;
use crate::op::Outputs;

/// One queued write.
enum Job {
    /// Outputs to encode, then write to every tier the writer has.
    Outputs(CacheKey, Outputs),
    /// An entry already encoded and verified (fetched from the shared tier),
    /// to write to the disk tier only.
    Encoded(CacheKey, Vec<u8>),
}

impl Job {
    fn key(&self) -> CacheKey {
        match self {
            Job::Outputs(key, _) | Job::Encoded(key, _) => *key,
        }
    }
}

/// Where the writer writes.
struct Tiers {
    disk: Option<Arc<DiskTier>>,
    shared: Option<Arc<dyn SharedTier>>,
}

/// Writes queued entries in order on its own thread. Dropping it waits for
/// every queued write.
pub(crate) struct EntryWriter {
    queue: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    progress: Arc<Progress>,
}

/// What the writer thread reports back.
#[derive(Default)]
struct Progress {
    state: Mutex<State>,
    idle: Condvar,
}

#[derive(Default)]
struct State {
    /// Writes queued and not finished.
    pending: usize,
    /// Failures not yet returned by [`EntryWriter::flush`].
    warnings: Vec<String>,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the end of one write (to every tier).
    fn finish(&self, warnings: Vec<String>) {
        let mut state = self.lock();
        state.pending -= 1;
        state.warnings.extend(warnings);
        self.idle.notify_all();
    }
}

impl EntryWriter {
    /// Starts the writer thread for `disk` and `shared` (at least one of
    /// them is expected; with neither, every write does nothing).
    pub(crate) fn spawn(disk: Option<Arc<DiskTier>>, shared: Option<Arc<dyn SharedTier>>) -> EntryWriter {
        let (queue, jobs) = mpsc::channel();
        let progress = Arc::new(Progress::default());
        let thread_progress = Arc::clone(&progress);
        let tiers = Tiers { disk, shared };
        let thread = thread::Builder::new()
            .name("flow-cache-writer".into())
            .spawn(move || write_all(&tiers, jobs, &thread_progress))
            .expect("the operating system refused to start the cache writer thread");
        EntryWriter { queue: Some(queue), thread: Some(thread), progress }
    }

    /// Queues `outputs` to be encoded and written under `key` to every tier.
    pub(crate) fn enqueue(&self, key: CacheKey, outputs: Outputs) {
        self.send(Job::Outputs(key, outputs));
    }

    /// Queues an entry already encoded and verified (a shared-tier hit) to
    /// be written under `key` to the disk tier only.
    pub(crate) fn enqueue_encoded(&self, key: CacheKey, bytes: Vec<u8>) {
        self.send(Job::Encoded(key, bytes));
    }

    fn send(&self, job: Job) {
        let key = job.key();
        self.progress.lock().pending += 1;
        let sent = self.queue.as_ref().is_some_and(|q| q.send(job).is_ok());
        if !sent {
            self.progress
                .finish(vec![format!("cache entry {key} not written: the writer thread has stopped")]);
        }
    }

    /// Adds `warnings` to those the next [`EntryWriter::flush`] returns.
    pub(crate) fn add_warnings(&self, warnings: Vec<String>) {
        self.progress.lock().warnings.extend(warnings);
    }

    /// Waits until every queued write is done; returns the failures since the
    /// last flush.
    pub(crate) fn flush(&self) -> Vec<String> {
        let state = self.progress.lock();
        let mut state = self
            .progress
            .idle
            .wait_while(state, |s| s.pending > 0)
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut state.warnings)
    }
}

impl Drop for EntryWriter {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has written what is queued.
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: writes jobs until the queue closes. A failing or
/// panicking write becomes a warning, so `flush` never waits forever, and a
/// failure of one tier does not keep the entry from the other.
fn write_all(tiers: &Tiers, jobs: Receiver<Job>, progress: &Progress) {
    for job in jobs {
        let mut warnings = Vec::new();
        match job {
            Job::Outputs(key, outputs) => {
                let encoded = panic::catch_unwind(AssertUnwindSafe(|| codec::encode(&outputs)));
                match encoded {
                    // Outputs the entry format cannot hold stay in memory only.
                    Ok(Ok(None)) => {}
                    Ok(Ok(Some(bytes))) => {
                        warnings.extend(write_disk(tiers, &key, &bytes));
                        warnings.extend(write_shared(tiers, &key, &bytes));
                    }
                    Ok(Err(e)) => warnings.push(format!("cache entry {key} not written: {e}")),
                    Err(_) => warnings.push(format!("cache entry {key} not written: the encoder panicked")),
                }
            }
            Job::Encoded(key, bytes) => warnings.extend(write_disk(tiers, &key, &bytes)),
        }
        progress.finish(warnings);
    }
}

/// Writes an encoded entry to the disk tier, if any; the warning if it fails.
fn write_disk(tiers: &Tiers, key: &CacheKey, bytes: &[u8]) -> Option<String> {
    let disk = tiers.disk.as_ref()?;
    match panic::catch_unwind(AssertUnwindSafe(|| disk.put_encoded(key, bytes))) {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("cache entry {key} not written: {e}")),
        Err(_) => Some(format!("cache entry {key} not written: the disk tier panicked")),
    }
}

/// Writes an encoded entry to the shared tier, if any; the warning if it fails.
fn write_shared(tiers: &Tiers, key: &CacheKey, bytes: &[u8]) -> Option<String> {
    let shared = tiers.shared.as_ref()?;
    match panic::catch_unwind(AssertUnwindSafe(|| shared.put(key, bytes))) {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("cache entry {key} not written to the shared cache tier: {e}")),
        Err(_) => Some(format!("cache entry {key} not written to the shared cache tier: it panicked")),
    }
}
