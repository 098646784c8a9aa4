//! `flow import comfy WORKFLOW.json [-o graph.yaml]`: a ComfyUI API-format
//! workflow as a readable flow graph; and the loading of workflows for
//! `flow run` / `validate` / `plan` (validated and translated in memory).

use std::path::{Path, PathBuf};

use flow_engine::graph::{Graph, Override};
use flow_engine::source::document::MAX_FILE_BYTES;
use flow_engine::Registry;
use flow_nodes::comfy;

use super::{EXIT_INVALID, EXIT_OK};

/// Reads a workflow file, or prints why not.
fn read(path: &Path) -> Result<Vec<u8>, u8> {
    flow_engine::files::read_bounded(path, MAX_FILE_BYTES as u64, "workflow file").map_err(|e| {
        errln!("error: cannot read {}: {e}", path.display());
        EXIT_INVALID
    })
}

/// `flow import comfy`: prints the graph, or writes it to `output`.
pub fn comfy(input: &Path, output: Option<&PathBuf>) -> u8 {
    let bytes = match read(input) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let source = input.display().to_string();
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(e) => {
            errln!("{source}: invalid_prompt: the file is not UTF-8 text (invalid byte at offset {})", e.valid_up_to());
            return EXIT_INVALID;
        }
    };
    let yaml = match comfy::translate_to_yaml(text, &source) {
        Ok(y) => y,
        Err(errors) => {
            err!("{}", errors.render());
            return EXIT_INVALID;
        }
    };
    match output {
        None => {
            out!("{yaml}");
            EXIT_OK
        }
        Some(path) => match flow_engine::files::write_atomic(path, yaml.as_bytes()) {
            Ok(()) => {
                errln!("wrote {}", super::common::shown(path));
                EXIT_OK
            }
            Err(e) => {
                errln!("error: cannot write {}: {e:#}", path.display());
                EXIT_INVALID
            }
        },
    }
}

/// For a ComfyUI workflow (a `.json` file, or text starting with `{`): the
/// validated graph, or the exit code after printing every error. `None` for
/// anything else (and for files that cannot be read: the graph loader
/// reports those).
pub fn load_comfy_workflow(path: &Path, overrides: &[Override], registry: &Registry) -> Option<Result<Graph, u8>> {
    Some(read_comfy_workflow(path, overrides, registry)?.map_err(|errors| {
        err!("{errors}");
        EXIT_INVALID
    }))
}

/// [`load_comfy_workflow`] without printing: the errors come back rendered.
pub fn read_comfy_workflow(path: &Path, overrides: &[Override], registry: &Registry) -> Option<Result<Graph, String>> {
    let bytes = flow_engine::files::read_bounded(path, MAX_FILE_BYTES as u64, "graph file").ok()?;
    if !comfy::is_workflow(path, &bytes) {
        return None;
    }
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    Some(comfy::load_workflow(&path.display().to_string(), &dir, &bytes, overrides, registry).map_err(|e| e.render()))
}
