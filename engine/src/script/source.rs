//! [`ScriptSource`]: the op source that turns `script.NAME` and `*.rhai` op
//! names into ops, compiling each script once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::compile::{self, Compiled};
use super::op::ScriptOp;
use super::paths::{self, Shown};
use super::sandbox;
use crate::op::OpRef;
use crate::registry::OpSource;

/// Loads rhai scripts as ops (register it with
/// [`crate::Registry::register_source`]).
///
/// `op: script.NAME` runs `scripts/NAME.rhai`, looked up in the graph's
/// folder, then in each folder above it (the closest wins); any op name
/// ending `.rhai` is the path of a script relative to the graph's folder.
///
/// Compiled scripts are kept by file: validating a graph again re-reads
/// the script and the modules it imports and compiles them only if their
/// content changed.
#[derive(Default)]
pub struct ScriptSource {
    compiled: Mutex<HashMap<PathBuf, Arc<Compiled>>>,
    timeout: Option<Duration>,
}

impl ScriptSource {
    /// A source whose scripts run with the deadline of `FLOW_SCRIPT_TIMEOUT`
    /// (seconds; 30 by default).
    pub fn new() -> Self {
        ScriptSource::default()
    }

    /// A source whose scripts run with the deadline `timeout`, whatever the
    /// environment says.
    pub fn with_timeout(timeout: Duration) -> Self {
        ScriptSource { timeout: Some(timeout), ..ScriptSource::default() }
    }

    /// The loaded script `file` (canonical), compiled unless an identical
    /// version is cached.
    pub(super) fn compiled(&self, file: &Path, shown: &Shown) -> Result<Arc<Compiled>, String> {
        let (text, hash) = compile::read(file, shown)?;
        let mut cache = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(file).filter(|c| c.is_current(&hash)) {
            return Ok(Arc::clone(c));
        }
        let timeout = match self.timeout {
            Some(t) => t,
            None => sandbox::timeout_from_env()?,
        };
        let compiled = Arc::new(compile::compile(file, &text, hash, shown, timeout)?);
        cache.insert(file.to_path_buf(), Arc::clone(&compiled));
        Ok(compiled)
    }
}

impl OpSource for ScriptSource {
    fn claims(&self, name: &str) -> bool {
        paths::is_script_op(name)
    }

    fn load(&self, name: &str, graph_dir: &Path) -> Result<OpRef, String> {
        let shown = Shown::new(graph_dir);
        let file = paths::locate(name, graph_dir, &shown)?;
        let compiled = self.compiled(&file, &shown)?;
        Ok(Arc::new(ScriptOp::new(name, compiled, shown, self.timeout)))
    }

    fn available(&self, graph_dir: &Path) -> Vec<String> {
        paths::available(graph_dir)
    }
}
