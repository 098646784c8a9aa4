//! `tensor.load` and `tensor.save`: tensors in safetensors files.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use candle_core::safetensors::SliceSafetensors;
use candle_core::Device;
use flow_engine::{
    Cost, Fingerprint, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType,
};

use crate::fsutil;

pub(crate) struct Load {
    spec: OpSpec,
}

impl Load {
    pub(crate) fn new() -> Self {
        Load {
            spec: OpSpec {
                name: "tensor.load".into(),
                version: 1,
                doc: "Loads a tensor from a safetensors file: the one named `name`, or the only \
                      tensor of the file. The cache key includes the file's content hash."
                    .into(),
                inputs: vec![
                    PortSpec::new(
                        "path",
                        ValueType::Text,
                        "the .safetensors file, relative to the graph file's folder",
                    ),
                    PortSpec::optional(
                        "name",
                        ValueType::Text,
                        "the tensor to load; may be left out if the file holds one tensor",
                    ),
                ],
                outputs: vec![PortSpec::new(
                    "tensor",
                    ValueType::Tensor,
                    "the tensor, with its dtype from the file",
                )],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for Load {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let path = inputs.path("path", ctx)?;
        // The file is read whole, then its tensor copied out: twice its size.
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        flow_engine::limits::check_memory(len.saturating_mul(2), &format!("loading `{}`", path.display()))?;
        let bytes = fsutil::read(&path, u64::MAX, "safetensors file")?;
        let file = SliceSafetensors::new(&bytes)
            .map_err(|e| anyhow!("`{}` is not a valid safetensors file: {e}", path.display()))?;
        let mut names: Vec<String> = file.tensors().into_iter().map(|(name, _)| name).collect();
        names.sort();
        let name = match inputs.opt_text("name")? {
            Some(name) if names.iter().any(|n| n == name) => name.to_string(),
            Some(name) => bail!(
                "`{}` has no tensor named `{name}`; it holds: {}",
                path.display(),
                list_names(&names)
            ),
            None => match names.as_slice() {
                [only] => only.clone(),
                [] => bail!("`{}` holds no tensor", path.display()),
                _ => bail!(
                    "`{}` holds {} tensors; choose one with `name`: {}",
                    path.display(),
                    names.len(),
                    list_names(&names)
                ),
            },
        };
        let tensor = file
            .load(&name, ctx.device())
            .map_err(|e| anyhow!("cannot load tensor `{name}` from `{}`: {e}", path.display()))?;
        Ok(Outputs::single(
            "tensor",
            Value::tensor(ValueType::Tensor, tensor),
        ))
    }

    fn fingerprint(&self, literal_inputs: &Inputs, graph_dir: &Path) -> Result<Fingerprint> {
        fsutil::file_fingerprint(literal_inputs, "path", graph_dir)
    }

    fn watched_paths(&self, literal_inputs: &Inputs, graph_dir: &Path) -> Vec<PathBuf> {
        fsutil::watched_file(literal_inputs, "path", graph_dir)
    }
}

/// Tensor names for an error message; long lists are cut.
fn list_names(names: &[String]) -> String {
    const MAX: usize = 20;
    let shown: Vec<&str> = names.iter().take(MAX).map(String::as_str).collect();
    let mut list = shown.join(", ");
    if names.len() > MAX {
        list.push_str(&format!(", ... and {} more", names.len() - MAX));
    }
    list
}

pub(crate) struct Save {
    spec: OpSpec,
}

impl Save {
    pub(crate) fn new() -> Self {
        Save {
            spec: OpSpec {
                name: "tensor.save".into(),
                version: 1,
                doc: "Saves a tensor to a safetensors file, atomically (a temporary file in the \
                      same folder, then a rename), creating missing folders. An output node, \
                      cached like any other: a cached result stands only while the file holds \
                      exactly the bytes written."
                    .into(),
                inputs: vec![
                    PortSpec::new("tensor", ValueType::Tensor, "the tensor to save"),
                    PortSpec::new(
                        "path",
                        ValueType::Text,
                        "the .safetensors file to write, relative to the graph file's folder",
                    ),
                    PortSpec::with_default(
                        "name",
                        ValueType::Text,
                        "tensor",
                        "the tensor's name in the file",
                    ),
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

impl Op for Save {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let tensor = inputs
            .tensor("tensor")?
            .to_device(&Device::Cpu)?
            .contiguous()?;
        let name = inputs.opt_text("name")?.unwrap_or("tensor");
        if name.is_empty() {
            bail!("input `name` is empty; a tensor in a safetensors file needs a name");
        }
        let path = inputs.text("path")?;
        let bytes = safetensors::serialize([(name, &tensor)], None)
            .map_err(|e| anyhow!("cannot encode the tensor for `{path}`: {e}"))?;
        ctx.write_output(path, &bytes)?;
        Ok(Outputs::single("path", path))
    }
}
