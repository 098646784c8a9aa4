//! `flow run --nats URL`: the graph is validated here, queued in the
//! cluster and run by one of its workers; its events come back on the
//! run's subject and are shown with the same renderers as a local run.
//! The summary is made from the worker's record of the run (complete even
//! if some live events were missed). Ctrl-C cancels the run. Paths in the
//! graph are the workers' (their `input/` and `output/` folders); the files
//! the run wrote are stored in the cluster and fetched into the same
//! relative paths here (`output/x.png`).

use std::sync::{Arc, Mutex, PoisonError};

use flow_cluster::follow::{self, Watch};
use flow_cluster::jobs::Placement;
use flow_cluster::record::RunState;
use flow_cluster::{Cluster, Settings};
use flow_engine::{CancelToken, Event, EventSink};
use flow_server::job::Job;
use flow_server::remote::RunListener;
use flow_server::reporter::timestamp;
use serde_json::{Map, Value};

use super::common::{load_graph, on_interrupt, registry};
use super::remote::{param_value, report_from};
use super::render::{human_sink, json_sink};
use super::run::{exit_code, print_summary};
use super::{EXIT_FAILED, EXIT_INVALID};
use crate::GraphArgs;

/// Shows the run's events as they come.
struct Shown {
    sink: EventSink,
    seen_end: Mutex<bool>,
}

impl RunListener for Shown {
    fn unneeded(&self, _nodes: Vec<String>) {}

    fn event(&self, event: Event) {
        let mut seen_end = self.seen_end.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen_end {
            return;
        }
        *seen_end = matches!(event, Event::RunFinished { .. });
        (self.sink)(event);
    }
}

/// Runs the graph in the cluster; returns the exit code.
pub fn run(args: &GraphArgs, url: &str, json: bool) -> u8 {
    let registry = registry();
    let graph = match load_graph(&args.graph, &args.set, &registry) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let text = match std::fs::read_to_string(&args.graph) {
        Ok(t) => t,
        Err(e) => {
            errln!("error: cannot read {}: {e}", args.graph.display());
            return EXIT_INVALID;
        }
    };
    // A ComfyUI workflow goes as its JSON object, a flow graph as its text.
    let prompt = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(o)) if !o.contains_key("flow") => Value::Object(o),
        _ => Value::String(text),
    };
    let mut params = std::collections::BTreeMap::new();
    for s in &args.set {
        if let Some((k, v)) = s.split_once('=') {
            params.insert(k.trim().to_string(), param_value(v));
        }
    }
    let job = Job {
        number: timestamp() as f64,
        prompt_id: uuid::Uuid::new_v4().to_string(),
        prompt,
        extra_data: Map::new(),
        client_id: None,
        params,
        outputs_to_execute: Vec::new(),
    };
    let placement = Placement::of(&graph);
    let cluster = match Cluster::connect(url, Settings::default()) {
        Ok(c) => c,
        Err(e) => {
            errln!("error: {e:#}");
            return EXIT_FAILED;
        }
    };
    let cancel = CancelToken::new();
    let stop = cancel.clone();
    on_interrupt(move || {
        errln!("\ninterrupted: cancelling the run in the cluster (Ctrl-C again to quit now)");
        stop.cancel();
    });
    let shown = Arc::new(Shown { sink: if json { json_sink() } else { human_sink() }, seen_end: Mutex::new(false) });
    let cancelled = || cancel.is_cancelled();
    let never = || false;
    let watch = Watch { listener: Some(shown.clone()), shared: None, cancelled: &cancelled, stopping: &never };
    let h = cluster.handles.clone();
    let record = match cluster.block_on(follow::run(&h, &job, &placement, watch)) {
        Ok(Some(r)) => r,
        Ok(None) => return EXIT_FAILED,
        Err(e) => {
            errln!("error: {e:#}");
            return EXIT_FAILED;
        }
    };
    let log = record.record.clone().unwrap_or_default();
    let events: Vec<Event> = log.events.iter().filter_map(|l| Event::from_json_line(l).ok()).collect();
    // What was missed on the way is shown from the worker's record.
    if !*shown.seen_end.lock().unwrap_or_else(PoisonError::into_inner) {
        if let Some(end) = events.iter().rev().find(|e| matches!(e, Event::RunFinished { .. })) {
            shown.event(end.clone());
        }
    }
    if let Some(error) = &record.error {
        errln!("error: {error}");
    }
    let files: Vec<(String, String)> = log.outputs.iter().filter_map(|o| Some((o.node.clone(), o.path.clone()?))).collect();
    download(&cluster, &files);
    let order: Vec<String> = log.graph.iter().map(|n| n.id.clone()).collect();
    let Some(report) = report_from(&events, files, &order) else {
        errln!("error: the run ended without a report ({})", record.state.word());
        return EXIT_FAILED;
    };
    if !json {
        print_summary(&report);
        if let Some(worker) = &record.worker {
            outln!("ran on {worker} (attempt {})", record.attempts);
        }
    }
    if record.state == RunState::Failed && report.ok() {
        return EXIT_FAILED;
    }
    exit_code(&report)
}

/// Fetches the run's files from the cluster into the same relative paths
/// here (a path leaving the working folder is not written).
fn download(cluster: &Cluster, files: &[(String, String)]) {
    for (_, path) in files {
        let rel = std::path::Path::new(path);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            continue;
        }
        let (store, name) = (cluster.handles.files.clone(), path.clone());
        match cluster.block_on(async move { flow_cluster::files::get(&store, &name).await }) {
            Ok(Some(bytes)) => {
                if let Err(e) = flow_engine::files::write_atomic(rel, &bytes) {
                    errln!("warning: cannot write {path}: {e}");
                }
            }
            Ok(None) => errln!("warning: the cluster does not have {path}"),
            Err(e) => errln!("warning: {e:#}"),
        }
    }
}
