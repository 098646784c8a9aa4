//! The operating system's file events, debounced and filtered down to the
//! paths of a [`WatchSet`].

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};

use super::WatchSet;

/// Watches the folders of a [`WatchSet`] and calls back with the watched
/// paths that changed, once per burst of events (an editor's save is one
/// burst: write a temporary file, rename it, touch metadata).
pub struct FileWatcher {
    debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    set: Arc<Mutex<WatchSet>>,
    registered: BTreeSet<(PathBuf, bool)>,
}

impl FileWatcher {
    /// A watcher that waits `debounce` after the last event of a burst, then
    /// calls `on_change` with the changed watched paths (sorted, each once).
    /// It watches nothing until [`FileWatcher::watch`].
    pub fn new(debounce: Duration, on_change: impl Fn(Vec<PathBuf>) + Send + 'static) -> Result<Self> {
        let set = Arc::new(Mutex::new(WatchSet::default()));
        let shared = Arc::clone(&set);
        let handler = move |result: DebounceEventResult| {
            let Ok(events) = result else { return };
            let Ok(set) = shared.lock() else { return };
            let mut changed = BTreeSet::new();
            for event in events {
                if matches!(event.kind, EventKind::Access(_) | EventKind::Other) {
                    continue;
                }
                changed.extend(event.paths.iter().filter(|p| set.matches(p)).cloned());
            }
            drop(set);
            if !changed.is_empty() {
                on_change(changed.into_iter().collect());
            }
        };
        let debouncer = new_debouncer(debounce, None, handler).context("cannot start watching files")?;
        Ok(FileWatcher { debouncer, set, registered: BTreeSet::new() })
    }

    /// Watches exactly `set` from now on. Folders that cannot be watched are
    /// returned as warnings; the rest is watched.
    pub fn watch(&mut self, set: WatchSet) -> Vec<String> {
        let wanted = set.registrations();
        let mut warnings = Vec::new();
        for (dir, _) in self.registered.difference(&wanted) {
            let _ = self.debouncer.unwatch(dir);
        }
        for (dir, recursive) in wanted.difference(&self.registered) {
            let mode = if *recursive { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
            if let Err(e) = self.debouncer.watch(dir, mode) {
                warnings.push(format!("cannot watch {}: {e}", dir.display()));
            }
        }
        self.registered = wanted;
        if let Ok(mut current) = self.set.lock() {
            *current = set;
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn next(rx: &mpsc::Receiver<Vec<PathBuf>>) -> Option<Vec<PathBuf>> {
        rx.recv_timeout(Duration::from_secs(5)).ok()
    }

    #[test]
    fn an_atomic_rename_save_is_seen_like_a_write_and_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let graph = dir.path().join("graph.yaml");
        std::fs::write(&graph, "v1").unwrap();
        let (tx, rx) = mpsc::channel();
        let mut watcher = FileWatcher::new(Duration::from_millis(50), move |paths| {
            let _ = tx.send(paths);
        })
        .unwrap();
        assert!(watcher.watch(WatchSet::new(std::slice::from_ref(&graph))).is_empty());
        std::thread::sleep(Duration::from_millis(100));

        std::fs::write(dir.path().join("unrelated.txt"), "x").unwrap();
        std::fs::write(&graph, "v2").unwrap();
        let changed = next(&rx).expect("an in-place write is seen");
        assert_eq!(changed.len(), 1);
        assert!(changed[0].ends_with("graph.yaml"));

        let tmp = dir.path().join(".graph.yaml.tmp");
        std::fs::write(&tmp, "v3").unwrap();
        std::fs::rename(&tmp, &graph).unwrap();
        let changed = next(&rx).expect("a rename over the file is seen");
        assert!(changed.iter().all(|p| p.ends_with("graph.yaml")), "{changed:?}");
    }
}
