//! A script as an op: its spec from the port declarations, and a run that
//! calls the script's `run` in a fresh sandboxed engine.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Result};
use rhai::{Dynamic, Scope};

use super::compile::Compiled;
use super::errors::{self, Failure};
use super::modules::Resolver;
use super::paths::Shown;
use super::ports::PortDecl;
use super::{convert, sandbox, worker};
use crate::context::{Interrupted, OpContext};
use crate::op::{Cost, Fingerprint, Inputs, Op, OpSpec, Outputs, PortSpec};

/// The op of one script, as named by one graph.
pub(crate) struct ScriptOp {
    spec: Arc<OpSpec>,
    compiled: Arc<Compiled>,
    shown: Shown,
    timeout: Option<Duration>,
}

impl ScriptOp {
    /// The op `name` running `compiled`; paths in messages are shown with
    /// `shown`; `timeout` overrides `FLOW_SCRIPT_TIMEOUT`.
    pub(crate) fn new(name: &str, compiled: Arc<Compiled>, shown: Shown, timeout: Option<Duration>) -> ScriptOp {
        let ports = &compiled.ports;
        let mut doc = ports.doc.trim().to_string();
        if !doc.is_empty() {
            doc.push_str("\n\n");
        }
        doc.push_str(&format!(
            "rhai script `{}` (`script.NAME` loads scripts/NAME.rhai from the graph's folder or the closest \
             folder above it that has one; an op ending `.rhai` is a path relative to the graph's folder).",
            shown.path(&compiled.file)
        ));
        let spec = OpSpec {
            name: name.to_string(),
            version: 1,
            doc,
            inputs: ports.inputs.iter().map(port_spec).collect(),
            outputs: ports.outputs.iter().map(port_spec).collect(),
            output: false,
            cost: Cost::Heavy,
        };
        ScriptOp { spec: Arc::new(spec), compiled, shown, timeout }
    }
}

fn port_spec(decl: &PortDecl) -> PortSpec {
    let doc = intern(&decl.doc);
    match (&decl.default, decl.optional) {
        (Some(default), _) => PortSpec::with_default(intern(&decl.name), decl.ty, default.clone(), doc),
        (None, true) => PortSpec::optional(intern(&decl.name), decl.ty, doc),
        (None, false) => PortSpec::new(intern(&decl.name), decl.ty, doc),
    }
}

/// `text` as a `'static` string, leaked once per distinct text: reloading a
/// script does not leak its port names and docs again.
fn intern(text: &str) -> &'static str {
    static INTERNED: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = INTERNED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = set.get(text) {
        return s;
    }
    let s: &'static str = Box::leak(text.to_string().into_boxed_str());
    set.insert(s);
    s
}

impl Op for ScriptOp {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let timeout = match self.timeout {
            Some(t) => t,
            None => sandbox::timeout_from_env().map_err(|e| anyhow!(e))?,
        };
        let arg = convert::inputs_map(inputs, &self.spec).map_err(|e| anyhow!(e))?;
        let (compiled, spec, shown, ctx) = (Arc::clone(&self.compiled), Arc::clone(&self.spec), self.shown.clone(), ctx.clone());
        let call = move || -> Result<Outputs> {
            let device = ctx.device().clone();
            let watch = sandbox::Watch::start(timeout, Some(ctx));
            let engine = sandbox::runner(Resolver(Arc::clone(&compiled.modules)), watch, &device);
            let main = compiled.file.display().to_string();
            let returned = engine
                .call_fn::<Dynamic>(&mut Scope::new(), &compiled.ast, "run", (Dynamic::from_map(arg),))
                .map_err(|e| match errors::eval(e, "run", &main, &shown, timeout) {
                    Failure::Interrupted => anyhow!(Interrupted),
                    Failure::Error(m) => anyhow!(m),
                })?;
            convert::outputs(returned, &spec).map_err(|e| anyhow!("{}: {e}", shown.path(&compiled.file)))
        };
        worker::run(call).map_err(|e| anyhow!("{}: {e}", self.shown.path(&self.compiled.file)))?
    }

    fn fingerprint(&self, _literal_inputs: &Inputs, _graph_dir: &Path) -> Result<Fingerprint> {
        Ok(Fingerprint::Content(self.compiled.fingerprint.clone()))
    }

    fn watched_paths(&self, _literal_inputs: &Inputs, _graph_dir: &Path) -> Vec<PathBuf> {
        self.compiled.files.iter().map(|(p, _)| p.clone()).collect()
    }
}
