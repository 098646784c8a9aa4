//! `flow watch`: run, then re-run on every save of the graph, its scripts and
//! the files it reads. One engine lives through the session, so loaded
//! models and the in-memory cache stay warm; only nodes whose keys changed
//! run again. Files the session's own runs wrote do not trigger it (while
//! they hold what was written), and saves that keep coming cannot hold a
//! run off for longer than the maximum wait.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flow_engine::files::WrittenFile;
use flow_engine::graph::{self, Graph, Override};
use flow_engine::run::{watched_paths, RunReport};
use flow_engine::watch::{normalize, FileWatcher, WatchSet};
use flow_engine::{CancelToken, Engine, Event, EventSink};

use super::common::{engine, on_interrupt, parse_overrides, plan_options, registry};
use super::render::{human_sink, json_sink};
use super::watch_output::Output;
use super::{EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID};
use crate::GraphArgs;

/// What the session loop waits for.
enum Signal {
    /// Watched files changed.
    Changed(Vec<PathBuf>),
    /// The run in progress finished (or stopped after a cancel).
    Finished(Box<RunReport>),
    /// Ctrl-C.
    Interrupt,
}

/// How a cycle ended.
enum Outcome {
    /// Wait for the next change.
    Idle,
    /// Files changed while running: reload at once.
    Restart(Vec<PathBuf>),
    /// Ctrl-C: the session ends.
    Quit,
}

/// Watches the graph until Ctrl-C; returns the exit code (130 after a clean
/// shutdown, 2 for bad arguments). `debounce`: quiet time after a save;
/// `max_wait`: how long saves may keep cancelling runs.
pub fn watch(args: &GraphArgs, json: bool, debounce: Duration, max_wait: Duration) -> u8 {
    let Ok(overrides) = parse_overrides(&args.set) else { return EXIT_INVALID };
    let engine = match engine(args, registry(), json) {
        Ok(e) => Arc::new(e),
        Err(code) => return code,
    };
    let out = Output::new(json);
    let (tx, rx) = channel();
    let interrupt = tx.clone();
    on_interrupt(move || {
        let _ = interrupt.send(Signal::Interrupt);
    });
    let changes = tx.clone();
    let mut watcher = match FileWatcher::new(debounce, move |paths| {
        let _ = changes.send(Signal::Changed(paths));
    }) {
        Ok(w) => w,
        Err(e) => {
            errln!("error: {e:#}");
            return EXIT_FAILED;
        }
    };
    let mut session = Session {
        args,
        overrides,
        engine,
        out,
        tx,
        watched: vec![args.graph.clone()],
        own: Arc::new(OwnWrites::default()),
        max_wait,
        held_off_since: None,
    };
    let mut pending: Vec<PathBuf> = Vec::new();
    loop {
        let outcome = session.cycle(&mut watcher, &rx, &pending);
        pending = match outcome {
            Outcome::Restart(paths) => paths,
            Outcome::Quit => break,
            Outcome::Idle => match wait_for_change(&rx, &session.own) {
                Some(paths) => paths,
                None => break,
            },
        };
    }
    session.out.stopped();
    EXIT_INTERRUPTED
}

struct Session<'a> {
    args: &'a GraphArgs,
    overrides: Vec<Override>,
    engine: Arc<Engine>,
    out: Output,
    tx: Sender<Signal>,
    /// What the last valid graph depends on (the graph file alone before).
    watched: Vec<PathBuf>,
    /// What the session's runs wrote.
    own: Arc<OwnWrites>,
    /// How long saves may keep cancelling runs.
    max_wait: Duration,
    /// Since when saves have kept cancelling runs (none finished since).
    held_off_since: Option<Instant>,
}

/// The files the session's own runs wrote, by normalised path, with what
/// they wrote: a save event of such a file while it still holds exactly
/// that is the run's own doing, not the user's.
#[derive(Default)]
struct OwnWrites(Mutex<HashMap<PathBuf, WrittenFile>>);

impl OwnWrites {
    /// Wraps `sink` to remember the files announced by `output` events.
    fn recording(self: &Arc<Self>, sink: EventSink) -> EventSink {
        let own = Arc::clone(self);
        Arc::new(move |event: Event| {
            if let Event::Output { path, size, blake3, .. } = &event {
                let full = normalize(Path::new(path));
                let record = WrittenFile { path: full.display().to_string(), size: *size, blake3: blake3.clone() };
                own.0.lock().unwrap_or_else(PoisonError::into_inner).insert(full, record);
            }
            sink(event)
        })
    }

    /// The paths of `changed` that the session's runs do not explain.
    fn foreign(&self, changed: Vec<PathBuf>) -> Vec<PathBuf> {
        let own = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        changed
            .into_iter()
            .filter(|p| own.get(&normalize(p)).is_none_or(|w| w.staleness(Path::new("/")).is_some()))
            .collect()
    }
}

impl Session<'_> {
    /// One reload: validate, then run if valid. `changed` is what triggered it
    /// (empty for the first run).
    fn cycle(&mut self, watcher: &mut FileWatcher, rx: &Receiver<Signal>, changed: &[PathBuf]) -> Outcome {
        if !changed.is_empty() {
            self.out.changed(changed);
        }
        let registry = self.engine.registry();
        let loaded = super::import::read_comfy_workflow(&self.args.graph, &self.overrides, registry)
            .unwrap_or_else(|| graph::load(&self.args.graph, &self.overrides, registry).map_err(|d| d.render()));
        let graph = match loaded {
            Ok(g) => Arc::new(g),
            Err(errors) => {
                self.out.invalid(&errors);
                // Keep watching what the last good graph used, and the graph.
                self.rewatch(watcher, self.watched.clone());
                return Outcome::Idle;
            }
        };
        self.rewatch(watcher, watched_paths(&graph));
        let Ok(options) = plan_options(&graph, self.args, false) else {
            return Outcome::Idle;
        };
        let cancel = CancelToken::new();
        self.start_run(Arc::clone(&graph), options, cancel.clone());
        self.await_run(rx, &cancel, &graph)
    }

    fn rewatch(&mut self, watcher: &mut FileWatcher, mut paths: Vec<PathBuf>) {
        if !paths.contains(&self.args.graph) {
            paths.push(self.args.graph.clone());
        }
        for warning in watcher.watch(WatchSet::new(&paths)) {
            self.out.warning(&warning);
        }
        self.out.watching(&paths);
        self.watched = paths;
    }

    fn start_run(&self, graph: Arc<Graph>, options: flow_engine::run::PlanOptions, cancel: CancelToken) {
        let engine = Arc::clone(&self.engine);
        let tx = self.tx.clone();
        let sink = self.own.recording(if self.out.json { json_sink() } else { human_sink() });
        std::thread::spawn(move || {
            let report = engine.run(graph, &options, sink, cancel);
            let _ = tx.send(Signal::Finished(Box::new(report)));
        });
    }

    /// Waits for the run to finish; a save or Ctrl-C meanwhile cancels it at
    /// its next step boundary, unless saves have held runs off for longer
    /// than the maximum wait: then the run finishes and the next one follows.
    fn await_run(&mut self, rx: &Receiver<Signal>, cancel: &CancelToken, graph: &Graph) -> Outcome {
        let mut restart: Option<Vec<PathBuf>> = None;
        let mut quit = false;
        while let Ok(signal) = rx.recv() {
            match signal {
                Signal::Finished(report) => {
                    if quit {
                        return Outcome::Quit;
                    }
                    if cancel.is_cancelled() {
                        if let Some(paths) = restart {
                            return Outcome::Restart(paths);
                        }
                    }
                    self.held_off_since = None;
                    self.out.finished(&report, graph);
                    return restart.map_or(Outcome::Idle, Outcome::Restart);
                }
                Signal::Changed(paths) => {
                    let paths = self.own.foreign(paths);
                    if paths.is_empty() || quit {
                        continue;
                    }
                    let overdue = self.held_off_since.is_some_and(|t| t.elapsed() >= self.max_wait);
                    if restart.is_none() {
                        if overdue {
                            self.out.queued();
                        } else {
                            self.out.restarting();
                        }
                    }
                    if !overdue {
                        cancel.cancel();
                        self.held_off_since.get_or_insert_with(Instant::now);
                    }
                    let all = restart.get_or_insert_with(Vec::new);
                    all.extend(paths);
                    all.sort();
                    all.dedup();
                }
                Signal::Interrupt => {
                    cancel.cancel();
                    quit = true;
                }
            }
        }
        Outcome::Quit
    }
}

/// Blocks until watched files change (their paths, less those the session's
/// runs wrote) or Ctrl-C (`None`).
fn wait_for_change(rx: &Receiver<Signal>, own: &OwnWrites) -> Option<Vec<PathBuf>> {
    loop {
        match rx.recv() {
            Ok(Signal::Changed(paths)) => {
                let paths = own.foreign(paths);
                if !paths.is_empty() {
                    return Some(paths);
                }
            }
            Ok(Signal::Interrupt) | Err(_) => return None,
            Ok(Signal::Finished(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(path: &Path, bytes: &[u8]) -> Event {
        let w = WrittenFile::of("x", bytes);
        Event::Output { node: "save".into(), path: path.display().to_string(), size: w.size, blake3: w.blake3, t_ms: 0.0 }
    }

    #[test]
    fn the_sessions_own_writes_are_not_changes_while_they_hold_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (dir.path().join("ours.txt"), dir.path().join("theirs.txt"));
        std::fs::write(&ours, "written").unwrap();
        std::fs::write(&theirs, "x").unwrap();
        let own = Arc::new(OwnWrites::default());
        let sink = own.recording(Arc::new(|_| {}));
        sink(output(&ours, b"written"));
        assert_eq!(own.foreign(vec![ours.clone(), theirs.clone()]), [theirs.clone()]);
        // Edited since: the user's change.
        std::fs::write(&ours, "edited").unwrap();
        assert_eq!(own.foreign(vec![ours.clone()]), [ours]);
    }
}
