//! A validated graph: nodes bound to ops, inputs resolved to literals, models
//! and links, and a petgraph DAG in topological order.

mod build;
mod cycles;
mod device;
mod literal;
mod overrides;
mod typecheck;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use petgraph::graph::DiGraph;

use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::op::OpRef;
use crate::registry::Registry;
use crate::source::Location;
use crate::value::Value;

pub use device::DeviceChoice;
pub use overrides::Override;

/// An input expression after validation.
#[derive(Clone, Debug)]
pub enum Expr {
    /// A literal value (params are substituted as literals).
    Literal(Value),
    /// A model reference: the model's name in the graph and its reference text.
    Model { name: String, reference: String },
    /// The output `port` of node number `node`.
    Link { node: usize, port: String },
    /// Text interpolating node outputs (params are already substituted).
    Interp(Vec<InterpPart>),
    /// A list whose items may hold links.
    List(Vec<Expr>),
    /// A map whose values may hold links.
    Map(BTreeMap<String, Expr>),
}

/// A piece of interpolated text.
#[derive(Clone, Debug)]
pub enum InterpPart {
    /// Literal text.
    Text(String),
    /// A node output rendered as text.
    Link { node: usize, port: String },
}

impl Expr {
    /// Calls `f` with every link (node, port) inside this expression.
    pub fn for_each_link(&self, f: &mut impl FnMut(usize, &str)) {
        match self {
            Expr::Literal(_) | Expr::Model { .. } => {}
            Expr::Link { node, port } => f(*node, port),
            Expr::Interp(parts) => {
                for p in parts {
                    if let InterpPart::Link { node, port } = p {
                        f(*node, port);
                    }
                }
            }
            Expr::List(items) => items.iter().for_each(|e| e.for_each_link(f)),
            Expr::Map(entries) => entries.values().for_each(|e| e.for_each_link(f)),
        }
    }
}

/// A node of a validated graph.
#[derive(Clone)]
pub struct GraphNode {
    /// Node id.
    pub id: String,
    /// The op it runs.
    pub op: OpRef,
    /// Input expressions by port, defaults not included.
    pub inputs: BTreeMap<String, Expr>,
    /// Where it runs.
    pub device: DeviceChoice,
    /// `cache: false` turns caching off for this node.
    pub cache: bool,
    /// Upstream nodes, each once, sorted.
    pub deps: Vec<usize>,
    /// Params named by `${...}` in verbatim inputs (templates the op fills
    /// itself): part of the node's cache key.
    pub template_params: BTreeMap<String, Value>,
    /// Where the node's id is written.
    pub loc: Location,
}

/// A validated graph.
#[derive(Clone)]
pub struct Graph {
    /// The file name as shown to the user.
    pub file: String,
    /// The folder relative paths resolve against.
    pub dir: PathBuf,
    /// blake3 of the file's bytes.
    pub source_hash: String,
    /// `name:` (the file stem if absent).
    pub name: String,
    /// `description:`.
    pub description: String,
    /// Param values after overrides.
    pub params: BTreeMap<String, Value>,
    /// Model references by name.
    pub models: BTreeMap<String, String>,
    /// Nodes, in file order.
    pub nodes: Vec<GraphNode>,
    /// The DAG: node weight = index into `nodes`, edge = data dependency.
    pub dag: DiGraph<usize, ()>,
    /// Node indices in a topological order.
    pub order: Vec<usize>,
}

impl Graph {
    /// Index of the node called `id`.
    pub fn node_index(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Indices of output nodes (ops with side effects).
    pub fn output_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].op.spec().output).collect()
    }
}

/// Reads, parses and validates the graph file at `path`, applying `--set`
/// overrides. Every error of the file is returned at once.
pub fn load(path: &Path, overrides: &[Override], registry: &Registry) -> Result<Graph, Box<Diagnostics>> {
    let file = path.display().to_string();
    let limit = crate::source::document::MAX_FILE_BYTES as u64;
    let bytes = crate::files::read_bounded(path, limit, "graph file").map_err(|e| {
        let mut d = Diagnostics::new(file.clone(), String::new());
        d.push(Diagnostic::general(format!("cannot read the graph file: {e}")));
        Box::new(d)
    })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
    from_bytes(&file, &dir, &bytes, overrides, registry)
}

/// Validates graph file content given as bytes; `file` names it in errors and
/// `dir` is the folder relative paths resolve against.
pub fn from_bytes(
    file: &str,
    dir: &Path,
    bytes: &[u8],
    overrides: &[Override],
    registry: &Registry,
) -> Result<Graph, Box<Diagnostics>> {
    let source = match crate::source::document::decode_utf8(bytes) {
        Ok(s) => s,
        Err(d) => {
            let mut diags = Diagnostics::new(file, String::from_utf8_lossy(bytes).into_owned());
            diags.push(d);
            return Err(Box::new(diags));
        }
    };
    build::build(file, dir, source, blake3::hash(bytes).to_hex().to_string(), overrides, registry)
}
