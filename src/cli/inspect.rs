//! `flow validate`, `flow plan`, `flow graph` and `flow ops`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use flow_engine::engine::decision_text;
use flow_engine::graph::Graph;
use flow_engine::run::Decision;
use flow_engine::{Cost, OpSpec};

use super::common::{engine, load_graph, plan_options, registry};
use super::table::Table;
use super::{EXIT_INVALID, EXIT_OK};
use crate::{GraphArgs, GraphFormat};

/// Validates each file; prints every error; exit 2 if any file has errors.
pub fn validate(graphs: &[PathBuf]) -> u8 {
    let registry = registry();
    let mut code = EXIT_OK;
    for path in graphs {
        match load_graph(path, &[], &registry) {
            Ok(g) => outln!("{}: ok ({} nodes)", path.display(), g.nodes.len()),
            Err(c) => code = code.max(c),
        }
    }
    code
}

/// Prints what a run would do: order, device, and cached or why it runs.
pub fn plan(args: &GraphArgs, no_cache: bool) -> u8 {
    let registry = registry();
    let graph = match load_graph(&args.graph, &args.set, &registry) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let options = match plan_options(&graph, args, no_cache) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let engine = match engine(args, registry, false) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let plan = engine.plan(&graph, &options);
    let mut table = Table::new(&["#", "node", "op", "device", "plan"]);
    let mut step = 0;
    let (mut run, mut cached) = (0, 0);
    for &i in &graph.order {
        let Some(p) = &plan.nodes[i] else { continue };
        step += 1;
        let node = &graph.nodes[i];
        match p.decision {
            Decision::Run(_) => run += 1,
            Decision::Cached(_) => cached += 1,
            Decision::Fail(_) | Decision::Skip(_) => {}
        }
        let device = if node.op.spec().cost == Cost::Light {
            "inline".to_string()
        } else {
            engine.resolve_device(node.device).to_string()
        };
        let what = match &p.decision {
            Decision::Run(why) => format!("run: {why}"),
            d => decision_text(d),
        };
        table.row(vec![step.to_string(), node.id.clone(), node.op.spec().name.clone(), device, what]);
    }
    out!("{}", table.render());
    let unneeded = graph.nodes.len() - step;
    outln!("{run} to run, {cached} cached, {unneeded} not needed");
    EXIT_OK
}

/// Prints the graph in dot or Mermaid form.
pub fn graph(path: &Path, format: GraphFormat) -> u8 {
    let registry = registry();
    let graph = match load_graph(path, &[], &registry) {
        Ok(g) => g,
        Err(code) => return code,
    };
    out!(
        "{}",
        match format {
            GraphFormat::Dot => to_dot(&graph),
            GraphFormat::Mermaid => to_mermaid(&graph),
        }
    );
    EXIT_OK
}

/// Edges as (from, to, label = "port -> input").
fn edges(graph: &Graph) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        for (input, expr) in &node.inputs {
            expr.for_each_link(&mut |from, port| out.push((from, i, format!("{port} → {input}"))));
        }
    }
    out
}

fn to_dot(graph: &Graph) -> String {
    let mut s = format!("digraph {:?} {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n", graph.name);
    for node in &graph.nodes {
        let shape = if node.op.spec().output { ", peripheries=2" } else { "" };
        let _ = writeln!(s, "  {:?} [label=\"{}\\n{}\"{shape}];", node.id, node.id, node.op.spec().name);
    }
    for (from, to, label) in edges(graph) {
        let _ = writeln!(s, "  {:?} -> {:?} [label={label:?}];", graph.nodes[from].id, graph.nodes[to].id);
    }
    s.push_str("}\n");
    s
}

fn to_mermaid(graph: &Graph) -> String {
    let mut s = String::from("flowchart LR\n");
    let id = |i: usize| format!("n{i}");
    for (i, node) in graph.nodes.iter().enumerate() {
        let (open, close) = if node.op.spec().output { ("[[", "]]") } else { ("[", "]") };
        let _ = writeln!(s, "  {}{open}\"{}<br/><small>{}</small>\"{close}", id(i), node.id, node.op.spec().name);
    }
    for (from, to, label) in edges(graph) {
        let _ = writeln!(s, "  {} -->|\"{label}\"| {}", id(from), id(to));
    }
    s
}

/// Lists ops, or documents one.
pub fn ops(name: Option<&str>) -> u8 {
    let registry = registry();
    match name {
        None => {
            let mut table = Table::new(&["op", "inputs", "outputs", "doc"]);
            for op in registry.ops() {
                let spec = op.spec();
                let inputs = spec.inputs.iter().map(|p| p.name).collect::<Vec<_>>().join(", ");
                let outputs = spec.outputs.iter().map(|p| p.name).collect::<Vec<_>>().join(", ");
                let doc = first_sentence(&spec.doc);
                table.row(vec![spec.name.clone(), inputs, outputs, doc]);
            }
            out!("{}", table.render());
            let here = Path::new(".");
            let scripts: Vec<String> = registry.names_for(here).into_iter().filter(|n| registry.get(n).is_none()).collect();
            if !scripts.is_empty() {
                outln!("Script ops from ./scripts (or a folder above): {}", scripts.join(", "));
            }
            outln!("`flow ops NAME` shows an op's ports, types and defaults (scripts: `flow ops script.NAME`).");
            EXIT_OK
        }
        Some(name) => match registry.resolve(name, Path::new(".")) {
            Ok(Some(op)) => {
                out!("{}", describe(op.spec()));
                EXIT_OK
            }
            Ok(None) => {
                let names = registry.names_for(Path::new("."));
                let help = flow_engine::diagnostics::did_you_mean(name, names.iter().map(String::as_str));
                errln!("error: unknown op `{name}`{}", help.map(|h| format!("; {h}")).unwrap_or_default());
                EXIT_INVALID
            }
            Err(e) => {
                errln!("error: op `{name}`: {e}");
                EXIT_INVALID
            }
        },
    }
}

fn describe(spec: &OpSpec) -> String {
    let mut s = format!("{} (version {})\n\n{}\n", spec.name, spec.version, spec.doc);
    if spec.output {
        s.push_str("\nOutput node: it has side effects, and runs (with what it needs) on every `flow run`.\n");
    }
    s.push_str("\ninputs:\n");
    let mut t = Table::new(&["  port", "type", "default", "doc"]);
    for p in &spec.inputs {
        let default = match (&p.default, p.optional) {
            (Some(v), _) => v.to_display_string(),
            (None, true) => "(optional)".into(),
            (None, false) => "(required)".into(),
        };
        let doc = match p.choices {
            Some(choices) => format!("{} (one of: {})", p.doc, choices.join(", ")),
            None => p.doc.to_string(),
        };
        t.row(vec![format!("  {}", p.name), p.ty.to_string(), default, doc]);
    }
    s.push_str(&t.render());
    s.push_str("\noutputs:\n");
    let mut t = Table::new(&["  port", "type", "doc"]);
    for p in &spec.outputs {
        t.row(vec![format!("  {}", p.name), p.ty.to_string(), p.doc.to_string()]);
    }
    s.push_str(&t.render());
    s
}

/// The first sentence of a doc text, for one-line listings.
fn first_sentence(doc: &str) -> String {
    let flat = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.find(". ") {
        Some(end) => flat[..=end].to_string(),
        None => flat,
    }
}
