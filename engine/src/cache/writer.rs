//! The background thread that writes entries to the disk tier, so that a run
//! does not wait for the disk.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use super::disk::DiskTier;
use super::key::CacheKey;
use crate::op::Outputs;

/// One queued write.
type Job = (CacheKey, Outputs);

/// Writes queued entries in order on its own thread. Dropping it waits for
/// every queued write.
pub(crate) struct DiskWriter {
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
    /// Failures not yet returned by [`DiskWriter::flush`].
    warnings: Vec<String>,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the end of one write.
    fn finish(&self, warning: Option<String>) {
        let mut state = self.lock();
        state.pending -= 1;
        state.warnings.extend(warning);
        self.idle.notify_all();
    }
}

impl DiskWriter {
    /// Starts the writer thread for `disk`.
    pub(crate) fn spawn(disk: Arc<DiskTier>) -> DiskWriter {
        let (queue, jobs) = mpsc::channel();
        let progress = Arc::new(Progress::default());
        let thread_progress = Arc::clone(&progress);
        let thread = thread::Builder::new()
            .name("flow-cache-writer".into())
            .spawn(move || write_all(&disk, jobs, &thread_progress))
            .expect("the operating system refused to start the cache writer thread");
        DiskWriter {
            queue: Some(queue),
            thread: Some(thread),
            progress,
        }
    }

    /// Queues `outputs` to be written under `key`.
    pub(crate) fn enqueue(&self, key: CacheKey, outputs: Outputs) {
        self.progress.lock().pending += 1;
        let sent = self
            .queue
            .as_ref()
            .is_some_and(|q| q.send((key, outputs)).is_ok());
        if !sent {
            self.progress.finish(Some(format!(
                "cache entry {key} not written: the writer thread has stopped"
            )));
        }
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

impl Drop for DiskWriter {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has written what is queued.
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: writes jobs until the queue closes. A panicking write
/// becomes a warning, so `flush` never waits forever.
fn write_all(disk: &DiskTier, jobs: Receiver<Job>, progress: &Progress) {
    for (key, outputs) in jobs {
        let result = panic::catch_unwind(AssertUnwindSafe(|| disk.put(&key, &outputs)));
        let warning = match result {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("cache entry {key} not written: {e}")),
            Err(_) => Some(format!(
                "cache entry {key} not written: the encoder panicked"
            )),
        };
        progress.finish(warning);
    }
}
