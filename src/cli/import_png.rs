//! `flow import png IMAGE.png [-o graph.yaml]`: the graph behind a picture
//! saved by flow, ComfyUI or the AUTOMATIC1111 web UI, recovered from the
//! PNG's text chunks (see `flow_nodes::image::png_import`).

use std::path::{Path, PathBuf};

use flow_nodes::image::png_import;

use super::{EXIT_INVALID, EXIT_OK};

/// `flow import png`: prints the graph, or writes it to `output` (and says
/// which tool's metadata it came from). Exit 2 when the file cannot be read
/// or holds no graph.
pub fn png(input: &Path, output: Option<&PathBuf>) -> u8 {
    let imported = match png_import::import_png(input) {
        Ok(g) => g,
        Err(e) => {
            errln!("error: {e:#}");
            return EXIT_INVALID;
        }
    };
    match output {
        None => {
            out!("{}", imported.yaml);
            EXIT_OK
        }
        Some(path) => match flow_engine::files::write_atomic(path, imported.yaml.as_bytes()) {
            Ok(()) => {
                errln!(
                    "wrote {} (from {} metadata)",
                    super::common::shown(path),
                    imported.source.label()
                );
                EXIT_OK
            }
            Err(e) => {
                errln!("error: cannot write {}: {e:#}", path.display());
                EXIT_INVALID
            }
        },
    }
}
