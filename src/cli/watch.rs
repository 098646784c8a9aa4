//! `flow watch`: run, then re-run on every save of the graph, its scripts and
//! the files it reads. One engine lives through the session, so loaded
//! models and the in-memory cache stay warm; only nodes whose keys changed
//! run again.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use flow_engine::graph::{self, Graph, Override};
use flow_engine::run::{watched_paths, RunReport};
use flow_engine::watch::{FileWatcher, WatchSet};
use flow_engine::{CancelToken, Engine};

use super::common::{engine, parse_overrides, plan_options, registry};
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
/// shutdown, 2 for bad arguments).
pub fn watch(args: &GraphArgs, json: bool, debounce_ms: u64) -> u8 {
    let Ok(overrides) = parse_overrides(&args.set) else { return EXIT_INVALID };
    let engine = match engine(args, registry(), json) {
        Ok(e) => Arc::new(e),
        Err(code) => return code,
    };
    let out = Output::new(json);
    let (tx, rx) = channel();
    forward_ctrl_c(tx.clone());
    let changes = tx.clone();
    let mut watcher = match FileWatcher::new(Duration::from_millis(debounce_ms), move |paths| {
        let _ = changes.send(Signal::Changed(paths));
    }) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e:#}");
            return EXIT_FAILED;
        }
    };
    let mut session = Session { args, overrides, engine, out, tx, watched: vec![args.graph.clone()] };
    let mut pending: Vec<PathBuf> = Vec::new();
    loop {
        let outcome = session.cycle(&mut watcher, &rx, &pending);
        pending = match outcome {
            Outcome::Restart(paths) => paths,
            Outcome::Quit => break,
            Outcome::Idle => match wait_for_change(&rx) {
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
}

impl Session<'_> {
    /// One reload: validate, then run if valid. `changed` is what triggered it
    /// (empty for the first run).
    fn cycle(&mut self, watcher: &mut FileWatcher, rx: &Receiver<Signal>, changed: &[PathBuf]) -> Outcome {
        if !changed.is_empty() {
            self.out.changed(changed);
        }
        let graph = match graph::load(&self.args.graph, &self.overrides, self.engine.registry()) {
            Ok(g) => Arc::new(g),
            Err(diags) => {
                self.out.invalid(&diags.render());
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
        let sink = if self.out.json { json_sink() } else { human_sink() };
        std::thread::spawn(move || {
            let report = engine.run(graph, &options, sink, cancel);
            let _ = tx.send(Signal::Finished(Box::new(report)));
        });
    }

    /// Waits for the run to finish; a save or Ctrl-C meanwhile cancels it at
    /// its next step boundary.
    fn await_run(&mut self, rx: &Receiver<Signal>, cancel: &CancelToken, graph: &Graph) -> Outcome {
        let mut restart: Option<Vec<PathBuf>> = None;
        let mut quit = false;
        while let Ok(signal) = rx.recv() {
            match signal {
                Signal::Finished(report) => {
                    if quit {
                        return Outcome::Quit;
                    }
                    if let Some(paths) = restart {
                        return Outcome::Restart(paths);
                    }
                    self.out.finished(&report, graph);
                    return Outcome::Idle;
                }
                Signal::Changed(paths) => {
                    if restart.is_none() && !quit {
                        self.out.restarting();
                    }
                    cancel.cancel();
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

/// Blocks until watched files change (their paths) or Ctrl-C (`None`).
fn wait_for_change(rx: &Receiver<Signal>) -> Option<Vec<PathBuf>> {
    loop {
        match rx.recv() {
            Ok(Signal::Changed(paths)) => return Some(paths),
            Ok(Signal::Interrupt) | Err(_) => return None,
            Ok(Signal::Finished(_)) => {}
        }
    }
}

/// Turns the first Ctrl-C into a clean shutdown; a second one exits at once.
fn forward_ctrl_c(tx: Sender<Signal>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = tx.send(Signal::Interrupt);
            }
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        });
    });
}

/// A path as the user would write it: relative to the working folder when
/// it lies below it.
pub fn shown(path: &Path) -> String {
    let cwd = std::env::current_dir().ok().and_then(|d| d.canonicalize().ok());
    match cwd.as_deref().and_then(|cwd| path.strip_prefix(cwd).ok()) {
        Some(rel) => rel.display().to_string(),
        None => path.display().to_string(),
    }
}
