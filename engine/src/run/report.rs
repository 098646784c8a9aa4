//! The outcome of a run, node by node.

use std::path::PathBuf;
use std::time::Duration;

use crate::events::NodeStatus;
use crate::graph::GraphNode;
use crate::op::Outputs;

/// How one node ended.
#[derive(Clone, Debug)]
pub struct NodeReport {
    /// Node id.
    pub id: String,
    /// Op name.
    pub op: String,
    /// ran, cached, failed or skipped.
    pub status: NodeStatus,
    /// Why it ran, where it came from, or why it was skipped.
    pub reason: String,
    /// The error of a failed node.
    pub error: Option<String>,
    /// Execution time in milliseconds.
    pub ms: f64,
    /// Files the node wrote (or, when cached, the files its result stands for).
    pub files: Vec<PathBuf>,
}

impl NodeReport {
    /// A report for `node` with no time and no error.
    pub fn new(node: &GraphNode, status: NodeStatus, reason: String) -> Self {
        NodeReport { id: node.id.clone(), op: node.op.spec().name.clone(), status, reason, error: None, ms: 0.0, files: Vec::new() }
    }
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// Every needed node, in topological order.
    pub nodes: Vec<NodeReport>,
    /// Outputs of the target nodes that have them, by node id.
    pub outputs: Vec<(String, Outputs)>,
    /// True if Ctrl-C (or a cancel) stopped the run.
    pub interrupted: bool,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Non-fatal problems (corrupt cache entries, failed cache writes).
    pub warnings: Vec<String>,
}

impl RunReport {
    /// A report of these nodes.
    pub fn new(nodes: Vec<NodeReport>, outputs: Vec<(String, Outputs)>, interrupted: bool, elapsed: Duration) -> Self {
        RunReport { nodes, outputs, interrupted, elapsed, warnings: Vec::new() }
    }

    /// Nodes with the given status.
    pub fn count(&self, status: NodeStatus) -> usize {
        self.nodes.iter().filter(|n| n.status == status).count()
    }

    /// True if nothing failed and the run was not interrupted.
    pub fn ok(&self) -> bool {
        !self.interrupted && self.count(NodeStatus::Failed) == 0 && self.count(NodeStatus::Skipped) == 0
    }
}
