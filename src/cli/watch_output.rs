//! What `flow watch` prints between runs: which saves it saw, located errors
//! of a broken graph, and after each run the nodes that ran again and why.
//! With `--json`, the same as one JSON event per line beside the run events.

use std::io::Write;
use std::path::PathBuf;

use flow_engine::events::NodeStatus;
use flow_engine::graph::Graph;
use flow_engine::run::RunReport;
use serde_json::json;

use super::table::{duration, Table};
use super::common::shown;

/// The session's printer.
pub struct Output {
    /// One JSON event per line instead of text.
    pub json: bool,
    watching: Vec<PathBuf>,
}

impl Output {
    /// A printer for people, or for programs with `json`.
    pub fn new(json: bool) -> Self {
        Output { json, watching: Vec::new() }
    }

    fn event(&self, value: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }

    /// The files now watched; printed when the set changes.
    pub fn watching(&mut self, paths: &[PathBuf]) {
        if self.watching == paths {
            return;
        }
        self.watching = paths.to_vec();
        let names: Vec<String> = paths.iter().map(|p| shown(p)).collect();
        if self.json {
            self.event(json!({ "event": "watching", "paths": names }));
        } else {
            errln!("watching {} (Ctrl-C to stop)", names.join(", "));
        }
    }

    /// Saves that start a new cycle.
    pub fn changed(&self, paths: &[PathBuf]) {
        let names: Vec<String> = paths.iter().map(|p| shown(p)).collect();
        if self.json {
            self.event(json!({ "event": "watch_changed", "paths": names }));
        } else {
            errln!("\nchanged: {}", names.join(", "));
        }
    }

    /// The graph no longer validates: its located errors.
    pub fn invalid(&self, errors: &str) {
        if self.json {
            self.event(json!({ "event": "watch_invalid", "errors": errors }));
        } else {
            err!("{errors}");
            errln!("the graph is invalid: keeping the last results; fix it and save to run again");
        }
    }

    /// A save arrived while a run was going.
    pub fn restarting(&self) {
        if self.json {
            self.event(json!({ "event": "watch_restarting" }));
        } else {
            errln!("changed during the run: stopping at the next step, then running again");
        }
    }

    /// A save arrived while a run that saves have held off for too long was
    /// going: it finishes, then the graph runs again.
    pub fn queued(&self) {
        if self.json {
            self.event(json!({ "event": "watch_queued" }));
        } else {
            errln!("changed during the run: saves kept coming, so this run finishes first, then runs again");
        }
    }

    /// A warning of the watcher itself.
    pub fn warning(&self, message: &str) {
        if self.json {
            self.event(json!({ "event": "warning", "message": message }));
        } else {
            errln!("warning: {message}");
        }
    }

    /// A finished run: the nodes that ran again (with why), failures, totals.
    pub fn finished(&self, report: &RunReport, graph: &Graph) {
        if self.json {
            return; // the run's own events said it all
        }
        let mut table = Table::new(&["node", "op", "status", "time", "why"]);
        for n in report.nodes.iter().filter(|n| n.status != NodeStatus::Cached) {
            let time = if n.status == NodeStatus::Skipped { "-".to_string() } else { duration(n.ms) };
            let why = match &n.error {
                Some(e) => e.lines().next().unwrap_or_default().to_string(),
                None => n.reason.clone(),
            };
            table.row(vec![n.id.clone(), n.op.clone(), n.status.as_str().into(), time, why]);
        }
        let ran = report.count(NodeStatus::Ran);
        if ran + report.count(NodeStatus::Failed) + report.count(NodeStatus::Skipped) > 0 {
            out!("{}", table.render());
        }
        for n in report.nodes.iter().filter(|n| n.status == NodeStatus::Failed) {
            if let Some(e) = &n.error {
                errln!("error: node `{}` ({}) failed: {e}", n.id, n.op);
            }
        }
        outln!(
            "{}: {ran} of {} nodes ran in {}, {} cached{}",
            graph.name,
            report.nodes.len(),
            duration(report.elapsed.as_secs_f64() * 1e3),
            report.count(NodeStatus::Cached),
            match (report.count(NodeStatus::Failed), report.count(NodeStatus::Skipped)) {
                (0, 0) => String::new(),
                (f, s) => format!(", {f} failed, {s} skipped"),
            }
        );
    }

    /// The session ends after Ctrl-C.
    pub fn stopped(&self) {
        if self.json {
            self.event(json!({ "event": "watch_stopped" }));
        } else {
            errln!("stopped watching");
        }
    }
}
