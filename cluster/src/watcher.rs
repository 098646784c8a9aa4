//! One watch of the whole runs bucket shared by everyone following runs in
//! a process (a front end follows many runs at once; a watch per run would
//! leave a consumer on the server per run, and the server caps consumers).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use crate::record::RunRecord;

/// Hands each change of a run's record to the one following it.
#[derive(Default)]
pub struct RunWatcher {
    followers: Mutex<HashMap<String, watch::Sender<Option<RunRecord>>>>,
}

/// A follower's end: receives the run's records; stops following when dropped.
pub struct Following {
    key: String,
    watcher: Arc<RunWatcher>,
    /// The run's latest record seen by the watch (`None` before the first).
    pub records: watch::Receiver<Option<RunRecord>>,
}

impl Drop for Following {
    fn drop(&mut self) {
        self.watcher.lock().remove(&self.key);
    }
}

impl RunWatcher {
    /// A watcher with no followers.
    pub fn new() -> Arc<RunWatcher> {
        Arc::new(RunWatcher::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<Option<RunRecord>>>> {
        self.followers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts following run `key`.
    pub fn follow(self: &Arc<Self>, key: &str) -> Following {
        let (tx, rx) = watch::channel(None);
        self.lock().insert(key.to_string(), tx);
        Following { key: key.to_string(), watcher: Arc::clone(self), records: rx }
    }

    /// A run's record changed.
    pub fn changed(&self, key: &str, record: &RunRecord) {
        if let Some(tx) = self.lock().get(key) {
            tx.send_replace(Some(record.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map};

    use super::*;
    use flow_server::job::Job;

    #[test]
    fn followers_get_their_own_runs_until_they_stop() {
        let job = Job {
            number: 1.0,
            prompt_id: "a".into(),
            prompt: json!({}),
            extra_data: Map::new(),
            client_id: None,
            params: Default::default(),
            outputs_to_execute: vec![],
        };
        let record = RunRecord::queued(job, "s".into());
        let watcher = RunWatcher::new();
        let a = watcher.follow("a");
        watcher.changed("b", &record);
        assert!(a.records.borrow().is_none());
        watcher.changed("a", &record);
        assert_eq!(a.records.borrow().as_ref().unwrap().job.prompt_id, "a");
        drop(a);
        assert!(watcher.lock().is_empty());
    }
}
