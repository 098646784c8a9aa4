//! Planning a run: which nodes are needed, their cache keys, and for each
//! whether it runs (and why), comes from the cache, or cannot run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::cache::{Cache, CacheKey, Lookup, Tier};
use crate::graph::{Expr, Graph};
use crate::op::{Fingerprint, Outputs};
use crate::registry::Registry;
use crate::value::Value;

use super::inputs::literal_inputs;
use super::keys::{node_key, KeyParts};
use super::records::{why_it_runs, Records};

/// Resolves model references to model values (fetching them if needed).
pub trait ModelResolver: Send + Sync {
    /// The model value for `reference`; relative paths resolve against `graph_dir`.
    fn resolve(&self, reference: &str, graph_dir: &Path) -> anyhow::Result<Value>;
}

/// What the plan decided for a node.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Served from the cache (the tier it was found in).
    Cached(Tier),
    /// Runs, for this reason.
    Run(String),
    /// Cannot run: this error happened while planning (e.g. a model failed to resolve).
    Fail(String),
    /// Does not run because a node it needs cannot (the cause).
    Skip(String),
}

/// The plan of one needed node.
#[derive(Clone, Debug)]
pub struct NodePlan {
    /// The node's key (absent when planning failed for it).
    pub key: Option<CacheKey>,
    /// What the key is made of.
    pub parts: Option<KeyParts>,
    /// Cached, run or fail.
    pub decision: Decision,
    /// The cached outputs, loaded while planning (only for cached nodes whose
    /// values a running node needs, and for cached output nodes).
    pub cached: Option<Outputs>,
}

/// How to plan.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// Run only what these nodes need (`--only`); empty = what the output nodes need.
    pub only: Vec<usize>,
    /// Ignore cache entries (`--no-cache`).
    pub no_cache: bool,
    /// Only check that entries exist, without loading them (`flow plan`).
    pub probe_only: bool,
}

/// The plan of a run.
pub struct Plan {
    /// Per node of the graph: `None` if the node is not needed.
    pub nodes: Vec<Option<NodePlan>>,
    /// The nodes the run is for.
    pub targets: Vec<usize>,
    /// Resolved models by name in the graph.
    pub models: HashMap<String, Value>,
    /// Warnings met while planning (e.g. corrupt cache entries).
    pub warnings: Vec<String>,
}

impl Plan {
    /// Number of nodes that will execute.
    pub fn to_run(&self) -> usize {
        self.nodes.iter().flatten().filter(|p| matches!(p.decision, Decision::Run(_))).count()
    }
}

/// The nodes the run is for: `only`, else the output nodes, else (a graph
/// without output nodes) the nodes nothing consumes.
pub fn targets(graph: &Graph, only: &[usize]) -> Vec<usize> {
    if !only.is_empty() {
        return only.to_vec();
    }
    let outputs = graph.output_nodes();
    if !outputs.is_empty() {
        return outputs;
    }
    let mut consumed = vec![false; graph.nodes.len()];
    for n in &graph.nodes {
        for &d in &n.deps {
            consumed[d] = true;
        }
    }
    (0..graph.nodes.len()).filter(|&i| !consumed[i]).collect()
}

/// Makes the plan. Never fails as a whole: per-node problems become
/// [`Decision::Fail`].
pub fn make_plan(
    graph: &Graph,
    registry: &Registry,
    cache: &Cache,
    resolver: &dyn ModelResolver,
    records: &Records,
    options: &PlanOptions,
) -> Plan {
    let targets = targets(graph, &options.only);
    let n = graph.nodes.len();
    // Nodes needed by the targets (iterative walk).
    let mut needed = vec![false; n];
    let mut stack = targets.clone();
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut needed[i], true) {
            stack.extend(graph.nodes[i].deps.iter().copied());
        }
    }
    // Models used by needed nodes, resolved once each.
    let mut models: HashMap<String, Value> = HashMap::new();
    let mut model_errors: HashMap<String, String> = HashMap::new();
    for (node, _) in graph.nodes.iter().zip(&needed).filter(|(_, needed)| **needed) {
        for expr in node.inputs.values() {
            if let Expr::Model { name, reference } = expr {
                if models.contains_key(name) || model_errors.contains_key(name) {
                    continue;
                }
                match resolver.resolve(reference, &graph.dir) {
                    Ok(v) => {
                        models.insert(name.clone(), v);
                    }
                    Err(e) => {
                        // Name the model, unless the error already does.
                        let error = format!("{e:#}");
                        let error = if error.contains(&format!("`{reference}`")) {
                            error
                        } else {
                            format!("model `{reference}`: {error}")
                        };
                        model_errors.insert(name.clone(), error);
                    }
                }
            }
        }
    }
    // Keys in topological order.
    let mut keys: Vec<Option<CacheKey>> = vec![None; n];
    let mut plans: Vec<Option<NodePlan>> = vec![None; n];
    let model = |name: &str| models.get(name).cloned();
    for &i in &graph.order {
        if !needed[i] {
            continue;
        }
        let node = &graph.nodes[i];
        let failed_model = node.inputs.values().find_map(|e| match e {
            Expr::Model { name, .. } => model_errors.get(name).cloned(),
            _ => None,
        });
        if let Some(error) = failed_model {
            plans[i] = Some(NodePlan { key: None, parts: None, decision: Decision::Fail(error), cached: None });
            continue;
        }
        if let Some(d) = node.deps.iter().copied().find(|&d| keys[d].is_none()) {
            let cause = format!("upstream `{}` cannot run", graph.nodes[d].id);
            plans[i] = Some(NodePlan { key: None, parts: None, decision: Decision::Skip(cause), cached: None });
            continue;
        }
        let keyed = {
            let fingerprint = node
                .op
                .fingerprint(&literal_inputs(node, &model), &graph.dir)
                .unwrap_or_else(|e| Fingerprint::Volatile(format!("{e:#}")));
            let upstream = |d: usize| keys[d].expect("upstream keys are computed first");
            node_key(node, &upstream, &model, &fingerprint)
                .map(|(k, p)| (k, p, fingerprint))
                .map_err(|e| format!("cannot compute the cache key: {e:#}"))
        };
        let plan = match keyed {
            Ok((key, parts, fingerprint)) => {
                keys[i] = Some(key);
                let reason = if let Fingerprint::Volatile(why) = &fingerprint {
                    format!("not cacheable: {why}")
                } else {
                    // An upstream node changed if its key differs from last run's.
                    let changed = |d: usize| {
                        let now = plans[d].as_ref().and_then(|p| p.parts.as_ref()).map(|p| &p.key);
                        now.is_none() || now != records.nodes.get(&graph.nodes[d].id).map(|p| &p.key)
                    };
                    why_it_runs(graph, node, &parts, records.nodes.get(&node.id), &changed)
                };
                NodePlan { key: Some(key), parts: Some(parts), decision: Decision::Run(reason), cached: None }
            }
            Err(error) => NodePlan { key: None, parts: None, decision: Decision::Fail(error), cached: None },
        };
        plans[i] = Some(plan);
    }
    // Decide from the targets backwards: a node is looked up only if something
    // that runs needs its value (or it is a target).
    let mut demanded = vec![false; n];
    for &t in &targets {
        demanded[t] = true;
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        demanded[i] |= needed[i] && node.op.shows_result();
    }
    let mut warnings = Vec::new();
    for &i in graph.order.iter().rev() {
        let Some(plan) = plans[i].as_mut() else { continue };
        if !demanded[i] {
            // Not needed: every consumer is served from the cache.
            plans[i] = None;
            continue;
        }
        let node = &graph.nodes[i];
        if let (Decision::Run(_), Some(key)) = (&plan.decision, plan.key) {
            if options.no_cache {
                plan.decision = Decision::Run("cache disabled (--no-cache)".into());
            } else if !node.cache {
                plan.decision = Decision::Run("cache disabled for this node (`cache: false`)".into());
            } else if options.probe_only && !node.op.spec().output {
                if let Some(tier) = cache.probe(&key) {
                    plan.decision = Decision::Cached(tier);
                }
            } else {
                let found = match cache.lookup(&key, registry) {
                    Lookup::Memory(out) => Some((Tier::Memory, out)),
                    Lookup::Disk(out) => Some((Tier::Disk, out)),
                    Lookup::Shared(out) => Some((Tier::Shared, out)),
                    Lookup::Miss => None,
                    Lookup::Corrupt(why) => {
                        warnings.push(format!("cache entry of node `{}` was corrupt ({why}); recomputing", node.id));
                        plan.decision = Decision::Run("cache entry was corrupt".into());
                        None
                    }
                };
                if let Some((tier, out)) = found {
                    // A writer's result stands only while its files hold what it wrote.
                    match out.effects().written.iter().find_map(|w| w.staleness(&graph.dir)) {
                        Some(stale) => plan.decision = Decision::Run(stale.to_string()),
                        None => {
                            plan.decision = Decision::Cached(tier);
                            plan.cached = Some(out);
                        }
                    }
                }
            }
        }
        if !matches!(plan.decision, Decision::Cached(_)) {
            for &d in &node.deps {
                demanded[d] = true;
            }
        }
    }
    Plan { nodes: plans, targets, models, warnings }
}

/// A resolver for graphs that use no models, or for tools that must not fetch.
pub struct NoModels;

impl ModelResolver for NoModels {
    fn resolve(&self, reference: &str, _graph_dir: &Path) -> anyhow::Result<Value> {
        anyhow::bail!("no model store is configured to resolve `{reference}`")
    }
}

/// Shared resolver.
pub type ResolverRef = Arc<dyn ModelResolver>;
