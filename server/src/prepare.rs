//! From a queued prompt to a graph ready to run: a ComfyUI workflow is
//! translated (keeping the ComfyUI id of each flow node), a flow graph is
//! validated with its params; both run in the server's workspace folder and
//! are confined to its folders (see [`crate::confine`]).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result};
use flow_engine::graph::{self, Expr, Graph, Override};
use flow_engine::{Registry, Value};
use flow_nodes::comfy::{ErrorItem, WorkflowErrors};
use serde_json::{json, Value as Json};

use crate::comfy_map::translate_for_run;
use crate::config::ServerConfig;
use crate::confine::{check_graph, Roots};
use crate::job::Job;

/// The folder names graphs see inside the workspace.
pub const INPUT: &str = "input";
/// See [`INPUT`].
pub const OUTPUT: &str = "output";
/// See [`INPUT`].
pub const TEMP: &str = "temp";
/// See [`INPUT`].
pub const SCRIPTS: &str = "scripts";

/// The folder served graphs run in: `input/`, `output/`, `temp/` and
/// `scripts/` inside it are links to the server's folders, so a graph names
/// `input/photo.png` or `output/result.png` whatever the folders are.
pub struct Workspace {
    root: PathBuf,
    roots: Roots,
    output_dir: PathBuf,
    /// Highest SaveImage counter handed out per file prefix.
    counters: Mutex<HashMap<String, u64>>,
    /// Numbers shared with other machines writing the same names (a cluster).
    shared_counter: Option<SharedCounter>,
}

/// Hands out SaveImage numbers shared by several machines: given a file
/// prefix and the lowest number free here, the number to use (never the
/// same twice for a prefix).
pub type SharedCounter = Arc<dyn Fn(&str, u64) -> u64 + Send + Sync>;

impl Workspace {
    /// Lays out the workspace under the server's state folder.
    pub fn new(config: &ServerConfig) -> Result<Self> {
        let root = config.state_dir.join("workspace");
        fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        for (name, target) in [
            (INPUT, &config.input_dir),
            (OUTPUT, &config.output_dir),
            (TEMP, &config.temp_dir),
            (SCRIPTS, &config.scripts_dir),
        ] {
            link(&root.join(name), target)?;
        }
        let mut read = vec![
            config.input_dir.clone(),
            config.output_dir.clone(),
            config.temp_dir.clone(),
            config.scripts_dir.clone(),
        ];
        read.extend(config.models_dir.clone());
        let write = vec![config.output_dir.clone(), config.temp_dir.clone()];
        let scripts = vec![config.scripts_dir.clone()];
        Ok(Workspace {
            root,
            roots: Roots { read, write, scripts },
            output_dir: config.output_dir.clone(),
            counters: Mutex::default(),
            shared_counter: None,
        })
    }

    /// The same workspace, numbering saved images with `counter`.
    pub fn with_shared_counter(mut self, counter: SharedCounter) -> Self {
        self.shared_counter = Some(counter);
        self
    }

    /// The folder graphs run in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The next free `NAME_NNNNN_.png` counter for a SaveImage prefix (as
    /// ComfyUI numbers its files), never the same twice in this process.
    fn next_counter(&self, prefix: &str) -> u64 {
        let (sub, base) = match prefix.rsplit_once('/') {
            Some((sub, base)) => (self.output_dir.join(sub), base),
            None => (self.output_dir.clone(), prefix),
        };
        let on_disk = fs::read_dir(&sub)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let rest = name.strip_prefix(base)?.strip_prefix('_')?;
                let digits = rest.split('_').next()?;
                digits.parse::<u64>().ok()
            })
            .max()
            .unwrap_or(0);
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let mut n = counters.get(prefix).copied().unwrap_or(0).max(on_disk) + 1;
        if let Some(shared) = &self.shared_counter {
            n = shared(prefix, n);
        }
        counters.insert(prefix.to_string(), n);
        n
    }
}

/// A link `at` → `target`, replaced if it points elsewhere.
fn link(at: &Path, target: &Path) -> Result<()> {
    if fs::read_link(at).is_ok_and(|t| t == target) {
        return Ok(());
    }
    if fs::symlink_metadata(at).is_ok() {
        fs::remove_file(at).with_context(|| format!("cannot replace {}", at.display()))?;
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink(target, at)
        .with_context(|| format!("cannot link {} to {}", at.display(), target.display()))?;
    #[cfg(windows)]
    std::os::windows::fs::symlink_dir(target, at)
        .with_context(|| format!("cannot link {} to {}", at.display(), target.display()))?;
    Ok(())
}

/// What kind of prompt a job holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A ComfyUI API-format workflow.
    Comfy,
    /// A flow graph.
    Flow,
}

/// A graph ready to run.
pub struct Prepared {
    /// The graph.
    pub graph: Arc<Graph>,
    /// What was submitted.
    pub kind: Kind,
    /// Flow node → the ids the client knows it by (ComfyUI ids; a flow
    /// graph's own node ids).
    pub origins: BTreeMap<String, Vec<String>>,
    /// Client id of a node → its class (ComfyUI `class_type`, or flow op).
    pub classes: BTreeMap<String, String>,
    /// Ids of the output nodes.
    pub outputs: Vec<String>,
}

/// Why a prompt cannot run: ComfyUI's error answer, and the HTTP status.
#[derive(Debug)]
pub struct Rejection {
    /// 400 (invalid) or 403 (reaches outside the server's folders).
    pub status: u16,
    /// `{error: {type, message, details, extra_info}, node_errors: {...}}`.
    pub body: Json,
}

impl Rejection {
    /// A prompt-level error.
    pub fn new(status: u16, kind: &str, message: &str, details: impl Into<String>) -> Self {
        let error = ErrorItem::new(kind, message, details);
        Rejection { status, body: json!({ "error": error, "node_errors": {} }) }
    }

    fn workflow(errors: &WorkflowErrors) -> Self {
        Rejection { status: 400, body: serde_json::to_value(errors).unwrap_or_default() }
    }

    /// The error's one-line text.
    pub fn message(&self) -> String {
        let e = &self.body["error"];
        format!("{}: {}", e["message"].as_str().unwrap_or_default(), e["details"].as_str().unwrap_or_default())
    }
}

/// Whether a submitted `prompt` is a ComfyUI workflow (an object of nodes)
/// rather than a flow graph (text, or an object with `flow:`).
pub fn kind_of(prompt: &Json) -> Kind {
    match prompt {
        Json::Object(map) if !map.contains_key("flow") => Kind::Comfy,
        _ => Kind::Flow,
    }
}

/// Validates a job's prompt into a graph. `for_run` also gives each
/// SaveImage its own file number (at submission nothing is reserved).
pub fn prepare(job: &Job, ws: &Workspace, registry: &Registry, for_run: bool) -> Result<Prepared, Rejection> {
    let mut prepared = match kind_of(&job.prompt) {
        Kind::Comfy => comfy(job, ws, registry)?,
        Kind::Flow => flow(job, ws, registry)?,
    };
    if prepared.kind == Kind::Comfy && for_run {
        let graph = Arc::make_mut(&mut prepared.graph);
        number_saved_images(graph, ws);
    }
    let problems = check_graph(&prepared.graph, &ws.roots);
    if !problems.is_empty() {
        return Err(Rejection::new(
            403,
            "forbidden_path",
            "The prompt reaches outside the server's folders",
            problems.join("\n"),
        ));
    }
    Ok(prepared)
}

fn comfy(job: &Job, ws: &Workspace, registry: &Registry) -> Result<Prepared, Rejection> {
    let text = job.prompt.to_string();
    let t = translate_for_run(&text, "workflow.json").map_err(|e| Rejection::workflow(&e))?;
    let overrides = overrides(job)?;
    let mut graph = graph::from_bytes("workflow.json", ws.root(), t.yaml.as_bytes(), &overrides, registry).map_err(|d| {
        Rejection::new(400, "invalid_prompt", "The flow graph translated from this workflow is invalid", d.render())
    })?;
    read_inputs_from_input_folder(&mut graph);
    Ok(Prepared {
        graph: Arc::new(graph),
        kind: Kind::Comfy,
        origins: t.origins,
        classes: t.classes,
        outputs: t.outputs,
    })
}

fn flow(job: &Job, ws: &Workspace, registry: &Registry) -> Result<Prepared, Rejection> {
    let text = match &job.prompt {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    let overrides = overrides(job)?;
    let graph = graph::from_bytes("graph.yaml", ws.root(), text.as_bytes(), &overrides, registry)
        .map_err(|d| Rejection::new(400, "invalid_prompt", "Invalid flow graph", d.render()))?;
    let origins = graph.nodes.iter().map(|n| (n.id.clone(), vec![n.id.clone()])).collect();
    let classes = graph.nodes.iter().map(|n| (n.id.clone(), n.op.spec().name.clone())).collect();
    let outputs = graph.output_nodes().into_iter().map(|i| graph.nodes[i].id.clone()).collect();
    Ok(Prepared { graph: Arc::new(graph), kind: Kind::Flow, origins, classes, outputs })
}

/// The job's params as graph overrides (a ComfyUI workflow's params are
/// those of its translation, e.g. `seed`).
fn overrides(job: &Job) -> Result<Vec<Override>, Rejection> {
    let mut overrides = Vec::new();
    let mut bad = Vec::new();
    for (k, v) in &job.params {
        match Override::parse(&format!("{k}={v}")) {
            Ok(o) => overrides.push(o),
            Err(e) => bad.push(e),
        }
    }
    if !bad.is_empty() {
        return Err(Rejection::new(400, "invalid_prompt", "Bad params", bad.join("\n")));
    }
    Ok(overrides)
}

/// The text of a literal `path` input.
fn path_of(expr: Option<&Expr>) -> Option<String> {
    match expr {
        Some(Expr::Literal(Value::Text(t))) => Some(t.to_string()),
        _ => None,
    }
}

/// LoadImage names a file of ComfyUI's input folder (`name`), or of its
/// output or temp folder (`output/name`, `temp/name` after translation).
fn read_inputs_from_input_folder(graph: &mut Graph) {
    for node in &mut graph.nodes {
        if node.op.spec().name != "image.load" {
            continue;
        }
        if let Some(path) = path_of(node.inputs.get("path")) {
            if !path.starts_with(&format!("{OUTPUT}/")) && !path.starts_with(&format!("{TEMP}/")) {
                node.inputs.insert("path".into(), Expr::Literal(Value::Text(format!("{INPUT}/{path}").into())));
            }
        }
    }
}

/// `output/PREFIX_00001_.png` → `output/PREFIX_NNNNN_.png` with the next
/// free number, so that every run keeps its own image.
fn number_saved_images(graph: &mut Graph, ws: &Workspace) {
    for node in &mut graph.nodes {
        if node.op.spec().name != "image.save" {
            continue;
        }
        let Some(path) = path_of(node.inputs.get("path")) else { continue };
        let Some(prefix) = path.strip_prefix(&format!("{OUTPUT}/")).and_then(|p| p.strip_suffix("_00001_.png")) else {
            continue;
        };
        let n = ws.next_counter(prefix);
        let numbered = format!("{OUTPUT}/{prefix}_{n:05}_.png");
        node.inputs.insert("path".into(), Expr::Literal(Value::Text(numbered.into())));
    }
}

/// A file a run wrote, as ComfyUI names it: `{filename, subfolder, type}`
/// (`None` when it is not in the output or temp folder).
pub fn file_ref(ws: &Workspace, path: &Path) -> Option<Json> {
    let rel = path.strip_prefix(ws.root()).ok()?;
    let mut parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let kind = parts.first()?.clone();
    if kind != OUTPUT && kind != TEMP {
        return None;
    }
    let filename = parts.pop()?;
    let subfolder = parts[1..].join("/");
    Some(json!({ "filename": filename, "subfolder": subfolder, "type": kind }))
}
