//! The queue and the history as files in the server's folder: one file per
//! queued prompt (`queue/ID.json`) and per finished run (`history/ID.json`),
//! each written atomically (temp file + rename). A prompt leaves the queue
//! folder only after its history file is in place, so a crash at any moment
//! loses nothing and never runs a finished prompt again.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::job::{HistoryEntry, Job};

/// A history file: the entry and its place in the history's order.
#[derive(Serialize, Deserialize)]
struct Stored {
    seq: u64,
    entry: HistoryEntry,
}

/// What a server restart finds.
#[derive(Default)]
pub struct Loaded {
    /// Prompts still to run, in no particular order.
    pub jobs: Vec<Job>,
    /// Finished runs: (order, prompt id, entry).
    pub history: Vec<(u64, String, HistoryEntry)>,
    /// Files that could not be read, with the reason (they are left alone).
    pub problems: Vec<String>,
}

/// The server's queue and history folders.
pub struct Store {
    queue: PathBuf,
    history: PathBuf,
}

impl Store {
    /// Opens (creating) the folders under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let store = Store { queue: state_dir.join("queue"), history: state_dir.join("history") };
        for dir in [&store.queue, &store.history] {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(store)
    }

    fn file(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{id}.json"))
    }

    /// Records a queued prompt.
    pub fn save_job(&self, job: &Job) -> Result<()> {
        let bytes = serde_json::to_vec(job)?;
        flow_engine::files::write_atomic(&Self::file(&self.queue, &job.prompt_id), &bytes)
            .with_context(|| format!("cannot persist prompt {}", job.prompt_id))
    }

    /// Forgets a queued prompt.
    pub fn remove_job(&self, id: &str) {
        let _ = fs::remove_file(Self::file(&self.queue, id));
    }

    /// Records a finished run; then the prompt leaves the queue folder.
    pub fn save_history(&self, seq: u64, id: &str, entry: &HistoryEntry) -> Result<()> {
        let bytes = serde_json::to_vec(&Stored { seq, entry: entry.clone() })?;
        flow_engine::files::write_atomic(&Self::file(&self.history, id), &bytes)
            .with_context(|| format!("cannot persist the history of prompt {id}"))?;
        self.remove_job(id);
        Ok(())
    }

    /// Forgets a finished run.
    pub fn remove_history(&self, id: &str) {
        let _ = fs::remove_file(Self::file(&self.history, id));
        // The run's record for the native API (see `crate::runlog`).
        let _ = fs::remove_file(Self::file(&self.history.with_file_name("runs"), id));
    }

    /// Everything persisted. A prompt found both queued and finished (a
    /// crash between the two writes) counts as finished.
    pub fn load(&self) -> Loaded {
        let mut loaded = Loaded::default();
        for (id, bytes) in read_dir(&self.history, &mut loaded.problems) {
            match serde_json::from_slice::<Stored>(&bytes) {
                Ok(s) => loaded.history.push((s.seq, id, s.entry)),
                Err(e) => loaded.problems.push(format!("history/{id}.json: {e}")),
            }
        }
        for (id, bytes) in read_dir(&self.queue, &mut loaded.problems) {
            if loaded.history.iter().any(|(_, h, _)| *h == id) {
                self.remove_job(&id);
                continue;
            }
            match serde_json::from_slice::<Job>(&bytes) {
                Ok(job) if job.prompt_id == id => loaded.jobs.push(job),
                Ok(_) => loaded.problems.push(format!("queue/{id}.json: holds another prompt id")),
                Err(e) => loaded.problems.push(format!("queue/{id}.json: {e}")),
            }
        }
        loaded.history.sort_by_key(|(seq, _, _)| *seq);
        loaded
    }
}

/// `(id, bytes)` of the `ID.json` files of `dir` (temp files of unfinished
/// writes, which start with a dot, are skipped).
fn read_dir(dir: &Path, problems: &mut Vec<String>) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json") else { continue };
        if name.starts_with('.') {
            continue;
        }
        match fs::read(entry.path()) {
            Ok(bytes) => out.push((id.to_string(), bytes)),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map};

    use super::*;
    use crate::job::RunStatus;

    fn job(id: &str) -> Job {
        Job {
            number: 1.0,
            prompt_id: id.into(),
            prompt: json!({"flow": 1}),
            extra_data: Map::new(),
            client_id: Some("c".into()),
            params: Default::default(),
            outputs_to_execute: vec![],
        }
    }

    #[test]
    fn queued_and_finished_prompts_survive_and_finished_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save_job(&job("a")).unwrap();
        store.save_job(&job("b")).unwrap();
        let entry = HistoryEntry {
            prompt: job("a").queue_item(),
            outputs: Map::new(),
            status: RunStatus { status_str: "success".into(), completed: true, messages: vec![] },
            meta: Map::new(),
        };
        // A crash right after the history write: `a` is still in the queue folder.
        flow_engine::files::write_atomic(
            &dir.path().join("history/a.json"),
            &serde_json::to_vec(&Stored { seq: 7, entry: entry.clone() }).unwrap(),
        )
        .unwrap();
        fs::write(dir.path().join("queue/broken.json"), b"{").unwrap();
        fs::write(dir.path().join("queue/.x.json.1-0.tmp"), b"{").unwrap();
        let loaded = Store::open(dir.path()).unwrap().load();
        assert_eq!(loaded.jobs, vec![job("b")]);
        assert_eq!(loaded.history, vec![(7, "a".to_string(), entry)]);
        assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
        assert!(!dir.path().join("queue/a.json").exists());
    }
}
