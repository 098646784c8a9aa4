//! `file.read_text` and `file.write_text`: UTF-8 text files.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use flow_engine::{Cost, Fingerprint, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, ValueType};

use crate::fsutil;

pub(crate) struct ReadText {
    spec: OpSpec,
}

impl ReadText {
    pub(crate) fn new() -> Self {
        ReadText {
            spec: OpSpec {
                name: "file.read_text".into(),
                version: 1,
                doc: "Reads a UTF-8 text file. The cache key includes the file's content hash, \
                      so editing the file re-runs the node and what depends on it."
                    .into(),
                inputs: vec![PortSpec::new(
                    "path",
                    ValueType::Text,
                    "the file to read, relative to the graph file's folder",
                )],
                outputs: vec![PortSpec::new(
                    "text",
                    ValueType::Text,
                    "the content of the file",
                )],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for ReadText {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let path = inputs.path("path", ctx)?;
        let bytes = fsutil::read(&path, fsutil::MAX_TEXT_BYTES, "text file")?;
        let text = String::from_utf8(bytes).map_err(|e| {
            anyhow!(
                "`{}` is not UTF-8 text: invalid byte at offset {}",
                path.display(),
                e.utf8_error().valid_up_to()
            )
        })?;
        Ok(Outputs::single("text", text))
    }

    fn fingerprint(&self, literal_inputs: &Inputs, graph_dir: &Path) -> Result<Fingerprint> {
        fsutil::file_fingerprint(literal_inputs, "path", graph_dir)
    }

    fn watched_paths(&self, literal_inputs: &Inputs, graph_dir: &Path) -> Vec<PathBuf> {
        fsutil::watched_file(literal_inputs, "path", graph_dir)
    }
}

pub(crate) struct WriteText {
    spec: OpSpec,
}

impl WriteText {
    pub(crate) fn new() -> Self {
        WriteText {
            spec: OpSpec {
                name: "file.write_text".into(),
                version: 1,
                doc: "Writes text to a file, atomically (a temporary file in the same folder, \
                      then a rename), creating missing folders. An output node, cached like \
                      any other: a cached result stands only while the file holds exactly the \
                      bytes written."
                    .into(),
                inputs: vec![
                    PortSpec::new(
                        "path",
                        ValueType::Text,
                        "the file to write, relative to the graph file's folder",
                    ),
                    PortSpec::new("text", ValueType::Text, "the text to write (UTF-8)"),
                ],
                outputs: vec![PortSpec::new(
                    "path",
                    ValueType::Text,
                    "the path written, as given (relative to the graph file's folder)",
                )],
                output: true,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for WriteText {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let path = inputs.text("path")?;
        ctx.write_output(path, inputs.text("text")?.as_bytes())?;
        Ok(Outputs::single("path", path))
    }
}
