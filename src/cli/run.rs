//! `flow run`: plan, execute with live progress, print the summary.

use std::sync::Arc;

use flow_engine::events::NodeStatus;
use flow_engine::run::RunReport;
use flow_engine::CancelToken;

use super::common::{engine, load_graph, on_interrupt, plan_options, registry, shown};
use super::render::{human_sink, json_sink};
use super::table::{duration, Table};
use super::{EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK};
use crate::GraphArgs;

/// Runs the graph; returns the exit code.
pub fn run(args: &GraphArgs, no_cache: bool, json: bool) -> u8 {
    let registry = registry();
    let graph = match load_graph(&args.graph, &args.set, &registry) {
        Ok(g) => Arc::new(g),
        Err(code) => return code,
    };
    let options = match plan_options(&graph, args, no_cache) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let engine = match engine(args, registry, json) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let cancel = CancelToken::new();
    let stop = cancel.clone();
    on_interrupt(move || {
        errln!("\ninterrupted: stopping at the next step (Ctrl-C again to quit now)");
        stop.cancel();
    });
    let sink = if json { json_sink() } else { human_sink() };
    let report = engine.run(graph, &options, sink, cancel);
    if !json {
        print_summary(&report);
    }
    exit_code(&report)
}

/// The exit code of a finished run.
pub fn exit_code(report: &RunReport) -> u8 {
    if report.interrupted {
        EXIT_INTERRUPTED
    } else if report.ok() {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// Prints the per-node table, failures with their causes, and totals.
pub fn print_summary(report: &RunReport) {
    let mut table = Table::new(&["node", "op", "status", "time", "why"]);
    for n in &report.nodes {
        let time = if n.status == NodeStatus::Ran || n.status == NodeStatus::Failed { duration(n.ms) } else { "-".into() };
        let why = match &n.error {
            Some(e) => e.lines().next().unwrap_or_default().to_string(),
            None => n.reason.clone(),
        };
        table.row(vec![n.id.clone(), n.op.clone(), n.status.as_str().into(), time, why]);
    }
    out!("{}", table.render());
    for n in &report.nodes {
        for file in &n.files {
            outln!("{} {}", if n.status == NodeStatus::Cached { "kept" } else { "wrote" }, shown(file));
        }
    }
    for n in report.nodes.iter().filter(|n| n.status == NodeStatus::Failed) {
        if let Some(e) = &n.error {
            errln!("error: node `{}` ({}) failed: {e}", n.id, n.op);
        }
    }
    let ran = report.count(NodeStatus::Ran);
    let cached = report.count(NodeStatus::Cached);
    let failed = report.count(NodeStatus::Failed);
    let skipped = report.count(NodeStatus::Skipped);
    let state = if report.interrupted { "interrupted" } else if report.ok() { "done" } else { "failed" };
    outln!(
        "{state} in {}: {ran} ran, {cached} cached, {failed} failed, {skipped} skipped",
        duration(report.elapsed.as_secs_f64() * 1e3)
    );
}
