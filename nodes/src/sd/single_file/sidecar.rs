//! The A1111-style config beside a checkpoint (`NAME.yaml` next to
//! `NAME.safetensors`, an LDM training config such as `v2-inference-v.yaml`):
//! only `model.params.parameterization` is read (`"v"` or `"eps"`), with a
//! reader for the plain block-mapping subset of YAML such files are written
//! in (indentation nesting, `key: value`, comments, quoted scalars).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The sidecar path of a checkpoint: the same name with `.yaml`.
pub fn sidecar_path(checkpoint: &Path) -> PathBuf {
    checkpoint.with_extension("yaml")
}

/// The value at the key path `path` of a block-mapping YAML text, unquoted;
/// `None` when absent.
fn lookup(text: &str, path: &[&str]) -> Option<String> {
    // (indent, key) of the mappings enclosing the current line.
    let mut stack: Vec<(usize, String)> = Vec::new();
    for line in text.lines() {
        let content = line.split(" #").next().unwrap_or("");
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let indent = content.len() - trimmed.len();
        let Some((key, value)) = trimmed.split_once(':') else { continue };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.trim().trim_matches(['"', '\'']).to_string()));
        if stack.len() == path.len() && stack.iter().zip(path).all(|((_, k), p)| k == p) {
            let value = value.trim().trim_matches(['"', '\'']);
            return Some(value.to_string());
        }
    }
    None
}

/// Whether the sidecar of `checkpoint` asks for v-prediction: `Some(true)`
/// for `"v"`, `Some(false)` for `"eps"` (or no `parameterization` key),
/// `None` without a sidecar.
pub fn v_prediction(checkpoint: &Path) -> Result<Option<bool>> {
    let path = sidecar_path(checkpoint);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read `{}`", path.display()))?;
    match lookup(&text, &["model", "params", "parameterization"]).as_deref() {
        None | Some("eps") => Ok(Some(false)),
        Some("v") => Ok(Some(true)),
        Some(other) => bail!(
            "`{}`: model.params.parameterization is `{other}`; flow runs \"eps\" and \"v\" models",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = "model:\n  base_learning_rate: 1.0e-4\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  \
                      params:\n    parameterization: \"v\" # velocity\n    linear_start: 0.00085\n    \
                      unet_config:\n      params:\n        parameterization: eps\n";

    #[test]
    fn reads_the_nested_key_only() {
        assert_eq!(lookup(V2, &["model", "params", "parameterization"]).as_deref(), Some("v"));
        assert_eq!(lookup(V2, &["model", "params", "linear_start"]).as_deref(), Some("0.00085"));
        assert_eq!(lookup(V2, &["params", "parameterization"]), None);
        let flat = "parameterization: v\nmodel:\n  params:\n    linear_end: 0.012\n";
        assert_eq!(lookup(flat, &["model", "params", "parameterization"]), None);
    }

    #[test]
    fn the_sidecar_decides_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("m.safetensors");
        assert_eq!(v_prediction(&ckpt).unwrap(), None);
        std::fs::write(dir.path().join("m.yaml"), V2).unwrap();
        assert_eq!(v_prediction(&ckpt).unwrap(), Some(true));
        std::fs::write(dir.path().join("m.yaml"), "model:\n  params:\n    parameterization: 'eps'\n").unwrap();
        assert_eq!(v_prediction(&ckpt).unwrap(), Some(false));
        std::fs::write(dir.path().join("m.yaml"), "model:\n  params:\n    parameterization: x0\n").unwrap();
        let err = v_prediction(&ckpt).unwrap_err().to_string();
        assert!(err.contains("`x0`") && err.contains("m.yaml"), "{err}");
    }
}
